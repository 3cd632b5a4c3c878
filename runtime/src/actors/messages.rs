//! Typed messages between a worker's actors, one struct per message with its result declared.
//! Anything that carries tensors is sent with `send().await` or `try_send` (bounded mailboxes),
//! never `do_send`.

use crate::error::RuntimeError;
use actix::Message;
use lockstep_trainer::data::{DataCursor, ShardBatch};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// DataLoader: hand out this rank's share of the next global batch (prefetched if possible).
#[derive(Message)]
#[rtype(result = "Result<ShardBatch, RuntimeError>")]
pub struct NextShard {
    /// The round it is for (checked against the loader's cursor).
    pub round: u64,
}

/// DataLoader: prepare the next shard now, while compute runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Prefetch;

/// DataLoader: continue from a checkpoint's cursor.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct SeekData {
    /// Where to continue.
    pub cursor: DataCursor,
}

/// Compute: forward/backward on a shard; gradient buckets go to the aggregator as they are ready.
#[derive(Message)]
#[rtype(result = "Result<StepDone, RuntimeError>")]
pub struct Step {
    /// The round.
    pub round: u64,
    /// This rank's rows.
    pub shard: ShardBatch,
}

/// What a step reports.
#[derive(Debug, Clone, Copy)]
pub struct StepDone {
    /// Sum of per-row losses.
    pub loss_sum: f64,
    /// Rows.
    pub rows: usize,
    /// Time in forward/backward.
    pub compute: Duration,
}

/// Aggregator: one gradient bucket, ready to be averaged (while backprop computes the next).
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct GradBucket {
    /// The round.
    pub round: u64,
    /// Where the bucket sits in the flat gradient vector.
    pub range: Range<usize>,
    /// The bucket's values.
    pub data: Vec<f32>,
}

/// Aggregator: every bucket of the round has been sent; finish and hand back the result.
#[derive(Message)]
#[rtype(result = "Result<AggregateOutcome, RuntimeError>")]
pub struct FinishRound {
    /// The round.
    pub round: u64,
    /// Learning rate (a parameter server applies the step).
    pub lr: f32,
}

/// The outcome of a round's aggregation.
#[derive(Debug)]
pub enum Aggregated {
    /// Averaged gradients: every replica applies the optimizer step itself.
    MeanGradients(Vec<f32>),
    /// New parameters pulled from the parameter server(s).
    Parameters(Vec<f32>),
}

/// Aggregation result with the time spent in collectives.
#[derive(Debug)]
pub struct AggregateOutcome {
    /// The result.
    pub value: Aggregated,
    /// Time in collectives during this round (overlapped with compute where possible).
    pub comm: Duration,
}

/// Aggregator: start-of-training parameter sync (broadcast from rank 0).
#[derive(Message)]
#[rtype(result = "Result<Vec<f32>, RuntimeError>")]
pub struct SyncParams {
    /// This rank's initial parameters.
    pub params: Vec<f32>,
}

/// Compute: apply a round's aggregation result.
#[derive(Message)]
#[rtype(result = "Result<Duration, RuntimeError>")]
pub struct ApplyUpdate {
    /// The round.
    pub round: u64,
    /// Learning rate for the step.
    pub lr: f32,
    /// Gradients to step with, or parameters to take.
    pub update: Aggregated,
}

/// Compute: replace the parameters (initial sync, checkpoint restore).
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct SetParams {
    /// New parameters.
    pub params: Vec<f32>,
}

/// Compute: the current parameters.
#[derive(Message)]
#[rtype(result = "Result<Vec<f32>, RuntimeError>")]
pub struct GetParams;

/// Compute: evaluate on the held-out split.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, f64>, RuntimeError>")]
pub struct Evaluate;

/// Compute: write the model as safetensors.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct SaveModel {
    /// Destination.
    pub path: String,
    /// Round, stored in the metadata.
    pub round: u64,
}

/// Compute: SHA-256 of the parameters.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct ParamsHash;

/// Compute: write a checkpoint (parameters, optimizer state, cursor) to continue at `round`.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct WriteCheckpoint {
    /// The next round to run.
    pub round: u64,
    /// Its data cursor.
    pub cursor: DataCursor,
    /// Checkpoint root.
    pub root: String,
    /// Checkpoints to keep.
    pub keep: usize,
    /// The job seed.
    pub seed: u64,
}
