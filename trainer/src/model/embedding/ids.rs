//! Reading ids out of a batch: each embedding table reads one feature column, or for a
//! multi-valued column its `slots` consecutive columns, whose values must be integer ids (exact in
//! f32, so below 2^24; a multi-valued column's empty slots hold [`ID_PAD`]), optionally hashed
//! into `buckets` rows. String ids arrive as integers too (the data layer's vocabulary or hash).

use super::error::EmbeddingError;
use super::spec::Pooling;
use super::table::mix64;
use crate::data::ID_PAD;
use lockstep_tensor::sparse::unique_sorted;

/// Ids must be below this to be exact in the f32 feature matrix.
pub const ID_LIMIT: u64 = 1 << 24;

/// Where a table's ids come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdColumn {
    /// Column name.
    pub name: String,
    /// Index among the batch's feature columns (the first slot of a multi-valued column).
    pub col: usize,
    /// Hash into this many rows.
    pub buckets: Option<u64>,
    /// Feature columns holding this column's ids: 1, or a multi-valued column's slots.
    pub slots: usize,
    /// A multi-valued column's pooling (`None`: one id per row).
    pub pooling: Option<Pooling>,
}

/// The ids of a batch's rows: row `r` looks up `ids[start[r]..start[r + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bags {
    /// The table rows, row after row.
    pub ids: Vec<u64>,
    /// Where each row's ids start, and the end (`rows + 1` entries).
    pub start: Vec<usize>,
}

impl IdColumn {
    /// A single-valued column at feature `col`.
    pub fn single(name: impl Into<String>, col: usize, buckets: Option<u64>) -> Self {
        IdColumn {
            name: name.into(),
            col,
            buckets,
            slots: 1,
            pooling: None,
        }
    }

    /// The table row of `value`, found in batch row `row`.
    fn id(&self, value: f32, row: usize) -> Result<u64, EmbeddingError> {
        let v = value;
        if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as u64) < ID_LIMIT) {
            return Err(EmbeddingError::BadId {
                column: self.name.clone(),
                row,
                value: v,
                limit: ID_LIMIT,
            });
        }
        let id = v as u64;
        Ok(match self.buckets {
            Some(b) => mix64(id) % b,
            None => id,
        })
    }

    /// The table row of each of the `rows` rows of `x` (`cols` wide), for a single-valued
    /// column.
    ///
    /// # Errors
    /// [`EmbeddingError::BadId`] for a value that is not an integer in `[0, 2^24)`.
    pub fn ids(&self, x: &[f32], rows: usize, cols: usize) -> Result<Vec<u64>, EmbeddingError> {
        (0..rows)
            .map(|r| self.id(x[r * cols + self.col], r))
            .collect()
    }

    /// The table rows each of the `rows` rows of `x` looks up: one for a single-valued column,
    /// a multi-valued cell's values in order (none for an empty cell).
    ///
    /// # Errors
    /// [`EmbeddingError::BadId`] for a value that is neither an id nor an empty slot.
    pub fn bags(&self, x: &[f32], rows: usize, cols: usize) -> Result<Bags, EmbeddingError> {
        if self.pooling.is_none() {
            let ids = self.ids(x, rows, cols)?;
            return Ok(Bags {
                ids,
                start: (0..=rows).collect(),
            });
        }
        let mut bags = Bags {
            ids: Vec::with_capacity(rows * self.slots),
            start: Vec::with_capacity(rows + 1),
        };
        bags.start.push(0);
        for r in 0..rows {
            for &v in &x[r * cols + self.col..][..self.slots] {
                if v != ID_PAD {
                    bags.ids.push(self.id(v, r)?);
                }
            }
            bags.start.push(bags.ids.len());
        }
        Ok(bags)
    }

    /// The sorted unique table rows of a batch, and each id's index into them (row after row,
    /// as [`IdColumn::bags`]).
    ///
    /// # Errors
    /// As [`IdColumn::bags`].
    pub fn unique(
        &self,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(Vec<u64>, Vec<u32>), EmbeddingError> {
        Ok(unique_sorted(&self.bags(x, rows, cols)?.ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_hashed() {
        let c = IdColumn::single("userId", 1, None);
        let x = [0.5, 7.0, 0.0, 3.0];
        assert_eq!(c.ids(&x, 2, 2).unwrap(), vec![7, 3]);
        let bad = [0.0, 2.5];
        let e = c.ids(&bad, 1, 2).unwrap_err().to_string();
        assert!(e.contains("userId") && e.contains("2.5"), "{e}");
        let hashed = IdColumn {
            buckets: Some(10),
            ..c
        };
        assert!(hashed.ids(&x, 2, 2).unwrap().iter().all(|&i| i < 10));
    }

    #[test]
    fn multi_valued_rows_skip_the_pad_and_check_the_rest() {
        let c = IdColumn {
            slots: 3,
            pooling: Some(Pooling::Mean),
            ..IdColumn::single("genres", 1, None)
        };
        // Rows of 4 features: a dense one, then the three slots.
        let x = [
            0.5, 4.0, 2.0, ID_PAD, //
            0.5, ID_PAD, ID_PAD, ID_PAD, //
            0.5, 9.0, 4.0, 1.0,
        ];
        let bags = c.bags(&x, 3, 4).unwrap();
        assert_eq!(bags.ids, vec![4, 2, 9, 4, 1]);
        assert_eq!(bags.start, vec![0, 2, 2, 5]);
        assert_eq!(c.unique(&x, 3, 4).unwrap().0, vec![1, 2, 4, 9]);
        let bad = [0.0, 1.0, -2.0, ID_PAD];
        let e = c.bags(&bad, 1, 4).unwrap_err().to_string();
        assert!(
            e.contains("genres") && e.contains("row 0") && e.contains("-2"),
            "{e}"
        );
    }
}
