//! The pace of a stream (`source = "stream"`) in the coordinator's round loop: rounds are granted only as far as
//! every worker's producers have delivered rows for them (workers report `StreamProgress`), so
//! no worker ever starts a round another cannot fill; a bounded stream ends at the first round
//! some worker cannot fill once its producers have all closed. Each round's prequential pairs
//! (every row scored before training on it) feed a window of metrics that is logged, written next
//! to each checkpoint (`prequential.json`) and reported. The end (or a graceful stop) writes a
//! final checkpoint with the producers' committed offsets, the model and the report.
//!
//! Offsets: with deterministic order they are a function of the round. With arrival order
//! each worker reports its producers' offsets after every round (`RoundDone`), and the
//! coordinator writes each checkpoint itself once its round is collected (no grant crosses a
//! checkpoint round), so the offsets it commits are exactly the rows trained.

use super::{actor_err, check_loss, finish, Ctx, Run, Step, Turn};
use crate::control::coordinator::Schedule;
use crate::control::plane::{AwaitStream, ControlPlane, StreamView};
use crate::control::protocol::{CheckpointPlan, RoundPlan, GRANT_WINDOW};
use crate::error::RuntimeError;
use crate::observe::report::{Report, StreamReport};
use actix::Addr;
use lockstep_trainer::data::{DataCursor, Order, StreamSpec, Task};
use lockstep_trainer::metrics;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

/// Rounds between evaluations when `job.eval_every = 0` (a stream has no epochs).
pub(crate) const STREAM_EVAL_EVERY: u64 = 50;

/// What the coordinator needs to drive a stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamSchedule {
    /// `[job.data.stream]`.
    pub spec: StreamSpec,
    /// Rows of each producer per round.
    pub per_producer: u64,
    /// The task (which prequential metrics).
    pub task: Task,
    /// Arrival order: per producer, the offset training starts at (the resumed checkpoint's;
    /// producers not named start at 0).
    pub start_offsets: BTreeMap<u32, u64>,
}

impl StreamSchedule {
    /// Per producer, the offset of the next row to train on before `round` (deterministic
    /// order: every round takes the same number of rows from each producer).
    pub(crate) fn offsets(&self, round: u64) -> Option<BTreeMap<u32, u64>> {
        (self.spec.order == Order::Deterministic).then(|| {
            (0..self.spec.producers)
                .map(|p| (p, round * self.per_producer))
                .collect()
        })
    }

    fn arrival(&self) -> bool {
        self.spec.order == Order::Arrival
    }

    /// The checkpoint that continues at `next` (after round `next - 1`); `trained` holds the
    /// producers' offsets after it in arrival order.
    fn checkpoint(&self, s: &Schedule, next: u64, trained: &BTreeMap<u32, u64>) -> CheckpointPlan {
        CheckpointPlan {
            cursor: DataCursor {
                epoch: 0,
                batch_in_epoch: next,
            },
            root: s.checkpoints.0.display().to_string(),
            keep: s.checkpoints.2,
            seed: s.seed,
            remote: s.checkpoint_remote.clone(),
            stream_offsets: match self.arrival() {
                true => Some(trained.clone()),
                false => self.offsets(next),
            },
        }
    }

    /// The plan of `round` in a stream.
    pub(crate) fn plan(&self, s: &Schedule, round: u64) -> RoundPlan {
        let every = |n: u64| n > 0 && (round + 1).is_multiple_of(n);
        let eval_every = if s.eval_every > 0 {
            s.eval_every
        } else {
            STREAM_EVAL_EVERY
        };
        let last = round + 1 == s.total_rounds;
        RoundPlan {
            round,
            epoch: 0,
            lr: s.optimizer.lr_at(round),
            evaluate: every(eval_every) || last,
            checkpoint: (every(s.checkpoints.1) && !last && !self.arrival())
                .then(|| self.checkpoint(s, round + 1, &BTreeMap::new())),
            publish: every(self.spec.publish_every).then(|| s.model_path.display().to_string()),
        }
    }
}

