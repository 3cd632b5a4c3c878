//! Data pipelines: from a Parquet or CSV file (or an Arrow record-batch stream) to sharded,
//! seeded batches of f32 features and targets.
//!
//! The path of a training set through this module:
//! 1. [`FileRecords`] reads Arrow record batches (Parquet, or CSV with inferred types);
//! 2. [`load`] picks the label and feature columns (names or globs), checks their types, maps
//!    labels to [`Targets`](crate::Targets), splits rows into train/test by seed (stratified for
//!    classification), and fits a [`Preprocessor`] (median / most-frequent imputation, one-hot
//!    encoding, scaling) on the training rows only; the result is a [`Split`];
//! 3. a [`BatchSource`] ([`TableSource`] for a file, [`StreamSource`] for a stream) hands each
//!    round's global batch, cut by [`shard`] into this rank's share, with a [`DataCursor`] that a
//!    checkpoint stores to resume exactly.
//!
//! Datasets that do not fit in memory (directories, globs, object storage, or any path with
//! `memory_mb`) take the streaming route of [`dataset`]: the same `Split` with an empty training
//! table and a [`Dataset`] that [`DatasetSource`] reads window by window.
//!
//! Every error is a [`DataError`] naming the file (or stream) and the column, and the row where
//! one value is at fault.

mod columns;
mod convert;
mod cursor;
pub mod dataset;
mod error;
pub mod ids;
mod label;
mod load;
mod preprocess;
mod shard;
mod source;
mod spec;
mod stream;
mod stream_schema;
mod stream_spec;
mod table;

pub use columns::{column_kind, extract, extract_array, glob_match, Kind as ColumnKind, RawColumn};
pub use convert::Conversion;
pub use cursor::{epoch_permutation, BatchSource, DataCursor, EpochPlan, ShardBatch, TableSource};
pub use dataset::{load_dataset, train_source, Dataset, DatasetSource};
pub use error::DataError;
pub use ids::{IdPlan, IdSpec, ID_PAD};
pub use label::LabelPlan;
pub use load::{load, load_with, split_rows};
pub use preprocess::{ColumnPlan, Preprocessor, MISSING_CATEGORY};
pub use shard::{shard, shard_range, shard_scale};
pub use source::{FileRecords, RecordBatchSource, RowSource};
pub use spec::{Categorical, DataSpec, Format, Missing, MissingStrings, OnBadFile, Scaling, Task};
pub use stream::StreamSource;
pub use stream_spec::{OnSilent, Order, Source, StreamSpec, StreamSpecError};
pub use table::{Fitted, Split, Table};
