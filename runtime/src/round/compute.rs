//! `Compute`: forward/backward and the optimizer step, on a `SyncArbiter` thread (never on an
//! arbiter thread: a backward pass there would stall every heartbeat and mailbox on it).
//!
//! It runs the granted rounds back to back as a small state machine driven by three messages:
//! [`Grant`] (rounds the coordinator allows), [`ShardReady`] (the data loader's shard of a
//! round) and [`Reduced`] (the aggregator's result). A round starts when it is granted, its shard
//! is here and the gradient buffer is home; backprop writes into that one owned buffer, whose
//! bucket pieces travel to the aggregator as they finish (see [`super::grad_sink`]) and come
//! back re-joined; the optimizer step then runs and the round is reported through the
//! [`Reporter`], with evaluation and checkpoint duties of rank 0 done right after the step.
//! No control round trip and no gradient-sized copy sits between two rounds.

use super::grad_sink::PieceSink;
use super::messages::*;
use super::{deliver, Reporter};
use crate::control::hang::{Doing, Thread};
use crate::control::protocol::{RoundPlan, RoundTiming, ToCoordinator};
use crate::error::{MismatchError, ProtocolError, RuntimeError, TrainingError};
use crate::job::stored_transform::StoredTransform;
use actix::{Actor, Handler, Recipient, SyncContext};
use lockstep_tensor::BufferMut;
use lockstep_trainer::data::{ShardBatch, Task as DataTask};
use lockstep_trainer::model::{Model, SliceSink};
use lockstep_trainer::optim::Optimizer;
use lockstep_trainer::Batch;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod save;
mod score;
mod sparse;
mod state;
mod update;
pub(crate) use save::publish_model;

/// The round in flight: its plan and what its report needs.
struct Running {
    plan: RoundPlan,
    started: Instant,
    backprop_done: Instant,
    compute: Duration,
    loss_sum: f64,
    rows: usize,
    scored: Vec<[f32; 2]>,
}

/// The compute actor: owns the model replica, its gradient buffer and the optimizer.
pub(crate) struct Compute {
    model: Box<dyn Model>,
    optimizer: Optimizer,
    aggregator: Recipient<GradBucket>,
    loader: Recipient<Prefetch>,
    reporter: Reporter,
    world: usize,
    rank: usize,
    rank0: bool,
    task: DataTask,
    test: Batch,
    /// Micro-batches per worker (0: off), and the gradients of all but the last one.
    micro: usize,
    micro_grads: Vec<Vec<f32>>,
    /// The gradient buffer; `None` while its pieces are with the aggregator.
    grads: Option<BufferMut>,
    plans: VecDeque<RoundPlan>,
    next_round: u64,
    shard: Option<(u64, Result<ShardBatch, RuntimeError>)>,
    requested: Option<u64>,
    running: Option<Running>,
    stopped: bool,
    /// One worker with allreduce: nothing to reduce, so no hand-off to the aggregator.
    local: bool,
    /// Streams: score every shard before training on it (prequential evaluation).
    prequential: bool,
    /// Streams in arrival order: the producers' offsets after a round (sent with `RoundDone`).
    offsets: Option<StreamOffsets>,
    /// The data transform, stored in checkpoints and in the model's metadata.
    transform: Option<Arc<StoredTransform>>,
    /// Embedding tables: where their exchanges go.
    sparse_link: Option<sparse::SparseLink>,
    /// The model file last written (`Save`): the tables go beside it at the end.
    saved_model: Option<std::path::PathBuf>,
}

/// Per producer, the offset of the next row after a round's rows (arrival-order streams).
pub(crate) type StreamOffsets = std::sync::Arc<dyn Fn(u64) -> BTreeMap<u32, u64> + Send + Sync>;

