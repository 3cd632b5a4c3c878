//! `Coordinator`: drives synchronous SGD rounds without standing in their way. It grants rounds
//! ahead (a window of [`GRANT_WINDOW`] rounds, each with its learning rate and whether rank 0
//! evaluates or checkpoints after it), collects every member's asynchronous `RoundDone`, logs
//! progress once per epoch (loss, eval metric, samples/s), asks for the final model save, and
//! writes the report. It stops every node at a round boundary by granting no further (and with
//! `Abort` on failure). It only awaits other actors, so it never blocks its arbiter.

use super::plane::{
    AbortAll, ChangeMembership, Changed, Collect, ControlPlane, GrantRounds, RoundReport,
    RunFinish, RunSave,
};
use crate::control::protocol::{CheckpointPlan, RoundPlan, GRANT_WINDOW};
use crate::error::RuntimeError;
use crate::observe::report::{MembershipChange, Report, RoundSplit};
use crate::ps::serve::{PsServe, ServeRounds};
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use lockstep_trainer::optim::OptimizerSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
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
    /// `[job.checkpoint] dir` when it is an object-store URL (uploaded there).
    pub checkpoint_remote: Option<String>,
    /// The job seed (stored in checkpoints).
    pub seed: u64,
    /// The epoch plan (data cursor of a round).
    pub plan: lockstep_trainer::data::EpochPlan,
    /// Progress, metrics.csv, Prometheus, timeline (see [`crate::observe`]).
    pub observer: crate::observe::Observer,
    /// Streams: how rounds are gated, offsets, publishing, prequential evaluation.
    pub stream: Option<super::coordinator_stream::StreamSchedule>,
    /// `cluster.progress_timeout_ms` when set (else derived, see [`crate::control::hang::ProgressClock`]).
    pub progress_timeout_ms: Option<u64>,
}

impl Schedule {
    /// The plan of `round`: learning rate, and whether rank 0 evaluates or checkpoints after it.
    pub fn plan(&self, round: u64) -> RoundPlan {
        if let Some(st) = &self.stream {
            return st.plan(self, round);
        }
        let per_epoch = self.rounds_per_epoch.max(1);
        let last = round + 1 == self.total_rounds;
        let evaluate = last
            || if self.eval_every > 0 {
                (round + 1).is_multiple_of(self.eval_every)
            } else {
                (round + 1).is_multiple_of(per_epoch)
            };
        let (ref root, every, keep) = self.checkpoints;
        let checkpoint =
            (every > 0 && (round + 1).is_multiple_of(every) && !last).then(|| CheckpointPlan {
                cursor: self.plan.cursor_at(round + 1),
                root: root.display().to_string(),
                keep,
                seed: self.seed,
                stream_offsets: None,
                remote: self.checkpoint_remote.clone(),
            });
        RoundPlan {
            round,
            epoch: round / per_epoch,
            lr: self.optimizer.lr_at(round),
            evaluate,
            checkpoint,
            publish: None,
        }
    }
}

/// The coordinator as parameter server: its actor and where it records a failure.
#[derive(Clone)]
pub struct Server {
    /// The serving actor.
    pub addr: Addr<PsServe>,
    /// Its first failure.
    pub failure: Arc<Mutex<Option<RuntimeError>>>,
}

/// The coordinator actor; its result goes to `done` when the job ends.
pub struct Coordinator {
    control: Addr<ControlPlane>,
    server: Option<Server>,
    schedule: Schedule,
    done: Option<SyncSender<Result<Report, RuntimeError>>>,
}

