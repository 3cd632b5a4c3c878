//! `ControlPlane`: the coordinator's side of every control link, on a `SyncArbiter` thread
//! (blocking sends and receives with liveness deadlines). It sends grants ([`GrantRounds`]) and
//! collects each round's reports ([`Collect`]): one `RoundDone` from every member, every
//! worker's `Evaluated` share when the plan evaluates, and the first worker's `Checkpointed`. Each member's messages arrive
//! in the order it sent them, so collecting round after round needs no bookkeeping. A dead or
//! silent member becomes an error naming it, the round and what the coordinator was waiting for.

//!
//! With elastic membership a dead member (its control link fails) or a `PeerLost` report ends
//! the collection early with [`Collected::lost`]; [`ChangeMembership`] then suspends the
//! survivors, admits waiting replacements and hands out the next mesh (see `docs/elastic.md`).

use crate::control::protocol::{
    recv_msg, recv_msg_before, send_msg, CheckpointPlan, ControlMsg, LinkBytes, RoundPlan,
    RoundTiming,
};
use crate::control::registration::Registration;
use crate::error::RuntimeError;
use crate::observe::trace::TraceCollector;
use actix::{Actor, Handler, Message, SyncContext};
use lockstep_transport::{AnyLink, Link};
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod finish;
mod hang;
mod membership;
mod stream;
mod watch;

pub use finish::{RunFinish, RunSave};
pub use membership::{ChangeMembership, Changed};
pub use stream::{AwaitStream, StreamView};

/// One member of the cluster as the coordinator sees it.
pub struct Member {
    /// Node name.
    pub name: String,
    /// Its control link.
    pub link: AnyLink,
    /// Messages read ahead of their turn (while watching for aborts), in arrival order.
    early: VecDeque<ControlMsg>,
}

impl Member {
    /// A member `name` on `link`.
    pub fn new(name: String, link: AnyLink) -> Self {
        Member {
            name,
            link,
            early: VecDeque::new(),
        }
    }
}

/// Elastic membership as the control plane keeps it.
pub struct Elastic {
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
}

