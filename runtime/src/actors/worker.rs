//! `WorkerNode`: a worker's orchestrating actor, and the control thread that talks to the
//! coordinator.
//!
//! The control thread owns the control link (blocking I/O with liveness deadlines, so it lives on
//! a plain thread, not an arbiter). For each command it receives it sends a [`Command`] to the
//! `WorkerNode` actor and waits (bounded) for the reply, which it sends back. The actor runs a
//! round as a chain of awaited messages: `DataLoader` -> `Compute` (buckets flow to the
//! `Aggregator` during backprop) -> `Aggregator` -> `Compute`.

use super::aggregator::Aggregator;
use super::compute::Compute;
use super::data_loader::DataLoader;
use super::messages::*;
use crate::error::RuntimeError;
use crate::protocol::{recv_msg, send_msg, ControlMsg, RoundTiming};
use actix::{Actor, Addr, Context, Handler, MailboxError, Message, ResponseFuture};
use lockstep_transport::AnyLink;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// A command from the coordinator with the channel its answer goes back on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Command {
    /// What the coordinator asked.
    pub msg: ControlMsg,
    /// Where the answer goes.
    pub reply: SyncSender<Result<ControlMsg, RuntimeError>>,
}

/// The worker's orchestrating actor.
pub struct WorkerNode {
    loader: Addr<DataLoader>,
    compute: Addr<Compute>,
    aggregator: Addr<Aggregator>,
    save_path_ok: bool,
}

impl WorkerNode {
    /// A worker over its three actors. `rank0` workers answer `Evaluate` and `Save`.
    pub fn new(
        loader: Addr<DataLoader>,
        compute: Addr<Compute>,
        aggregator: Addr<Aggregator>,
        rank0: bool,
    ) -> Self {
        WorkerNode {
            loader,
            compute,
            aggregator,
            save_path_ok: rank0,
        }
    }
}

impl Actor for WorkerNode {
    type Context = Context<Self>;
}

fn mailbox(who: &'static str) -> impl Fn(MailboxError) -> RuntimeError {
    move |e| RuntimeError::Actor(format!("{who}: {e}"))
}

async fn run_round(
    loader: Addr<DataLoader>,
    compute: Addr<Compute>,
    aggregator: Addr<Aggregator>,
    round: u64,
    lr: f32,
) -> Result<ControlMsg, RuntimeError> {
    let started = Instant::now();
    let shard = loader
        .send(NextShard { round })
        .await
        .map_err(mailbox("data loader"))??;
    loader.do_send(Prefetch); // no payload: a hint to prepare the next shard now
    let step = compute
        .send(Step { round, shard })
        .await
        .map_err(mailbox("compute"))??;
    let backprop_done = Instant::now();
    let agg = aggregator
        .send(FinishRound { round, lr })
        .await
        .map_err(mailbox("aggregator"))??;
    let exposed = backprop_done.elapsed();
    let apply = compute
        .send(ApplyUpdate {
            round,
            lr,
            update: agg.value,
        })
        .await
        .map_err(mailbox("compute"))??;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(ControlMsg::RoundDone {
        round,
        loss_sum: step.loss_sum,
        samples: step.rows as u64,
        timing: RoundTiming {
            compute_ms: ms(step.compute + apply),
            comm_ms: ms(exposed),
            collective_ms: ms(agg.comm),
            round_ms: ms(started.elapsed()),
        },
    })
}

impl Handler<Command> for WorkerNode {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, cmd: Command, _: &mut Context<Self>) -> Self::Result {
        let (loader, compute, aggregator) = (
            self.loader.clone(),
            self.compute.clone(),
            self.aggregator.clone(),
        );
        let rank0 = self.save_path_ok;
        Box::pin(async move {
            let res = match cmd.msg {
                ControlMsg::BeginRound { round, lr, .. } => {
                    run_round(loader, compute, aggregator, round, lr).await
                }
                ControlMsg::Evaluate { .. } if rank0 => compute
                    .send(Evaluate)
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|metrics| ControlMsg::Evaluated { metrics }),
                ControlMsg::Save { round, path } if rank0 => compute
                    .send(SaveModel { path, round })
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|path| ControlMsg::Saved { path }),
                ControlMsg::Checkpoint {
                    round,
                    cursor,
                    root,
                    keep,
                    seed,
                } if rank0 => compute
                    .send(WriteCheckpoint {
                        round,
                        cursor,
                        root,
                        keep,
                        seed,
                    })
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|path| ControlMsg::Saved { path }),
                ControlMsg::Finish => compute
                    .send(ParamsHash)
                    .await
                    .map_err(mailbox("compute"))
                    .and_then(|r| r)
                    .map(|weights_sha256| ControlMsg::Finished { weights_sha256 }),
                other => Err(RuntimeError::Protocol(format!(
                    "unexpected command {}",
                    other.name()
                ))),
            };
            let _ = cmd.reply.send(res);
        })
    }
}

/// The control thread's loop: receive a command, let the actors do it, answer. Returns after
/// `Finish` has been answered; any failure is sent to the coordinator as `Abort` (best effort)
/// and returned.
///
/// # Errors
/// The coordinator died or went silent (named, with the round), a command failed, or the actors
/// did not answer within `command_timeout`.
pub fn control_loop(
    link: &mut AnyLink,
    node: &Addr<WorkerNode>,
    command_timeout: Duration,
) -> Result<(), RuntimeError> {
    let mut round = 0;
    loop {
        let msg = recv_msg(link, round, "waiting for the coordinator's next command")?;
        if let ControlMsg::BeginRound { round: r, .. } = msg {
            round = r;
        }
        let last = matches!(msg, ControlMsg::Finish);
        let what = msg.name();
        let (tx, rx) = sync_channel(1);
        node.do_send(Command { msg, reply: tx }); // control only, no tensors
        let reply = match rx.recv_timeout(command_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(RuntimeError::Timeout {
                doing: format!("running {what} for round {round}"),
                ms: command_timeout.as_millis() as u64,
            }),
            Err(RecvTimeoutError::Disconnected) => {
                Err(RuntimeError::Actor("the worker actor stopped".into()))
            }
        };
        match reply {
            Ok(answer) => send_msg(link, round, "reporting to the coordinator", &answer)?,
            Err(e) => {
                let _ = send_msg(
                    link,
                    round,
                    "aborting",
                    &ControlMsg::Abort {
                        reason: e.to_string(),
                    },
                );
                return Err(e);
            }
        }
        if last {
            return Ok(());
        }
    }
}
