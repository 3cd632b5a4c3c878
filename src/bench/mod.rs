//! `lockstep bench`: the parent side spawns worker processes of this same binary
//! (`lockstep bench-worker`), the workers do the timed work, the parent prints the table.

pub mod allreduce;
pub mod link;
mod link_checks;

use crate::cli::BenchWorkerArgs;

/// Entry point of a benchmark worker process.
///
/// # Errors
/// A message naming what failed.
pub fn worker(args: &BenchWorkerArgs) -> Result<(), String> {
    match args.kind.as_str() {
        "link" => link::worker(args),
        "allreduce" => allreduce::worker(args),
        other => Err(format!("unknown bench worker kind {other:?}")),
    }
}
