//! The `lockstep` command line: argument types only (clap derive). Each subcommand's work lives
//! in the layer that owns it; `main.rs` dispatches. The benchmarks' arguments live with them in
//! `lockstep-bench` (`lockstep_bench::cli`), present with the `bench` feature.

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
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(lockstep_bench::cli::BenchCommand),
    /// TLS certificates for `cluster.tls`.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Internal: one process of a benchmark (started by `lockstep bench`).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchWorker(lockstep_bench::cli::BenchWorkerArgs),
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
    /// Write the predictions here as Parquet (with --input or --top-k).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Recommenders: write each user of --users its K best items not rated in the training
    /// split (user, item, score, rank) to --output.
    #[arg(long, value_name = "K", requires_all = ["users", "output"], conflicts_with = "input")]
    pub top_k: Option<usize>,
    /// With --top-k: a Parquet or CSV file with the user id column.
    #[arg(long, requires = "top_k")]
    pub users: Option<PathBuf>,
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
