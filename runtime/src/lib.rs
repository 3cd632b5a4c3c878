//! # lockstep-runtime
//!
//! The actors and the node lifecycle: manifests, `lockstep node`, `lockstep launch`, the report,
//! and the synchronous SGD round driven by the coordinator. The only crate that uses actix.
//!
//! - [`manifest`]: the TOML cluster manifest, strict, errors name the key and line.
//! - [`node`]: one node's lifecycle (coordinator, worker, server roles).
//! - [`launch`]: all nodes of a manifest as local processes, supervised.
//! - [`actors`]: `DataLoader`, `Compute`, `Aggregator`, `WorkerNode`, `Coordinator`,
//!   `ControlPlane`.
//! - [`protocol`]: control messages between coordinator and members.
//! - [`report`]: the JSON run report.
//! - [`elastic`]: elastic membership on the worker side (rows per rank, state hand-over).
//! - [`observe`]: metrics.csv, the Prometheus endpoint, progress, the timeline, curves.
//! - [`stop`]: SIGINT / SIGTERM: a graceful stop at a round boundary.
//! - [`ps_state`]: parameter-server optimizer state in checkpoints (gather, restore).
//! - [`hang`]: alive-but-stuck detection: progress timeout, activity board, hang table.
//! - [`endpoints`]: `<run dir>/endpoints.json`, shared by every writer.

pub mod actors;
pub mod checkpoint;
pub mod elastic;
pub mod embed;
pub mod endpoints;
pub mod env_mode;
pub mod error;
mod guard;
pub mod hang;
pub mod held_out;
pub mod ingest;
pub mod job;
pub mod launch;
pub mod manifest;
pub mod node;
pub mod observe;
pub mod predict;
mod predict_classic;
pub mod preflight;
pub mod protocol;
pub mod ps_state;
pub mod registration;
pub mod report;
mod role_coordinator;
mod role_worker;
mod scale;
pub mod server;
pub mod sparse;
pub mod split_export;
pub mod stop;
pub mod stored_transform;
pub mod tls;
mod worker_actors;

pub use error::RuntimeError;
pub use launch::{launch, run_command, LaunchOptions, RunOptions};
pub use manifest::Manifest;
pub use node::NodeOptions;
pub use report::Report;
