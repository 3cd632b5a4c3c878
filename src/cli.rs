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
    /// Start every node of a manifest on this machine as separate processes and wait.
    Launch(LaunchArgs),
    /// Start one node (one per machine in a real cluster).
    Node(NodeArgs),
    /// Start N processes of any program (a PyTorch script using the `lockstep` Python package)
    /// with torchrun's variables and a cluster token, and supervise them.
    Run(RunArgs),
    /// Print what a checkpoint or model file holds.
    Inspect(InspectArgs),
    /// Predict with a trained model: the held-out split to the terminal, or any data file to
    /// Parquet (`--input DATA --output OUT.parquet`).
    Predict(PredictArgs),
    /// Write the manifest's train/held-out split, transformed as the workers see it, to
    /// DIR/train.parquet and DIR/test.parquet (to fit the same matrices with another tool).
    Split(SplitArgs),
    /// Render loss and metric curves of a run directory to `<run dir>/curves.svg`.
    Plot(PlotArgs),
    /// Summarise a finished or running run from its run directory.
    Report(PlotArgs),
    /// Benchmarks of links and collectives between local processes.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// TLS certificates for `cluster.tls`.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Internal: one process of a benchmark (started by `lockstep bench`).
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
}

/// `lockstep tls ...`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a CA and a certificate + key per node (for tests and small clusters; a real
    /// deployment uses its own PKI). Reuses the CA already in --out, if any.
    Gen(TlsGenArgs),
}

/// `lockstep tls gen`
#[derive(Debug, Clone, Args)]
pub struct TlsGenArgs {
    /// Comma-separated node names (also producers: `producer-0,producer-1`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Output folder: ca.pem, ca.key, NAME.pem and NAME.key per node.
    #[arg(long)]
    pub out: PathBuf,
}

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

/// `lockstep run`
#[derive(Debug, Clone, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Number of processes (ranks 0..N-1 on this machine).
    #[arg(short = 'n', long = "nproc", default_value_t = 2)]
    pub nproc: usize,
    /// LOCKSTEP_TRANSPORT for every process: auto, tcp or shm.
    #[arg(long)]
    pub transport: Option<String>,
    /// LOCKSTEP_PEER_TIMEOUT_MS for every process.
    #[arg(long)]
    pub peer_timeout_ms: Option<u64>,
    /// Logs go to RUN_DIR/logs/rank-R.log (default runs/<program name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Elastic with at least MIN ranks: host the generation rendezvous (lockstep.elastic), let
    /// the others go on when a rank dies.
    #[arg(long, value_name = "MIN")]
    pub elastic: Option<usize>,
    /// Elastic: start a dead rank again, at most N times in all.
    #[arg(long, default_value_t = 0)]
    pub max_restarts: u32,
    /// The program and its arguments (after --).
    #[arg(required = true, allow_hyphen_values = true)]
    pub program: Vec<String>,
}

/// `lockstep launch`
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// The cluster manifest (TOML).
    pub manifest: PathBuf,
    /// Replace the manifest's workers by N loopback workers.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Transport: auto, tcp, shm or rdma (overrides cluster.transport).
    #[arg(long)]
    pub transport: Option<String>,
    /// Aggregation: allreduce or parameter-server (overrides job.aggregation).
    #[arg(long)]
    pub aggregation: Option<String>,
    /// Directory for checkpoints, logs and the report (default runs/<cluster name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Override any manifest key, e.g. --set job.epochs=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Write the JSON report here (default <run dir>/report.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// When a node dies, restart all nodes from the newest checkpoint, at most K times (with
    /// --elastic: start only the dead worker's process again, at most K times).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub max_restarts: u32,
    /// Elastic membership: survivors carry on when workers die, down to MIN workers;
    /// replacements join up to MAX (default: the manifest's workers). Same as
    /// --set job.elastic.min_workers=MIN [--set job.elastic.max_workers=MAX].
    #[arg(long, value_name = "MIN[:MAX]")]
    pub elastic: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics from the coordinator (port 0: any
    /// free port, written to <run dir>/endpoints.json as "metrics"); sets observe.metrics_addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Write a timeline of sampled rounds to <run dir>/trace.json (Chrome trace format);
    /// sets observe.trace.
    #[arg(long)]
    pub trace: bool,
}

/// `lockstep node`
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The cluster manifest (TOML).
    pub manifest: PathBuf,
    /// This node's name in the manifest; without it the environment describes the cluster:
    /// MASTER_ADDR and MASTER_PORT (the coordinator) with RANK and WORLD_SIZE (torchrun),
    /// SLURM_PROCID and SLURM_NTASKS (Slurm), or JOB_COMPLETION_INDEX and WORLD_SIZE (a
    /// Kubernetes Indexed Job).
    #[arg(long)]
    pub node: Option<String>,
    /// Override any manifest key (repeatable; every node must get the same).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Replace the manifest's workers by N loopback workers (as `launch --workers`).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Run directory (checkpoints, model, report).
    #[arg(long, default_value = "runs/node")]
    pub run_dir: PathBuf,
    /// Write the JSON report here (coordinator only).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The coordinator's control address HOST:PORT, when its manifest address has port 0.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Write the bound control address to this file (coordinator; used by launch).
    #[arg(long, hide = true)]
    pub announce: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in the run directory (coordinator).
    #[arg(long)]
    pub resume: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics from the coordinator (port 0: any
    /// free port, written to <run dir>/endpoints.json as "metrics"); sets observe.metrics_addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Write a timeline of sampled rounds to <run dir>/trace.json (Chrome trace format);
    /// sets observe.trace.
    #[arg(long)]
    pub trace: bool,
}

/// `lockstep inspect`
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A checkpoint directory (`<run dir>/checkpoints/round-*`) or a model file (safetensors).
    pub checkpoint: PathBuf,
}

/// `lockstep predict`
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// The manifest the model was trained with (for the data transform and model shape).
    pub manifest: PathBuf,
    /// The trained model (safetensors), e.g. runs/mnist/model.safetensors.
    #[arg(long)]
    pub model: PathBuf,
    /// Rows to predict (default: the manifest's held-out split).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Manifest overrides the model was trained with.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Predict every row of this Parquet or CSV file (feature columns required, label optional)
    /// with the training transform stored beside the model; needs --output.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// Write the predictions here as Parquet (with --input).
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Input columns copied to the output, comma-separated (default: `id` and the label, if
    /// present).
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    pub keep: Option<Vec<String>>,
}

/// `lockstep split`
#[derive(Debug, Clone, Args)]
pub struct SplitArgs {
    /// The cluster manifest (TOML).
    pub manifest: PathBuf,
    /// Output folder: train.parquet, test.parquet and split.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Manifest overrides (as for launch).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `lockstep plot` and `lockstep report`
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A run directory.
    pub run_dir: PathBuf,
}
