//! `Coordinator`: drives synchronous SGD rounds. It starts each round through the
//! `ControlPlane`, collects every worker's `RoundDone`, logs progress once per epoch (loss, eval
//! metric, samples/s), triggers evaluation and the final model save, and writes the report.
//! It only awaits other actors, so it never blocks its arbiter.

use super::control::{
    AbortAll, ControlPlane, RoundReport, RunCheckpoint, RunEval, RunFinish, RunRound, RunSave,
};
use crate::error::RuntimeError;
use crate::protocol::ControlMsg;
use crate::report::{Report, RoundSplit};
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use lockstep_trainer::optim::OptimizerSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

/// Everything the coordinator needs to drive a job.
#[derive(Clone)]
pub struct Schedule {
    /// First round to run (0, or the round after a checkpoint).
    pub first_round: u64,
    /// Rounds in the whole job.
    pub total_rounds: u64,
    /// Rounds per epoch.
    pub rounds_per_epoch: u64,
    /// Evaluate every this many rounds (0: at the end of each epoch).
    pub eval_every: u64,
    /// Learning-rate schedule.
    pub optimizer: OptimizerSpec,
    /// The metric shown in progress lines.
    pub headline: &'static str,
    /// Report skeleton (cluster, world size, transport, aggregation).
    pub report: Report,
    /// Where the final model goes.
    pub model_path: PathBuf,
    /// Periodic checkpoints: root directory, interval in rounds (0: none), how many to keep.
    pub checkpoints: (PathBuf, u64, usize),
    /// The job seed (stored in checkpoints).
    pub seed: u64,
    /// The epoch plan (data cursor of a round).
    pub plan: lockstep_trainer::data::EpochPlan,
}

/// The coordinator actor; its result goes to `done` when the job ends.
pub struct Coordinator {
    control: Addr<ControlPlane>,
    schedule: Schedule,
    done: Option<SyncSender<Result<Report, RuntimeError>>>,
}

impl Coordinator {
    /// A coordinator that reports its outcome on `done`.
    pub fn new(
        control: Addr<ControlPlane>,
        schedule: Schedule,
        done: SyncSender<Result<Report, RuntimeError>>,
    ) -> Self {
        Coordinator {
            control,
            schedule,
            done: Some(done),
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = drive(self.control.clone(), self.schedule.clone());
        ctx.wait(fut.into_actor(self).map(|res, act, _| {
            if let Err(e) = &res {
                act.control.do_send(AbortAll {
                    reason: e.to_string(),
                });
            }
            if let Some(done) = act.done.take() {
                let _ = done.send(res);
            }
            actix::System::current().stop();
        }));
    }
}

#[derive(Default)]
struct Totals {
    samples: u64,
    rounds: u64,
    compute_ms: f64,
    comm_ms: f64,
    total_ms: f64,
    last_loss: f64,
}

impl Totals {
    fn add(&mut self, reports: &[RoundReport], round_ms: f64) -> f64 {
        let rows: u64 = reports.iter().map(|r| r.samples).sum();
        let loss: f64 = reports.iter().map(|r| r.loss_sum).sum::<f64>() / rows.max(1) as f64;
        let n = reports.len().max(1) as f64;
        self.compute_ms += reports.iter().map(|r| r.timing.compute_ms).sum::<f64>() / n;
        self.comm_ms += reports.iter().map(|r| r.timing.comm_ms).sum::<f64>() / n;
        self.total_ms += round_ms;
        self.samples += rows;
        self.rounds += 1;
        self.last_loss = loss;
        loss
    }

    fn split(&self) -> RoundSplit {
        let n = self.rounds.max(1) as f64;
        let (c, m, t) = (self.compute_ms / n, self.comm_ms / n, self.total_ms / n);
        RoundSplit {
            compute_ms: c,
            communication_ms: m,
            waiting_ms: (t - c - m).max(0.0),
            total_ms: t,
        }
    }
}

fn actor_err(e: actix::MailboxError) -> RuntimeError {
    RuntimeError::Actor(format!("control plane: {e}"))
}

async fn drive(control: Addr<ControlPlane>, s: Schedule) -> Result<Report, RuntimeError> {
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut eval = BTreeMap::new();
    let mut epoch_loss = (0.0f64, 0u64);
    let mut epoch_started = (Instant::now(), 0u64);
    for round in s.first_round..s.total_rounds {
        let epoch = round / s.rounds_per_epoch.max(1);
        let lr = s.optimizer.lr_at(round);
        let t = Instant::now();
        let reports = control
            .send(RunRound { round, epoch, lr })
            .await
            .map_err(actor_err)??;
        let loss = totals.add(&reports, t.elapsed().as_secs_f64() * 1e3);
        if !loss.is_finite() {
            return Err(RuntimeError::Model(format!(
                "round {round}: training loss is {loss}"
            )));
        }
        epoch_loss = (epoch_loss.0 + loss, epoch_loss.1 + 1);
        let last = round + 1 == s.total_rounds;
        let (ref root, every, keep) = s.checkpoints;
        if every > 0 && (round + 1) % every == 0 && !last {
            let next = round + 1;
            let msg = ControlMsg::Checkpoint {
                round: next,
                cursor: s.plan.cursor_at(next),
                root: root.display().to_string(),
                keep,
                seed: s.seed,
            };
            let path = control
                .send(RunCheckpoint { msg, round })
                .await
                .map_err(actor_err)??;
            tracing::info!("checkpoint for round {next} written to {path}");
        }
        let end_of_epoch = (round + 1) % s.rounds_per_epoch.max(1) == 0;
        let due = if s.eval_every > 0 {
            (round + 1) % s.eval_every == 0
        } else {
            end_of_epoch
        };
        if due || last {
            eval = control.send(RunEval { round }).await.map_err(actor_err)??;
            let secs = epoch_started.0.elapsed().as_secs_f64();
            let rate = (totals.samples - epoch_started.1) as f64 / secs.max(1e-9);
            let metric = eval
                .get(s.headline)
                .map(|v| format!("{} {v:.4}", s.headline))
                .unwrap_or_default();
            tracing::info!(
                "epoch {}/{} round {}/{}: train loss {:.4}, {metric}, {rate:.0} samples/s",
                epoch + 1,
                s.total_rounds.div_ceil(s.rounds_per_epoch.max(1)),
                round + 1,
                s.total_rounds,
                epoch_loss.0 / epoch_loss.1.max(1) as f64
            );
            epoch_loss = (0.0, 0);
            epoch_started = (Instant::now(), totals.samples);
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let last_round = s.total_rounds.saturating_sub(1);
    let path = s.model_path.display().to_string();
    let saved = control
        .send(RunSave {
            round: last_round,
            path,
        })
        .await
        .map_err(actor_err)??;
    let weights = control
        .send(RunFinish { round: last_round })
        .await
        .map_err(actor_err)??;
    let mut report = s.report.clone();
    report.rounds = s.total_rounds;
    report.epochs = s.total_rounds as f64 / s.rounds_per_epoch.max(1) as f64;
    report.samples = totals.samples;
    report.wall_s = wall_s;
    report.samples_per_s = totals.samples as f64 / wall_s.max(1e-9);
    report.final_train_loss = totals.last_loss;
    report.eval = eval;
    report.weights_sha256 = weights;
    report.checkpoint = Some(saved);
    report.round_time = totals.split();
    Ok(report)
}
