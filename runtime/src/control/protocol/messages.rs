//! The control messages, one type per direction: [`ToWorker`] (coordinator to a member, worker
//! or parameter-server node) and [`ToCoordinator`] (a member to the coordinator). On the wire
//! both are JSON objects named by their variant (`{"Grant": {...}}`, `"Finish"`), so the split
//! is a matter of types: a side cannot send what the other does not read. `Abort` goes both
//! ways and is in both.

use super::{CheckpointPlan, LinkBytes, ModelSignature, RoundPlan, RoundTiming};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What every control message can say about itself.
pub(crate) trait ControlMessage: Serialize + DeserializeOwned {
    /// The receiver of this message follows the sender's term when it is newer (a member
    /// taking its new coordinator's messages).
    const FOLLOWS: bool;
    /// Short name for logs and errors (the variant's).
    fn name(&self) -> &'static str;
    /// The reason of an `Abort`, else `None`.
    fn abort_reason(&self) -> Option<&str>;
    /// Why a frame of this message in coordinator term `theirs` is refused by a node in term
    /// `mine` (see [`super::term`]), or `None` when it is of the right term.
    fn fenced(&self, theirs: u64, mine: u64) -> Option<&'static str>;
}

/// Coordinator to member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Everyone registered: the peer table of the data mesh, in rank order.
    Start {
        /// `(node name, data address)` in rank order.
        peers: Vec<(String, String)>,
        /// Job id, random per run: names the data mesh (and so its shared-memory segments).
        job: u64,
        /// First round (non-zero when resuming).
        first_round: u64,
        /// Checkpoint directory every worker loads before the first round (`--resume`).
        resume: Option<String>,
    },
    /// Rounds granted to run, in order, continuing the previous grant.
    Grant {
        /// The plans of the granted rounds.
        rounds: Vec<RoundPlan>,
    },
    /// Write the model (and optimizer state) to `path` (rank 0).
    Save {
        /// After which round.
        round: u64,
        /// Destination safetensors file.
        path: String,
        /// Also write this checkpoint (the end of a stream).
        #[serde(default)]
        checkpoint: Option<CheckpointPlan>,
    },
    /// Training is over; report the final parameters' hash.
    Finish,
    /// Elastic: abandon the round in flight and stop; answer `Suspended`.
    Suspend {
        /// Why (a death, a join).
        reason: String,
    },
    /// Elastic: the new membership. Join the mesh, take parameters, optimizer state and data
    /// cursor from rank `source` (a broadcast over the data links), continue at `round`.
    Remesh {
        /// `(node name, data address)` in rank order.
        peers: Vec<(String, String)>,
        /// Fresh mesh id (names the mesh and its shared-memory segments).
        mesh: u64,
        /// The round to continue at.
        round: u64,
        /// The rank whose state everyone takes.
        source: usize,
        /// Models with embedding tables: everyone rolls back to this checkpoint directory
        /// (dense state and table parts) instead of taking `source`'s state; with
        /// `rollback` and no checkpoint, to the initial state (round 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
        /// Roll back (see `checkpoint`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rollback: bool,
    },
    /// Hang diagnosis: what is every thread of this node doing? Answer `Doing` at once.
    Probe,
    /// Stop: something failed.
    Abort {
        /// Why.
        reason: String,
    },
}

impl ControlMessage for ToWorker {
    const FOLLOWS: bool = true;

    fn name(&self) -> &'static str {
        match self {
            ToWorker::Start { .. } => "Start",
            ToWorker::Grant { .. } => "Grant",
            ToWorker::Save { .. } => "Save",
            ToWorker::Finish => "Finish",
            ToWorker::Suspend { .. } => "Suspend",
            ToWorker::Remesh { .. } => "Remesh",
            ToWorker::Probe => "Probe",
            ToWorker::Abort { .. } => "Abort",
        }
    }

    fn abort_reason(&self) -> Option<&str> {
        match self {
            ToWorker::Abort { reason } => Some(reason),
            _ => None,
        }
    }

    fn fenced(&self, theirs: u64, mine: u64) -> Option<&'static str> {
        (theirs < mine).then_some("a coordinator that was replaced; refused")
    }
}

/// What a worker that lost its coordinator tells the one taking over (in its `Register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rejoin {
    /// The next round it would run (its state is that of `next_round - 1` applied).
    pub next_round: u64,
    /// The coordinator term it served.
    pub term: u64,
    /// Milliseconds since it found the coordinator lost.
    pub lost_ms: f64,
    /// How it found out.
    pub reason: String,
}

