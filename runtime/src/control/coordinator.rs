//! `Coordinator`: drives synchronous SGD rounds without standing in their way. It grants rounds
//! ahead (a window of [`GRANT_WINDOW`] rounds, each with its learning rate and whether rank 0
//! evaluates or checkpoints after it), collects every member's asynchronous `RoundDone`, logs
//! progress once per epoch (loss, eval metric, samples/s), asks for the final model save, and
//! writes the report. It stops every node at a round boundary by granting no further (and with
//! `Abort` on failure). It only awaits other actors, so it never blocks its arbiter.

use super::plane::{AbortAll, ControlPlane};
use super::rounds::batch::BatchPace;
use super::rounds::stream::{StreamPace, StreamSchedule};
use super::rounds::{self, Ctx, Pace};
use crate::control::protocol::{CheckpointPlan, RoundPlan};
use crate::error::RuntimeError;
use crate::observe::report::Report;
use crate::ps::serve::PsServe;
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use lockstep_trainer::optim::OptimizerSpec;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

/// Everything the coordinator needs to drive a job.
#[derive(Clone)]
pub(crate) struct Schedule {
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
    pub stream: Option<StreamSchedule>,
    /// This coordinator took over from a dead one (elastic): where and why.
    pub takeover: Option<super::takeover::Takeover>,
    /// Elastic: the file the membership changes are kept in (see [`super::takeover`]).
    pub history: Option<PathBuf>,
    /// `cluster.progress_timeout_ms` when set (else derived, see [`crate::control::hang::ProgressClock`]).
    pub progress_timeout_ms: Option<u64>,
}

impl Schedule {
    /// The plan of `round`: learning rate, and whether rank 0 evaluates or checkpoints after it.
    pub(crate) fn plan(&self, round: u64) -> RoundPlan {
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
pub(crate) struct Server {
    /// The serving actor.
    pub addr: Addr<PsServe>,
    /// Its first failure.
    pub failure: Arc<Mutex<Option<RuntimeError>>>,
}

/// The coordinator actor; its result goes to `done` when the job ends.
pub(crate) struct Coordinator {
    control: Addr<ControlPlane>,
    server: Option<Server>,
    schedule: Schedule,
    done: Option<SyncSender<Result<Report, RuntimeError>>>,
}

impl Coordinator {
    /// A coordinator that reports its outcome on `done`; `server` when it is the parameter
    /// server.
    pub(crate) fn new(
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
    let cx = Ctx {
        control: &control,
        server: &server,
        s: &s,
    };
    let pace = match &s.stream {
        Some(st) => Pace::Stream(StreamPace::new(st)),
        None => Pace::Batch(BatchPace::new(
            s.report.world_size,
            s.takeover.as_ref(),
            s.history.clone(),
        )),
    };
    rounds::run(&cx, pace)
        .await
        .map_err(|e| prefer_server(&server, e))
}
