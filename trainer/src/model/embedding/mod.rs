//! Embedding models: id columns looked up in tables of learned rows, with sparse gradients.
//!
//! A model spec declares its tables (`[[job.model.embeddings]]`, see [`spec`]); the tables do not
//! live in the model's flat parameter vector but in [`TableShard`]s held by parameter-server
//! shards, and only the rows one batch touches ever reach the model. The round, seen from here:
//!
//! 1. [`SparseModel::batch_ids`]: per table, the sorted unique ids of the batch;
//! 2. the runtime pulls those rows and hands them over ([`SparseModel::install_rows`]);
//! 3. the ordinary [`Model::forward_backward_into`](crate::model::Model) computes the dense
//!    gradient (allreduced like any model's) and keeps the touched rows' gradients;
//! 4. [`SparseModel::take_grads`]: per table, those gradients (duplicates combined; with several
//!    forward/backward calls, micro-batches, summed in a binary tree over the call index),
//!    which the runtime pushes to the shards, where a sparse optimizer updates those rows only.
//!
//! Nothing in a step is proportional to a table's size.

mod arch;
mod build;
mod error;
mod ids;
mod model;
mod optim;
mod pool;
pub mod spec;
mod table;

pub use arch::Arch;
pub use build::build_embedding_model;
pub use error::EmbeddingError;
pub use ids::{Bags, IdColumn, ID_LIMIT};
pub use model::EmbeddingModel;
pub use optim::RowOptimizer;
pub use spec::{id_specs, EmbeddingSpec, Pooling, TableOptimizerKind, TableOptimizerSpec};
pub use table::{mix64, ShardRows, TableInfo, TableShard};

use crate::model::ModelError;
use lockstep_tensor::SparseRows;

/// The sparse side of a model with embedding tables; see the module docs.
pub trait SparseModel {
    /// The tables, in order.
    fn tables(&self) -> &[TableInfo];
    /// Per table, the sorted unique rows the `rows` rows of `x` look up.
    ///
    /// # Errors
    /// A value of an id column that is not an id, naming the column and row.
    fn batch_ids(&self, x: &[f32], rows: usize) -> Result<Vec<Vec<u64>>, ModelError>;
    /// The pulled rows (per table, the ids of [`SparseModel::batch_ids`] or a superset) that the
    /// next passes read.
    ///
    /// # Errors
    /// Rows that do not fit the tables (count, width, order).
    fn install_rows(&mut self, rows: Vec<SparseRows>) -> Result<(), ModelError>;
    /// Per table, the touched rows' gradients since the last call (see the module docs).
    fn take_grads(&mut self) -> Vec<SparseRows>;
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pooled;
