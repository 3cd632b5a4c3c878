//! [`TrainingError`]: building the model or the optimizer, or a training step, failed. Each case
//! names the manifest key or the round and step, and keeps the trainer's own error as its
//! source; rendered after `model: `.

use super::at;
use lockstep_trainer::model::ModelError;
use lockstep_trainer::optim::OptimError;

/// `{op}: ` when there is an operation.
fn fmt_op(op: &Option<&'static str>) -> String {
    op.map(|o| format!("{o}: ")).unwrap_or_default()
}

/// A model or optimizer failure, naming the key or the round and step.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// The model failed: building it (`op` is the manifest key), or a step of round `round`
    /// (`op` the step: `scoring`, `update`; none for forward/backward).
    #[error("{}{}{source}", at(round), fmt_op(op))]
    Model {
        /// The round, for a training step.
        round: Option<u64>,
        /// The key (`job.model`) or the step.
        op: Option<&'static str>,
        /// The model's error.
        #[source]
        source: ModelError,
    },
    /// The optimizer failed: building it (`op` is `job.optimizer`) or its step of a round.
    #[error("{}{op}: {source}", at(round))]
    Optimizer {
        /// The round, for a step.
        round: Option<u64>,
        /// The key (`job.optimizer`) or the step (`optimizer`, `parameter server optimizer`).
        op: &'static str,
        /// The optimizer's error.
        #[source]
        source: OptimError,
    },
    /// Optimizer state from a checkpoint that does not fit the optimizer.
    #[error("checkpoint {checkpoint}: optimizer state: {source}")]
    CheckpointState {
        /// The checkpoint directory.
        checkpoint: String,
        /// The optimizer's error.
        #[source]
        source: OptimError,
    },
    /// Optimizer state sent by another rank (elastic) that does not fit.
    #[error("optimizer state from rank {rank}: {source}")]
    RankState {
        /// The rank that sent it.
        rank: usize,
        /// The optimizer's error.
        #[source]
        source: OptimError,
    },
    /// Predicting the rows of a file failed.
    #[error("predict {file}: {source}")]
    Predict {
        /// The file.
        file: String,
        /// The model's error.
        #[source]
        source: ModelError,
    },
    /// `[job.model] class_weight` does not fit the task or the classes.
    #[error("job.model.class_weight: {reason}")]
    ClassWeight {
        /// What is wrong (the class or weight named).
        reason: String,
    },
    /// An epoch of the training split has no global batch.
    #[error("job.global_batch = {global_batch} but the training split has {train_rows} rows")]
    NoBatch {
        /// Rows per global batch.
        global_batch: usize,
        /// Rows in the training split.
        train_rows: usize,
    },
    /// A batch that does not split into the micro-batches.
    #[error("round {round}: {rows} rows do not split into {micro_batches} micro-batches")]
    MicroBatches {
        /// The round.
        round: u64,
        /// Rows of this worker's batch.
        rows: usize,
        /// Micro-batches per worker.
        micro_batches: usize,
    },
    /// Backprop finished without handing over every gradient bucket.
    #[error("round {round}: backprop did not deliver every gradient bucket")]
    MissingBuckets {
        /// The round.
        round: u64,
    },
    /// The data source has no batch for a round.
    #[error("data source {data} is exhausted at round {round}")]
    Exhausted {
        /// The source's name.
        data: String,
        /// The round.
        round: u64,
    },
    /// The training loss of a round is NaN or infinite.
    #[error("round {round}: training loss is {loss}")]
    NonFiniteLoss {
        /// The round.
        round: u64,
        /// The loss.
        loss: f64,
    },
    /// `LOCKSTEP_FAULT` (tests) failed a forward/backward pass on purpose.
    #[error("round {round}: LOCKSTEP_FAULT failed forward_backward")]
    InjectedFault {
        /// The round.
        round: u64,
    },
    /// Embedding tables with `[job.elastic]`.
    #[error(
        "job.elastic: embedding tables do not move between workers yet; train them without \
         elastic membership"
    )]
    TablesNotElastic,
    /// Embedding tables in a run that starts after round 0 without a checkpoint to take the
    /// rows from.
    #[error(
        "round {round}: a run with embedding tables starts after round 0 only from a checkpoint \
         that holds the tables' rows"
    )]
    TablesNotResumable {
        /// The round the run would resume at.
        round: u64,
    },
    /// A checkpoint of a run with embedding tables lacks some of the shards' parts.
    #[error(
        "checkpoint {checkpoint}: embedding table parts missing: {missing} (each shard writes \
         tables-K-of-N.safetensors after the checkpoint round; a crash before every shard wrote \
         its part leaves the checkpoint without them: resume from an older one)"
    )]
    TablePartsMissing {
        /// The checkpoint directory.
        checkpoint: String,
        /// The missing files, or why none were found.
        missing: String,
    },
    /// A table part that does not fit the model (another manifest, another optimizer).
    #[error("{file}: {problem}")]
    TablePart {
        /// The part file.
        file: String,
        /// What does not fit.
        problem: String,
    },
    /// Embedding tables with checkpoints on object storage.
    #[error(
        "job.checkpoint.dir: embedding tables are checkpointed by every shard into the checkpoint \
         directory, which must be a shared filesystem path, not {dir} (object storage is not \
         supported for tables yet)"
    )]
    TablesRemoteCheckpoint {
        /// The configured directory.
        dir: String,
    },
    /// Embedding tables under a parameter server without server nodes.
    #[error(
        "job.aggregation: with \"parameter-server\", embedding tables are served by nodes with \
         roles = [\"server\"]; the coordinator does not serve tables"
    )]
    TablesNeedServers,
    /// An embedding table with fewer rows than shards.
    #[error(
        "job.model.embeddings[{index}].buckets: table {column:?} has {rows} rows but {shards} \
         shards; use at least as many buckets as shards"
    )]
    TooFewBuckets {
        /// The table's index in `job.model.embeddings`.
        index: usize,
        /// Its id column.
        column: String,
        /// Its rows.
        rows: u64,
        /// The shards.
        shards: usize,
    },
}

impl TrainingError {
    /// For `map_err`: the model failed in round `round`, at step `op` (`None`: forward/backward).
    pub fn step(round: u64, op: Option<&'static str>) -> impl Fn(ModelError) -> Self + Copy {
        move |source| TrainingError::Model {
            round: Some(round),
            op,
            source,
        }
    }

    /// For `map_err`: building the model failed at manifest key `key` (`job.model`, ...).
    pub fn key(key: &'static str) -> impl Fn(ModelError) -> Self + Copy {
        move |source| TrainingError::Model {
            round: None,
            op: Some(key),
            source,
        }
    }

    /// For `map_err`: the optimizer failed, at `op` (`job.optimizer` when building it), in
    /// `round` when there is one.
    pub fn optimizer(round: Option<u64>, op: &'static str) -> impl Fn(OptimError) -> Self + Copy {
        move |source| TrainingError::Optimizer { round, op, source }
    }
}
