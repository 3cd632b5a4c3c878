//! # lockstep-collective
//!
//! Collectives as plain code over a [`Group`](lockstep_transport::Group) of links: no
//! actors, so a training step with real collectives runs in a unit test (ranks as threads over
//! `lockstep_transport::local::mesh`) as well as across processes (TCP, shared memory).
//!
//! - [`Communicator`]: one rank's handle; owns the round and the collective sequence number,
//!   which every frame carries together with the shape fingerprint, so ranks that disagree fail
//!   at once with an error naming both ranks and both values.
//! - Allreduce (sum, mean) of f32, and of f16/bf16 with f32 accumulation:
//!   [`Algo::Ring`] (bandwidth-optimal, chunked and pipelined, reduces straight out of a
//!   shared-memory ring), [`Algo::Tree`] (recursive doubling, latency-optimal for small
//!   messages, any world size), [`Algo::Hier`] (hierarchical: a ring per host over shared
//!   memory, rings across hosts over the network, see [`Topology`]), [`Algo::Auto`] (the
//!   fastest by the [`cost`] model once [`Communicator::probe_links`] measured the links; tree
//!   below [`CollectiveConfig::small_bytes`] before that).
//!   Results are deterministic: identical bits on every rank and run after run for the same
//!   inputs, world size, algorithm and chunk size.
//! - Broadcast and barrier.
//! - [`ParameterServer`]: workers push gradient shards, servers average them, apply an update the
//!   caller supplies (any optimizer) and workers pull the new parameters.
//!
//! # Examples
//! ```
//! use lockstep_collective::{CollectiveConfig, AllReduce, Communicator};
//! use std::time::Duration;
//! let groups = lockstep_transport::local::mesh(&["a", "b"], Duration::from_secs(5));
//! let handles: Vec<_> = groups
//!     .into_iter()
//!     .map(|g| {
//!         std::thread::spawn(move || {
//!             let mut comm = Communicator::new(g, CollectiveConfig::default());
//!             let mut x = vec![comm.rank() as f32 + 1.0; 3];
//!             comm.allreduce(&mut x, AllReduce::sum()).unwrap();
//!             x
//!         })
//!     })
//!     .collect();
//! for h in handles {
//!     assert_eq!(h.join().unwrap(), vec![3.0; 3]);
//! }
//! ```

mod api;
mod bcast;
mod chooser;
mod comm;
pub mod cost;
mod error;
pub mod hier;
mod kernels;
mod pipeline;
mod probe;
mod ps;
mod ring;
mod sparse_ps;
mod topology;
mod traffic;
mod tree;
mod waiting;

pub use api::AllReduce;
pub use comm::Communicator;
pub use cost::{AlphaBeta, Choice, LinkCosts};
pub use error::{CollectiveError, ConfigError, FailureKind};
pub use lockstep_tensor::SparseRows;
pub use probe::{LinkSample, ProbeOptions, ProbeReport};
pub use ps::ParameterServer;
pub use sparse_ps::{RowStore, SparseShards};
pub use topology::Topology;
pub use traffic::Traffic;
pub use waiting::{now_us, Waiting, WaitingOn};

use std::str::FromStr;

/// The reduction of an allreduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum over ranks.
    Sum,
    /// Element-wise sum divided by the world size.
    Mean,
}

/// Allreduce algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// Reduce-scatter + allgather around a ring: `2(n-1)/n` of the data over each link.
    Ring,
    /// Recursive doubling: `ceil(log2 n)` (+2 when `n` is not a power of two) steps.
    Tree,
    /// Ring per host, rings across hosts, broadcast per host (see [`Topology`]), pipelined in
    /// chunks of [`CollectiveConfig::pipeline_bytes`]; the flat ring when every rank has a host
    /// of its own.
    Hier,
    /// With measured link costs, the fastest by the [`cost`] model; without, `Tree` below
    /// [`CollectiveConfig::small_bytes`], then `Hier` on a hierarchical topology, else `Ring`.
    Auto,
}

impl Algo {
    /// The name `FromStr` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ring => "ring",
            Algo::Tree => "tree",
            Algo::Hier => "hier",
            Algo::Auto => "auto",
        }
    }
}

impl std::fmt::Display for Algo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = CollectiveError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ring" => Ok(Algo::Ring),
            "tree" => Ok(Algo::Tree),
            "hier" => Ok(Algo::Hier),
            "auto" => Ok(Algo::Auto),
            other => Err(ConfigError::UnknownAlgo {
                name: other.to_string(),
            }
            .into()),
        }
    }
}

/// Default `small_bytes`, from `lockstep bench allreduce --algo tree|ring` over shm (2-core
/// machine, median of 3 runs): tree is faster at 4-16 KiB for world 2 and 4 (world 2: 1.5 vs
/// 2.1 us at 4 KiB; world 4: 26 vs 43 us), ring from 64 KiB on (world 4: 63 vs 167 us at
/// 64 KiB, 548 vs 907 us at 1 MiB); 32 KiB is where they cross.
pub const DEFAULT_SMALL_BYTES: usize = 32 * 1024;
/// Default `chunk_bytes`: pieces that stay in L2 while they are reduced and forwarded. Measured
/// against 1, 2 and 4 MiB at 64 MiB over 2 processes: as fast over shm (within the noise of a
/// loaded machine), clearly faster over tcp (4 MiB pieces halve the tcp bandwidth).
pub const DEFAULT_CHUNK_BYTES: usize = 256 * 1024;
/// Default `pipeline_bytes`: the hierarchical allreduce of a 7.4 MB gradient runs in 8 chunks.
pub const DEFAULT_PIPELINE_BYTES: usize = 1024 * 1024;

/// Algorithm settings; must be the same on every rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectiveConfig {
    /// Allreduce algorithm.
    pub algo: Algo,
    /// `Auto` uses `Tree` for messages below this many bytes (of f32 data).
    pub small_bytes: usize,
    /// Largest frame payload; messages are cut into pieces of at most this many bytes (lower it
    /// in tests to force many pieces).
    pub chunk_bytes: usize,
    /// The hierarchical allreduce cuts a message into chunks of about this many bytes (at most
    /// [`hier::MAX_CHUNKS`]) and overlaps the local phases of one with the network phase of
    /// another; 0 runs it unpipelined. Changes the order of additions, so it must be the same
    /// on every rank (and across runs, for the same bits).
    pub pipeline_bytes: usize,
}

impl Default for CollectiveConfig {
    fn default() -> Self {
        CollectiveConfig {
            algo: Algo::Auto,
            small_bytes: DEFAULT_SMALL_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            pipeline_bytes: DEFAULT_PIPELINE_BYTES,
        }
    }
}
