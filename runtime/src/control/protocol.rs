//! The control protocol between the coordinator and each worker: small JSON messages in `Control`
//! frames (op [`Op::Control`]) over an authenticated link. Tensors never travel here; they go over
//! the data mesh. Each direction has its own type: [`ToWorker`] (coordinator to a member) and
//! [`ToCoordinator`] (a member to the coordinator); `Abort` is in both.
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
//! A replacement registers like any worker and gets `Remesh` instead of `Start`. A worker whose
//! coordinator died registers again with the one taking over, with `Register { rejoin: {
//! next_round, term, lost_ms, reason } }`, and gets `Remesh` (see `control/takeover.rs`). Every
//! frame carries the coordinator's term in its header's `job` field ([`term`]): a member refuses
//! an older coordinator, a coordinator stands down before a member of a newer term.
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

mod messages;
pub(crate) mod term;

pub(crate) use messages::{ControlMessage, Rejoin, ToCoordinator, ToWorker};

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
pub(crate) const GRANT_WINDOW: u64 = 8;

/// One granted round: everything a worker needs to run it without asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RoundPlan {
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
pub(crate) struct CheckpointPlan {
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
pub(crate) struct RoundTiming {
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
pub(crate) struct LinkBytes {
    /// The peer's node name.
    pub peer: String,
    /// Bytes sent to it (frame headers and payloads).
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
}

/// Send one control message. `round` and `doing` name the moment in errors.
///
/// # Errors
/// [`RuntimeError::Peer`] naming the peer, the round and the operation.
pub(crate) fn send_msg(
    link: &mut impl Link,
    round: u64,
    doing: &'static str,
    msg: &impl ControlMessage,
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
pub(crate) fn encode(
    round: u64,
    msg: &impl ControlMessage,
) -> Result<(FrameHeader, Buffer), RuntimeError> {
    let bytes = serde_json::to_vec(msg).map_err(|source| ProtocolError::Encode {
        message: msg.name(),
        source,
    })?;
    let mut header = FrameHeader::data(Op::Control, round, 0, 0, 0, bytes.len() as u64);
    header.job = term::current();
    Ok((header, Buffer::from_external(bytes)))
}

/// Receive one control message. `round` and `doing` name the moment in errors. The wait is
/// bounded by the link's liveness: a dead or silent peer is an error within the peer timeout.
///
/// # Errors
/// [`RuntimeError::Peer`] (dead or silent peer), [`ProtocolError::Decode`] (bad JSON),
/// [`RuntimeError::Aborted`] when the peer sent `Abort`.
pub(crate) fn recv_msg<M: ControlMessage>(
    link: &mut impl Link,
    round: u64,
    doing: &'static str,
) -> Result<M, RuntimeError> {
    let expect = Expect {
        op: Some(Op::Control),
        ..Default::default()
    };
    let peer = link.peer_name().to_string();
    let frame = link
        .recv(&expect)
        .map_err(|source| RuntimeError::peer(&peer, round, doing, source))?;
    decode(&peer, frame.header.job, &frame.payload)
}

/// A control message from a frame's payload (an `Abort` is a message here).
pub(crate) fn parse<M: ControlMessage>(payload: &[u8]) -> Result<M, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The message in `payload`, sent by `peer` in coordinator term `theirs`: fenced (see
/// [`term`]), an `Abort` as the error it carries. A member follows a newer term it sees.
pub(crate) fn decode<M: ControlMessage>(
    peer: &str,
    theirs: u64,
    payload: &[u8],
) -> Result<M, RuntimeError> {
    let msg: M = parse(payload).map_err(|source| ProtocolError::Decode {
        node: peer.to_string(),
        source,
    })?;
    let mine = term::current();
    if let Some(why) = msg.fenced(theirs, mine) {
        return Err(ProtocolError::Fenced {
            node: peer.to_string(),
            message: msg.name(),
            theirs,
            mine,
            why,
        }
        .into());
    }
    if M::FOLLOWS {
        term::follow(theirs);
    }
    if let Some(reason) = msg.abort_reason() {
        return Err(RuntimeError::Aborted {
            node: peer.to_string(),
            reason: reason.to_string(),
        });
    }
    Ok(msg)
}
