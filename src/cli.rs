//! The `lockstep` command line: argument types only (clap derive). Each subcommand's work lives
//! in the layer that owns it; `main.rs` dispatches.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Lockstep: data-parallel training across processes and machines.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmarks of links and collectives between local processes.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Internal: one process of a benchmark (started by `lockstep bench`).
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
}

/// `lockstep bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Throughput of one link between two OS processes, with a same-run reference.
    Link(LinkBenchArgs),
    /// Allreduce latency and bandwidth over N local processes, with a same-run reference.
    Allreduce(AllreduceBenchArgs),
}

/// `lockstep bench link`
#[derive(Debug, Clone, Args)]
pub struct LinkBenchArgs {
    /// Backend: tcp or shm.
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// Message size, e.g. 64MiB, 4KiB, 1000.
    #[arg(long, default_value = "64MiB")]
    pub size: String,
    /// Number of timed messages (after warm-up).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `lockstep bench allreduce`
#[derive(Debug, Clone, Args)]
pub struct AllreduceBenchArgs {
    /// Number of processes.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Backend: tcp or shm.
    #[arg(long, default_value = "shm")]
    pub transport: String,
    /// Algorithm: ring, tree, ps or auto.
    #[arg(long, default_value = "auto")]
    pub algo: String,
    /// Comma-separated message sizes.
    #[arg(long, default_value = "4KiB,64KiB,1MiB,16MiB,64MiB")]
    pub sizes: String,
    /// Timed iterations per size (fewer are used for very large sizes).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Internal worker arguments: the parent passes everything a child needs.
#[derive(Debug, Clone, Args)]
pub struct BenchWorkerArgs {
    /// Which benchmark: link or allreduce.
    #[arg(long)]
    pub kind: String,
    /// This process's rank.
    #[arg(long)]
    pub rank: usize,
    /// Opaque JSON configuration from the parent.
    #[arg(long)]
    pub config: String,
}