/// Member to coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToCoordinator {
    /// A worker announces itself and its data-plane address.
    Register {
        /// Node name.
        node: String,
        /// Where its data-plane listener is.
        data_addr: String,
        /// Its model's parameter layout.
        signature: ModelSignature,
        /// Its ingest endpoint for producers (`source = "stream"`).
        #[serde(default)]
        ingest_addr: Option<String>,
        /// Milliseconds since its process started, when it sent this (a replacement's
        /// `join_ms` in the report starts there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uptime_ms: Option<f64>,
        /// A survivor of a dead coordinator registering with its successor: where it stands.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rejoin: Option<Rejoin>,
    },
    /// A worker finished a round.
    RoundDone {
        /// Round number.
        round: u64,
        /// Sum of per-row losses over this worker's shard.
        loss_sum: f64,
        /// Rows this worker processed.
        samples: u64,
        /// Timing split.
        timing: RoundTiming,
        /// Bytes exchanged with each data-mesh peer so far.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<LinkBytes>,
        /// Streams: `(prediction, label)` of every row of this worker's shard, scored before
        /// training on it (prequential evaluation).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scored: Vec<[f32; 2]>,
        /// Streams in arrival order: per producer of this worker, the offset of the next row
        /// after this round's rows (what a checkpoint after this round commits).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        offsets: BTreeMap<u32, u64>,
    },
    /// Timeline spans of sampled rounds (`--trace`), in the sender's clock; sent in batches,
    /// interleaved anywhere with the other messages a member sends.
    Trace {
        /// The sender's clock (microseconds since the Unix epoch) when it sent this, from which
        /// the coordinator estimates the clock offset.
        sent_us: u64,
        /// The spans.
        spans: Vec<crate::observe::trace::TraceSpan>,
    },
    /// Streams: what a worker's producers have delivered (sent when it changes).
    StreamProgress {
        /// Rounds below this one can be filled from this worker's producers.
        available: u64,
        /// Every producer of this worker ended its stream (bounded streams).
        closed: bool,
        /// New rows received.
        rows: u64,
        /// Rows dropped as already received or trained.
        duplicates: u64,
    },
    /// A worker's share of the evaluation after a round whose plan asked for it.
    Evaluated {
        /// The round.
        round: u64,
        /// The held-out chunks this worker evaluated.
        share: crate::job::held_out::EvalShare,
    },
    /// A checkpoint after a round whose plan asked for it was written (rank 0).
    Checkpointed {
        /// The round after which it was written.
        round: u64,
        /// The checkpoint directory.
        path: String,
        /// How long writing it took, in milliseconds.
        #[serde(default)]
        write_ms: f64,
    },
    /// The model was written.
    Saved {
        /// Where.
        path: String,
    },
    /// A worker's final state.
    Finished {
        /// SHA-256 of the final parameters.
        weights_sha256: String,
        /// L-BFGS's progress (workers with `kind = "lbfgs"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        solver: Option<crate::observe::report::SolverReport>,
    },
    /// Elastic: this worker's collective failed and names `node` as the peer at fault.
    PeerLost {
        /// The mesh id the failure happened in (stale reports are ignored).
        mesh: u64,
        /// The round in flight.
        round: u64,
        /// The peer named (empty when the mesh could not be built and nobody is named).
        node: String,
        /// The collective's error.
        reason: String,
    },
    /// Elastic: stopped; its state is that of round `next_round - 1` applied.
    Suspended {
        /// The next round this worker would run.
        next_round: u64,
        /// Its fresh data-plane listener for the next mesh.
        data_addr: String,
    },
    /// The answer to `Probe`: one line per thread, read from the activity board.
    Doing {
        /// Per thread: operation, round, sequence number, the peer it waits on, for how long.
        threads: Vec<crate::control::hang::ThreadDoing>,
    },
    /// Stop: something failed.
    Abort {
        /// Why.
        reason: String,
    },
}

impl ControlMessage for ToCoordinator {
    const FOLLOWS: bool = false;

    fn name(&self) -> &'static str {
        match self {
            ToCoordinator::Register { .. } => "Register",
            ToCoordinator::RoundDone { .. } => "RoundDone",
            ToCoordinator::Trace { .. } => "Trace",
            ToCoordinator::StreamProgress { .. } => "StreamProgress",
            ToCoordinator::Evaluated { .. } => "Evaluated",
            ToCoordinator::Checkpointed { .. } => "Checkpointed",
            ToCoordinator::Saved { .. } => "Saved",
            ToCoordinator::Finished { .. } => "Finished",
            ToCoordinator::PeerLost { .. } => "PeerLost",
            ToCoordinator::Suspended { .. } => "Suspended",
            ToCoordinator::Doing { .. } => "Doing",
            ToCoordinator::Abort { .. } => "Abort",
        }
    }

    fn abort_reason(&self) -> Option<&str> {
        match self {
            ToCoordinator::Abort { reason } => Some(reason),
            _ => None,
        }
    }

    fn fenced(&self, theirs: u64, mine: u64) -> Option<&'static str> {
        // A `Register` of a survivor carries the term it served: a takeover reads it.
        let register = matches!(self, ToCoordinator::Register { .. });
        (theirs > mine && !register)
            .then_some("a newer coordinator leads this job; this one was replaced and stands down")
    }
}
