//! The coordinator's one round loop, for every data source. Each turn: honour a graceful stop,
//! let the [`Pace`] grant what may run next, collect every member's report of the round, hand a
//! lost round to the pace (elastic membership), account the round, and let the pace add what
//! its source needs. Files and datasets ([`batch`]) and streams ([`stream`]) differ only there:
//!
//! - how rounds are granted: a window topped up at half (batch), or only as far as every
//!   worker's producers have delivered rows (stream);
//! - when the job ends: after `total_rounds` (both), or when the producers close (stream);
//! - what a collected round adds: epoch lines and membership changes (batch), the prequential
//!   window, producers' offsets and arrival-order checkpoints (stream);
//! - what the end writes: the model and, after a stop, a checkpoint (batch); always a final
//!   checkpoint with the offsets and the stream's figures (stream).

pub(crate) mod batch;
mod grants;
pub(crate) mod stream;

use super::coordinator::{Schedule, Server};
use super::plane::{
    Collect, Collected, ControlPlane, GrantRounds, RoundReport, RunFinish, RunSave,
};
use crate::control::hang::ProgressClock;
use crate::control::protocol::{CheckpointPlan, RoundPlan};
use crate::error::{ActorError, ProtocolError, RuntimeError, TrainingError};
use crate::observe::report::{Report, RoundSplit, SolverReport};
use crate::ps::serve::ServeRounds;
use actix::Addr;
use std::collections::BTreeMap;
use std::time::Instant;

/// What the loop needs of the coordinator: its control plane, the serving actor when it is the
/// parameter server, and the job's schedule.
pub(crate) struct Ctx<'a> {
    pub(crate) control: &'a Addr<ControlPlane>,
    pub(crate) server: &'a Option<Server>,
    pub(crate) s: &'a Schedule,
}

impl Ctx<'_> {
    /// Grant rounds `from..to` to every member (and to the serving actor).
    pub(crate) async fn grant(&self, from: u64, to: u64) -> Result<(), RuntimeError> {
        let rounds: Vec<RoundPlan> = (from..to).map(|r| self.s.plan(r)).collect();
        if let Some(srv) = self.server {
            srv.addr.do_send(ServeRounds {
                rounds: rounds.clone(),
            }); // plans only, no tensors
        }
        self.control
            .send(GrantRounds { rounds })
            .await
            .map_err(actor_err)?
    }

    /// Ask the first worker to write the model (`path`) and/or a checkpoint after `round`.
    pub(crate) async fn save(
        &self,
        round: u64,
        path: String,
        checkpoint: Option<CheckpointPlan>,
        clock: &ProgressClock,
    ) -> Result<String, RuntimeError> {
        let msg = RunSave {
            round,
            path,
            checkpoint,
            timeout: clock.end_timeout(),
        };
        self.control.send(msg).await.map_err(actor_err)?
    }
}

/// Where a run stands; shared by the loop and its pace.
pub(crate) struct Run {
    /// When the loop started.
    pub(crate) started: Instant,
    /// The round to collect next.
    pub(crate) round: u64,
    /// Rounds below this one are granted.
    pub(crate) granted: u64,
    /// A graceful stop (SIGINT / SIGTERM): the round after the last one granted.
    pub(crate) stop_at: Option<u64>,
    /// Why the loop ended: `job.rounds`, `stopped` or `producers closed`.
    pub(crate) ended: &'static str,
    /// Progress timeouts from the rounds seen.
    pub(crate) clock: ProgressClock,
    /// Sums over the collected rounds.
    pub(crate) totals: Totals,
    /// The latest held-out metrics.
    pub(crate) eval: BTreeMap<String, f64>,
    /// When the previous round was accounted.
    last: Instant,
}

