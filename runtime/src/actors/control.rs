//! `ControlPlane`: the coordinator's side of every control link, on a `SyncArbiter` thread
//! (blocking sends and receives with liveness deadlines). It sends grants ([`GrantRounds`]) and
//! collects each round's reports ([`Collect`]): one `RoundDone` from every member, and from the
//! first worker the `Evaluated` / `Checkpointed` its plan asked for. Each member's messages arrive
//! in the order it sent them, so collecting round after round needs no bookkeeping. A dead or
//! silent member becomes an error naming it, the round and what the coordinator was waiting for.
//!
//! With a stream, workers also send `StreamProgress` whenever their producers make more rounds
//! available (or end); every receive here absorbs those into [`StreamView`] state, and
//! [`AwaitStream`] waits for them when no granted round is left to run.

use crate::error::RuntimeError;
use crate::protocol::{recv_msg, send_msg, CheckpointPlan, ControlMsg, RoundPlan, RoundTiming};
use actix::{Actor, Handler, Message, SyncContext};
use lockstep_transport::{AnyLink, Link};
use std::collections::BTreeMap;

/// One member of the cluster as the coordinator sees it.
pub struct Member {
    /// Node name.
    pub name: String,
    /// Its control link.
    pub link: AnyLink,
}

/// The control-plane actor.
pub struct ControlPlane {
    members: Vec<Member>,
    workers: usize,
    /// Per worker: rounds available, ended, rows, duplicates (streams).
    stream: Vec<(u64, bool, u64, u64)>,
}

impl ControlPlane {
    /// Members in rank order, workers first (the first `workers` members).
    pub fn new(members: Vec<Member>, workers: usize) -> Self {
        ControlPlane {
            members,
            workers,
            stream: vec![(0, false, 0, 0); workers],
        }
    }

