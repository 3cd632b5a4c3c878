//! Seeing a run: everything the coordinator publishes about a run while it goes, fed from one
//! place (the coordinator's round loop calls [`Observer::round`], or for a stream
//! [`Observer::stream_round`], once per completed round and [`Observer::finish`] at the end):
//!
//! - [`csv`]: `<run dir>/metrics.csv`, one row per evaluation (a stream's also hold its
//!   prequential metrics and rows trained, and a last row after its last round);
//! - [`metrics`]: Prometheus metrics at `http://<metrics_addr>/metrics` (`[observe]
//!   metrics_addr` or `--metrics-addr`; the bound address goes to `endpoints.json` as `metrics`);
//! - [`progress`]: `<run dir>/progress.json`, drawn as a bar by `lockstep launch` on a terminal;
//! - [`trace`]: `<run dir>/trace.json` (`--trace`), spans from every node;
//! - [`plot`]: `<run dir>/curves.svg` from `metrics.csv`, at the end and by `lockstep plot`;
//! - [`summary`]: `lockstep report RUN_DIR`, a readable summary from the run directory.
//!
//! Observing never fails a run: a file that cannot be written is logged once and skipped.

pub(crate) mod csv;
pub mod endpoints;
pub(crate) mod metrics;
pub mod plot;
pub(crate) mod progress;
pub mod report;
pub mod summary;
pub(crate) mod trace;

use crate::control::plane::Collected;
use crate::error::RuntimeError;
use crate::observe::report::Report;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `[observe]` in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSpec {
    /// Serve Prometheus metrics here (`host:port`, port 0 allowed); none by default.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Write `<run dir>/trace.json`.
    #[serde(default)]
    pub trace: bool,
    /// Rounds traced from the start.
    #[serde(default = "default_trace_first")]
    pub trace_first_rounds: u64,
    /// After those, trace every this many rounds (0: no more).
    #[serde(default = "default_trace_every")]
    pub trace_every: u64,
    /// Render `<run dir>/curves.svg` at the end of the run.
    #[serde(default = "default_plot")]
    pub plot: bool,
}

fn default_trace_first() -> u64 {
    20
}
fn default_trace_every() -> u64 {
    10
}
fn default_plot() -> bool {
    true
}

impl Default for ObserveSpec {
    fn default() -> Self {
        ObserveSpec {
            metrics_addr: None,
            trace: false,
            trace_first_rounds: default_trace_first(),
            trace_every: default_trace_every(),
            plot: default_plot(),
        }
    }
}

impl ObserveSpec {
    /// The rounds `--trace` records.
    pub(crate) fn sampling(&self) -> trace::Sampling {
        trace::Sampling {
            first: self.trace_first_rounds,
            every: self.trace_every,
        }
    }
}

/// What the observer needs to know about the run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunInfo {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The coordinator's node name (first row of the timeline).
    pub node: String,
    /// Rounds in the job (0: not known, a stream without `job.rounds`).
    pub total_rounds: u64,
    /// Rounds per epoch.
    pub rounds_per_epoch: u64,
    /// The metric shown in progress.
    pub headline: String,
    /// Workers.
    pub workers: usize,
    /// Cluster, transport, aggregation (the `lockstep_run_info` labels).
    pub labels: Vec<(String, String)>,
    /// Restarts before this attempt (`lockstep launch --max-restarts`).
    pub restarts: u64,
    /// A stream (`source = "stream"`): no epochs; rows trained and prequential metrics instead.
    pub stream: bool,
}

struct State {
    info: RunInfo,
    csv: csv::MetricsCsv,
    metrics: metrics::RunMetrics,
    _server: Option<metrics::MetricsServer>,
    progress: progress::ProgressFile,
    plot: bool,
    started: Instant,
    last_round_end: Instant,
    /// Since the last csv row: loss sum over rounds, rounds, samples, when it started.
    window: (f64, u64, u64, Instant),
    /// Rows trained so far (all workers).
    rows: u64,
    last: progress::Progress,
    warned: bool,
}

/// The coordinator's observer (clone freely); `Observer::default()` observes nothing.
#[derive(Clone, Default)]
pub(crate) struct Observer {
    state: Option<Arc<Mutex<State>>>,
    traces: Option<(trace::TraceCollector, trace::Sampling)>,
}

