//! The coordinator's loop for a stream (`source = "stream"`): rounds are granted only as far as
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

use super::coordinator::{actor_err, grant, Schedule, Server, Totals};
use super::plane::{AwaitStream, Collect, ControlPlane, RunFinish, RunSave, StreamView};
use crate::control::protocol::{CheckpointPlan, RoundPlan, GRANT_WINDOW};
use crate::error::RuntimeError;
use crate::observe::report::{Report, StreamReport};
use actix::Addr;
use lockstep_trainer::data::{DataCursor, Order, StreamSpec, Task};
use lockstep_trainer::metrics;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Instant;

/// Rounds between evaluations when `job.eval_every = 0` (a stream has no epochs).
pub const STREAM_EVAL_EVERY: u64 = 50;

/// What the coordinator needs to drive a stream.
#[derive(Debug, Clone)]
pub struct StreamSchedule {
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
    pub fn offsets(&self, round: u64) -> Option<BTreeMap<u32, u64>> {
        (self.spec.order == Order::Deterministic).then(|| {
            (0..self.spec.producers)
                .map(|p| (p, round * self.per_producer))
                .collect()
        })
    }

    fn arrival(&self) -> bool {
        self.spec.order == Order::Arrival
    }

    /// Arrival order: the rounds below this one may be granted while `round` is next. A
    /// checkpoint's offsets are known only once its round is collected, so the coordinator
    /// writes it then (a `Save`), and no grant crosses a checkpoint round.
    fn grant_limit(&self, s: &Schedule, round: u64) -> u64 {
        match (self.arrival(), s.checkpoints.1) {
            (true, every) if every > 0 => (round / every + 1) * every,
            _ => u64::MAX,
        }
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
    pub fn plan(&self, s: &Schedule, round: u64) -> RoundPlan {
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

/// Drive a stream until the producers end it or `job.rounds`; see the module docs.
pub(super) async fn run_stream_rounds(
    control: &Addr<ControlPlane>,
    server: &Option<Server>,
    s: &Schedule,
    st: &StreamSchedule,
) -> Result<Report, RuntimeError> {
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut window = Window {
        pairs: VecDeque::new(),
        cap: st.spec.window,
        task: st.task,
    };
    let mut eval = BTreeMap::new();
    let (mut round, mut granted) = (s.first_round, s.first_round);
    let mut t = Instant::now();
    let mut ended = "job.rounds";
    // Arrival order: per producer, the offset after the rounds collected so far.
    let mut trained = st.start_offsets.clone();
    for p in 0..st.spec.producers {
        trained.entry(p).or_insert(0);
    }
    // A graceful stop (SIGINT / SIGTERM): the round after the last one granted.
    let mut stop_at: Option<u64> = None;
    let mut clock = crate::control::hang::ProgressClock::new(s.progress_timeout_ms);
    while round < s.total_rounds {
        if stop_at.is_none() {
            if let Some(sig) = crate::node::stop::requested() {
                stop_at = Some(granted.max(round));
                super::coordinator::log_stop(sig, round, granted.max(round));
            }
        }
        if stop_at.is_some_and(|at| round >= at) {
            ended = "stopped";
            break;
        }
        if granted <= round || granted - round <= GRANT_WINDOW / 2 {
            let idle = granted <= round;
            if idle {
                tracing::debug!("round {round}: waiting for producers' rows");
            }
            let view = stream_view(control, round, idle).await?;
            if stop_at.is_none() && crate::node::stop::requested().is_some() {
                // The wait ended for the stop: decide at the top of the loop.
                continue;
            }
            if idle && view.available <= round {
                ended = "producers closed";
                break;
            }
            let upto = view
                .available
                .min(round + 1 + GRANT_WINDOW)
                .min(st.grant_limit(s, round))
                .min(s.total_rounds);
            if upto > granted && stop_at.is_none() {
                grant(control, server, s, granted, upto).await?;
                granted = upto;
            }
        }
        let plan = s.plan(round);
        let duty = plan.evaluate || plan.checkpoint.is_some();
        let asked = Instant::now();
        let collected = control
            .send(Collect {
                round,
                evaluate: plan.evaluate,
                checkpoint: plan.checkpoint.is_some(),
                timeout: clock.timeout(duty),
            })
            .await
            .map_err(actor_err)??;
        // Rounds wait for producers' rows before they are granted: only the collection counts.
        clock.record(asked.elapsed().as_secs_f64() * 1e3, duty);
        let round_ms = t.elapsed().as_secs_f64() * 1e3;
        let loss = totals.add(&collected.reports, round_ms);
        t = Instant::now();
        for r in &collected.reports {
            window.push(&r.scored);
            trained.extend(r.offsets.iter().map(|(p, o)| (*p, *o)));
        }
        // The window's metrics at each evaluation: the log line and metrics.csv's row.
        let prequential = collected.metrics.is_some().then(|| window.metrics());
        s.observer
            .stream_round(round, &collected, round_ms, prequential.as_ref());
        if !loss.is_finite() {
            return Err(RuntimeError::Model(format!(
                "round {round}: training loss is {loss}"
            )));
        }
        let mut checkpoint = collected.checkpoint.clone();
        let due = s.checkpoints.1 > 0 && (round + 1).is_multiple_of(s.checkpoints.1);
        if st.arrival() && due && round + 1 < s.total_rounds {
            let plan = st.checkpoint(s, round + 1, &trained);
            let msg = RunSave {
                round,
                path: String::new(),
                checkpoint: Some(plan),
                timeout: clock.end_timeout(),
            };
            checkpoint = Some(control.send(msg).await.map_err(actor_err)??);
        }
        if let Some(path) = &checkpoint {
            write_prequential(Path::new(path), &window.metrics());
            tracing::info!("checkpoint for round {} written to {path}", round + 1);
        }
        if let Some(m) = collected.metrics {
            eval = m;
            let rate = totals.samples as f64 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                "round {}: train loss {loss:.4}; prequential over {} rows: {}; held-out: {}; {rate:.0} rows/s",
                round + 1,
                window.pairs.len(),
                show(&prequential.unwrap_or_default()),
                show(&eval),
            );
        }
        round += 1;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let last_round = round.saturating_sub(1);
    let final_ckpt = st.checkpoint(s, round, &trained);
    let ckpt_dir = crate::checkpoint::dir_for(Path::new(&final_ckpt.root), round);
    let saved = control
        .send(RunSave {
            round: last_round,
            path: s.model_path.display().to_string(),
            checkpoint: Some(final_ckpt),
            timeout: clock.end_timeout(),
        })
        .await
        .map_err(actor_err)??;
    let prequential = window.metrics();
    write_prequential(&ckpt_dir, &prequential);
    let weights = control
        .send(RunFinish {
            round: last_round,
            timeout: clock.end_timeout(),
        })
        .await
        .map_err(actor_err)??;
    let view = stream_view(control, round, false).await?;
    tracing::info!(
        "stream ended ({ended}) after round {round}: {} rows trained, {} received, {} duplicates dropped; prequential: {}",
        totals.samples,
        view.rows,
        view.duplicates,
        show(&prequential)
    );
    let mut report = s.report.clone();
    report.rounds = round;
    if stop_at.is_some() {
        super::coordinator::stopped(&mut report, s, round);
    }
    report.samples = totals.samples;
    report.wall_s = wall_s;
    report.samples_per_s = totals.samples as f64 / wall_s.max(1e-9);
    report.final_train_loss = totals.last_loss;
    report.eval = eval;
    report.weights_sha256 = weights.0;
    report.checkpoint = Some(saved);
    report.round_time = totals.split();
    let rows_not_trained = view.rows.saturating_sub(totals.samples);
    let not_trained_reason = (rows_not_trained > 0).then(|| match ended {
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
        rows_trained: totals.samples,
        duplicates_dropped: view.duplicates,
        rows_not_trained,
        not_trained_reason,
        rows_per_s: report.samples_per_s,
        window: st.spec.window,
        prequential,
        ended: ended.into(),
    });
    s.observer.finish(&report);
    Ok(report)
}
