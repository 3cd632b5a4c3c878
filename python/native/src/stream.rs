//! A producer stream as this rank's batches: the receiving side of Lockstep's stream jobs
//! (`lockstep_runtime::stream`: authenticated ingest endpoints, per-producer queues and offsets,
//! duplicate dropping, a bootstrap that routes producers) under a process group instead of a
//! coordinator.
//!
//! Every rank serves an ingest endpoint for its producers (`p * world / producers`, or the ids
//! it is given); the endpoints are gathered over the group and rank 0 serves the bootstrap that
//! producers connect to first. Rows are converted on arrival by the transform fitted on the
//! warm-up sample (`[job.data] path`), exactly as in a `source = "stream"` job.
//!
//! The ranks agree on every round before taking it ([`RankStream::next`]): each one waits a
//! little for its producers, then all gather `(rounds available, closed)`; a round is taken when
//! every rank has it, and a bounded stream ends, on every rank at the same round, when every
//! producer has closed and some rank has no full share left. So every rank yields the same
//! number of batches and no collective of the training loop waits on data.

use crate::group::{GroupError, ProcessGroup};
use lockstep_runtime::stream::{Bootstrap, Endpoint, Ingest, IngestRecords};
use lockstep_trainer::batch::Batch;
use lockstep_trainer::data::{
    self, BatchSource, DataSpec, Fitted, Order, Source, StreamSource, StreamSpec, Task,
};
use lockstep_transport::tcp::Listener;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of a stream, each naming the key, producer, rank or operation.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The options are wrong (names the key).
    #[error("StreamDataset: {0}")]
    Config(String),
    /// The warm-up sample could not be read or fitted.
    #[error("StreamDataset: the warm-up sample: {0}")]
    Data(#[from] lockstep_trainer::data::DataError),
    /// An endpoint or the bootstrap could not start.
    #[error("StreamDataset: {0}")]
    Serve(#[from] lockstep_runtime::RuntimeError),
    /// The stream failed (a producer never connected, fell silent under `on_silent = "fail"`,
    /// sent rows that do not convert).
    #[error("StreamDataset, rank {rank}: {reason}")]
    Failed {
        /// This rank.
        rank: usize,
        /// What failed.
        reason: String,
    },
    /// A collective of the agreement failed.
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// What Python passes (as JSON): the `[job.data]` table with its `[job.data.stream]`, the global
/// batch, the seed of the held-out split, and where to resume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// `[job.data]`, `source = "stream"` implied; `path` is the warm-up sample.
    pub data: DataSpec,
    /// Rows per round over all ranks.
    pub global_batch: usize,
    /// Seed of the held-out split of the warm-up sample.
    #[serde(default)]
    pub seed: u64,
    /// The producer ids this rank serves (default: the manifest rule).
    #[serde(default)]
    pub producer_ids: Option<Vec<u32>>,
    /// The round to start at (a saved state's).
    #[serde(default)]
    pub round: u64,
    /// Per producer, the offset of its next row to train (a saved state's).
    #[serde(default)]
    pub offsets: Option<BTreeMap<u32, u64>>,
    /// IP this rank's endpoint is advertised on (default: the one that reaches the rendezvous).
    #[serde(default)]
    pub host: Option<String>,
    /// `ip:port` rank 0 serves the bootstrap on (default: its host, any port).
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// A round waiting this long for data is logged (again every this long), and a producer
    /// silent this long is named (default 10 s).
    #[serde(default)]
    pub wait_log_ms: Option<u64>,
}

/// Rows per round of one rank, and what each yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Rows of this rank's share of a round.
    pub rows: usize,
    /// Feature columns.
    pub cols: usize,
    /// Multiclass: labels are class ids; otherwise real values (0/1 for binary).
    pub classes: bool,
    /// The transformed feature names.
    pub features: Vec<String>,
}

/// This rank's side of a stream.
pub struct RankStream {
    spec: StreamSpec,
    ingest: Arc<Ingest>,
    source: StreamSource<IngestRecords>,
    shape: Shape,
    round: u64,
    rank: usize,
    world: usize,
    bootstrap: String,
    wait_log: Duration,
}

fn config(m: impl Into<String>) -> StreamError {
    StreamError::Config(m.into())
}

