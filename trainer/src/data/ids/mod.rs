//! Id columns of embedding models, on the data side: a text column of string ids, or a
//! multi-valued column (`genres = "Comedy|Drama"`), becomes integer ids in fixed slots of the
//! `f32` feature matrix, so the model reads every id column the same way.
//!
//! - **Which values.** A text column (each value of a multi-valued cell) holds *integer ids* when
//!   every training value is a decimal integer in `[0, 2^24)`; a later value that is not one is an
//!   error ([`IdProblem::NotInteger`]). Otherwise it holds *string ids*: without `buckets` the
//!   fitted transform keeps the sorted training strings (the vocabulary) and a string's id is its
//!   place in it plus one, an unseen string id 0 (the reserved row); with `buckets` there is no
//!   vocabulary and the id is a 24-bit hash of the string's bytes (FNV-1a, then SplitMix64's
//!   finaliser), which the model hashes into `buckets` rows like any integer id.
//! - **Slots.** A single-valued column is one feature named as the column. A multi-valued column
//!   (`pooling` set) is `slots` features `col[0]`, `col[1]`, ...: a cell's ids in order, then
//!   [`ID_PAD`] (-1). `slots` is `max_values`, or the most values of a cell among the rows read
//!   when fitting (a file's training and held-out rows, a streamed dataset's sample). Values are
//!   split at the separator (default `|`); empty values are dropped, so an empty cell has no ids,
//!   and so has a null cell (CSV has no empty string apart from a null).
//! - **Nulls** of a single-valued column are an error naming the column and row, whatever
//!   `missing` says.
//!
//! The plan ([`IdPlan`]) is part of the fitted transform, so held-out rows, streams, resumed runs
//! and `lockstep predict` map strings identically, and it is hashed into the registration
//! signature with the rest of the transform.

mod error;
mod values;

pub use error::IdProblem;
pub use values::{hash_string, parse_integer};

use serde::{Deserialize, Serialize};

use super::error::DataError;

/// A multi-valued column's empty slot in the feature matrix.
pub const ID_PAD: f32 = -1.0;

/// Ids must be below this to be exact in the f32 feature matrix.
pub const ID_VALUES: u64 = 1 << 24;

/// How the model reads one id column (from its `[[job.model.embeddings]]` table): given to the
/// data layer with [`DataSpec::ids`](super::DataSpec::ids) so that the transform fits it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdSpec {
    /// The column.
    pub column: String,
    /// Multi-valued (`pooling` set): the separator of its values.
    pub separator: Option<String>,
    /// `buckets` set: string ids are hashed, no vocabulary is kept.
    pub hashed: bool,
    /// Multi-valued: slots per row (default: the most values of a cell read when fitting).
    pub max_values: Option<usize>,
}

/// What a column's values are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdValues {
    /// Decimal integers in `[0, 2^24)`: the id is the integer.
    Integer,
    /// Strings: id = place in this sorted list + 1; 0 for a string not in it.
    Vocabulary(Vec<String>),
    /// Strings: id = [`hash_string`].
    Hashed,
}

/// The fitted plan of one text id column (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPlan {
    /// The column.
    pub name: String,
    /// Multi-valued: the separator.
    pub separator: Option<String>,
    /// Features per row.
    pub slots: usize,
    /// What the values are.
    pub values: IdValues,
}

