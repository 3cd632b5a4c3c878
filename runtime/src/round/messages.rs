//! Typed messages between a worker's actors, one struct per message with its result declared.
//! Anything that carries tensors is sent with `try_send` (bounded mailboxes, see
//! [`deliver`](super::deliver)), never `do_send`.
//!
//! A round's data path: `Compute` asks the `DataLoader` for a round's shard one round ahead
//! ([`Prefetch`] -> [`ShardReady`]); during backprop each finished gradient bucket, an owned
//! piece of the round's one gradient buffer, goes to the `Aggregator` ([`GradBucket`]), which
//! reduces it in place; after the last bucket it joins the pieces again and hands the whole
//! buffer back ([`Reduced`]). Nothing gradient-sized is copied on the way.

use crate::control::protocol::RoundPlan;
use crate::error::RuntimeError;
use actix::{Message, Recipient};
use lockstep_tensor::BufferMut;
use lockstep_trainer::data::{DataCursor, ShardBatch};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Compute: rounds the coordinator granted (in order, continuing earlier grants).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Grant {
    /// The plans.
    pub rounds: Vec<RoundPlan>,
}

/// DataLoader: produce this rank's shard of `round` and send it to `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Prefetch {
    /// The round (checked against the loader's cursor).
    pub round: u64,
    /// Where the shard goes.
    pub to: Recipient<ShardReady>,
}

/// Compute: the shard of a round (or why there is none).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShardReady {
    /// The round.
    pub round: u64,
    /// This rank's rows, or the data source's error.
    pub shard: Result<ShardBatch, RuntimeError>,
}

/// DataLoader: continue from a checkpoint's cursor.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct SeekData {
    /// Where to continue.
    pub cursor: DataCursor,
}

/// Aggregator: one finished gradient bucket, an owned piece of the round's gradient buffer
/// (little-endian f32), reduced while backprop computes the next.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct GradBucket {
    /// The round.
    pub round: u64,
    /// Where the bucket sits in the flat gradient vector.
    pub range: Range<usize>,
    /// The bucket's values.
    pub data: BufferMut,
    /// With the round's last bucket: where the reduced, re-joined buffer goes.
    pub last: Option<Recipient<Reduced>>,
    /// With the last bucket of a parameter-server round that checkpoints: gather the servers'
    /// optimizer state after the step (see [`crate::ps::state`]).
    pub gather_state: bool,
}

/// Compute: the round's gradient buffer after aggregation.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reduced {
    /// The round.
    pub round: u64,
    /// The whole gradient buffer: averaged gradients (allreduce), or the pushed gradients
    /// (parameter server; to be reused next round).
    pub grads: BufferMut,
    /// Parameter server: the parameters pulled from the servers (shared with the aggregator,
    /// which reuses the vector next round once this handle is dropped).
    pub params: Option<Arc<Vec<f32>>>,
    /// Time in collectives during this round (overlapped with backprop where possible).
    pub comm: Duration,
    /// Parameter server, at the first worker of a round that checkpoints: the servers' whole
    /// optimizer state after the round.
    pub optimizer: Option<lockstep_trainer::optim::OptimizerState>,
}

/// Aggregator: start-of-training parameter sync (broadcast from rank 0).
#[derive(Message)]
#[rtype(result = "Result<Vec<f32>, RuntimeError>")]
pub(crate) struct SyncParams {
    /// This rank's initial parameters.
    pub params: Vec<f32>,
}

/// Compute: replace the parameters (initial sync, checkpoint restore).
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct SetParams {
    /// New parameters.
    pub params: Vec<f32>,
}

/// Compute: the current parameters.
#[derive(Message)]
#[rtype(result = "Result<Vec<f32>, RuntimeError>")]
pub(crate) struct GetParams;

/// Compute: evaluate on the held-out split.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, f64>, RuntimeError>")]
pub(crate) struct Evaluate;

/// Compute: write the model as safetensors (and, at the end of a stream, a checkpoint).
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub(crate) struct SaveModel {
    /// Destination.
    pub path: String,
    /// Round, stored in the metadata.
    pub round: u64,
    /// Also write this checkpoint (continuing after `round`).
    pub checkpoint: Option<crate::control::protocol::CheckpointPlan>,
}

/// Compute: SHA-256 of the parameters, and L-BFGS's progress where it runs.
#[derive(Message)]
#[rtype(result = "Result<(String, Option<crate::observe::report::SolverReport>), RuntimeError>")]
pub(crate) struct ParamsHash;

/// A replica's state at a round boundary: what a survivor hands to the next mesh.
#[derive(Debug, Clone)]
pub(crate) struct WorkerState {
    /// Parameters after round `next_round - 1`.
    pub params: Vec<f32>,
    /// Optimizer state after that round.
    pub optimizer: lockstep_trainer::optim::OptimizerState,
    /// The next round to run.
    pub next_round: u64,
}

/// Compute: stop for good (the round in flight is abandoned, a later result ignored) and hand
/// over the state of the newest applied round.
#[derive(Message)]
#[rtype(result = "Result<WorkerState, RuntimeError>")]
pub(crate) struct ExportState;