impl Compute {
    /// A compute actor for `world`-way data parallelism, starting at `first_round`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        model: Box<dyn Model>,
        optimizer: Optimizer,
        aggregator: Recipient<GradBucket>,
        loader: Recipient<Prefetch>,
        reporter: Reporter,
        world: usize,
        rank: usize,
        task: DataTask,
        test: Batch,
        first_round: u64,
    ) -> Self {
        let grads = BufferMut::zeroed(model.params().len() * 4);
        Compute {
            model,
            optimizer,
            aggregator,
            loader,
            reporter,
            world,
            rank,
            rank0: rank == 0,
            task,
            test,
            micro: 0,
            micro_grads: Vec::new(),
            grads: Some(grads),
            plans: VecDeque::new(),
            next_round: first_round,
            shard: None,
            requested: None,
            running: None,
            stopped: false,
            local: false,
            prequential: false,
            offsets: None,
            transform: None,
            sparse_link: None,
            saved_model: None,
        }
    }

    /// Streams in arrival order: report the producers' offsets after each round.
    pub(crate) fn with_stream_offsets(mut self, offsets: Option<StreamOffsets>) -> Self {
        self.offsets = offsets;
        self
    }

    /// Store `transform` in every checkpoint and model file this actor writes.
    pub(crate) fn with_transform(mut self, transform: Option<Arc<StoredTransform>>) -> Self {
        self.transform = transform;
        self
    }

    /// Streams: score each shard before training on it and report the pairs with `RoundDone`.
    pub(crate) fn with_prequential(mut self, on: bool) -> Self {
        self.prequential = on;
        self
    }

    /// With `true` (one worker, allreduce), backprop's gradient stays here: the mean over one
    /// worker is the gradient itself, so the round skips the aggregator's thread.
    pub(crate) fn with_local_aggregation(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// Reproducible mode: `per_worker` micro-batches per shard, summed in a fixed binary tree.
    pub(crate) fn with_micro_batches(mut self, per_worker: usize) -> Self {
        self.micro = per_worker;
        let n = self.model.params().len();
        self.micro_grads = vec![vec![0.0; n]; per_worker.saturating_sub(1)];
        self
    }

    fn fail(&mut self, e: RuntimeError) {
        self.stopped = true;
        self.reporter.fail(self.next_round, e);
    }

    /// Ask the loader for the shard of `round` unless it is asked for or here already.
    fn request(&mut self, round: u64, ctx: &mut SyncContext<Self>) -> Result<(), RuntimeError> {
        let have = self.shard.as_ref().is_some_and(|(r, _)| *r == round);
        if have || self.requested == Some(round) {
            return Ok(());
        }
        self.requested = Some(round);
        let to = ctx.address().recipient();
        deliver(&self.loader, Prefetch { round, to }, "a prefetch request")
    }

    /// Run rounds while one is granted, its shard is here and the gradient buffer is home.
    fn advance(&mut self, ctx: &mut SyncContext<Self>) -> Result<(), RuntimeError> {
        loop {
            if self.stopped || self.running.is_some() || self.grads.is_none() {
                return Ok(());
            }
            let board = self.reporter.activity();
            let Some(plan) = self.plans.front() else {
                board.set(Thread::Compute, Doing::AwaitGrant, self.next_round, 0);
                return Ok(());
            };
            if plan.round != self.next_round {
                return Err(ProtocolError::GrantOutOfOrder {
                    granted: plan.round,
                    next: self.next_round,
                }
                .into());
            }
            let round = self.next_round;
            match &self.shard {
                Some((r, _)) if *r == round => {}
                _ => {
                    board.set(Thread::Compute, Doing::AwaitData, round, 0);
                    return self.request(round, ctx);
                }
            }
            let plan = self.plans.pop_front().expect("checked above");
            let (_, shard) = self.shard.take().expect("checked above");
            let shard = shard?;
            if self.plans.front().is_some_and(|p| p.round == round + 1) {
                self.request(round + 1, ctx)?;
            }
            let reply = ctx.address().recipient();
            match self.step(plan, &shard, &reply)? {
                Some(reduced) => self.finish(reduced)?,
                None => return Ok(()),
            }
        }
    }

    /// Run the first `k - 1` micro-batches into their own buffers; the last micro-batch's rows
    /// and the summed loss so far.
    fn micro_head(&mut self, round: u64, shard: &ShardBatch) -> Result<(Batch, f64), RuntimeError> {
        let (k, b) = (self.micro, &shard.batch);
        if !b.rows.is_multiple_of(k) {
            return Err(TrainingError::MicroBatches {
                round,
                rows: b.rows,
                micro_batches: k,
            }
            .into());
        }
        let per = b.rows / k;
        let divisor = shard.global_rows as f32;
        let mut loss_sum = 0.0;
        for i in 0..k - 1 {
            let micro = b.slice_rows(i * per..(i + 1) * per);
            let mut ignore = |_, _: &mut [f32]| {};
            let mut sink = SliceSink::new(&mut self.micro_grads[i], &mut ignore);
            loss_sum += self
                .model
                .forward_backward_into(&micro, divisor, &mut sink)
                .map_err(TrainingError::step(round, None))?
                .loss_sum;
        }
        Ok((b.slice_rows((k - 1) * per..k * per), loss_sum))
    }

    /// Forward/backward of one round; the buckets go to the aggregator as they finish. With
    /// local aggregation the result is returned at once instead.
    fn step(
        &mut self,
        plan: RoundPlan,
        shard: &ShardBatch,
        reply: &Recipient<Reduced>,
    ) -> Result<Option<Reduced>, RuntimeError> {
        let started = Instant::now();
        let round = plan.round;
        let board = self.reporter.activity().clone();
        board.set(Thread::Compute, Doing::ForwardBackward, round, 0);
        #[cfg(feature = "fault-injection")]
        board.stall_point(round)?;
        self.sparse_pull(round, &shard.batch)?;
        let scored = self.score(round, &shard.batch)?;
        let (last_micro, head_loss) = match self.micro {
            0 => (None, 0.0),
            _ => {
                let (b, l) = self.micro_head(round, shard)?;
                (Some(b), l)
            }
        };
        let (batch, divisor) = match &last_micro {
            Some(b) => (b, shard.global_rows as f32),
            None => (
                &shard.batch,
                (shard.global_rows as f32 / self.world as f32).max(f32::MIN_POSITIVE),
            ),
        };
        let grads = self
            .grads
            .take()
            .expect("advance checked the buffer is home");
        let total = self.model.params().len();
        let aggregator = (!self.local).then_some(&self.aggregator);
        let mut sink = PieceSink::new(
            round,
            grads,
            total,
            &mut self.micro_grads,
            aggregator,
            reply,
        )
        .gathering_state(plan.checkpoint.is_some());
        let out = self
            .model
            .forward_backward_into(batch, divisor, &mut sink)
            .map_err(TrainingError::step(round, None))?;
        if let Some(e) = sink.failed.take() {
            return Err(e);
        }
        if !sink.sent_last {
            return Err(TrainingError::MissingBuckets { round }.into());
        }
        let kept = sink.into_kept();
        self.sparse_push(round, plan.lr)?;
        self.sparse_checkpoint(round, plan.checkpoint.as_ref())?;
        board.set(Thread::Compute, Doing::AwaitAggregate, round, 0);
        self.running = Some(Running {
            plan,
            started,
            backprop_done: Instant::now(),
            compute: started.elapsed(),
            loss_sum: head_loss + out.loss_sum,
            rows: shard.batch.rows,
            scored,
        });
        Ok(kept.map(|grads| Reduced {
            round,
            grads,
            params: None,
            comm: Duration::ZERO,
            optimizer: None,
        }))
    }

    /// The aggregator is done: step, report, do rank 0's duties, go on.
    fn finish(&mut self, msg: Reduced) -> Result<(), RuntimeError> {
        let no_round = MismatchError::NoRound { round: msg.round };
        let run = self.running.take().ok_or(no_round)?;
        let round = run.plan.round;
        if msg.round != round {
            let got = msg.round;
            return Err(MismatchError::OtherRound { round, got }.into());
        }
        let exposed = run.backprop_done.elapsed();
        let t = Instant::now();
        let board = self.reporter.activity().clone();
        board.set(Thread::Compute, Doing::OptimizerStep, round, 0);
        self.apply_update(round, run.plan.lr, &msg)?;
        drop(msg.params);
        if let Some(state) = &msg.optimizer {
            // The servers' optimizer state, for the checkpoint of this round.
            let what = "parameter servers' optimizer state";
            let bad = |source| MismatchError::OptimizerState {
                round: Some(round),
                what,
                source,
            };
            self.optimizer.load_state(state).map_err(bad)?;
        }
        self.grads = Some(msg.grads);
        let r = &self.reporter;
        r.span(
            round,
            "compute",
            "forward/backward",
            run.started,
            run.backprop_done,
        );
        r.span(round, "compute", "waiting", run.backprop_done, t);
        r.span(round, "compute", "optimizer step", t, Instant::now());
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let done = ToCoordinator::RoundDone {
            round,
            loss_sum: run.loss_sum,
            samples: run.rows as u64,
            timing: RoundTiming {
                compute_ms: ms(run.compute + t.elapsed()),
                comm_ms: ms(exposed),
                collective_ms: ms(msg.comm),
                round_ms: ms(run.started.elapsed()),
            },
            links: self.reporter.links(),
            scored: run.scored,
            offsets: self.offsets.as_ref().map(|f| f(round)).unwrap_or_default(),
        };
        self.reporter.send(round, &done)?;
        self.next_round = round + 1;
        if run.plan.evaluate {
            board.set(Thread::Compute, Doing::Evaluate, round, 0);
            let t = Instant::now();
            self.sparse_pull_test(round)?;
            let (m, task, test) = (self.model.as_mut(), self.task, &self.test);
            let share = crate::job::held_out::share(m, task, test, self.rank, self.world)?;
            self.reporter
                .span(round, "compute", "evaluate", t, Instant::now());
            self.reporter
                .send(round, &ToCoordinator::Evaluated { round, share })?;
        }
        if let (true, Some(c)) = (self.rank0, &run.plan.checkpoint) {
            board.set(Thread::Compute, Doing::Checkpoint, round, 0);
            let t = Instant::now();
            let dir = self.write_checkpoint(c, round)?;
            let path = dir.display().to_string();
            let end = Instant::now();
            self.reporter.span(round, "compute", "checkpoint", t, end);
            let write_ms = ms(end - t);
            self.reporter.send(
                round,
                &ToCoordinator::Checkpointed {
                    round,
                    path,
                    write_ms,
                },
            )?;
        }
        if self.reporter.traced(round) {
            let r = &self.reporter;
            r.span(
                round,
                "compute",
                &format!("round {round}"),
                run.started,
                Instant::now(),
            );
            r.flush_trace(round)?;
        }
        if let (true, Some(path)) = (self.rank0, &run.plan.publish) {
            publish_model(self.model.as_ref(), path, round, self.transform.as_deref())?;
        }
        Ok(())
    }
}

impl Actor for Compute {
    type Context = SyncContext<Self>;
}

impl Handler<Grant> for Compute {
    type Result = ();
    fn handle(&mut self, msg: Grant, ctx: &mut SyncContext<Self>) {
        self.plans.extend(msg.rounds);
        if let Err(e) = self.advance(ctx) {
            self.fail(e);
        }
    }
}

impl Handler<ShardReady> for Compute {
    type Result = ();
    fn handle(&mut self, msg: ShardReady, ctx: &mut SyncContext<Self>) {
        self.shard = Some((msg.round, msg.shard));
        if let Err(e) = self.advance(ctx) {
            self.fail(e);
        }
    }
}

impl Handler<Reduced> for Compute {
    type Result = ();
    fn handle(&mut self, msg: Reduced, ctx: &mut SyncContext<Self>) {
        if self.stopped {
            return;
        }
        if let Err(e) = self.finish(msg).and_then(|()| self.advance(ctx)) {
            self.fail(e);
        }
    }
}
