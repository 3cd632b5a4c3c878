//! `DataError`: everything that can go wrong between a data file (or stream) and a `Table`.
//!
//! Every variant names the file (or stream) and, where one is involved, the column and row, so a
//! user can open the file and find the bad value without reading our code.

use thiserror::Error;

/// An error while reading, checking or transforming training data.
///
/// `file` is the path as given (after resolution against the manifest directory) or, for an
/// unbounded stream, the stream's name. Row numbers are 0-based data rows (a CSV header is not a row).
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("data file {file}: cannot read: {message}")]
    Io {
        /// File or stream name.
        file: String,
        /// What the OS or the reader said.
        message: String,
    },
    /// The file is not valid Parquet/CSV (as far as the reader can tell).
    #[error("data file {file}: cannot decode as {format}: {message}")]
    Decode {
        /// File or stream name.
        file: String,
        /// `parquet`, `csv` or `arrow`.
        format: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// The format could not be guessed from the extension.
    #[error("data file {file}: cannot tell the format from the extension; set format = \"parquet\" or \"csv\"")]
    UnknownFormat {
        /// File name.
        file: String,
    },
    /// A named column (label or feature) does not exist.
    #[error("data file {file}: column '{column}' not found (the file has: {available})")]
    MissingColumn {
        /// File or stream name.
        file: String,
        /// The column asked for.
        column: String,
        /// The file's columns, comma-separated (cut short when long).
        available: String,
    },
    /// A feature glob matched no column.
    #[error("data file {file}: feature pattern '{column}' matches no column")]
    NoMatch {
        /// File or stream name.
        file: String,
        /// The pattern.
        column: String,
    },
    /// A string column was selected as a feature while categorical encoding is off.
    #[error("data file {file}: column '{column}' holds strings but categorical = \"error\"; set categorical = \"one-hot\" or leave the column out of `features`")]
    StringFeature {
        /// File or stream name.
        file: String,
        /// The string column.
        column: String,
    },
    /// A column type we cannot turn into numbers.
    #[error("data file {file}: column '{column}' has unsupported type {dtype} (numbers and strings are supported)")]
    UnsupportedType {
        /// File or stream name.
        file: String,
        /// The column.
        column: String,
        /// Its Arrow type.
        dtype: String,
    },
    /// The file has no data rows.
    #[error("data file {file}: no data rows (label column '{column}')")]
    EmptyFile {
        /// File name.
        file: String,
        /// The label column the job asked for.
        column: String,
    },
    /// A label that is null, NaN, infinite or not valid for the task.
    #[error("data file {file}: label column '{column}', row {row}: {reason}")]
    BadLabel {
        /// File or stream name.
        file: String,
        /// The label column.
        column: String,
        /// 0-based data row.
        row: usize,
        /// What is wrong (e.g. "NaN label").
        reason: String,
    },
    /// A missing feature value while `missing = "error"`.
    #[error(
        "data file {file}: column '{column}', row {row}: missing value and missing = \"error\""
    )]
    MissingValue {
        /// File or stream name.
        file: String,
        /// The column.
        column: String,
        /// 0-based data row.
        row: usize,
    },
    /// An infinite feature value.
    #[error("data file {file}: column '{column}', row {row}: non-finite value {value}")]
    NonFinite {
        /// File or stream name.
        file: String,
        /// The column.
        column: String,
        /// 0-based data row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// The `[job.data]` settings do not fit the data (e.g. `task = "binary"` with string labels and
    /// no `positive`).
    #[error("data file {file}: column '{column}': {message}")]
    Config {
        /// File or stream name.
        file: String,
        /// The column concerned (the label column for task settings).
        column: String,
        /// What to change.
        message: String,
    },
    /// A value or setting of an embedding model's id column (string or multi-valued).
    #[error("data file {file}: id column '{column}'{}: {problem}", row.map(|r| format!(", row {r}")).unwrap_or_default())]
    Id {
        /// File or stream name.
        file: String,
        /// The id column.
        column: String,
        /// 0-based data row, when one value is at fault.
        row: Option<usize>,
        /// What is wrong.
        problem: super::ids::IdProblem,
    },
    /// A cursor or batch request that the source cannot serve.
    #[error("data source {file}: {message}")]
    Source {
        /// File or stream name.
        file: String,
        /// What went wrong.
        message: String,
    },
}