/// The last `cap` prequential `(prediction, label)` pairs and their metrics.
struct Window {
    pairs: VecDeque<[f32; 2]>,
    cap: usize,
    task: Task,
}

impl Window {
    fn push(&mut self, pairs: &[[f32; 2]]) {
        self.pairs.extend(pairs.iter().copied());
        while self.pairs.len() > self.cap {
            self.pairs.pop_front();
        }
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if self.pairs.is_empty() {
            return out;
        }
        let pred: Vec<f32> = self.pairs.iter().map(|p| p[0]).collect();
        let label: Vec<f32> = self.pairs.iter().map(|p| p[1]).collect();
        match self.task {
            Task::Binary => {
                out.insert(
                    "accuracy".into(),
                    metrics::binary_accuracy(&pred, &label, 0.5),
                );
                out.insert("loss".into(), metrics::log_loss(&pred, &label));
                if let Some(auc) = metrics::roc_auc(&pred, &label) {
                    out.insert("auc".into(), auc);
                }
            }
            Task::Regression => {
                out.insert("r2".into(), metrics::r2(&pred, &label));
                out.insert("mse".into(), metrics::mse(&pred, &label));
            }
            Task::Multiclass => {
                let hits = self.pairs.iter().filter(|p| p[0] == p[1]).count();
                out.insert("accuracy".into(), hits as f64 / self.pairs.len() as f64);
            }
        }
        out.insert("rows".into(), self.pairs.len() as f64);
        out
    }
}

fn show(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .filter(|(k, _)| *k != "rows")
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_prequential(dir: &Path, m: &BTreeMap<String, f64>) {
    let path = dir.join("prequential.json");
    let json = serde_json::to_vec_pretty(m).unwrap_or_default();
    if let Err(e) = lockstep_tensor::safetensors_io::write_atomic(&path, &json) {
        tracing::warn!("could not write {}: {e}", path.display());
    }
}

async fn stream_view(
    control: &Addr<ControlPlane>,
    round: u64,
    block: bool,
) -> Result<StreamView, RuntimeError> {
    control
        .send(AwaitStream { round, block })
        .await
        .map_err(actor_err)?
}

/// A stream's state in the round loop: the prequential window and, in arrival order, the
/// producers' offsets after the rounds collected so far.
pub(crate) struct StreamPace<'a> {
    st: &'a StreamSchedule,
    window: Window,
    trained: BTreeMap<u32, u64>,
}

impl<'a> StreamPace<'a> {
    /// The pace of the stream `st`.
    pub(crate) fn new(st: &'a StreamSchedule) -> Self {
        let mut trained = st.start_offsets.clone();
        for p in 0..st.spec.producers {
            trained.entry(p).or_insert(0);
        }
        StreamPace {
            st,
            window: Window {
                pairs: VecDeque::new(),
                cap: st.spec.window,
                task: st.task,
            },
            trained,
        }
    }

    /// Grant as far as every worker's producers have delivered; wait for rows when nothing
    /// is granted; end when the producers have closed with no round left.
    pub(super) async fn before(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
    ) -> Result<Step, RuntimeError> {
        let (round, granted) = (run.round, run.granted);
        if granted > round && granted - round > GRANT_WINDOW / 2 {
            return Ok(Step::Collect);
        }
        let idle = granted <= round;
        if idle {
            tracing::debug!("round {round}: waiting for producers' rows");
        }
        let view = stream_view(cx.control, round, idle).await?;
        if run.stop_at.is_none() && crate::node::stop::requested().is_some() {
            // The wait ended for the stop: decide at the top of the loop.
            return Ok(Step::Again);
        }
        if idle && view.available <= round {
            return Ok(Step::End("producers closed"));
        }
        let arrival_every = self.st.arrival().then_some(cx.s.checkpoints.1);
        let upto =
            super::grants::stream_upto(view.available, round, arrival_every, cx.s.total_rounds);
        if upto > granted && run.stop_at.is_none() {
            cx.grant(granted, upto).await?;
            run.granted = upto;
        }
        Ok(Step::Collect)
    }