/// What the pace says before a round is collected.
pub(crate) enum Step {
    /// Collect the round.
    Collect,
    /// Look again from the top of the loop (a stop arrived while waiting).
    Again,
    /// The job ends here (the reason goes to the report).
    End(&'static str),
}

/// A collected round as the pace sees it.
pub(crate) struct Turn<'a> {
    pub(crate) plan: &'a RoundPlan,
    pub(crate) collected: &'a Collected,
    /// Mean training loss of the round.
    pub(crate) loss: f64,
    /// Since the previous round was accounted.
    pub(crate) round_ms: f64,
}

/// What differs between sources; see the module docs.
pub(crate) enum Pace<'a> {
    /// Files and datasets: epochs, elastic membership.
    Batch(batch::BatchPace),
    /// A stream: rounds gated on producers' rows.
    Stream(stream::StreamPace<'a>),
}

impl Pace<'_> {
    async fn start(&mut self, cx: &Ctx<'_>, run: &mut Run) -> Result<(), RuntimeError> {
        match self {
            Pace::Batch(b) => b.start(cx, run).await,
            Pace::Stream(_) => Ok(()),
        }
    }

    async fn before(&mut self, cx: &Ctx<'_>, run: &mut Run) -> Result<Step, RuntimeError> {
        match self {
            Pace::Batch(_) => Ok(Step::Collect),
            Pace::Stream(st) => st.before(cx, run).await,
        }
    }

    /// The clock's figure for a round: its whole gap (batch) or only the collection (a stream
    /// waits for producers' rows before it grants).
    fn progress_ms(&self, round_ms: f64, collect_ms: f64) -> f64 {
        match self {
            Pace::Batch(_) => round_ms,
            Pace::Stream(_) => collect_ms,
        }
    }

    async fn after(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
        turn: Turn<'_>,
    ) -> Result<(), RuntimeError> {
        match self {
            Pace::Batch(b) => b.after(cx, run, turn).await,
            Pace::Stream(st) => st.after(cx, run, turn).await,
        }
    }

    async fn finish(self, cx: &Ctx<'_>, run: Run) -> Result<Report, RuntimeError> {
        match self {
            Pace::Batch(b) => b.finish(cx, run).await,
            Pace::Stream(st) => st.finish(cx, run).await,
        }
    }
}

/// Drive the job's rounds to the end and write the report.
pub(crate) async fn run(cx: &Ctx<'_>, mut pace: Pace<'_>) -> Result<Report, RuntimeError> {
    let s = cx.s;
    let now = Instant::now();
    let mut run = Run {
        started: now,
        round: s.first_round,
        granted: s.first_round,
        stop_at: None,
        ended: "job.rounds",
        clock: ProgressClock::new(s.progress_timeout_ms),
        totals: Totals::default(),
        eval: BTreeMap::new(),
        last: now,
    };
    pace.start(cx, &mut run).await?;
    while run.round < s.total_rounds {
        if run.stop_at.is_none() {
            if let Some(sig) = crate::node::stop::requested() {
                let at = run.granted.max(run.round);
                run.stop_at = Some(at);
                log_stop(sig, run.round, at);
            }
        }
        if run.stop_at.is_some_and(|at| run.round >= at) {
            run.ended = "stopped";
            break;
        }
        match pace.before(cx, &mut run).await? {
            Step::Collect => {}
            Step::Again => continue,
            Step::End(why) => {
                run.ended = why;
                break;
            }
        }
        let round = run.round;
        let plan = s.plan(round);
        let duty = plan.evaluate || plan.checkpoint.is_some();
        let asked = Instant::now();
        let collected = cx
            .control
            .send(Collect {
                round,
                evaluate: plan.evaluate,
                checkpoint: plan.checkpoint.is_some(),
                timeout: run.clock.timeout(duty),
            })
            .await
            .map_err(actor_err)??;
        if let Some(lost) = collected.lost {
            match &mut pace {
                Pace::Batch(b) => b.lost(cx, &mut run, lost).await?,
                Pace::Stream(_) => {
                    return Err(ProtocolError::StreamLost {
                        round,
                        reason: lost.reason,
                    }
                    .into())
                }
            }
            continue;
        }
        let round_ms = run.last.elapsed().as_secs_f64() * 1e3;
        let collect_ms = asked.elapsed().as_secs_f64() * 1e3;
        run.clock
            .record(pace.progress_ms(round_ms, collect_ms), duty);
        let loss = run.totals.add(&collected.reports, round_ms);
        run.last = Instant::now();
        let turn = Turn {
            plan: &plan,
            collected: &collected,
            loss,
            round_ms,
        };
        pace.after(cx, &mut run, turn).await?;
        run.round += 1;
        if let Pace::Batch(b) = &mut pace {
            b.between(cx, &mut run).await?;
        }
    }
    pace.finish(cx, run).await
}

