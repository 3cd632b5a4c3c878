//! The Prometheus metrics of a run, kept by the coordinator (which hears from every node) and
//! served as text exposition at `http://<metrics_addr>/metrics` (OpenMetrics text, which
//! Prometheus scrapes natively) by a small hyper server on its own thread.
//!
//! Families (every name has the `lockstep_` prefix and its unit):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `lockstep_rounds_total`, `lockstep_samples_total` | counter | |
//! | `lockstep_rounds_planned`, `lockstep_epoch`, `lockstep_members` | gauge | |
//! | `lockstep_train_loss`, `lockstep_samples_per_second` | gauge | |
//! | `lockstep_eval_metric` | gauge | `metric` (accuracy, auc, loss, r2, mse) |
//! | `lockstep_round_duration_seconds` | histogram | |
//! | `lockstep_round_phase_seconds` | histogram | `phase` (compute, communication, waiting) |
//! | `lockstep_link_sent_bytes_total`, `lockstep_link_received_bytes_total` | counter | `node`, `peer` |
//! | `lockstep_checkpoint_duration_seconds` | histogram | |
//! | `lockstep_restarts_total`, `lockstep_membership_changes_total` | counter | |
//! | `lockstep_run_info` | gauge (1) | `cluster`, `transport`, `aggregation` |

use crate::error::{RuntimeError, SetupError};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;
/// `(node, peer) -> (sent, received)` as last reported.
type LinkTotals = HashMap<(String, String), (u64, u64)>;

fn seconds_histogram() -> Histogram {
    // 100 us .. ~3.3 min.
    Histogram::new(exponential_buckets(1e-4, 2.0, 22))
}

/// Every metric family of a run. Cheap to clone (handles share their values).
#[derive(Clone)]
pub(crate) struct RunMetrics {
    registry: Arc<Registry>,
    /// Completed rounds.
    pub rounds: Counter,
    /// Training rows processed.
    pub samples: Counter,
    /// Rounds the job will run.
    pub rounds_planned: Gauge,
    /// Current epoch (0-based).
    pub epoch: Gauge,
    /// Workers in the membership.
    pub members: Gauge,
    /// Mean training loss of the last round.
    pub train_loss: FGauge,
    /// Samples per second over the last evaluation interval.
    pub samples_per_second: FGauge,
    /// Latest evaluation, by metric.
    pub eval: Family<Labels, FGauge>,
    /// Round wall time at the coordinator.
    pub round_duration: Histogram,
    /// Round time split, by phase.
    pub round_phase: Family<Labels, Histogram, fn() -> Histogram>,
    /// Bytes sent per link.
    pub link_sent: Family<Labels, Counter>,
    /// Bytes received per link.
    pub link_received: Family<Labels, Counter>,
    /// Checkpoint write time.
    pub checkpoint_duration: Histogram,
    /// Restarts of the whole job after failures.
    pub restarts: Counter,
    /// Membership changes (elastic).
    pub membership_changes: Counter,
    /// Constant 1 with the run's identity as labels.
    pub info: Family<Labels, Gauge>,
    /// Last cumulative link counts seen, to turn snapshots into counter increments.
    last_links: Arc<Mutex<LinkTotals>>,
}

