//! [`SetupError`]: a node or the launcher cannot start (the environment, the manifest's nodes,
//! a port, a thread, the run directory), and [`LaunchError`]: how the job's processes or members
//! ended (a node failed, too few are left, an interrupt). Both render without a prefix: the
//! message is what `lockstep` prints after `error: `.

use std::path::PathBuf;

/// The scheduler variables a node without `--node` reads its rank from (in the message).
const ENV_HELP: &str = "set RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, Slurm's \
     SLURM_PROCID/SLURM_NTASKS, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with WORLD_SIZE";

/// A node or the launcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// This node is not among the manifest's nodes.
    #[error("node {node:?} is not in {}", manifest.display())]
    NotInManifest {
        /// The node asked for.
        node: String,
        /// The manifest.
        manifest: PathBuf,
    },
    /// A role started for a node the manifest does not have.
    #[error("node {node} missing")]
    NodeMissing {
        /// The node.
        node: String,
    },
    /// Environment mode: none of the variables that give a number is set.
    #[error("no --node given and {} is not set ({})", names.join(" / "), ENV_HELP)]
    EnvUnset {
        /// The variables tried, in order.
        names: Vec<&'static str>,
    },
    /// Environment mode: `MASTER_ADDR` is not set.
    #[error("MASTER_ADDR is not set")]
    NoMasterAddr,
    /// An environment variable that should be a number is not.
    #[error("{name}={value:?} is not a number")]
    EnvNumber {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
    /// Environment mode: the rank is not below the world size.
    #[error("RANK {rank} is not below WORLD_SIZE {world}")]
    RankOutOfRange {
        /// The rank.
        rank: usize,
        /// The world size.
        world: usize,
    },
    /// Some, not all, of the TLS variables are set.
    #[error("TLS from the environment needs all of {}; {} not set", all.join(", "), missing.join(", "))]
    TlsEnvPartial {
        /// Every TLS variable.
        all: &'static [&'static str],
        /// The ones not set.
        missing: Vec<&'static str>,
    },
    /// A worker's control link that is not TCP (the reporter writes to its socket).
    #[error("the control link to the coordinator is not a TCP link")]
    ControlNotTcp,
    /// A node that must find the coordinator, whose manifest address has port 0.
    #[error(
        "the coordinator {coordinator} has port 0 in the manifest; pass --coordinator HOST:PORT \
         (lockstep launch does this)"
    )]
    CoordinatorPortZero {
        /// The coordinator.
        coordinator: String,
    },
    /// `--resume` of a stream job from a checkpoint without stream offsets.
    #[error(
        "--resume: checkpoint {} has no stream offsets (stream_offsets in meta.json): it cannot \
         continue a stream exactly once", checkpoint.display()
    )]
    NoStreamOffsets {
        /// The checkpoint directory.
        checkpoint: PathBuf,
    },
    /// The run directory cannot be written.
    #[error("run directory {} is not writable: {source} (checked at start, before training)", dir.display())]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// An address that cannot be bound.
    #[error("{what}: cannot bind {addr}: {source}")]
    Bind {
        /// What was to listen there (`metrics endpoint`).
        what: &'static str,
        /// The address.
        addr: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A thread that could not be started.
    #[error("spawning the {thread}: {source}")]
    Spawn {
        /// The thread (`bootstrap`, `ingest endpoint`, `ingest monitor`).
        thread: &'static str,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A `LOCKSTEP_FAULT` value that does not parse (tests).
    #[error("{var}={value:?}: {why}")]
    Fault {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: FaultSyntax,
    },
}

/// What is wrong with a `LOCKSTEP_FAULT` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSyntax {
    /// Not one of the fault kinds.
    #[error(
        "the faults are stall:node=NAME:round=N, fail:node=NAME:round=N, slow_checkpoint:node=NAME:round=N and stall_save:node=NAME"
    )]
    Kind,
    /// `round=` that is not a number.
    #[error("round is not a number")]
    Round,
    /// A part that is not `node=` or `round=`.
    #[error("unknown part {part:?}")]
    Part {
        /// The part as written.
        part: String,
    },
    /// `stall`, `fail` or `slow_checkpoint` without its node and round.
    #[error("needs node=NAME and round=N")]
    NodeAndRound,
    /// `stall_save` without its node.
    #[error("needs node=NAME")]
    Node,
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitHow {
    /// Killed by a signal.
    Signal(i32),
    /// Exited with a status.
    Status(i32),
    /// Exited, neither known.
    Exited,
}

