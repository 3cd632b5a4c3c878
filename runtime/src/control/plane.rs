//! `ControlPlane`: the coordinator's side of every control link, on a `SyncArbiter` thread. It
//! sends grants ([`GrantRounds`]) and collects each round's reports ([`Collect`]): one
//! `RoundDone` from every member, every worker's `Evaluated` share when the plan evaluates, and
//! the first worker's `Checkpointed`. Every member's link has a reader thread feeding one channel
//! (`plane/inbox.rs`), so the plane waits on all members at once, with no polling: a member's
//! `Abort` ends any wait the moment it arrives. Each member's messages stay in the order it sent
//! them, so collecting round after round needs no bookkeeping. A dead or silent member becomes
//! an error naming it, the round and what the coordinator was waiting for.
//!
//! With elastic membership a dead member (its control link fails) or a `PeerLost` report ends
//! the collection early with [`Collected::lost`]; [`ChangeMembership`] then suspends the
//! survivors, admits waiting replacements and hands out the next mesh (see `docs/elastic.md`).

use crate::control::protocol::{
    send_msg, CheckpointPlan, ControlMessage, LinkBytes, RoundPlan, RoundTiming, ToCoordinator,
    ToWorker,
};
use crate::control::registration::Registration;
use crate::error::{ProtocolError, RuntimeError};
use crate::observe::trace::TraceCollector;
use actix::{Actor, Handler, Message, SyncContext};
use inbox::{Attached, Inbox};
use lockstep_transport::AnyLink;
use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod finish;
mod hang;
mod inbox;
mod membership;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use finish::{RunFinish, RunSave};
pub(crate) use membership::{rollback_point, ChangeMembership, Changed};
pub(crate) use stream::{AwaitStream, StreamView};

/// One member of the cluster, as handed to [`ControlPlane::new`]: its node name and its control
/// link (TCP; the plane reads it on a thread of its own and sends through its sending handle).
pub(crate) struct Member {
    /// Node name.
    pub name: String,
    /// Its control link.
    pub link: AnyLink,
}

impl Member {
    /// A member `name` on `link`.
    pub(crate) fn new(name: String, link: AnyLink) -> Self {
        Member { name, link }
    }
}

/// Elastic membership as the control plane keeps it.
pub(crate) struct Elastic {
    /// Fewest workers to continue with.
    pub min_workers: usize,
    /// Most workers at once.
    pub max_workers: usize,
    /// Replacements that registered (authenticated, same model layout), with when.
    pub joiners: Receiver<(Registration, Instant)>,
    /// The current mesh id.
    pub mesh: u64,
    /// How long a replacement named like a live member waits for that member to be found dead
    /// (a restarted process can register before its predecessor's death is detected) before it
    /// is refused as a duplicate: the peer timeout.
    pub duplicate_grace: Duration,
    /// Models with embedding tables: the checkpoint root a membership change rolls back to
    /// (a dead worker's table rows exist nowhere else); `None`: continue from the newest survivor.
    pub rollback: Option<std::path::PathBuf>,
}

/// The control-plane actor.
pub(crate) struct ControlPlane {
    members: Vec<Attached>,
    inbox: Inbox,
    workers: usize,
    elastic: Option<Elastic>,
    pending: Vec<(Registration, Instant)>,
    dead: Vec<String>,
    traces: Option<TraceCollector>,
    /// Per worker: rounds available, ended, rows, duplicates (streams).
    stream: Vec<(u64, bool, u64, u64)>,
    /// While collecting a round: when it is declared stuck (progress timeout).
    deadline: Option<Instant>,
    /// While collecting a round: the first member whose report has not arrived yet.
    collecting: usize,
}

impl ControlPlane {
    /// Members in rank order, workers first (the first `workers` members).
    pub(crate) fn new(members: Vec<Member>, workers: usize) -> Self {
        let mut inbox = Inbox::new();
        let members = members.into_iter().map(|m| inbox.attach(m)).collect();
        ControlPlane {
            members,
            inbox,
            workers,
            elastic: None,
            pending: Vec::new(),
            dead: Vec::new(),
            traces: None,
            stream: vec![(0, false, 0, 0); workers],
            deadline: None,
            collecting: 0,
        }
    }