impl Observer {
    /// Start observing: bind the metrics endpoint (and record it in `endpoints.json`) if asked.
    ///
    /// # Errors
    /// [`crate::error::SetupError::Bind`] when the metrics address cannot be bound; I/O errors naming
    /// `endpoints.json`.
    pub(crate) fn start(spec: &ObserveSpec, info: RunInfo) -> Result<Observer, RuntimeError> {
        let m = metrics::RunMetrics::new();
        m.rounds_planned.set(info.total_rounds as i64);
        m.members.set(info.workers as i64);
        m.restarts.inc_by(info.restarts);
        m.info.get_or_create(&info.labels).set(1);
        let server = match &spec.metrics_addr {
            Some(addr) => {
                let s = metrics::MetricsServer::start(addr, m.clone())?;
                crate::observe::endpoints::merge(&info.run_dir, "metrics", &s.addr().to_string())?;
                tracing::info!("metrics at http://{}/metrics", s.addr());
                Some(s)
            }
            None => None,
        };
        // The collector's clock is anchored first: every coordinator span starts after it.
        let traces = spec
            .trace
            .then(|| (trace::TraceCollector::new(), spec.sampling()));
        let now = Instant::now();
        let state = State {
            csv: csv::MetricsCsv::new(info.run_dir.join("metrics.csv")),
            progress: progress::ProgressFile::new(&info.run_dir),
            info,
            metrics: m,
            _server: server,
            plot: spec.plot,
            started: now,
            last_round_end: now,
            window: (0.0, 0, 0, now),
            rows: 0,
            last: progress::Progress::default(),
            warned: false,
        };
        Ok(Observer {
            state: Some(Arc::new(Mutex::new(state))),
            traces,
        })
    }

    /// Where workers' spans go (with `--trace`).
    pub(crate) fn traces(&self) -> Option<trace::TraceCollector> {
        self.traces.as_ref().map(|(t, _)| t.clone())
    }

    /// Round `round` (of `epoch`) completed with `c`, `round_ms` after the previous one.
    pub(crate) fn round(&self, round: u64, epoch: u64, c: &Collected, round_ms: f64) {
        self.completed(round, epoch, c, round_ms, None);
    }

    /// Stream round `round` completed with `c`, `round_ms` after the previous one; `prequential`
    /// (the window's metrics) when the round evaluated (`c.metrics`), for its `metrics.csv` row.
    pub(crate) fn stream_round(
        &self,
        round: u64,
        c: &Collected,
        round_ms: f64,
        prequential: Option<&BTreeMap<String, f64>>,
    ) {
        self.completed(round, 0, c, round_ms, prequential);
    }

    fn completed(
        &self,
        round: u64,
        epoch: u64,
        c: &Collected,
        round_ms: f64,
        prequential: Option<&BTreeMap<String, f64>>,
    ) {
        let Some(state) = &self.state else { return };
        let Ok(mut s) = state.lock() else { return };
        let end = Instant::now();
        if let Some((t, _)) = self.traces.as_ref().filter(|(_, s)| s.traced(round)) {
            let clock = t.clock();
            let span = trace::TraceSpan {
                name: format!("round {round}"),
                thread: "coordinator".into(),
                round,
                start_us: clock.at(s.last_round_end),
                dur_us: end.saturating_duration_since(s.last_round_end).as_micros() as u64,
            };
            t.add_local(&s.info.node, vec![span]);
        }
        s.last_round_end = end;
        s.record(round, epoch, c, round_ms, prequential);
    }

    /// The membership changed to `workers` workers (elastic training): the `lockstep_members`
    /// gauge follows and `lockstep_membership_changes_total` counts the change.
    pub(crate) fn membership(&self, workers: usize) {
        let Some(state) = &self.state else { return };
        let Ok(mut s) = state.lock() else { return };
        s.metrics.members.set(workers as i64);
        s.metrics.membership_changes.inc();
        s.info.workers = workers;
    }

    /// The run ended with `report`: last progress, the timeline, the curves. A stream whose last
    /// round did not evaluate gets a last `metrics.csv` row with its final prequential metrics.
    pub(crate) fn finish(&self, report: &Report) {
        let Some(state) = &self.state else { return };
        let Ok(mut s) = state.lock() else { return };
        if let (Some(st), true) = (&report.stream, s.window.1 > 0) {
            let rate = s.window.2 as f64 / s.window.3.elapsed().as_secs_f64().max(1e-9);
            s.write_row(report.rounds, BTreeMap::new(), rate, Some(&st.prequential));
        }
        s.last.done = true;
        s.last.round = report.rounds;
        let p = s.last.clone();
        s.progress.update(&p, true);
        let dir = s.info.run_dir.clone();
        if let Some((t, _)) = &self.traces {
            let path = dir.join("trace.json");
            match t.write(&path, &s.info.node) {
                Ok(()) => tracing::info!("timeline written to {}", path.display()),
                Err(e) => tracing::warn!("timeline: {e}"),
            }
        }
        if s.plot && dir.join("metrics.csv").exists() {
            match plot::plot(&dir) {
                Ok(p) => tracing::info!("curves written to {}", p.display()),
                Err(e) => tracing::warn!("curves: {e}"),
            }
        }
    }
}

