//! `EmbeddingError`: what goes wrong reading ids, building an embedding model or looking up a row,
//! with the column, row, id or key named.

/// Errors of embedding models and their tables.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// A `[[job.model.embeddings]]` entry or a key of the model that does not fit.
    #[error("[job.model] {key}: {reason}")]
    Spec {
        /// The key (`embeddings[0].dim`, `kind`, ...).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of an id column that is not an id (null imputed to a fraction, negative, too big).
    #[error("embedding column {column:?}, row {row}: value {value} is not an integer id in [0, {limit})")]
    BadId {
        /// The id column.
        column: String,
        /// The row within the batch.
        row: usize,
        /// The value found.
        value: f32,
        /// Ids must be below this.
        limit: u64,
    },
    /// A batch asked for a row the model was not given (the rows of a batch are pulled first).
    #[error("embedding table {column:?}: row {id} was not pulled for this batch")]
    NotPulled {
        /// The table's column.
        column: String,
        /// The id.
        id: u64,
    },
    /// Rows handed to the model that do not fit its tables.
    #[error("embedding rows: {0}")]
    Rows(String),
}
