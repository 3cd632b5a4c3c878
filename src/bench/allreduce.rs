//! `lockstep bench allreduce`.

use crate::cli::BenchWorkerArgs;

/// Parent side.
///
/// # Errors
/// A message naming what failed.
pub fn run(_args: &crate::cli::AllreduceBenchArgs) -> Result<(), String> {
    Err("bench allreduce: not built yet".into())
}

/// Worker side.
///
/// # Errors
/// A message naming what failed.
pub fn worker(_args: &BenchWorkerArgs) -> Result<(), String> {
    Err("bench allreduce: not built yet".into())
}