impl Coordinator {
    /// A coordinator that reports its outcome on `done`; `server` when it is the parameter
    /// server.
    pub fn new(
        control: Addr<ControlPlane>,
        server: Option<Server>,
        schedule: Schedule,
        done: SyncSender<Result<Report, RuntimeError>>,
    ) -> Self {
        Coordinator {
            control,
            server,
            schedule,
            done: Some(done),
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = drive(
            self.control.clone(),
            self.server.clone(),
            self.schedule.clone(),
        );
        ctx.wait(fut.into_actor(self).map(|res, act, _| {
            if let Err(e) = &res {
                // The first line: a hang table stays in the coordinator's error.
                let reason = e.to_string().lines().next().unwrap_or_default().to_string();
                act.control.do_send(AbortAll { reason });
            }
            if let Some(done) = act.done.take() {
                let _ = done.send(res);
            }
            actix::System::current().stop();
        }));
    }
}

#[derive(Default)]
pub(super) struct Totals {
    pub(super) samples: u64,
    pub(super) rounds: u64,
    compute_ms: f64,
    comm_ms: f64,
    total_ms: f64,
    pub(super) last_loss: f64,
}

impl Totals {
    pub(super) fn add(&mut self, reports: &[RoundReport], round_ms: f64) -> f64 {
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

    pub(super) fn split(&self) -> RoundSplit {
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

pub(super) fn actor_err(e: actix::MailboxError) -> RuntimeError {
    RuntimeError::Actor(format!("control plane: {e}"))
}

/// Grant rounds `from..to` to every member (and to the serving actor).
pub(super) async fn grant(
    control: &Addr<ControlPlane>,
    server: &Option<Server>,
    s: &Schedule,
    from: u64,
    to: u64,
) -> Result<(), RuntimeError> {
    let rounds: Vec<RoundPlan> = (from..to).map(|r| s.plan(r)).collect();
    if let Some(srv) = server {
        srv.addr.do_send(ServeRounds {
            rounds: rounds.clone(),
        }); // plans only, no tensors
    }
    control
        .send(GrantRounds { rounds })
        .await
        .map_err(actor_err)?
}

/// The server's recorded failure, else `e`.
fn prefer_server(server: &Option<Server>, e: RuntimeError) -> RuntimeError {
    server
        .as_ref()
        .and_then(|s| s.failure.lock().ok().and_then(|mut f| f.take()))
        .unwrap_or(e)
}

async fn drive(
    control: Addr<ControlPlane>,
    server: Option<Server>,
    s: Schedule,
) -> Result<Report, RuntimeError> {
    let run = match &s.stream {
        Some(st) => super::coordinator_stream::run_stream_rounds(&control, &server, &s, st).await,
        None => run_rounds(&control, &server, &s).await,
    };
    run.map_err(|e| prefer_server(&server, e))
}

async fn run_rounds(
    control: &Addr<ControlPlane>,
    server: &Option<Server>,
    s: &Schedule,
) -> Result<Report, RuntimeError> {
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut eval = BTreeMap::new();
    let mut epoch_loss = (0.0f64, 0u64);
    let mut epoch_started = (Instant::now(), 0u64);
    let mut granted = (s.first_round + GRANT_WINDOW).min(s.total_rounds);
    grant(control, server, s, s.first_round, granted).await?;
    let mut t = Instant::now();
    let mut changes: Vec<MembershipChange> = Vec::new();
    // Changes whose first round after them has not completed yet: since when it paused, and a
    // replacement's process start.
    let mut open: Vec<(usize, Instant, Option<Instant>)> = Vec::new();
    let mut joining: Option<Instant> = None;
    let mut world = s.report.world_size;
    let mut round = s.first_round;
    // A graceful stop (SIGINT / SIGTERM): the round after the last one granted.
    let mut stop_at: Option<u64> = None;
    let mut clock = crate::control::hang::ProgressClock::new(s.progress_timeout_ms);
    while round < s.total_rounds {
        if stop_at.is_none() {
            if let Some(sig) = crate::node::stop::requested() {
                stop_at = Some(granted);
                log_stop(sig, round, granted);
            }
        }
        if stop_at.is_some_and(|at| round >= at) {
            break;
        }
        let plan = s.plan(round);
        let duty = plan.evaluate || plan.checkpoint.is_some();
        let collected = control
            .send(Collect {
                round,
                evaluate: plan.evaluate,
                checkpoint: plan.checkpoint.is_some(),
                timeout: clock.timeout(duty),
            })
            .await
            .map_err(actor_err)??;
        if let Some(lost) = collected.lost {
            let detected = Instant::now();
            tracing::warn!(
                "round {round}: lost {}: {}; suspending the survivors",
                if lost.dead.is_empty() {
                    "a peer".to_string()
                } else {
                    lost.dead.join(", ")
                },
                lost.reason
            );
            let msg = ChangeMembership {
                dead: lost.dead,
                reason: lost.reason.clone(),
            };
            let changed = control.send(msg).await.map_err(actor_err)??;
            record_change(&mut changes, &mut open, &changed, &lost.reason, detected);
            world = changed.world;
            s.observer.membership(world);
            round = changed.round;
            granted = (round + GRANT_WINDOW).min(s.total_rounds);
            grant(control, server, s, round, granted).await?;
            clock.restart();
            continue;
        }
        // Keep the window full: top it up when half of it has been used; hold it while a
        // replacement waits for the round boundary.
        if collected.joiner_waiting && joining.is_none() {
            tracing::info!("round {round}: a replacement is waiting; draining the granted rounds");
            joining = Some(Instant::now());
        }
        if joining.is_none()
            && stop_at.is_none()
            && granted < s.total_rounds
            && granted - (round + 1) <= GRANT_WINDOW / 2
        {
            let upto = (round + 1 + GRANT_WINDOW).min(s.total_rounds);
            grant(control, server, s, granted, upto).await?;
            granted = upto;
        }
        let gap_ms = t.elapsed().as_secs_f64() * 1e3;
        for (i, since, started) in open.drain(..) {
            changes[i].pause_ms = since.elapsed().as_secs_f64() * 1e3;
            changes[i].gap_ms = gap_ms;
            changes[i].join_ms = started.map(|s| s.elapsed().as_secs_f64() * 1e3);
            tracing::info!(
                "membership change {} ({} {}): first round after it done, paused {:.0} ms, round gap {gap_ms:.0} ms{}",
                i + 1,
                changes[i].kind,
                changes[i].nodes.join(", "),
                changes[i].pause_ms,
                changes[i]
                    .join_ms
                    .map(|j| format!(", {j:.0} ms from its process start"))
                    .unwrap_or_default()
            );
        }
        clock.record(gap_ms, duty);
        let loss = totals.add(&collected.reports, gap_ms);
        let round_ms = gap_ms;
        t = Instant::now();
        s.observer.round(round, plan.epoch, &collected, round_ms);
        if !loss.is_finite() {
            return Err(RuntimeError::Model(format!(
                "round {round}: training loss is {loss}"
            )));
        }
        epoch_loss = (epoch_loss.0 + loss, epoch_loss.1 + 1);
        if let Some(path) = &collected.checkpoint {
            tracing::info!("checkpoint for round {} written to {path}", round + 1);
        }
        if let Some(metrics) = collected.metrics {
            eval = metrics;
            let secs = epoch_started.0.elapsed().as_secs_f64();
            let rate = (totals.samples - epoch_started.1) as f64 / secs.max(1e-9);
            let metric = eval
                .get(s.headline)
                .map(|v| format!("{} {v:.4}", s.headline))
                .unwrap_or_default();
            tracing::info!(
                "epoch {}/{} round {}/{}: train loss {:.4}, {metric}, {rate:.0} samples/s",
                plan.epoch + 1,
                s.total_rounds.div_ceil(s.rounds_per_epoch.max(1)),
                round + 1,
                s.total_rounds,
                epoch_loss.0 / epoch_loss.1.max(1) as f64
            );
            epoch_loss = (0.0, 0);
            epoch_started = (Instant::now(), totals.samples);
        }
        round += 1;
        let go_on = round == granted && round < s.total_rounds && stop_at.is_none();
        if let (Some(since), true) = (joining, go_on) {
            joining = None;
            let msg = ChangeMembership {
                dead: Vec::new(),
                reason: "a replacement joins".into(),
            };
            let changed = control.send(msg).await.map_err(actor_err)??;
            record_change(&mut changes, &mut open, &changed, "replacement", since);
            world = changed.world;
            s.observer.membership(world);
            round = changed.round;
            granted = (round + GRANT_WINDOW).min(s.total_rounds);
            grant(control, server, s, round, granted).await?;
            clock.restart();
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let last_round = round.saturating_sub(1);
    let path = s.model_path.display().to_string();
    // A stopped job leaves a checkpoint that `--resume` continues from.
    let checkpoint = stop_at.map(|_| CheckpointPlan {
        cursor: s.plan.cursor_at(round),
        root: s.checkpoints.0.display().to_string(),
        keep: s.checkpoints.2,
        seed: s.seed,
        stream_offsets: None,
        remote: s.checkpoint_remote.clone(),
    });
    let saved = control
        .send(RunSave {
            round: last_round,
            path,
            checkpoint,
            timeout: clock.end_timeout(),
        })
        .await
        .map_err(actor_err)??;
    let weights = control
        .send(RunFinish {
            round: last_round,
            timeout: clock.end_timeout(),
        })
        .await
        .map_err(actor_err)??;
    let mut report = s.report.clone();
    report.rounds = round;
    report.epochs = round as f64 / s.rounds_per_epoch.max(1) as f64;
    if stop_at.is_some() {
        stopped(&mut report, s, round);
    }
    report.samples = totals.samples;
    report.wall_s = wall_s;
    report.samples_per_s = totals.samples as f64 / wall_s.max(1e-9);
    report.final_train_loss = totals.last_loss;
    report.eval = eval;
    (report.weights_sha256, report.solver) = weights;
    report.checkpoint = Some(saved);
    report.round_time = totals.split();
    report.world_size = world;
    report.membership_changes = changes;
    s.observer.finish(&report);
    Ok(report)
}

/// Log the start of a graceful stop.
pub(super) fn log_stop(sig: i32, round: u64, granted: u64) {
    tracing::warn!(
        "{} received at round {round}: stopping after round {granted} (the rounds already granted), then writing a final checkpoint, the model and the report; a second signal stops at once",
        crate::node::stop::signal_name(sig)
    );
}

/// Mark `report` as a graceful stop before `round` and say how to continue.
pub(super) fn stopped(report: &mut Report, s: &Schedule, round: u64) {
    let sig = crate::node::stop::requested().unwrap_or(libc::SIGINT);
    report.status = "stopped".into();
    report.stopped_by = Some(crate::node::stop::signal_name(sig).into());
    let dir = crate::checkpoint::dir_for(&s.checkpoints.0, round);
    tracing::info!(
        "stopped after round {round}; final checkpoint {}; `lockstep launch --resume` continues there",
        dir.display()
    );
}

/// Log a membership change and add its events (a loss and a join can come in one change).
fn record_change(
    changes: &mut Vec<MembershipChange>,
    open: &mut Vec<(usize, Instant, Option<Instant>)>,
    c: &Changed,
    reason: &str,
    since: Instant,
) {
    if !c.dead.is_empty() {
        tracing::warn!(
            "membership: lost {} ({reason}); continuing at round {} with {} workers, state from {}",
            c.dead.join(", "),
            c.round,
            c.world,
            c.source
        );
        changes.push(MembershipChange {
            kind: "lost".into(),
            nodes: c.dead.clone(),
            reason: reason.to_string(),
            round: c.round,
            world_size: c.world,
            ..Default::default()
        });
        open.push((changes.len() - 1, since, None));
    }
    for (name, registered, started) in &c.joined {
        tracing::info!(
            "membership: {name} joined at round {} ({} workers), state from {}",
            c.round,
            c.world,
            c.source
        );
        changes.push(MembershipChange {
            kind: "joined".into(),
            nodes: vec![name.clone()],
            reason: "replacement".into(),
            round: c.round,
            world_size: c.world,
            ..Default::default()
        });
        open.push((changes.len() - 1, *registered, *started));
    }
    if c.dead.is_empty() && c.joined.is_empty() {
        tracing::info!(
            "membership: unchanged after a lost mesh; continuing at round {}",
            c.round
        );
    }
}