/// The IP this host uses to reach `master` (no packet is sent).
fn host_towards(master: &str) -> IpAddr {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(master).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Fixed-size JSON records, gathered from every rank.
fn gather_json(
    g: &mut ProcessGroup,
    mine: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, StreamError> {
    const SLOT: usize = 4096;
    let body = serde_json::to_vec(mine).map_err(|e| config(e.to_string()))?;
    if body.len() > SLOT {
        return Err(config(format!(
            "a rank's record is {} bytes (at most {SLOT})",
            body.len()
        )));
    }
    let mut slot = vec![b' '; SLOT];
    slot[..body.len()].copy_from_slice(&body);
    let mut all = vec![0u8; SLOT * g.size()];
    g.allgather(&slot, &mut all)?;
    all.chunks(SLOT)
        .map(|c| serde_json::from_slice(c).map_err(|e| config(format!("a gathered record: {e}"))))
        .collect()
}

impl RankStream {
    /// Fit the transform on the warm-up sample, serve this rank's ingest endpoint, gather every
    /// rank's endpoint, and (rank 0) serve the bootstrap. Collective: every rank calls it.
    ///
    /// # Errors
    /// [`StreamError`] naming the key, file or rank.
    pub fn open(g: &mut ProcessGroup, mut o: StreamOptions) -> Result<RankStream, StreamError> {
        let (rank, world) = (g.rank(), g.size());
        o.data.source = Source::Stream;
        let spec = o.data.stream.clone().ok_or_else(|| {
            config("stream= is required (the [job.data.stream] keys: producers, order, ...)")
        })?;
        let mine = match &o.producer_ids {
            Some(ids) => ids.clone(),
            None => {
                spec.check(o.global_batch, world)
                    .map_err(|e| config(format!("{}: {e}", e.key())))?;
                spec.producers_of(rank, world)
            }
        };
        if o.global_batch == 0 || !o.global_batch.is_multiple_of(world) {
            return Err(config(format!(
                "global_batch = {} is not a positive multiple of the {world} ranks",
                o.global_batch
            )));
        }
        let split = data::load(&o.data, o.seed)?;
        let fitted: Fitted = split.fitted.clone();
        let per_producer = spec.rows_per_producer(o.global_batch) as u64;
        let share = (o.global_batch / world) as u64;
        let starts: Vec<(u32, u64)> = mine
            .iter()
            .map(|&p| {
                let start = match (&o.offsets, spec.order) {
                    (Some(off), _) => off.get(&p).copied().unwrap_or(0),
                    (None, Order::Deterministic) => o.round * per_producer,
                    (None, Order::Arrival) => 0,
                };
                (p, start)
            })
            .collect();
        let ingest = Ingest::new(
            &starts,
            spec.order,
            per_producer,
            share,
            o.round,
            spec.bounded,
            spec.buffer_rows,
        );
        let name = format!("rank-{rank}");
        let host: IpAddr = match &o.host {
            Some(h) => h
                .parse()
                .map_err(|_| config(format!("host = {h:?} is not an IP address")))?,
            None => host_towards(g.master()),
        };
        let listener =
            Listener::bind(&format!("{host}:0")).map_err(lockstep_runtime::RuntimeError::from)?;
        let endpoint_addr = listener
            .local_addr()
            .map_err(lockstep_runtime::RuntimeError::from)?
            .to_string();
        let fail = ingest.clone();
        let wait_log = Duration::from_millis(o.wait_log_ms.unwrap_or(10_000));
        Endpoint::new(
            &name,
            spec.producers,
            fitted.clone(),
            ingest.clone(),
            wait_log,
            spec.on_silent,
            Duration::from_millis(spec.connect_timeout_ms),
            Arc::new(|_| {}),
            Arc::new(move |e| fail.fail(e.to_string())),
        )
        .serve(listener, g.identity(&name))?;
        let records = IngestRecords::new(
            ingest.clone(),
            &format!("stream of {name} (producers {mine:?})"),
        );
        let source = StreamSource::local_shard(
            records,
            fitted.clone(),
            o.global_batch,
            rank,
            world,
            o.round,
        )?;
        let shape = Shape {
            rows: share as usize,
            cols: fitted.features.width(),
            classes: split.task == Task::Multiclass,
            features: split.feature_names.clone(),
        };
        let everyone = gather_json(
            g,
            &serde_json::json!({"endpoint": endpoint_addr, "producers": mine}),
        )?;
        let bootstrap = serve_bootstrap(g, &spec, &everyone, &o, host)?;
        Ok(RankStream {
            spec,
            ingest,
            source,
            shape,
            round: o.round,
            rank,
            world,
            bootstrap,
            wait_log,
        })
    }
}

/// Rank 0: route every producer id to the rank that serves it and serve the bootstrap; every
/// rank learns its address. Every producer id must be served by exactly one rank.
fn serve_bootstrap(
    g: &mut ProcessGroup,
    spec: &StreamSpec,
    everyone: &[serde_json::Value],
    o: &StreamOptions,
    host: IpAddr,
) -> Result<String, StreamError> {
    let mut routes: Vec<Option<(String, String)>> = vec![None; spec.producers as usize];
    for (r, rec) in everyone.iter().enumerate() {
        let endpoint = rec["endpoint"].as_str().unwrap_or_default().to_string();
        for p in rec["producers"].as_array().into_iter().flatten() {
            let p = p.as_u64().unwrap_or(u64::MAX) as usize;
            match routes.get_mut(p) {
                None => {
                    return Err(config(format!(
                    "producer_ids: rank {r} serves producer {p}, outside 0..{} (stream producers)",
                    spec.producers
                )))
                }
                Some(Some((other, _))) => {
                    return Err(config(format!(
                        "producer_ids: producer {p} is served by both {other} and rank-{r}"
                    )))
                }
                Some(slot) => *slot = Some((format!("rank-{r}"), endpoint.clone())),
            }
        }
    }
    let routes: Vec<(String, String)> = routes
        .into_iter()
        .enumerate()
        .map(|(p, r)| r.ok_or_else(|| config(format!("producer_ids: no rank serves producer {p}"))))
        .collect::<Result<_, _>>()?;
    let mut addr = vec![b' '; 256];
    if g.rank() == 0 {
        let bind = o.bootstrap.clone().unwrap_or_else(|| format!("{host}:0"));
        let listener = Listener::bind(&bind).map_err(lockstep_runtime::RuntimeError::from)?;
        let bound = listener
            .local_addr()
            .map_err(lockstep_runtime::RuntimeError::from)?
            .to_string();
        Bootstrap::routed(routes).serve(&listener, g.identity("rank-0"))?;
        addr[..bound.len()].copy_from_slice(bound.as_bytes());
    }
    g.broadcast(&mut addr, 0)?;
    Ok(String::from_utf8_lossy(&addr).trim().to_string())
}

impl RankStream {
    /// The bootstrap address producers connect to (`lockstep_client send --bootstrap`).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Rows, columns and label kind of each batch.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The next round to be taken.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The stream's settings.
    pub fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    /// Rows received, rows dropped as duplicates (replays below a resume offset), over this
    /// rank's producers.
    pub fn counts(&self) -> (u64, u64) {
        let p = self.ingest.progress();
        (p.rows, p.duplicates)
    }

    /// This rank's share of the next round, once every rank has it; `None` on every rank at
    /// the same round when a bounded stream has ended. Collective: every rank calls it.
    ///
    /// # Errors
    /// [`StreamError::Failed`] when this rank's stream failed, [`StreamError::Group`] when a
    /// peer did (both name who).
    pub fn next(&mut self, g: &mut ProcessGroup) -> Result<Option<Batch>, StreamError> {
        let started = Instant::now();
        let mut logged = Instant::now();
        loop {
            let p = self.wait_local(Duration::from_millis(200));
            let failed = self.ingest.failure();
            let mine = [
                p.available,
                u64::from(p.closed),
                u64::from(failed.is_some()),
            ];
            let mut all = vec![0u8; 24 * self.world];
            let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
            g.allgather(&bytes, &mut all)?;
            let ranks: Vec<[u64; 3]> = all
                .chunks(24)
                .map(|c| {
                    std::array::from_fn(|i| {
                        u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                    })
                })
                .collect();
            if let Some(why) = failed {
                return Err(StreamError::Failed {
                    rank: self.rank,
                    reason: why,
                });
            }
            if let Some(r) = ranks.iter().position(|v| v[2] == 1) {
                return Err(StreamError::Failed {
                    rank: self.rank,
                    reason: format!("rank {r}'s stream failed (its error names why)"),
                });
            }
            let ready = ranks.iter().map(|v| v[0]).min().unwrap_or(0);
            if ready > self.round {
                return self.take().map(Some);
            }
            if ranks.iter().all(|v| v[1] == 1) {
                return Ok(None);
            }
            if logged.elapsed() >= self.wait_log {
                logged = Instant::now();
                let waiting: Vec<usize> = (0..self.world)
                    .filter(|&r| ranks[r][0] <= self.round)
                    .collect();
                eprintln!(
                    "lockstep StreamDataset rank {}: round {} waits {:.0} s for the producers of ranks {waiting:?} (bootstrap {})",
                    self.rank,
                    self.round,
                    started.elapsed().as_secs_f64(),
                    self.bootstrap
                );
            }
        }
    }

    /// Wait up to `max` for this rank to have the current round or for its stream to close.
    fn wait_local(&self, max: Duration) -> lockstep_runtime::stream::Progress {
        let deadline = Instant::now() + max;
        loop {
            let p = self.ingest.progress();
            if p.available > self.round || p.closed || Instant::now() >= deadline {
                return p;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn take(&mut self) -> Result<Batch, StreamError> {
        let got = self.source.next_shard().map_err(|e| StreamError::Failed {
            rank: self.rank,
            reason: e.to_string(),
        })?;
        let Some(shard) = got else {
            return Err(StreamError::Failed {
                rank: self.rank,
                reason: format!(
                    "round {} was available but its rows could not be taken",
                    self.round
                ),
            });
        };
        self.round += 1;
        Ok(shard.batch)
    }

    /// Per producer of this rank, the offset of its next row after the rounds taken so far:
    /// what a saved state resumes from.
    pub fn offsets(&self) -> BTreeMap<u32, u64> {
        match self.spec.order {
            Order::Deterministic => {
                let per = self.spec.rows_per_producer(self.shape.rows * self.world) as u64;
                self.ingest
                    .ids()
                    .into_iter()
                    .map(|p| (p, self.round * per))
                    .collect()
            }
            Order::Arrival => match self.round {
                0 => self.ingest.ids().into_iter().map(|p| (p, 0)).collect(),
                r => self.ingest.offsets_after(r - 1),
            },
        }
    }
}