    pub(super) async fn after(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
        turn: Turn<'_>,
    ) -> Result<(), RuntimeError> {
        let (s, st, round) = (cx.s, self.st, run.round);
        let collected = turn.collected;
        for r in &collected.reports {
            self.window.push(&r.scored);
            self.trained.extend(r.offsets.iter().map(|(p, o)| (*p, *o)));
        }
        // The window's metrics at each evaluation: the log line and metrics.csv's row.
        let prequential = collected.metrics.is_some().then(|| self.window.metrics());
        s.observer
            .stream_round(round, collected, turn.round_ms, prequential.as_ref());
        check_loss(round, turn.loss)?;
        let mut checkpoint = collected.checkpoint.clone();
        let due = s.checkpoints.1 > 0 && (round + 1).is_multiple_of(s.checkpoints.1);
        if st.arrival() && due && round + 1 < s.total_rounds {
            let plan = st.checkpoint(s, round + 1, &self.trained);
            checkpoint = Some(
                cx.save(round, String::new(), Some(plan), &run.clock)
                    .await?,
            );
        }
        if let Some(path) = &checkpoint {
            write_prequential(Path::new(path), &self.window.metrics());
            tracing::info!("checkpoint for round {} written to {path}", round + 1);
        }
        if let Some(m) = &collected.metrics {
            run.eval = m.clone();
            let rate = run.totals.samples as f64 / run.started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                "round {}: train loss {:.4}; prequential over {} rows: {}; held-out: {}; {rate:.0} rows/s",
                round + 1,
                turn.loss,
                self.window.pairs.len(),
                show(&prequential.unwrap_or_default()),
                show(&run.eval),
            );
        }
        Ok(())
    }

    /// The final checkpoint with the producers' committed offsets, the model, the stream's
    /// figures in the report.
    pub(super) async fn finish(self, cx: &Ctx<'_>, run: Run) -> Result<Report, RuntimeError> {
        let (s, st, round) = (cx.s, self.st, run.round);
        let final_ckpt = st.checkpoint(s, round, &self.trained);
        let ckpt_dir = crate::checkpoint::dir_for(Path::new(&final_ckpt.root), round);
        let prequential = self.window.metrics();
        let (mut report, weights, _) = finish(cx, &run, Some(final_ckpt), || {
            write_prequential(&ckpt_dir, &prequential)
        })
        .await?;
        report.weights_sha256 = weights;
        let view = stream_view(cx.control, round, false).await?;
        let samples = run.totals.samples;
        tracing::info!(
            "stream ended ({}) after round {round}: {samples} rows trained, {} received, {} duplicates dropped; prequential: {}",
            run.ended,
            view.rows,
            view.duplicates,
            show(&prequential)
        );
        let rows_not_trained = view.rows.saturating_sub(samples);
        let not_trained_reason = (rows_not_trained > 0).then(|| match run.ended {
            "producers closed" => format!(
                "the producers closed with less than a round left ({} rows of every producer make a round: global_batch {} over {} producers, in producer order, for a deterministic order); a round trains only a full global batch",
                st.per_producer,
                st.per_producer * u64::from(st.spec.producers),
                st.spec.producers
            ),
            other => format!("training stopped ({other}) before their round"),
        });
        if let Some(why) = &not_trained_reason {
            tracing::warn!("{rows_not_trained} rows received were not trained: {why}");
        }
        report.stream = Some(StreamReport {
            producers: st.spec.producers,
            order: format!("{:?}", st.spec.order).to_lowercase(),
            rows_received: view.rows,
            rows_trained: samples,
            duplicates_dropped: view.duplicates,
            rows_not_trained,
            not_trained_reason,
            rows_per_s: report.samples_per_s,
            window: st.spec.window,
            prequential,
            ended: run.ended.into(),
        });
        s.observer.finish(&report);
        Ok(report)
    }
}
