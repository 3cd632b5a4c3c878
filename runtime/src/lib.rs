//! # lockstep-runtime
//!
//! The actors and the node lifecycle: manifests, `lockstep node`, `lockstep launch`, the report,
//! and the synchronous SGD round driven by the coordinator. The only crate that uses actix.
//!
//! Its rooms, one concept each (ARCHITECTURE.md draws them):
//!
//! - [`node`]: one process's life: which node am I, its roles (coordinator, worker), the
//!   environment of schedulers, preflight checks, graceful stop, embedding in a program.
//! - [`launch`]: `lockstep launch` / `lockstep run`: every node of a manifest as supervised
//!   local processes.
//! - `control`: the coordinator's side: registration, the wire protocol, granting rounds,
//!   collecting reports, elastic membership, the hang table.
//! - `round`: a worker's round: data loader, compute (forward, backward, optimizer step, when
//!   to evaluate), gradient buckets, aggregation, reports.
//! - `ps`: parameter servers: the dense server's state, serving rounds, server nodes,
//!   embedding tables sharded over shards (`ps::sparse`).
//! - [`stream`]: streams: the ingest endpoint, producers, per-producer offsets.
//! - [`checkpoint`]: saving and resuming (local disk or object storage).
//! - [`observe`]: metrics, the Prometheus endpoint, traces, progress, the report, endpoints.json.
//! - [`manifest`]: the TOML manifest (strict, errors name key and line) and its TLS files.
//! - [`job`]: what a manifest trains on and produces: the split, the model, the held-out set,
//!   stored transforms, predictions, `lockstep split`.

// Public items are only what `lockstep` re-exports for embedding and what the binary, the
// bench crate and the Python binding need: a `pub` nobody outside can reach is refused.
#![warn(unreachable_pub)]

pub mod checkpoint;
pub(crate) mod control;
pub mod error;
pub mod job;
pub mod launch;
pub mod manifest;
pub mod node;
pub mod observe;
pub(crate) mod ps;
pub(crate) mod round;
pub mod stream;

pub use error::RuntimeError;
pub use launch::{launch, run_command, LaunchOptions, RunOptions};
pub use manifest::Manifest;
pub use node::embed;
pub use node::NodeOptions;
pub use observe::report::{self, Report};
