//! `lockstep bench`: the parent side spawns worker processes of this same binary
//! (`lockstep bench-worker`), the workers do the timed work, the parent prints the table.
//! `lockstep bench train` starts `lockstep launch` instead. Every bench measures its subject
//! and a reference interleaved, `--repeat` times, through [`repeat`]; docs/benchmarks.md says
//! what each measures and how to read the figures.

pub mod allreduce;
mod allreduce_checks;
pub mod ingest;
pub mod link;
mod link_checks;
mod reference;
pub mod repeat;
pub mod train;

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
