//! The control protocol between the coordinator and each worker: small JSON messages in `Control`
//! frames (op [`Op::Control`]) over an authenticated link. Tensors never travel here; they go over
//! the data mesh.
//!
//! Conversation (coordinator `C`, worker `W`):
//! ```text
//! W -> C  Register { node, data_addr, signature, uptime_ms }
//! C -> W  Start { peers, job }                 (once every worker registered)
//! C -> W  Grant { rounds: [RoundPlan] }        (a window of rounds ahead; more as rounds end)
//! W -> C  RoundDone { round, loss_sum, .. }    (every member, every round, asynchronously)
//! W -> C  Evaluated { round, share }           (every worker, after a round whose plan evaluates)
//! W -> C  Checkpointed { round, path }         (rank 0, after a round whose plan checkpoints)
//! W -> C  Trace { sent_us, spans }             (with `--trace`, in batches, anywhere)
//! C -> W  Save { round, path }                 W -> C  Saved { path }             (rank 0 only)
//! C -> W  Finish                               W -> C  Finished { weights_sha256, solver }
//! either  Abort { reason }
//! ```
//!
//! Elastic membership (`[job.elastic]`, see `docs/elastic.md`) adds:
//! ```text
//! W -> C  PeerLost { mesh, round, node, reason }  (a collective failed naming a peer)
//! C -> W  Suspend { reason }                      (abandon the round in flight, stop)
//! W -> C  Suspended { next_round, data_addr }     (its newest applied round + 1, a fresh listener)
//! C -> W  Remesh { peers, mesh, round, source }   (join the new mesh, take state from `source`)
//! ```
//! A replacement registers like any worker and gets `Remesh` instead of `Start`.
//!
//! Hang diagnosis (a round made no progress within `cluster.progress_timeout_ms`):
//! ```text
//! C -> W  Probe                                   (what are you doing?)
//! W -> C  Doing { threads }                       (from the worker's activity board)
//! ```
//!
//! The coordinator is not on the per-round critical path: a [`RoundPlan`] carries everything a
//! round needs (learning rate, whether rank 0 evaluates or checkpoints after it), workers run
//! the granted rounds back to back, synchronised by the collectives themselves, and report
//! asynchronously. The coordinator keeps up to [`GRANT_WINDOW`] rounds granted ahead of the last
//! round every member reported, so it can still stop every node at a round boundary by not
//! granting more (and `Abort` stops them at once).

use crate::error::{ProtocolError, RuntimeError};
use lockstep_tensor::Buffer;
use lockstep_transport::{Expect, FrameHeader, Link, Op};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parameter layout of a model, compared across workers at registration, and the data the
/// node trains on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSignature {
    /// `(parameter name, shape)` in layout order.
    pub params: Vec<(String, Vec<usize>)>,
    /// The node's view of the data (absent from nodes that do not load it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataView>,
}

/// What a node's data looks like, compared at registration: nodes that see other rows (other
/// files on another host, a dataset that changed since the job started) or fit another transform
/// (other `[job.data]` settings) would train on different batches without noticing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataView {
    /// Logical rows of the data set (training and held out).
    pub rows: u64,
    /// SHA-256 of the fitted transform (feature and label plans), hex.
    pub transform: String,
}

impl std::fmt::Display for DataView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.transform.get(..12).unwrap_or(&self.transform);
        write!(f, "{} rows, transform {short}", self.rows)
    }
}

impl std::fmt::Display for ModelSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(n, s)| format!("{n}{s:?}"))
            .collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// Rounds the coordinator keeps granted ahead of the last round every member reported.
pub const GRANT_WINDOW: u64 = 8;

/// One granted round: everything a worker needs to run it without asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundPlan {
    /// Round number (0-based, global).
    pub round: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Learning rate of this round's step.
    pub lr: f32,
    /// Every worker evaluates its share of the held-out split after this round and reports
    /// `Evaluated` (see [`crate::job::held_out`]).
    pub evaluate: bool,
    /// Rank 0 writes this checkpoint after this round and reports `Checkpointed`.
    pub checkpoint: Option<CheckpointPlan>,
    /// Streams: rank 0 republishes the model here (atomically) after this round.
    #[serde(default)]
    pub publish: Option<String>,
}

/// A checkpoint to write after a round (it continues at the next round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPlan {
    /// Data cursor of the next round.
    pub cursor: lockstep_trainer::data::DataCursor,
    /// Checkpoint root directory.
    pub root: String,
    /// Checkpoints to keep.
    pub keep: usize,
    /// The job seed.
    pub seed: u64,
    /// Streams: per producer, the offset of the next row to train on (every row below it was
    /// trained on by the rounds before this checkpoint).
    #[serde(default)]
    pub stream_offsets: Option<BTreeMap<u32, u64>>,
    /// Where the checkpoint is uploaded after it is written locally (an object-store URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Per-round timing a worker reports, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundTiming {
    /// Forward/backward and the optimizer step.
    pub compute_ms: f64,
    /// Communication not hidden behind compute: from the end of backprop until the averaged
    /// result was ready.
    pub comm_ms: f64,
    /// All time spent in collectives, overlapped or not.
    pub collective_ms: f64,
    /// From receiving `BeginRound` to sending `RoundDone`.
    pub round_ms: f64,
}

