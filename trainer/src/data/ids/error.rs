//! `IdProblem`: what is wrong with one value (or the settings) of an id column; carried by
//! [`DataError::Id`](crate::data::DataError::Id) with the file, column and row.

/// What is wrong with an id column's value or settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    /// A null cell: ids are never imputed.
    #[error(
        "null id: an id column cannot be imputed (fill or drop the row when preparing the data)"
    )]
    Null,
    /// A value that is not an integer id in a column fitted as integer ids.
    #[error("{value:?} is not an integer id in [0, 2^24), and the column holds integer ids (every training value is one)")]
    NotInteger {
        /// The value found.
        value: String,
    },
    /// A multi-valued cell with more values than the column has slots.
    #[error("{values} values, more than the column's {slots} slots (the most values of a cell when the transform was fitted); set max_values in its [[job.model.embeddings]] table")]
    TooMany {
        /// Values in the cell.
        values: usize,
        /// Slots of the column.
        slots: usize,
    },
    /// `pooling` (or `separator`) on a numeric column, which holds one id per row.
    #[error("pooling and separator apply to a text column of ids separated by {separator:?}; this column is numeric (one id per row): drop pooling and separator")]
    NotText {
        /// The separator the column was declared with.
        separator: String,
    },
    /// More distinct training strings than ids fit in the f32 feature matrix.
    #[error("{size} distinct strings: a vocabulary holds fewer than 2^24 - 1; set buckets to hash the strings instead")]
    Vocabulary {
        /// Distinct strings in the training rows.
        size: usize,
    },
}
