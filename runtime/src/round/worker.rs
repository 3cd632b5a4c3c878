//! `WorkerNode`: serves the coordinator's commands that need an answer (save the model, finish),
//! and the control thread that receives everything the coordinator sends.
//!
//! The control thread owns the receiving side of the control link (blocking I/O with liveness
//! deadlines, so it lives on a plain thread, not an arbiter). Grants go straight to `Compute`;
//! `Save` and `Finish` go to the `WorkerNode` actor and the control thread waits (bounded) for
//! the answer. Round reports do not pass through here: the actors send them themselves through
//! the [`Reporter`], on the link's sending side.

use super::compute::Compute;
use super::messages::*;
use super::Reporter;
use crate::control::protocol::{recv_msg, send_msg, ControlMessage, ToCoordinator, ToWorker};
use crate::error::{ActorError, ProtocolError, RuntimeError};
use actix::{Actor, Addr, Context, Handler, MailboxError, Message, Recipient, ResponseFuture};
use lockstep_transport::AnyLink;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// A command from the coordinator with the channel its answer goes back on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Command {
    /// What the coordinator asked.
    pub msg: ToWorker,
    /// Where the answer goes.
    pub reply: SyncSender<Result<ToCoordinator, RuntimeError>>,
}

/// The worker's command-serving actor.
pub(crate) struct WorkerNode {
    compute: Addr<Compute>,
    rank0: bool,
}

impl WorkerNode {
    /// A worker over its compute actor. `rank0` workers answer `Save`.
    pub(crate) fn new(compute: Addr<Compute>, rank0: bool) -> Self {
        WorkerNode { compute, rank0 }
    }
}

impl Actor for WorkerNode {
    type Context = Context<Self>;
}

fn mailbox(who: &'static str) -> impl Fn(MailboxError) -> RuntimeError {
    move |source| {
        ActorError::Mailbox {
            mailbox: who,
            source,
        }
        .into()
    }
}

impl Handler<Command> for WorkerNode {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, cmd: Command, _: &mut Context<Self>) -> Self::Result {
        let compute = self.compute.clone();
        let rank0 = self.rank0;
        Box::pin(async move {
            let res = match cmd.msg {
                ToWorker::Save {
                    round,
                    path,
                    checkpoint,
                } if rank0 => compute
                    .send(SaveModel {
                        path,
                        round,
                        checkpoint,
                    })
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|path| ToCoordinator::Saved { path }),
                ToWorker::Finish => compute
                    .send(ParamsHash)
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|(weights_sha256, solver)| ToCoordinator::Finished {
                        weights_sha256,
                        solver,
                    }),
                other => Err(ProtocolError::UnexpectedCommand { got: other.name() }.into()),
            };
            let _ = cmd.reply.send(res);
        })
    }
}

/// Elastic: stop `Compute` for good and take the state of its newest applied round.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Suspend {
    /// Where the state goes.
    pub reply: SyncSender<Result<WorkerState, RuntimeError>>,
}

impl Handler<Suspend> for WorkerNode {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, cmd: Suspend, _: &mut Context<Self>) -> Self::Result {
        let compute = self.compute.clone();
        Box::pin(async move {
            let res = compute
                .send(ExportState)
                .await
                .map_err(mailbox("compute"))
                .and_then(|r| r);
            let _ = cmd.reply.send(res);
        })
    }
}

/// How the control loop ended.
pub(crate) enum Exit {
    /// `Finish` was answered: the job is over.
    Finished,
    /// Elastic: the coordinator suspended this worker; the state to carry to the next mesh.
    Suspended(WorkerState),
    /// Elastic: the coordinator was lost (why); the state to carry to the one taking over.
    Orphaned(WorkerState, String),
}

/// True when `e` says the coordinator is gone: its link failed (dead, silent, closed) or it
/// was replaced by a newer one (fenced).
pub(crate) fn coordinator_lost(e: &RuntimeError) -> bool {
    matches!(
        e,
        RuntimeError::Peer { .. } | RuntimeError::Control(ProtocolError::Fenced { .. })
    )
}

/// Stop `Compute` for good (nothing more of this mesh is reported) and take its state.
fn suspend(
    node: &Addr<WorkerNode>,
    reporter: &Reporter,
    command_timeout: Duration,
) -> Result<WorkerState, RuntimeError> {
    reporter.silence();
    let (tx, rx) = sync_channel(1);
    node.do_send(Suspend { reply: tx }); // control only, no tensors
    match rx.recv_timeout(command_timeout) {
        Ok(r) => r,
        Err(_) => Err(ActorError::NoHandover {
            actor: "compute",
            what: "its state",
        }
        .into()),
    }
}

/// The control thread's loop: pass grants to `Compute`, serve `Save` and `Finish`. Returns after
/// `Finish` has been answered, or (elastic) after `Suspend` with the worker's state. When an actor failed, its error (recorded by the `Reporter`) is
/// returned rather than the coordinator's `Abort` that follows it.
///
/// # Errors
/// The coordinator died, went silent or aborted (named, with the round), a command failed, an
/// actor failed, or the actors did not answer within `command_timeout`.
pub(crate) fn control_loop(
    link: &mut AnyLink,
    node: &Addr<WorkerNode>,
    compute: &Recipient<Grant>,
    reporter: &Reporter,
    command_timeout: Duration,
) -> Result<Exit, RuntimeError> {
    let mut round = 0;
    loop {
        let msg = match recv_msg(link, round, "waiting for the coordinator") {
            Ok(m) => m,
            Err(e) => {
                if let Some(failure) = reporter.take_failure() {
                    return Err(failure);
                }
                if !(reporter.is_elastic() && coordinator_lost(&e)) {
                    return Err(e);
                }
                // Elastic: keep the state for the coordinator that takes over.
                tracing::warn!(round, error = %e, "lost the coordinator; keeping the state of the newest round");
                let state = suspend(node, reporter, command_timeout)?;
                return Ok(Exit::Orphaned(state, e.to_string()));
            }
        };
        if let ToWorker::Suspend { reason } = msg {
            tracing::info!(round, "suspended by the coordinator: {reason}");
            return suspend(node, reporter, command_timeout).map(Exit::Suspended);
        }
        if let ToWorker::Probe = msg {
            let threads = reporter.activity().snapshot();
            send_msg(
                link,
                round,
                "answering Probe",
                &ToCoordinator::Doing { threads },
            )?;
            continue;
        }
        if let ToWorker::Grant { rounds } = msg {
            round = rounds.last().map_or(round, |p| p.round);
            if compute.try_send(Grant { rounds }).is_err() {
                return Err(ActorError::Refused {
                    actor: "compute",
                    what: "the coordinator's grant",
                }
                .into());
            }
            continue;
        }
        let last = matches!(msg, ToWorker::Finish);
        let what = msg.name();
        let (tx, rx) = sync_channel(1);
        node.do_send(Command { msg, reply: tx }); // control only, no tensors
        let reply = match rx.recv_timeout(command_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(RuntimeError::Timeout {
                doing: format!("running {what} after round {round}"),
                ms: command_timeout.as_millis() as u64,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(ActorError::Stopped {
                actor: "the worker actor",
            }
            .into()),
        };
        match reply {
            Ok(answer) => send_msg(link, round, "reporting to the coordinator", &answer)?,
            Err(e) => {
                reporter.fail(round, e);
                return Err(reporter
                    .take_failure()
                    .unwrap_or_else(|| ActorError::Failed { what: "command" }.into()));
            }
        }
        if last {
            return Ok(Exit::Finished);
        }
    }
}
