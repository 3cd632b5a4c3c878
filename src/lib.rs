//! # Lockstep
//!
//! Data-parallel deep-learning training across processes and machines. This root crate holds the
//! `lockstep` command line and re-exports the layers for programs that embed Lockstep:
//! [`tensor`] (buffers, kernels), [`transport`] (links), [`trainer`] (models, data, aggregation)
//! and [`runtime`] (actors, manifests).

pub mod bench;
pub mod cli;
pub mod commands;
pub mod logging;

pub use lockstep_collective as collective;
pub use lockstep_runtime as runtime;
pub use lockstep_tensor as tensor;
pub use lockstep_trainer as trainer;
pub use lockstep_transport as transport;
