//! `[job.data.stream]`: how producers' Arrow record-batch streams become training data: how many
//! producers to expect, the order rows become global batches in, the prequential-evaluation window,
//! bounded or unbounded streams, buffers and what a silent producer means.
//!
//! ```toml
//! [job.data]
//! source = "stream"
//! path = "credit_sample.parquet"   # warm-up sample: schema, feature statistics, held-out rows
//! label = "Status"
//! task = "binary"
//! positive = "bad"
//!
//! [job.data.stream]
//! producers = 2
//! order = "deterministic"          # or "arrival"
//! ```

use serde::{Deserialize, Serialize};

/// Where training rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The file at `path`, in seeded epochs.
    #[default]
    File,
    /// Arrow IPC streams pushed by producers (Apache Flink, scripts); `path` is the warm-up sample.
    Stream,
}

/// How rows of several producers become global batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Global batch `n` is rows `n*b .. (n+1)*b` of every producer (`b = global_batch /
    /// producers`), in producer-id order: the same streams give the same weights whatever the
    /// arrival timing (and, with `micro_batches`, whatever the worker count).
    #[default]
    Deterministic,
    /// Each worker takes rows from its producers as they arrive: no waiting for the slowest
    /// producer, but the weights depend on timing (and resuming is not supported).
    Arrival,
}

/// What a producer silent past the peer timeout means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSilent {
    /// Name it in the log (once per silence) and keep waiting.
    #[default]
    Wait,
    /// Fail the job with an error naming the producer.
    Fail,
}

/// The `[job.data.stream]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Producers to expect, ids `0..producers`; a multiple of the worker count.
    pub producers: u32,
    /// Row order (default deterministic).
    #[serde(default)]
    pub order: Order,
    /// The job ends when every producer has closed (default true); false: it runs until
    /// `job.rounds` or Ctrl-C, and producers may reconnect.
    #[serde(default = "default_true")]
    pub bounded: bool,
    /// Rows in the prequential-evaluation window (default 2000).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Republish `<run dir>/model.safetensors` atomically every this many rounds (0: only at the end).
    #[serde(default)]
    pub publish_every: u64,
    /// Rows buffered per producer before its TCP connection is no longer read (default 65536;
    /// at least one round's share).
    #[serde(default = "default_buffer")]
    pub buffer_rows: usize,
    /// A producer silent longer than `cluster.peer_timeout_ms`: `wait` (default) or `fail`.
    #[serde(default)]
    pub on_silent: OnSilent,
    /// A producer that has not connected this long after its worker started fails the job
    /// (default 300000 ms), whatever `on_silent` says: a job whose producers never come ends
    /// with an error naming them instead of waiting forever. `on_silent` applies once a
    /// producer has been seen.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Address the coordinator's bootstrap for producers binds (default: the coordinator's IP,
    /// any port; `<run dir>/endpoints.json` names it).
    #[serde(default)]
    pub bootstrap: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_window() -> usize {
    2000
}
fn default_buffer() -> usize {
    65536
}
fn default_connect_timeout_ms() -> u64 {
    300_000
}

impl StreamSpec {
    /// A spec for `producers` producers with every other key at its default.
    pub fn new(producers: u32) -> Self {
        StreamSpec {
            producers,
            order: Order::default(),
            bounded: true,
            window: default_window(),
            publish_every: 0,
            buffer_rows: default_buffer(),
            on_silent: OnSilent::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            bootstrap: None,
        }
    }

    /// Rows of each producer in one global batch (deterministic order).
    pub fn rows_per_producer(&self, global_batch: usize) -> usize {
        global_batch / self.producers.max(1) as usize
    }

    /// The worker (rank) that serves producer `id`: producers are split into `world` contiguous
    /// blocks, so with deterministic order a rank's share of a global batch is exactly its
    /// producers' rows.
    pub fn worker_of(&self, id: u32, world: usize) -> usize {
        (id as usize * world) / self.producers.max(1) as usize
    }

    /// Producers served by `rank` of `world`.
    pub fn producers_of(&self, rank: usize, world: usize) -> Vec<u32> {
        (0..self.producers)
            .filter(|&p| self.worker_of(p, world) == rank)
            .collect()
    }

    /// Checks against the job's global batch and worker count.
    ///
    /// # Errors
    /// The [`StreamSpecError`] of the first key that does not fit ([`StreamSpecError::key`]).
    pub fn check(&self, global_batch: usize, workers: usize) -> Result<(), StreamSpecError> {
        let producers = self.producers as usize;
        if producers == 0 || !producers.is_multiple_of(workers) {
            return Err(StreamSpecError::Producers { producers, workers });
        }
        if self.order == Order::Deterministic && !global_batch.is_multiple_of(producers) {
            return Err(StreamSpecError::GlobalBatch {
                global_batch,
                producers,
            });
        }
        if self.window == 0 {
            return Err(StreamSpecError::Window);
        }
        let share = global_batch / workers;
        if self.buffer_rows < share {
            return Err(StreamSpecError::BufferRows {
                buffer_rows: self.buffer_rows,
                share,
            });
        }
        if self.connect_timeout_ms == 0 {
            return Err(StreamSpecError::ConnectTimeout);
        }
        Ok(())
    }
}

/// A `[job.data.stream]` key that does not fit the job; `Display` gives what is wrong, and
/// [`StreamSpecError::key`] the manifest key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamSpecError {
    /// Producers that the workers cannot share evenly.
    #[error("{producers} producers cannot be shared evenly by {workers} workers; use a multiple of {workers}")]
    Producers {
        /// `producers`.
        producers: usize,
        /// Workers in the job.
        workers: usize,
    },
    /// A global batch that cannot take the same share from each producer (deterministic order).
    #[error("{global_batch} rows cannot take the same share from each of {producers} producers; use a multiple of {producers}")]
    GlobalBatch {
        /// `job.global_batch`.
        global_batch: usize,
        /// `producers`.
        producers: usize,
    },
    /// `window = 0`.
    #[error("must be at least 1")]
    Window,
    /// Buffers smaller than one round's share of a worker.
    #[error("{buffer_rows} rows cannot hold one round's share ({share} rows)")]
    BufferRows {
        /// `buffer_rows`.
        buffer_rows: usize,
        /// Rows per worker per round.
        share: usize,
    },
    /// `connect_timeout_ms = 0`.
    #[error("must be at least 1 (no wait is unbounded; use a large value to wait long)")]
    ConnectTimeout,
}

impl StreamSpecError {
    /// The manifest key the error concerns (`job.data.stream.producers`, `job.global_batch`).
    pub fn key(&self) -> &'static str {
        match self {
            StreamSpecError::Producers { .. } => "job.data.stream.producers",
            StreamSpecError::GlobalBatch { .. } => "job.global_batch",
            StreamSpecError::Window => "job.data.stream.window",
            StreamSpecError::BufferRows { .. } => "job.data.stream.buffer_rows",
            StreamSpecError::ConnectTimeout => "job.data.stream.connect_timeout_ms",
        }
    }
}
