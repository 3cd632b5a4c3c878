//! The benchmarks' command-line arguments (clap derive): `lockstep bench link|allreduce|train|
//! ingest` and the hidden `lockstep bench-worker` that the benches and the multi-process tests
//! start. The root crate's `Cli` embeds them when built with its `bench` feature.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `lockstep bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Throughput of one link between two OS processes, with a same-run reference.
    Link(LinkBenchArgs),
    /// Allreduce latency and bandwidth over N local processes, with a same-run reference.
    Allreduce(AllreduceBenchArgs),
    /// Training throughput of a manifest with 1 and N workers, and of a direct loop.
    Train(TrainBenchArgs),
    /// Stream ingest: rows/s and MB/s from N producer processes into a stream job's workers,
    /// next to reading the same rows from the local Parquet file.
    Ingest(IngestBenchArgs),
    /// Embedding tables too large to allreduce, on parameter-server nodes: rounds/s and bytes
    /// per round for tables R and R/100 rows, next to a dense allreduce of the small tables.
    Sparse(SparseBenchArgs),
}

/// `lockstep bench sparse`
#[derive(Debug, Clone, Args)]
pub struct SparseBenchArgs {
    /// Rows per table (two tables; ids hashed into this many rows). The second run uses 1/100.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Embedding width.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Parameter-server nodes holding the tables.
    #[arg(long, default_value_t = 2)]
    pub servers: usize,
    /// Rows per round (all workers).
    #[arg(long, default_value_t = 4096)]
    pub global_batch: usize,
    /// Training rounds per run.
    #[arg(long, default_value_t = 100)]
    pub rounds: usize,
    /// Data-plane transport (tcp or shm).
    #[arg(long, default_value = "shm")]
    pub transport: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `lockstep bench ingest`
#[derive(Debug, Clone, Args)]
pub struct IngestBenchArgs {
    /// The stream manifest (its warm-up sample is the data every producer sends).
    #[arg(long, default_value = "examples/stream/credit.toml")]
    pub manifest: PathBuf,
    /// Producer processes (a multiple of the manifest's worker count).
    #[arg(long, default_value_t = 2)]
    pub producers: u32,
    /// Times each producer sends the whole data file.
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Rows per record batch a producer sends.
    #[arg(long, default_value_t = 4096)]
    pub batch_rows: usize,
    /// Rows per round of the job (large, so that training keeps up).
    #[arg(long, default_value_t = 4096)]
    pub global_batch: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: run as producer ID against this bootstrap.
    #[arg(long, hide = true, requires = "bootstrap")]
    pub produce: Option<u32>,
    /// Internal: the bootstrap address for `--produce`.
    #[arg(long, hide = true)]
    pub bootstrap: Option<String>,
    /// Internal: the cluster name for `--produce`.
    #[arg(long, hide = true)]
    pub cluster: Option<String>,
}

/// `lockstep bench train`
#[derive(Debug, Clone, Args)]
pub struct TrainBenchArgs {
    /// The manifest to train (64 rows per worker per round are set on top of it).
    #[arg(long, default_value = "examples/mnist-mlp/cluster.toml")]
    pub manifest: PathBuf,
    /// Comma-separated worker counts; each N > 1 is compared with 1 worker.
    #[arg(long, default_value = "1,2")]
    pub workers: String,
    /// Transport: shm or tcp.
    #[arg(long, default_value = "shm")]
    pub transport: String,
    /// Rows per worker per round (the global batch is this times the worker count).
    #[arg(long, default_value_t = 64)]
    pub rows_per_worker: usize,
    /// Extra manifest overrides for every launch and the direct loop (repeatable), e.g.
    /// --set job.epochs=2.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Repetitions: the launches and the direct loop run interleaved this many times.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `lockstep bench link`
#[derive(Debug, Clone, Args)]
pub struct LinkBenchArgs {
    /// Backend: tcp, shm or rdma (a build with `--features rdma` and an RDMA device; the
    /// reference is then a plain TCP connection between the same processes).
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// Message size, e.g. 64MiB, 4KiB, 1000.
    #[arg(long, default_value = "64MiB")]
    pub size: String,
    /// Timed messages per sample (after two untimed ones).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Run the link over TLS (certificates made for the run); the reference is then a plain
    /// TCP link between the same two processes, so the ratio is TLS / plain.
    #[arg(long)]
    pub tls: bool,
    /// Placement, attempts, repetitions and the JSON output.
    #[command(flatten)]
    pub measure: MeasureArgs,
}

/// `lockstep bench allreduce`
#[derive(Debug, Clone, Args)]
pub struct AllreduceBenchArgs {
    /// Number of processes.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Backend: tcp, shm, rdma (a build with `--features rdma` and an RDMA device; the
    /// reference is then plain TCP between the same processes), or auto (shared memory to
    /// workers with the same IP, RDMA or TCP to others).
    #[arg(long, default_value = "shm")]
    pub transport: String,
    /// Algorithm: ring, tree, hier, ps or auto (auto probes the links first and reports what it
    /// chose for each size).
    #[arg(long, default_value = "auto")]
    pub algo: String,
    /// Workers per host, host-major (0: hosts from the workers' IPs). With --netns, worker `r`
    /// runs in namespace `<netns><r / ranks_per_host>`.
    #[arg(long, default_value_t = 0)]
    pub ranks_per_host: usize,
    /// Run the workers in network namespaces with this name prefix (`ip netns exec`; see
    /// scripts/netns-cluster.sh); needs --ranks-per-host and --bind.
    #[arg(long)]
    pub netns: Option<String>,
    /// The IP the rendezvous coordinator binds (reachable from every namespace).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Comma-separated message sizes.
    #[arg(long, default_value = "4KiB,64KiB,1MiB,16MiB,64MiB")]
    pub sizes: String,
    /// Timed iterations per size (fewer are used for very large sizes).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Run the links over TLS (tcp only; certificates made for the run); the reference is then
    /// the same allreduce over plain TCP links between the same processes (ratio = TLS / plain).
    #[arg(long)]
    pub tls: bool,
    /// Placement, attempts, repetitions and the JSON output.
    #[command(flatten)]
    pub measure: MeasureArgs,
}

/// How `bench link` and `bench allreduce` measure: placement, attempts, repetitions, output.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// Where the worker processes run: `auto` (rank i on the i-th of the CPUs this process may
    /// use, modulo their number), `none` (not pinned: the scheduler decides), or a list such as
    /// `0,1` or `0,0` (rank i on LIST[i % len]). The reference's two endpoints run on rank 0's
    /// and rank 1's CPUs, so subject and reference share one placement.
    #[arg(long, default_value = "auto")]
    pub cpus: String,
    /// Whole runs to try: a run in which `TCP_INFO` shows a connection slowed by spurious
    /// retransmissions (reordering between two CPUs; docs/benchmarks.md, "Placement") is set aside
    /// (listed in the JSON as `discarded`) and measured again; the last one is kept regardless.
    #[arg(long, default_value_t = 3)]
    pub attempts: usize,
    /// Repetitions: subject and reference are measured interleaved (A B A B ...) this many times;
    /// the table shows the median and min-max of each and of the per-pair ratio.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
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
