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
    /// An id column that holds strings and was one-hot encoded (the data was loaded without the
    /// model's id columns).
    #[error("[job.model] {key}: {column:?} is a string column that was one-hot encoded: load the data with the model's id columns (DataSpec::ids, from EmbeddingSpec::id_spec) so that its strings become ids")]
    StringIds {
        /// The key (`embeddings[0].column`).
        key: String,
        /// The column.
        column: String,
    },
    /// An id column the data does not have.
    #[error("[job.model] {key}: no feature column {column:?} (features: {})", features.join(", "))]
    NoColumn {
        /// The key (`embeddings[0].column`).
        key: String,
        /// The column.
        column: String,
        /// The data's feature columns.
        features: Vec<String>,
    },
    /// Rows for another number of tables than the model has.
    #[error("embedding rows: {given} tables given, the model has {tables}")]
    RowTables {
        /// Tables given.
        given: usize,
        /// Tables the model has.
        tables: usize,
    },
    /// Rows that do not fit their table (width, one row of values per id, ids ascending).
    #[error("embedding rows: table {column:?}: rows of width {width} (model: {model_width}), {ids} ids, {values} values, ids ascending: {ascending}")]
    RowShape {
        /// The table's column.
        column: String,
        /// The rows' width.
        width: usize,
        /// The table's width.
        model_width: usize,
        /// Ids given.
        ids: usize,
        /// Values given.
        values: usize,
        /// Whether the ids are strictly ascending.
        ascending: bool,
    },
}