/// Bytes a worker exchanged with one peer of the data mesh so far (cumulative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkBytes {
    /// The peer's node name.
    pub peer: String,
    /// Bytes sent to it (frame headers and payloads).
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
}

/// Control messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlMsg {
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
    },
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
    /// Training is over; report the final parameters' hash.
    Finish,
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
    /// Elastic: abandon the round in flight and stop; answer `Suspended`.
    Suspend {
        /// Why (a death, a join).
        reason: String,
    },
    /// Elastic: stopped; its state is that of round `next_round - 1` applied.
    Suspended {
        /// The next round this worker would run.
        next_round: u64,
        /// Its fresh data-plane listener for the next mesh.
        data_addr: String,
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
    },
    /// Hang diagnosis: what is every thread of this node doing? Answer `Doing` at once.
    Probe,
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

impl ControlMsg {
    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ControlMsg::Register { .. } => "Register",
            ControlMsg::Start { .. } => "Start",
            ControlMsg::Grant { .. } => "Grant",
            ControlMsg::RoundDone { .. } => "RoundDone",
            ControlMsg::Trace { .. } => "Trace",
            ControlMsg::StreamProgress { .. } => "StreamProgress",
            ControlMsg::Evaluated { .. } => "Evaluated",
            ControlMsg::Save { .. } => "Save",
            ControlMsg::Checkpointed { .. } => "Checkpointed",
            ControlMsg::Saved { .. } => "Saved",
            ControlMsg::Finish => "Finish",
            ControlMsg::Finished { .. } => "Finished",
            ControlMsg::PeerLost { .. } => "PeerLost",
            ControlMsg::Suspend { .. } => "Suspend",
            ControlMsg::Suspended { .. } => "Suspended",
            ControlMsg::Remesh { .. } => "Remesh",
            ControlMsg::Probe => "Probe",
            ControlMsg::Doing { .. } => "Doing",
            ControlMsg::Abort { .. } => "Abort",
        }
    }
}

/// Send one control message. `round` and `doing` name the moment in errors.
///
/// # Errors
/// [`RuntimeError::Peer`] naming the peer, the round and the operation.
pub fn send_msg(
    link: &mut impl Link,
    round: u64,
    doing: &'static str,
    msg: &ControlMsg,
) -> Result<(), RuntimeError> {
    let (header, payload) = encode(round, msg)?;
    let peer = link.peer_name().to_string();
    if let Err(source) = link.send(header, payload) {
        return Err(RuntimeError::peer(&peer, round, doing, source));
    }
    link.flush()
        .map_err(|source| RuntimeError::peer(&peer, round, doing, source))
}

/// One control message as a frame: header and JSON payload.
///
/// # Errors
/// [`ProtocolError::Encode`] when the message cannot be serialised.
pub fn encode(round: u64, msg: &ControlMsg) -> Result<(FrameHeader, Buffer), RuntimeError> {
    let bytes = serde_json::to_vec(msg).map_err(|source| ProtocolError::Encode {
        message: msg.name(),
        source,
    })?;
    let header = FrameHeader::data(Op::Control, round, 0, 0, 0, bytes.len() as u64);
    Ok((header, Buffer::from_external(bytes)))
}

/// Receive one control message. `round` and `doing` name the moment in errors. The wait is
/// bounded by the link's liveness: a dead or silent peer is an error within the peer timeout.
///
/// # Errors
/// [`RuntimeError::Peer`] (dead or silent peer), [`ProtocolError::Decode`] (bad JSON),
/// [`RuntimeError::Aborted`] when the peer sent `Abort`.
pub fn recv_msg(
    link: &mut impl Link,
    round: u64,
    doing: &'static str,
) -> Result<ControlMsg, RuntimeError> {
    let expect = Expect {
        op: Some(Op::Control),
        ..Default::default()
    };
    let peer = link.peer_name().to_string();
    let frame = link
        .recv(&expect)
        .map_err(|source| RuntimeError::peer(&peer, round, doing, source))?;
    decode(&peer, &frame.payload)
}

/// A control message from a frame's payload (an `Abort` is a message here).
pub(crate) fn parse(payload: &[u8]) -> Result<ControlMsg, serde_json::Error> {
    serde_json::from_slice(payload)
}

fn decode(peer: &str, payload: &[u8]) -> Result<ControlMsg, RuntimeError> {
    let peer = peer.to_string();
    let msg = parse(payload).map_err(|source| ProtocolError::Decode {
        node: peer.clone(),
        source,
    })?;
    if let ControlMsg::Abort { reason } = &msg {
        return Err(RuntimeError::Aborted {
            node: peer,
            reason: reason.clone(),
        });
    }
    Ok(msg)
}
