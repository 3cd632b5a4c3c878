//! `ControlPlane`: the coordinator's side of every control link, on a `SyncArbiter` thread
//! (blocking sends and receives with liveness deadlines). A round is: `BeginRound` to every
//! member, serve the parameter-server step if the coordinator is the server, then one
//! `RoundDone` from every member. A dead or silent member becomes an error naming it, the round
//! and what the coordinator was waiting for.

use crate::error::RuntimeError;
use crate::protocol::{recv_msg, send_msg, ControlMsg, RoundTiming};
use actix::{Actor, Handler, Message, SyncContext};
use lockstep_collective::{Communicator, ParameterServer};
use lockstep_trainer::optim::Optimizer;
use lockstep_transport::{AnyLink, Link};
use std::collections::BTreeMap;

/// One member of the cluster as the coordinator sees it.
pub struct Member {
    /// Node name.
    pub name: String,
    /// Its control link.
    pub link: AnyLink,
}

/// The coordinator acting as the (only) parameter server.
pub struct PsServer {
    /// The data-mesh communicator.
    pub comm: Communicator,
    /// The shard layout (one shard: everything).
    pub ps: ParameterServer,
    /// The authoritative parameters.
    pub params: Vec<f32>,
    /// The optimizer over all parameters.
    pub optimizer: Optimizer,
}

/// The control-plane actor.
pub struct ControlPlane {
    members: Vec<Member>,
    workers: usize,
    server: Option<PsServer>,
}

impl ControlPlane {
    /// Members in rank order, workers first (the first `workers` members).
    pub fn new(members: Vec<Member>, workers: usize, server: Option<PsServer>) -> Self {
        ControlPlane {
            members,
            workers,
            server,
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
}

impl Actor for ControlPlane {
    type Context = SyncContext<Self>;
}

/// Run one round across the cluster.
#[derive(Message)]
#[rtype(result = "Result<Vec<RoundReport>, RuntimeError>")]
pub struct RunRound {
    /// Round number.
    pub round: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Learning rate.
    pub lr: f32,
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
}

impl Handler<RunRound> for ControlPlane {
    type Result = Result<Vec<RoundReport>, RuntimeError>;
    fn handle(&mut self, msg: RunRound, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.round;
        self.broadcast(
            round,
            &ControlMsg::BeginRound {
                round,
                epoch: msg.epoch,
                lr: msg.lr,
            },
            "starting the round",
        )?;
        if let Some(s) = &mut self.server {
            s.comm.set_round(round);
            let (opt, lr) = (&mut s.optimizer, msg.lr);
            let mut failed = None;
            s.ps.step(&mut s.comm, &[], &mut s.params, |_, p, g| {
                if let Err(e) = opt.step_with_lr(lr, p, g) {
                    failed.get_or_insert(e.to_string());
                }
            })?;
            if let Some(e) = failed {
                return Err(RuntimeError::Model(format!(
                    "round {round}: parameter server optimizer: {e}"
                )));
            }
        }
        let mut out = Vec::with_capacity(self.workers);
        for m in &mut self.members {
            match recv_msg(&mut m.link, round, "waiting for RoundDone")? {
                ControlMsg::RoundDone {
                    round: r,
                    loss_sum,
                    samples,
                    timing,
                } if r == round => out.push(RoundReport {
                    node: m.name.clone(),
                    loss_sum,
                    samples,
                    timing,
                }),
                other => {
                    return Err(RuntimeError::Protocol(format!(
                        "{} answered {} to BeginRound {round}",
                        m.name,
                        other.name()
                    )))
                }
            }
        }
        // Servers answer too (so their failures surface here), but only workers train.
        out.truncate(self.workers);
        Ok(out)
    }
}

/// Ask the first worker to evaluate.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, f64>, RuntimeError>")]
pub struct RunEval {
    /// After which round.
    pub round: u64,
}

impl Handler<RunEval> for ControlPlane {
    type Result = Result<BTreeMap<String, f64>, RuntimeError>;
    fn handle(&mut self, msg: RunEval, _: &mut SyncContext<Self>) -> Self::Result {
        let m = &mut self.members[0];
        send_msg(
            &mut m.link,
            msg.round,
            "requesting evaluation",
            &ControlMsg::Evaluate { round: msg.round },
        )?;
        match recv_msg(&mut m.link, msg.round, "waiting for evaluation")? {
            ControlMsg::Evaluated { metrics } => Ok(metrics),
            other => Err(RuntimeError::Protocol(format!(
                "{} answered {} to Evaluate",
                m.name,
                other.name()
            ))),
        }
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
}

impl Handler<RunSave> for ControlPlane {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: RunSave, _: &mut SyncContext<Self>) -> Self::Result {
        let m = &mut self.members[0];
        let cmd = ControlMsg::Save {
            round: msg.round,
            path: msg.path,
        };
        send_msg(&mut m.link, msg.round, "requesting a model save", &cmd)?;
        match recv_msg(&mut m.link, msg.round, "waiting for the model save")? {
            ControlMsg::Saved { path } => Ok(path),
            other => Err(RuntimeError::Protocol(format!(
                "{} answered {} to Save",
                m.name,
                other.name()
            ))),
        }
    }
}

/// Ask the first worker to write a checkpoint.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct RunCheckpoint {
    /// The message to send (a `ControlMsg::Checkpoint`).
    pub msg: ControlMsg,
    /// The round, for errors.
    pub round: u64,
}

impl Handler<RunCheckpoint> for ControlPlane {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: RunCheckpoint, _: &mut SyncContext<Self>) -> Self::Result {
        let m = &mut self.members[0];
        send_msg(&mut m.link, msg.round, "requesting a checkpoint", &msg.msg)?;
        match recv_msg(&mut m.link, msg.round, "waiting for the checkpoint")? {
            ControlMsg::Saved { path } => Ok(path),
            other => Err(RuntimeError::Protocol(format!(
                "{} answered {} to Checkpoint",
                m.name,
                other.name()
            ))),
        }
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
        for m in &mut self.members {
            if let ControlMsg::Finished { weights_sha256 } =
                recv_msg(&mut m.link, msg.round, "waiting for Finished")?
            {
                hashes.push((m.name.clone(), weights_sha256));
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