impl State {
    fn record(
        &mut self,
        round: u64,
        epoch: u64,
        c: &Collected,
        round_ms: f64,
        prequential: Option<&BTreeMap<String, f64>>,
    ) {
        let rows: u64 = c.reports.iter().map(|r| r.samples).sum();
        let loss = c.reports.iter().map(|r| r.loss_sum).sum::<f64>() / rows.max(1) as f64;
        let n = c.reports.len().max(1) as f64;
        let mean = |f: fn(&crate::control::protocol::RoundTiming) -> f64| {
            c.reports.iter().map(|r| f(&r.timing)).sum::<f64>() / n
        };
        let (compute, comm) = (mean(|t| t.compute_ms), mean(|t| t.comm_ms));
        let m = &self.metrics;
        m.rounds.inc();
        m.samples.inc_by(rows);
        m.epoch.set(epoch as i64);
        m.train_loss.set(loss);
        m.round_duration.observe(round_ms / 1e3);
        for (phase, ms) in [
            ("compute", compute),
            ("communication", comm),
            ("waiting", (round_ms - compute - comm).max(0.0)),
        ] {
            let labels = vec![("phase".to_string(), phase.to_string())];
            m.round_phase.get_or_create(&labels).observe(ms / 1e3);
        }
        for r in &c.reports {
            m.links(&r.node, &r.links);
        }
        if let Some(ms) = c.checkpoint_ms {
            m.checkpoint_duration.observe(ms / 1e3);
        }
        self.window = (
            self.window.0 + loss,
            self.window.1 + 1,
            self.window.2 + rows,
            self.window.3,
        );
        let rate = self.window.2 as f64 / self.window.3.elapsed().as_secs_f64().max(1e-9);
        let per_epoch = self.info.rounds_per_epoch.max(1);
        self.rows += rows;
        self.last.round = round + 1;
        self.last.total_rounds = self.info.total_rounds;
        if self.info.stream {
            self.last.rows = Some(self.rows);
        } else {
            self.last.epoch = (epoch + 1, self.info.total_rounds.div_ceil(per_epoch));
        }
        self.last.samples_per_s = rate;
        self.last.train_loss = loss;
        if let Some(eval) = &c.metrics {
            self.evaluated(round, eval, rate, prequential);
        }
        let p = self.last.clone();
        self.progress.update(&p, c.metrics.is_some());
    }

    fn evaluated(
        &mut self,
        round: u64,
        eval: &BTreeMap<String, f64>,
        rate: f64,
        prequential: Option<&BTreeMap<String, f64>>,
    ) {
        for (k, v) in eval {
            let labels = vec![("metric".to_string(), k.clone())];
            self.metrics.eval.get_or_create(&labels).set(*v);
        }
        self.metrics.samples_per_second.set(rate);
        if let Some(v) = eval.get(&self.info.headline) {
            self.last.metric = Some((self.info.headline.clone(), *v));
        }
        self.write_row(round + 1, eval.clone(), rate, prequential);
    }

    /// A `metrics.csv` row after `rounds` completed rounds; starts the next row's window.
    fn write_row(
        &mut self,
        rounds: u64,
        eval: BTreeMap<String, f64>,
        rate: f64,
        prequential: Option<&BTreeMap<String, f64>>,
    ) {
        let row = csv::CsvRow {
            round: rounds,
            epoch: rounds as f64 / self.info.rounds_per_epoch.max(1) as f64,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            train_loss: self.window.0 / self.window.1.max(1) as f64,
            samples_per_s: rate,
            eval,
            rows: self.info.stream.then_some(self.rows),
            prequential: prequential.cloned().unwrap_or_default(),
        };
        if let Err(e) = self.csv.append(&row) {
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!("metrics.csv: {e}");
            }
        }
        self.window = (0.0, 0, 0, Instant::now());
    }
}

/// The coordinator's observer for the job in `ctx`; also stores the fitted data transform beside
/// the model (`model.transform.json`) for `lockstep predict --input`.
pub(crate) fn start_for(
    ctx: &crate::node::NodeContext,
    split: &lockstep_trainer::data::Split,
    total_rounds: u64,
    transport: &str,
) -> Result<Observer, RuntimeError> {
    let m = &ctx.manifest;
    let run_dir = ctx.opts.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|e| RuntimeError::io("create", &run_dir, e))?;
    crate::job::predict::save_transform(&run_dir.join("model.safetensors"), &split.fitted)?;
    let aggregation = match m.job.aggregation {
        crate::manifest::Aggregation::Allreduce => "allreduce",
        crate::manifest::Aggregation::ParameterServer => "parameter-server",
    };
    let stream = m.stream().is_some();
    let info = RunInfo {
        node: ctx.name.clone(),
        // A stream without `job.rounds` runs until its producers close: not known.
        total_rounds: if total_rounds == u64::MAX {
            0
        } else {
            total_rounds
        },
        stream,
        rounds_per_epoch: crate::job::plan(m, split.train_rows()).batches_per_epoch(),
        headline: crate::job::headline_metric(split.task).to_string(),
        workers: m.worker_names().len(),
        labels: vec![
            ("cluster".into(), m.cluster.name.clone()),
            ("transport".into(), transport.to_string()),
            ("aggregation".into(), aggregation.to_string()),
        ],
        restarts: std::env::var(RESTARTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        run_dir,
    };
    Observer::start(&m.observe, info)
}

/// Set by `lockstep launch` for the nodes of a restarted attempt: restarts so far.
pub(crate) const RESTARTS_ENV: &str = "LOCKSTEP_RESTARTS";
