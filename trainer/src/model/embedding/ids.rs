//! Reading ids out of a batch: each embedding table reads one feature column, whose values must
//! be integer ids (exact in f32, so below 2^24), optionally hashed into `buckets` rows.

use super::error::EmbeddingError;
use super::table::mix64;
use lockstep_tensor::sparse::unique_sorted;

/// Ids must be below this to be exact in the f32 feature matrix.
pub const ID_LIMIT: u64 = 1 << 24;

/// Where a table's ids come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdColumn {
    /// Column name.
    pub name: String,
    /// Index among the batch's feature columns.
    pub col: usize,
    /// Hash into this many rows.
    pub buckets: Option<u64>,
}

impl IdColumn {
    /// The table row of each of the `rows` rows of `x` (`cols` wide).
    ///
    /// # Errors
    /// [`EmbeddingError::BadId`] for a value that is not an integer in `[0, 2^24)`.
    pub fn ids(&self, x: &[f32], rows: usize, cols: usize) -> Result<Vec<u64>, EmbeddingError> {
        (0..rows)
            .map(|r| {
                let v = x[r * cols + self.col];
                if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as u64) < ID_LIMIT) {
                    return Err(EmbeddingError::BadId {
                        column: self.name.clone(),
                        row: r,
                        value: v,
                        limit: ID_LIMIT,
                    });
                }
                let id = v as u64;
                Ok(match self.buckets {
                    Some(b) => mix64(id) % b,
                    None => id,
                })
            })
            .collect()
    }

    /// The sorted unique table rows of a batch, and each batch row's index into them.
    ///
    /// # Errors
    /// As [`IdColumn::ids`].
    pub fn unique(
        &self,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(Vec<u64>, Vec<u32>), EmbeddingError> {
        Ok(unique_sorted(&self.ids(x, rows, cols)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_hashed() {
        let c = IdColumn {
            name: "userId".into(),
            col: 1,
            buckets: None,
        };
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
}
