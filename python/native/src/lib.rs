//! The native core of the `lockstep` Python package (`python/lockstep`): a process group joined
//! the way torchrun, Slurm or Kubernetes start processes, and Lockstep's collectives on the
//! caller's own memory (a NumPy array or a CPU tensor's storage is the send and receive buffer;
//! nothing is copied into Python-owned buffers).
//!
//! The group is plain Rust ([`group`]), tested by `cargo test`, and so is [`stream`] (a
//! producer stream as this rank's batches, over the runtime's ingest); the `python` feature adds
//! the thin pyo3 layer that maturin builds into `lockstep._native` (`pip install ./python`).

pub mod group;
#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_stream;
pub mod stream;

pub use group::{GroupError, GroupOptions, ProcessGroup};