impl IdPlan {
    /// Fits the plan of `spec`'s column from its `train` rows of `v` (the slots from every row of
    /// `v`, see the module docs).
    ///
    /// # Errors
    /// [`DataError::Id`]: a null cell, a vocabulary too large.
    pub fn fit(
        spec: &IdSpec,
        v: &[Option<String>],
        train: &[usize],
        file: &str,
    ) -> Result<Self, DataError> {
        let sep = spec.separator.as_deref();
        let mut tokens: Vec<&str> = Vec::new();
        for &r in train {
            let at = |p| id_error(file, &spec.column, Some(r), p);
            let Some(cell) = cell(v, r, sep).map_err(at)? else {
                continue;
            };
            tokens.extend(values::split(cell, sep));
        }
        let values = if tokens.iter().all(|t| parse_integer(t).is_some()) && !tokens.is_empty() {
            IdValues::Integer
        } else if spec.hashed {
            IdValues::Hashed
        } else {
            let mut vocab: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
            vocab.sort_unstable();
            vocab.dedup();
            if vocab.len() as u64 >= ID_VALUES - 1 {
                let size = vocab.len();
                return Err(id_error(
                    file,
                    &spec.column,
                    None,
                    IdProblem::Vocabulary { size },
                ));
            }
            IdValues::Vocabulary(vocab)
        };
        // A layout, not a statistic: sized by every row read (held-out rows too), so that the
        // held-out rows of the same file always fit.
        let most = || {
            let cells = v.iter().flatten();
            cells
                .map(|c| values::split(c, sep).count())
                .max()
                .unwrap_or(1)
                .max(1)
        };
        let slots = match sep {
            Some(_) => spec.max_values.unwrap_or_else(most),
            None => 1,
        };
        Ok(IdPlan {
            name: spec.column.clone(),
            separator: spec.separator.clone(),
            slots,
            values,
        })
    }

    /// The output feature names: the column, or `col[0]` ... `col[slots - 1]`.
    pub fn feature_names(&self) -> Vec<String> {
        match self.separator {
            None => vec![self.name.clone()],
            Some(_) => (0..self.slots)
                .map(|k| format!("{}[{k}]", self.name))
                .collect(),
        }
    }

    /// Writes the ids of `rows` of `v` into `x` (rows `width` wide, this column's slots from
    /// `offset`), [`ID_PAD`] in the slots a cell does not fill.
    ///
    /// # Errors
    /// [`DataError::Id`] naming the row: a null, a non-integer in an integer column, too many
    /// values.
    pub fn write(
        &self,
        v: &[Option<String>],
        rows: &[usize],
        x: &mut [f32],
        width: usize,
        offset: usize,
        file: &str,
    ) -> Result<(), DataError> {
        let sep = self.separator.as_deref();
        for (i, &r) in rows.iter().enumerate() {
            let err = |problem| id_error(file, &self.name, Some(r), problem);
            let out = &mut x[i * width + offset..][..self.slots];
            out.fill(ID_PAD);
            let Some(cell) = cell(v, r, sep).map_err(err)? else {
                continue;
            };
            for (n, token) in values::split(cell, sep).enumerate() {
                if n == self.slots {
                    let values = values::split(cell, sep).count();
                    return Err(err(IdProblem::TooMany {
                        values,
                        slots: self.slots,
                    }));
                }
                out[n] = self.id(token).map_err(err)? as f32;
            }
        }
        Ok(())
    }

    /// The id of one value.
    fn id(&self, token: &str) -> Result<u64, IdProblem> {
        match &self.values {
            IdValues::Integer => parse_integer(token).ok_or_else(|| IdProblem::NotInteger {
                value: token.to_string(),
            }),
            IdValues::Vocabulary(vocab) => Ok(vocab
                .binary_search_by(|s| s.as_str().cmp(token))
                .map_or(0, |p| p as u64 + 1)),
            IdValues::Hashed => Ok(hash_string(token)),
        }
    }
}

/// Row `r`'s cell: a null is an empty cell in a multi-valued column (`sep` set; an empty CSV
/// field is a null) and an error in a single-valued one.
fn cell<'a>(
    v: &'a [Option<String>],
    r: usize,
    sep: Option<&str>,
) -> Result<Option<&'a str>, IdProblem> {
    match (v[r].as_deref(), sep) {
        (Some(c), _) => Ok(Some(c)),
        (None, Some(_)) => Ok(None),
        (None, None) => Err(IdProblem::Null),
    }
}

/// [`IdProblem::NotText`] for `spec`'s numeric column.
pub(crate) fn not_text(spec: &IdSpec, file: &str) -> DataError {
    let separator = spec.separator.clone().unwrap_or_default();
    id_error(file, &spec.column, None, IdProblem::NotText { separator })
}

fn id_error(file: &str, column: &str, row: Option<usize>, problem: IdProblem) -> DataError {
    DataError::Id {
        file: file.to_string(),
        column: column.to_string(),
        row,
        problem,
    }
}

#[cfg(test)]
mod tests;