    /// Keep the members' timeline spans (`ToCoordinator::Trace`) in `traces`.
    pub(crate) fn with_traces(mut self, traces: Option<TraceCollector>) -> Self {
        self.traces = traces;
        self
    }

    /// With elastic membership.
    pub(crate) fn with_elastic(mut self, elastic: Elastic) -> Self {
        self.elastic = Some(elastic);
        self
    }

    /// The next message from member `i`, bounded by the collection's deadline if one is set;
    /// an `Abort` any other member sends meanwhile is returned as its error.
    pub(super) fn recv_watching(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<ToCoordinator, RuntimeError> {
        self.next_of(i, round, doing, self.deadline, true)
    }

    fn broadcast(
        &mut self,
        round: u64,
        msg: &ToWorker,
        doing: &'static str,
    ) -> Result<(), RuntimeError> {
        for m in &self.members {
            match m.send(round, doing, msg) {
                // Elastic: a member whose link failed is found lost by the next collection
                // (its reader reports the failure); the others still get the message.
                Err(e @ RuntimeError::Peer { .. }) if self.elastic.is_some() => {
                    tracing::warn!(node = %m.name, error = %e, "not sent; the member is lost");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// The next message from member `i`, which must be about `round`.
    fn expect(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<ToCoordinator, RuntimeError> {
        let msg = self.recv_watching(i, round, doing)?;
        in_turn(&self.members[i].name, msg, round, doing)
    }
}

/// `msg` from `node` if it reports on `round` (`RoundDone`, `Evaluated`, `Checkpointed`), else
/// the protocol error naming both.
fn in_turn(
    node: &str,
    msg: ToCoordinator,
    round: u64,
    doing: &'static str,
) -> Result<ToCoordinator, RuntimeError> {
    let about = match &msg {
        ToCoordinator::RoundDone { round, .. }
        | ToCoordinator::Evaluated { round, .. }
        | ToCoordinator::Checkpointed { round, .. } => Some(*round),
        _ => None,
    };
    if about != Some(round) {
        return Err(ProtocolError::OutOfTurn {
            node: node.to_string(),
            got: msg.name(),
            about,
            doing,
            round,
        }
        .into());
    }
    Ok(msg)
}

impl Actor for ControlPlane {
    type Context = SyncContext<Self>;
}

/// Grant rounds to every member.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct GrantRounds {
    /// The plans, in round order, continuing the previous grant.
    pub rounds: Vec<RoundPlan>,
}

impl Handler<GrantRounds> for ControlPlane {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: GrantRounds, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.rounds.first().map_or(0, |p| p.round);
        let grant = ToWorker::Grant { rounds: msg.rounds };
        self.broadcast(round, &grant, "granting rounds")
    }
}

/// Collect every member's report of one round.
#[derive(Message)]
#[rtype(result = "Result<Collected, RuntimeError>")]
pub(crate) struct Collect {
    /// The round.
    pub round: u64,
    /// Its plan asked every worker to evaluate its share of the held-out split.
    pub evaluate: bool,
    /// Its plan asked the first worker to checkpoint.
    pub checkpoint: bool,
    /// The progress timeout: a round whose reports are not all in by then is stuck (the hang
    /// diagnosis runs, see [`crate::control::hang`]).
    pub timeout: Duration,
}

/// One worker's `RoundDone`.
#[derive(Debug, Clone)]
pub(crate) struct RoundReport {
    /// Worker name.
    pub node: String,
    /// Sum of per-row losses.
    pub loss_sum: f64,
    /// Rows.
    pub samples: u64,
    /// Timing split.
    pub timing: RoundTiming,
    /// Bytes exchanged with each data-mesh peer so far.
    pub links: Vec<LinkBytes>,
    /// Streams: prequential `(prediction, label)` pairs.
    pub scored: Vec<[f32; 2]>,
    /// Streams in arrival order: this worker's producers' offsets after the round.
    pub offsets: BTreeMap<u32, u64>,
}

/// A round's reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Collected {
    /// Every worker's `RoundDone` (servers answer too, so their failures surface, but only
    /// workers train).
    pub reports: Vec<RoundReport>,
    /// The evaluation, when the plan asked for one.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// The checkpoint directory, when the plan asked for one.
    pub checkpoint: Option<String>,
    /// How long writing that checkpoint took, in milliseconds.
    pub checkpoint_ms: Option<f64>,
    /// Elastic: the round was lost (a member died or reported a lost peer).
    pub lost: Option<Lost>,
    /// Elastic: a replacement is waiting and the world is below `max_workers`.
    pub joiner_waiting: bool,
}

/// Why an elastic round was lost.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lost {
    /// Members found or named dead.
    pub dead: Vec<String>,
    /// The failure as seen.
    pub reason: String,
}

impl Handler<Collect> for ControlPlane {
    type Result = Result<Collected, RuntimeError>;
    fn handle(&mut self, msg: Collect, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        self.deadline = Some(started + msg.timeout);
        self.collecting = 0;
        let res = self.collect(&msg);
        self.deadline = None;
        match res {
            Err(RuntimeError::Timeout { .. }) => self.stuck(msg.round, started.elapsed()),
            other => other,
        }
    }
}

impl ControlPlane {
    fn collect(&mut self, msg: &Collect) -> Result<Collected, RuntimeError> {
        let round = msg.round;
        let mut out = Collected::default();
        let mut shares = Vec::new();
        for i in 0..self.members.len() {
            self.collecting = i;
            let got = match self.next(i, round, "waiting for RoundDone")? {
                Ok(m) => m,
                Err(lost) => {
                    out.lost = Some(lost);
                    return Ok(out);
                }
            };
            if let ToCoordinator::RoundDone {
                loss_sum,
                samples,
                timing,
                links,
                scored,
                offsets,
                ..
            } = got
            {
                out.reports.push(RoundReport {
                    node: self.members[i].name.clone(),
                    loss_sum,
                    samples,
                    timing,
                    links,
                    scored,
                    offsets,
                });
            } else {
                return Err(ProtocolError::NoRoundDone {
                    node: self.members[i].name.clone(),
                    round,
                }
                .into());
            }
            if i < self.workers && msg.evaluate {
                match self.next(i, round, "waiting for the evaluation")? {
                    Ok(ToCoordinator::Evaluated { share, .. }) => {
                        shares.push((self.members[i].name.clone(), share));
                    }
                    Ok(other) => {
                        return Err(ProtocolError::NoEvaluation {
                            node: self.members[i].name.clone(),
                            got: other.name(),
                            round,
                        }
                        .into())
                    }
                    Err(lost) => {
                        out.lost = Some(lost);
                        return Ok(out);
                    }
                }
            }
            if i == 0 && msg.checkpoint {
                match self.next(0, round, "waiting for the checkpoint")? {
                    Ok(ToCoordinator::Checkpointed { path, write_ms, .. }) => {
                        out.checkpoint = Some(path);
                        out.checkpoint_ms = Some(write_ms);
                    }
                    Ok(_) => {}
                    Err(lost) => {
                        out.lost = Some(lost);
                        return Ok(out);
                    }
                }
            }
        }
        out.reports.truncate(self.workers);
        if msg.evaluate {
            out.metrics = Some(crate::job::held_out::combine(shares)?);
        }
        out.joiner_waiting = self.joiners_ready(&[]);
        Ok(out)
    }
}

/// Tell every member to stop (best effort, on failure).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AbortAll {
    /// Why.
    pub reason: String,
}

impl Handler<AbortAll> for ControlPlane {
    type Result = ();
    fn handle(&mut self, msg: AbortAll, _: &mut SyncContext<Self>) {
        for m in &self.members {
            let reason = msg.reason.clone();
            let _ = m.send(0, "aborting", &ToWorker::Abort { reason });
        }
        for (r, _) in &mut self.pending {
            let reason = msg.reason.clone();
            let _ = send_msg(&mut r.link, 0, "aborting", &ToWorker::Abort { reason });
        }
    }
}