/// A round whose training loss is not finite stops the job.
pub(crate) fn check_loss(round: u64, loss: f64) -> Result<(), RuntimeError> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(TrainingError::NonFiniteLoss { round, loss }.into())
}

/// The end common to every source: the model (and `checkpoint`) written by the first worker,
/// every member's final hash, and the report's common fields. `between` runs after the save,
/// before the hash exchange.
pub(crate) async fn finish(
    cx: &Ctx<'_>,
    run: &Run,
    checkpoint: Option<CheckpointPlan>,
    between: impl FnOnce(),
) -> Result<(Report, String, Option<SolverReport>), RuntimeError> {
    let s = cx.s;
    let wall_s = run.started.elapsed().as_secs_f64();
    let last_round = run.round.saturating_sub(1);
    let path = s.model_path.display().to_string();
    let saved = cx.save(last_round, path, checkpoint, &run.clock).await?;
    between();
    let (weights, solver) = cx
        .control
        .send(RunFinish {
            round: last_round,
            timeout: run.clock.end_timeout(),
        })
        .await
        .map_err(actor_err)??;
    let mut report = s.report.clone();
    report.rounds = run.round;
    if run.stop_at.is_some() {
        stopped(&mut report, s, run.round);
    }
    report.samples = run.totals.samples;
    report.wall_s = wall_s;
    report.samples_per_s = run.totals.samples as f64 / wall_s.max(1e-9);
    report.final_train_loss = run.totals.last_loss;
    report.eval = run.eval.clone();
    report.checkpoint = Some(saved);
    report.round_time = run.totals.split();
    Ok((report, weights, solver))
}

/// Sums over the collected rounds.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) samples: u64,
    pub(crate) rounds: u64,
    compute_ms: f64,
    comm_ms: f64,
    total_ms: f64,
    pub(crate) last_loss: f64,
}

impl Totals {
    /// Add a round's reports; its mean training loss.
    pub(crate) fn add(&mut self, reports: &[RoundReport], round_ms: f64) -> f64 {
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

/// The control plane's mailbox failed.
pub(crate) fn actor_err(e: actix::MailboxError) -> RuntimeError {
    ActorError::Mailbox {
        mailbox: "control plane",
        source: e,
    }
    .into()
}

/// Log the start of a graceful stop.
fn log_stop(sig: i32, round: u64, granted: u64) {
    tracing::warn!(
        "{} received at round {round}: stopping after round {granted} (the rounds already granted), then writing a final checkpoint, the model and the report; a second signal stops at once",
        crate::node::stop::signal_name(sig)
    );
}

/// Mark `report` as a graceful stop before `round` and say how to continue.
fn stopped(report: &mut Report, s: &Schedule, round: u64) {
    let sig = crate::node::stop::requested().unwrap_or(libc::SIGINT);
    report.status = "stopped".into();
    report.stopped_by = Some(crate::node::stop::signal_name(sig).into());
    let dir = crate::checkpoint::dir_for(&s.checkpoints.0, round);
    tracing::info!(
        "stopped after round {round}; final checkpoint {}; `lockstep launch --resume` continues there",
        dir.display()
    );
}
