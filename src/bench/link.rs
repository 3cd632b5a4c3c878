//! `lockstep bench link`.

use crate::cli::BenchWorkerArgs;

/// Parent side.
///
/// # Errors
/// A message naming what failed.
pub fn run(_args: &crate::cli::LinkBenchArgs) -> Result<(), String> {
    Err("bench link: not built yet".into())
}

/// Worker side.
///
/// # Errors
/// A message naming what failed.
pub fn worker(_args: &BenchWorkerArgs) -> Result<(), String> {
    Err("bench link: not built yet".into())
}
