//! # Lockstep
//!
//! Data-parallel deep-learning training across processes and machines. This root crate holds the
//! `lockstep` command line and re-exports the layers for programs that embed Lockstep:
//! [`tensor`] (buffers, kernels), [`transport`] (links), [`trainer`] (models, data, aggregation)
//! and [`runtime`] (actors, manifests). With the `bench` feature (on by default), `bench` is
//! the benchmarks' crate, `lockstep-bench`.

pub mod cli;
pub mod commands;
pub mod error;
pub mod logging;

#[cfg(feature = "bench")]
pub use lockstep_bench as bench;

pub use lockstep_collective as collective;
pub use lockstep_runtime as runtime;
pub use lockstep_tensor as tensor;
pub use lockstep_trainer as trainer;
pub use lockstep_transport as transport;