impl std::fmt::Display for ExitHow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitHow::Signal(sig) => write!(f, "was killed by signal {sig}"),
            ExitHow::Status(c) => write!(f, "exited with status {c}"),
            ExitHow::Exited => f.write_str("exited"),
        }
    }
}

/// One child process that ended: its node, how, and the last error line it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExit {
    /// The node (or rank) name.
    pub node: String,
    /// How it ended.
    pub how: ExitHow,
    /// The last line with `error` on its stderr, if any.
    pub last_error: Option<String>,
}

impl std::fmt::Display for NodeExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} {}", self.node, self.how)?;
        match &self.last_error {
            Some(l) => write!(f, ": {l}"),
            None => Ok(()),
        }
    }
}

/// One line per exit.
fn lines(exits: &[NodeExit]) -> String {
    exits
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the job's processes or members ended.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A node (the coordinator, or the first to fail) ended badly.
    #[error("{0}")]
    NodeFailed(NodeExit),
    /// Nodes that failed together (killed ones first).
    #[error("{}{}", if *interrupted { "interrupted (before training started, or the stop failed): " } else { "" }, lines(failed))]
    NodesFailed {
        /// The failed nodes.
        failed: Vec<NodeExit>,
        /// Whether an interrupt came first.
        interrupted: bool,
    },
    /// A node's process could not be started.
    #[error("cannot start node {node}: {source}")]
    CannotStart {
        /// The node.
        node: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Interrupted while starting.
    #[error("interrupted")]
    Interrupted,
    /// A second signal: every node stopped at once.
    #[error("interrupted (a second signal: every node stopped at once, no final checkpoint)")]
    InterruptedTwice,
    /// The graceful stop did not end in time.
    #[error("interrupted: the graceful stop did not end within {grace_s} s; every node stopped")]
    StopTimedOut {
        /// The grace period, in seconds.
        grace_s: u64,
    },
    /// `lockstep run`: interrupted.
    #[error("interrupted: every rank stopped")]
    RanksInterrupted,
    /// `lockstep run` options that do not fit (`-n`, `--elastic`, the program).
    #[error("run: {0}")]
    RunOptions(RunOptionsError),
    /// `lockstep run`: the elastic rendezvous did not start.
    #[error("run: the rendezvous: {0}")]
    Rendezvous(#[source] Box<lockstep_transport::Error>),
    /// `lockstep run`: no free port for rank 0's rendezvous.
    #[error("run: no free port on 127.0.0.1: {0}")]
    NoPort(#[source] std::io::Error),
    /// `lockstep run --elastic`: too few ranks left to finish.
    #[error(
        "elastic run stopped: {left} rank(s) left, fewer than --elastic {min}; dead:\n{}",
        lines(dead)
    )]
    ElasticRunStopped {
        /// Ranks that can still finish.
        left: usize,
        /// `--elastic`.
        min: usize,
        /// How each dead rank ended.
        dead: Vec<NodeExit>,
    },
    /// `lockstep run --elastic`: too few ranks finished cleanly.
    #[error(
        "elastic run failed: {ok} rank(s) finished cleanly, fewer than --elastic {min}:\n{}",
        lines(failed)
    )]
    ElasticRunFailed {
        /// Ranks that finished cleanly.
        ok: usize,
        /// `--elastic`.
        min: usize,
        /// The others.
        failed: Vec<NodeExit>,
    },
    /// An elastic job's membership fell below `min_workers`.
    #[error(
        "elastic job stopped: {left} worker(s) left ({}), fewer than min_workers = {min}; dead: {}",
        workers.join(", "), dead.join(", ")
    )]
    TooFewWorkers {
        /// Workers left.
        left: usize,
        /// Their names.
        workers: Vec<String>,
        /// `job.elastic.min_workers`.
        min: usize,
        /// The dead members.
        dead: Vec<String>,
    },
}

/// `lockstep run` options that do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunOptionsError {
    /// `-n 0`.
    #[error("-n must be at least 1")]
    NoWorkers,
    /// Nothing after `--`.
    #[error("no program given after --")]
    NoProgram,
    /// `--elastic` outside `1..=n`.
    #[error("--elastic {min} must be between 1 and -n {workers}")]
    ElasticRange {
        /// `--elastic`.
        min: usize,
        /// `-n`.
        workers: usize,
    },
}
