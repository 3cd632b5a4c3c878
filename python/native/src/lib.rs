//! The native core of the `lockstep` Python package (`python/lockstep`): a process group joined
//! the way torchrun, Slurm or Kubernetes start processes, and Lockstep's collectives on the
//! caller's own memory (a NumPy array or a CPU tensor's storage is the send and receive buffer;
//! nothing is copied into Python-owned buffers).
//!
//! The group is plain Rust ([`group`]), tested by `cargo test`; the `python` feature adds the
//! thin pyo3 layer that maturin builds into `lockstep._native` (`pip install ./python`).

pub mod group;
#[cfg(feature = "python")]
mod py;

pub use group::{GroupError, GroupOptions, ProcessGroup};