    /// The next message from member `i` that is not a `StreamProgress` (those are absorbed).
    fn recv(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<ControlMsg, RuntimeError> {
        loop {
            if let Some(msg) = self.recv_one(i, round, doing)? {
                return Ok(msg);
            }
        }
    }

    /// One message from member `i`; `None` when it was a `StreamProgress` (absorbed).
    fn recv_one(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<Option<ControlMsg>, RuntimeError> {
        match recv_msg(&mut self.members[i].link, round, doing)? {
            ControlMsg::StreamProgress {
                available,
                closed,
                rows,
                duplicates,
            } => {
                if let Some(s) = self.stream.get_mut(i) {
                    *s = (available, closed, rows, duplicates);
                }
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    fn view(&self, round: u64) -> StreamView {
        StreamView {
            available: self.stream.iter().map(|s| s.0).min().unwrap_or(0),
            ended: self.stream.iter().any(|s| s.1 && s.0 <= round),
            rows: self.stream.iter().map(|s| s.2).sum(),
            duplicates: self.stream.iter().map(|s| s.3).sum(),
        }
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
        let msg = self.recv(i, round, doing)?;
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
    /// Its plan asked the first worker to evaluate.
    pub evaluate: bool,
    /// Its plan asked the first worker to checkpoint.
    pub checkpoint: bool,
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
    /// Streams: prequential `(prediction, label)` pairs.
    pub scored: Vec<[f32; 2]>,
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
}

impl Handler<Collect> for ControlPlane {
    type Result = Result<Collected, RuntimeError>;
    fn handle(&mut self, msg: Collect, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.round;
        let mut out = Collected::default();
        for i in 0..self.members.len() {
            if let ControlMsg::RoundDone {
                loss_sum,
                samples,
                timing,
                scored,
                ..
            } = self.expect(i, round, "waiting for RoundDone")?
            {
                out.reports.push(RoundReport {
                    node: self.members[i].name.clone(),
                    loss_sum,
                    samples,
                    timing,
                    scored,
                });
            } else {
                return Err(RuntimeError::Protocol(format!(
                    "{} did not report RoundDone for round {round}",
                    self.members[i].name
                )));
            }
            if i == 0 && msg.evaluate {
                if let ControlMsg::Evaluated { metrics, .. } =
                    self.expect(0, round, "waiting for the evaluation")?
                {
                    out.metrics = Some(metrics);
                }
            }
            if i == 0 && msg.checkpoint {
                if let ControlMsg::Checkpointed { path, .. } =
                    self.expect(0, round, "waiting for the checkpoint")?
                {
                    out.checkpoint = Some(path);
                }
            }
        }
        out.reports.truncate(self.workers);
        Ok(out)
    }
}

/// Ask the first worker to write the model.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct RunSave {
    /// After which round.
    pub round: u64,
    /// Destination.
    pub path: String,
    /// Also write this checkpoint (the end of a stream).
    pub checkpoint: Option<CheckpointPlan>,
}

impl Handler<RunSave> for ControlPlane {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: RunSave, _: &mut SyncContext<Self>) -> Self::Result {
        let cmd = ControlMsg::Save {
            round: msg.round,
            path: msg.path,
            checkpoint: msg.checkpoint,
        };
        send_msg(
            &mut self.members[0].link,
            msg.round,
            "requesting a model save",
            &cmd,
        )?;
        match self.recv(0, msg.round, "waiting for the model save")? {
            ControlMsg::Saved { path } => Ok(path),
            other => Err(RuntimeError::Protocol(format!(
                "{} answered {} to Save",
                self.members[0].name,
                other.name()
            ))),
        }
    }
}

/// What the workers' producers have delivered (streams).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamView {
    /// Rounds below this one can be filled by every worker.
    pub available: u64,
    /// A worker's producers all ended and it cannot fill the round asked about: no more rounds.
    pub ended: bool,
    /// New rows received, all workers.
    pub rows: u64,
    /// Duplicate rows dropped, all workers.
    pub duplicates: u64,
}

/// Streams: what is known now about round `round` (`block = false`), or wait until every
/// worker can fill it or the stream has ended (`block = true`).
#[derive(Message)]
#[rtype(result = "Result<StreamView, RuntimeError>")]
pub struct AwaitStream {
    /// The round asked about.
    pub round: u64,
    /// Wait for it.
    pub block: bool,
}

impl Handler<AwaitStream> for ControlPlane {
    type Result = Result<StreamView, RuntimeError>;
    fn handle(&mut self, msg: AwaitStream, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.round;
        if msg.block {
            for i in 0..self.workers {
                while self.stream[i].0 <= round && !self.stream[i].1 {
                    let Some(got) = self.recv_one(i, round, "waiting for producers' rows")? else {
                        continue;
                    };
                    return Err(RuntimeError::Protocol(format!(
                        "{} sent {} while the coordinator waited for stream progress",
                        self.members[i].name,
                        got.name()
                    )));
                }
            }
        }
        Ok(self.view(round))
    }
}

/// End training: every worker reports its final parameters' hash; they must agree.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct RunFinish {
    /// The last round.
    pub round: u64,
}

impl Handler<RunFinish> for ControlPlane {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: RunFinish, _: &mut SyncContext<Self>) -> Self::Result {
        self.broadcast(msg.round, &ControlMsg::Finish, "finishing")?;
        let mut hashes: Vec<(String, String)> = Vec::new();
        for i in 0..self.members.len() {
            let name = self.members[i].name.clone();
            match self.recv(i, msg.round, "waiting for Finished")? {
                ControlMsg::Finished { weights_sha256 } => hashes.push((name, weights_sha256)),
                other => {
                    return Err(RuntimeError::Protocol(format!(
                        "{name} answered {} to Finish",
                        other.name()
                    )))
                }
            }
        }
        let workers = &hashes[..self.workers.min(hashes.len())];
        let first = workers.first().map(|h| h.1.clone()).unwrap_or_default();
        if let Some((node, h)) = workers.iter().find(|(_, h)| *h != first) {
            return Err(RuntimeError::Inconsistent(format!(
                "replicas diverged: {} has weights {first}, {node} has {h}",
                workers[0].0
            )));
        }
        Ok(first)
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
    }
}
