//! [`MismatchError`]: two nodes disagree (model shapes, data, final weights, a checkpoint and
//! the data it is resumed with), or a worker's own bookkeeping broke (gradient buckets,
//! parameter counts, rounds out of step). Each case names the nodes or the round and both
//! values.

use super::at;
use crate::control::protocol::{DataView, ModelSignature};
use std::ops::Range;

/// Two sides that should agree and do not, with both values.
#[derive(Debug, thiserror::Error)]
pub enum MismatchError {
    /// A member registered with a model of other shapes than the coordinator's.
    #[error("model shapes differ: {node_a} has [{shapes_a}], {node_b} has [{shapes_b}]")]
    ModelShapes {
        /// The coordinator.
        node_a: String,
        /// Its model.
        shapes_a: Box<ModelSignature>,
        /// The member.
        node_b: String,
        /// Its model.
        shapes_b: Box<ModelSignature>,
    },
    /// A model's stored embedding tables do not fit the model the manifest builds.
    #[error("{path}: table {column:?} {problem} (was the model trained with this manifest?)")]
    StoredTable {
        /// The tables file.
        path: String,
        /// The table (its id column).
        column: String,
        /// What is wrong: missing, or its shape.
        problem: String,
    },
    /// A member loaded other data (rows or transform) than the coordinator.
    #[error(
        "data differs: {node_a} has {data_a}, {node_b} has {data_b} (the files differ between \
         their hosts, the dataset changed since the job started, or their [job.data] settings \
         differ)"
    )]
    Data {
        /// The coordinator.
        node_a: String,
        /// Its view of the data.
        data_a: DataView,
        /// The member.
        node_b: String,
        /// Its view.
        data_b: DataView,
    },
    /// Workers that finished with different weights.
    #[error("replicas diverged: {node_a} has weights {hash_a}, {node_b} has {hash_b}")]
    Diverged {
        /// The first worker.
        node_a: String,
        /// Its weights' hash.
        hash_a: String,
        /// A worker that differs.
        node_b: String,
        /// Its hash.
        hash_b: String,
    },
    /// A checkpoint's stored transform differs from the one this node fitted.
    #[error(
        "checkpoint {checkpoint} stores a data transform that differs from the one node {node} \
         fitted (did the data change? start every node with --resume so each takes the stored \
         transform)"
    )]
    Transform {
        /// The checkpoint directory.
        checkpoint: String,
        /// This node.
        node: String,
    },
    /// A checkpoint's tensor with another shape than the model's.
    #[error("{file}: tensor {tensor} has shape {shape}, the model has {model:?}")]
    TensorShape {
        /// The checkpoint's state file.
        file: String,
        /// The tensor.
        tensor: String,
        /// Its shape in the file.
        shape: String,
        /// The model's shape.
        model: Vec<usize>,
    },
    /// A parameter vector of the wrong length (`verb`: `got`, `pulled`).
    #[error("{}{verb} {got} parameters, model has {model}", at(round))]
    Params {
        /// The round, where there is one.
        round: Option<u64>,
        /// How they came (`got`, `pulled`).
        verb: &'static str,
        /// Their count.
        got: usize,
        /// The model's count.
        model: usize,
    },
    /// Optimizer state that does not fit this worker's optimizer.
    #[error("{}{what}: {source}", at(round))]
    OptimizerState {
        /// The round, where there is one.
        round: Option<u64>,
        /// Whose state (`optimizer state`, `parameter servers' optimizer state`).
        what: &'static str,
        /// The optimizer's error.
        #[source]
        source: lockstep_trainer::optim::OptimError,
    },
    /// A buffer that cannot be read as the gradients of a round.
    #[error("round {round}: {}{source}", what.map(|w| format!("{w}: ")).unwrap_or_default())]
    Gradients {
        /// The round.
        round: u64,
        /// Which buffer (`bucket`), if not the whole gradient.
        what: Option<&'static str>,
        /// The tensor's error.
        #[source]
        source: lockstep_tensor::Error,
    },
    /// The model finished one bucket but wrote another.
    #[error("round {round}: the model finished bucket {finished:?} but wrote {wrote:?}")]
    BucketWritten {
        /// The round.
        round: u64,
        /// The bucket the model finished.
        finished: Range<usize>,
        /// The one it wrote.
        wrote: Range<usize>,
    },
    /// Gradient buckets that do not follow each other.
    #[error("round {round}: gradient buckets are not consecutive")]
    BucketsApart {
        /// The round.
        round: u64,
    },
    /// Gradient buckets that are not consecutive pieces of one buffer.
    #[error("round {round}: gradient buckets are not consecutive pieces of one buffer")]
    BucketsNotPieces {
        /// The round.
        round: u64,
    },
    /// A bucket whose bytes do not fit its range of the gradients.
    #[error("round {round}: bucket {range:?} of {bytes} bytes does not fit {params} gradients")]
    BucketMisfit {
        /// The round.
        round: u64,
        /// Its range.
        range: Range<usize>,
        /// Its length in bytes.
        bytes: usize,
        /// The parameter count.
        params: usize,
    },
    /// A round without gradient buckets.
    #[error("round {round}: no gradient bucket")]
    NoBucket {
        /// The round.
        round: u64,
    },
    /// Buckets that do not cover every gradient.
    #[error("round {round}: buckets cover {covered} of {params} gradients")]
    BucketCoverage {
        /// The round.
        round: u64,
        /// Gradients covered.
        covered: usize,
        /// The parameter count.
        params: usize,
    },
    /// A model with embedding tables on a worker without a table exchange (or the reverse).
    #[error("round {round}: the model has embedding tables but the worker has no table exchange")]
    NoTableExchange {
        /// The round.
        round: u64,
    },
    /// A table exchange asked of an aggregator without tables.
    #[error("a table exchange without tables")]
    NoTables,
    /// An aggregation result while no round runs.
    #[error("round {round}: result without a round")]
    NoRound {
        /// The result's round.
        round: u64,
    },
    /// The aggregation result of another round.
    #[error("round {round}: got the aggregation result of round {got}")]
    OtherRound {
        /// The running round.
        round: u64,
        /// The result's round.
        got: u64,
    },
    /// The data loader asked for a round out of step.
    #[error("data loader is at round {at} but round {asked} was asked for")]
    LoaderRound {
        /// The loader's round.
        at: u64,
        /// The round asked for.
        asked: u64,
    },
}