/// The control-plane actor.
pub struct ControlPlane {
    members: Vec<Member>,
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

/// Per worker: rounds available, ended, rows, duplicates (streams).
type Progress = (u64, bool, u64, u64);

/// One message on `m`'s link; `None` when it was absorbed: a `Trace` batch (into `traces`) or a
/// `StreamProgress` (into `progress`), which may arrive anywhere.
fn recv_member_one(
    traces: &Option<TraceCollector>,
    progress: Option<&mut Progress>,
    m: &mut Member,
    round: u64,
    doing: &'static str,
) -> Result<Option<ControlMsg>, RuntimeError> {
    recv_member_until(traces, progress, m, round, doing, None)
}

/// [`recv_member_one`], and with a `deadline` [`RuntimeError::Timeout`] when nothing came by
/// then (the link stays usable).
fn recv_member_until(
    traces: &Option<TraceCollector>,
    progress: Option<&mut Progress>,
    m: &mut Member,
    round: u64,
    doing: &'static str,
    deadline: Option<Instant>,
) -> Result<Option<ControlMsg>, RuntimeError> {
    match m.early.pop_front() {
        Some(msg) => Ok(Some(msg)),
        None => read_member(traces, progress, m, round, doing, deadline),
    }
}

/// [`recv_member_until`] from the link itself, past the messages read ahead.
fn read_member(
    traces: &Option<TraceCollector>,
    progress: Option<&mut Progress>,
    m: &mut Member,
    round: u64,
    doing: &'static str,
    deadline: Option<Instant>,
) -> Result<Option<ControlMsg>, RuntimeError> {
    let msg = match deadline {
        None => recv_msg(&mut m.link, round, doing)?,
        Some(d) => {
            recv_msg_before(&mut m.link, round, doing, d)?.ok_or_else(|| RuntimeError::Timeout {
                doing: format!("{doing} from {} (round {round})", m.name),
                ms: 0,
            })?
        }
    };
    match msg {
        ControlMsg::Trace { sent_us, spans } => {
            if let Some(t) = traces {
                t.add(&m.name, sent_us, spans);
            }
            Ok(None)
        }
        ControlMsg::StreamProgress {
            available,
            closed,
            rows,
            duplicates,
        } => {
            if let Some(p) = progress {
                *p = (available, closed, rows, duplicates);
            }
            Ok(None)
        }
        msg => Ok(Some(msg)),
    }
}

/// The next message on `m`'s link that is not absorbed (see [`recv_member_one`]).
fn recv_member(
    traces: &Option<TraceCollector>,
    progress: Option<&mut Progress>,
    m: &mut Member,
    round: u64,
    doing: &'static str,
) -> Result<ControlMsg, RuntimeError> {
    recv_member_before(traces, progress, m, round, doing, None)
}

/// [`recv_member`] bounded by `deadline` (see [`recv_member_until`]).
fn recv_member_before(
    traces: &Option<TraceCollector>,
    mut progress: Option<&mut Progress>,
    m: &mut Member,
    round: u64,
    doing: &'static str,
    deadline: Option<Instant>,
) -> Result<ControlMsg, RuntimeError> {
    loop {
        let p = progress.as_deref_mut();
        if let Some(msg) = recv_member_until(traces, p, m, round, doing, deadline)? {
            return Ok(msg);
        }
    }
}

impl ControlPlane {
    /// Members in rank order, workers first (the first `workers` members).
    pub fn new(members: Vec<Member>, workers: usize) -> Self {
        ControlPlane {
            members,
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

    /// Keep the members' timeline spans (`ControlMsg::Trace`) in `traces`.
    pub fn with_traces(mut self, traces: Option<TraceCollector>) -> Self {
        self.traces = traces;
        self
    }

    /// With elastic membership.
    pub fn with_elastic(mut self, elastic: Elastic) -> Self {
        self.elastic = Some(elastic);
        self
    }

    fn broadcast(
        &mut self,
        round: u64,
        msg: &ControlMsg,
        doing: &'static str,
    ) -> Result<(), RuntimeError> {
        for m in &mut self.members {
            send_msg(&mut m.link, round, doing, msg)?;
        }
        Ok(())
    }

    /// The next message from member `i`, which must be about `round`.
    fn expect(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<ControlMsg, RuntimeError> {
        let msg = self.recv_watching(i, round, doing)?;
        let m = &self.members[i];
        let about = match &msg {
            ControlMsg::RoundDone { round, .. }
            | ControlMsg::Evaluated { round, .. }
            | ControlMsg::Checkpointed { round, .. } => Some(*round),
            _ => None,
        };
        if about != Some(round) {
            return Err(RuntimeError::Protocol(format!(
                "{} sent {} (round {about:?}) while the coordinator was {doing} of round {round}",
                m.name,
                msg.name()
            )));
        }
        Ok(msg)
    }
}

impl Actor for ControlPlane {
    type Context = SyncContext<Self>;
}

/// Grant rounds to every member.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct GrantRounds {
    /// The plans, in round order, continuing the previous grant.
    pub rounds: Vec<RoundPlan>,
}

impl Handler<GrantRounds> for ControlPlane {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: GrantRounds, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.rounds.first().map_or(0, |p| p.round);
        let grant = ControlMsg::Grant { rounds: msg.rounds };
        self.broadcast(round, &grant, "granting rounds")
    }
}

/// Collect every member's report of one round.
#[derive(Message)]
#[rtype(result = "Result<Collected, RuntimeError>")]
pub struct Collect {
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
pub struct RoundReport {
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
pub struct Collected {
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
pub struct Lost {
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
            if let ControlMsg::RoundDone {
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
                return Err(RuntimeError::Protocol(format!(
                    "{} did not report RoundDone for round {round}",
                    self.members[i].name
                )));
            }
            if i < self.workers && msg.evaluate {
                match self.next(i, round, "waiting for the evaluation")? {
                    Ok(ControlMsg::Evaluated { share, .. }) => {
                        shares.push((self.members[i].name.clone(), share));
                    }
                    Ok(other) => {
                        return Err(RuntimeError::Protocol(format!(
                            "{} sent {} instead of its evaluation of round {round}",
                            self.members[i].name,
                            other.name()
                        )))
                    }
                    Err(lost) => {
                        out.lost = Some(lost);
                        return Ok(out);
                    }
                }
            }
            if i == 0 && msg.checkpoint {
                match self.next(0, round, "waiting for the checkpoint")? {
                    Ok(ControlMsg::Checkpointed { path, write_ms, .. }) => {
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
pub struct AbortAll {
    /// Why.
    pub reason: String,
}

impl Handler<AbortAll> for ControlPlane {
    type Result = ();
    fn handle(&mut self, msg: AbortAll, _: &mut SyncContext<Self>) {
        for m in &mut self.members {
            let _ = send_msg(
                &mut m.link,
                0,
                "aborting",
                &ControlMsg::Abort {
                    reason: msg.reason.clone(),
                },
            );
            let _ = m.link.flush();
        }
        for (r, _) in &mut self.pending {
            let reason = msg.reason.clone();
            let _ = send_msg(&mut r.link, 0, "aborting", &ControlMsg::Abort { reason });
        }
    }
}