impl RunMetrics {
    /// All families, registered and at zero.
    pub(crate) fn new() -> Self {
        let m = RunMetrics {
            registry: Arc::new(Registry::default()),
            rounds: Counter::default(),
            samples: Counter::default(),
            rounds_planned: Gauge::default(),
            epoch: Gauge::default(),
            members: Gauge::default(),
            train_loss: FGauge::default(),
            samples_per_second: FGauge::default(),
            eval: Family::default(),
            round_duration: seconds_histogram(),
            round_phase: Family::new_with_constructor(seconds_histogram),
            link_sent: Family::default(),
            link_received: Family::default(),
            checkpoint_duration: seconds_histogram(),
            restarts: Counter::default(),
            membership_changes: Counter::default(),
            info: Family::default(),
            last_links: Arc::default(),
        };
        let mut r = Registry::with_prefix("lockstep");
        r.register("rounds", "Completed SGD rounds", m.rounds.clone());
        r.register(
            "samples",
            "Training rows processed, all workers",
            m.samples.clone(),
        );
        r.register(
            "rounds_planned",
            "Rounds the job runs in total",
            m.rounds_planned.clone(),
        );
        r.register("epoch", "Current epoch (0-based)", m.epoch.clone());
        r.register("members", "Workers in the membership", m.members.clone());
        r.register(
            "train_loss",
            "Mean training loss of the last round",
            m.train_loss.clone(),
        );
        r.register(
            "samples_per_second",
            "Training throughput over the last evaluation interval",
            m.samples_per_second.clone(),
        );
        r.register("eval_metric", "Latest held-out evaluation", m.eval.clone());
        r.register_with_unit(
            "round_duration",
            "Wall time of a round at the coordinator",
            Unit::Seconds,
            m.round_duration.clone(),
        );
        r.register_with_unit(
            "round_phase",
            "Round time split: compute, communication not hidden by compute, waiting",
            Unit::Seconds,
            m.round_phase.clone(),
        );
        r.register_with_unit(
            "link_sent",
            "Bytes a node sent to a data-mesh peer",
            Unit::Bytes,
            m.link_sent.clone(),
        );
        r.register_with_unit(
            "link_received",
            "Bytes a node received from a data-mesh peer",
            Unit::Bytes,
            m.link_received.clone(),
        );
        r.register_with_unit(
            "checkpoint_duration",
            "Time rank 0 took to write a checkpoint",
            Unit::Seconds,
            m.checkpoint_duration.clone(),
        );
        r.register(
            "restarts",
            "Restarts after failures (--max-restarts)",
            m.restarts.clone(),
        );
        r.register(
            "membership_changes",
            "Workers that left or joined",
            m.membership_changes.clone(),
        );
        r.register("run_info", "The run's identity (always 1)", m.info.clone());
        RunMetrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Advance the link counters of `node` to the cumulative `(peer, sent, received)` given.
    pub(crate) fn links(&self, node: &str, links: &[crate::control::protocol::LinkBytes]) {
        let Ok(mut last) = self.last_links.lock() else {
            return;
        };
        for l in links {
            let key = (node.to_string(), l.peer.clone());
            let labels = vec![
                ("node".to_string(), key.0.clone()),
                ("peer".into(), key.1.clone()),
            ];
            let prev = last.insert(key, (l.sent, l.received)).unwrap_or((0, 0));
            self.link_sent
                .get_or_create(&labels)
                .inc_by(l.sent.saturating_sub(prev.0));
            self.link_received
                .get_or_create(&labels)
                .inc_by(l.received.saturating_sub(prev.1));
        }
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for RunMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `/metrics` endpoint; serving stops when this is dropped.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MetricsServer {
    /// Bind `addr` (port 0 allowed) and serve `metrics` on its own thread.
    ///
    /// # Errors
    /// [`SetupError::Bind`] naming the address when it cannot be bound.
    pub(crate) fn start(addr: &str, metrics: RunMetrics) -> Result<Self, RuntimeError> {
        let bind_err = |source: std::io::Error| SetupError::Bind {
            what: "metrics endpoint",
            addr: addr.to_string(),
            source,
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local = std_listener.local_addr().map_err(bind_err)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(std_listener, metrics, stopped))
            .map_err(bind_err)?;
        Ok(MetricsServer {
            addr: local,
            stop: Some(stop),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    metrics: RunMetrics,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        tracing::warn!("metrics endpoint: cannot start its runtime");
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let m = metrics.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let m = m.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &m)) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

fn respond(req: &Request<hyper::body::Incoming>, m: &RunMetrics) -> Response<Full<Bytes>> {
    let (status, kind, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
