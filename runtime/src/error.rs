//! Runtime errors. The one users read most is [`RuntimeError::Peer`]: it names the node that
//! failed, the round and what this node was doing, e.g.
//! `node worker-2 failed in round 37 while waiting for RoundDone: connection closed by peer`.
//!
//! Every variant carries its fields (node, round, operation, path, key) or a typed error of a
//! room below it; the text is made by `Display` at the edge. The families with many cases have
//! their own enums next door: [`ActorError`], [`ProtocolError`], [`TrainingError`],
//! [`MismatchError`], [`SetupError`] and [`LaunchError`].

mod actor;
mod launch;
mod mismatch;
mod protocol;
#[cfg(test)]
mod tests;
mod training;

pub use actor::ActorError;
pub use launch::{ExitHow, FaultSyntax, LaunchError, NodeExit, RunOptionsError, SetupError};
pub use mismatch::MismatchError;
pub use protocol::{ProtocolError, Refuser};
pub use training::TrainingError;

use crate::manifest::ManifestError;

/// `round {r}: ` when there is a round (the prefix of a message about one).
fn at(round: &Option<u64>) -> String {
    round.map(|r| format!("round {r}: ")).unwrap_or_default()
}

/// Errors of nodes, the launcher and embedding.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A peer failed or misbehaved.
    #[error("node {node} failed in round {round} while {doing}: {source}")]
    Peer {
        /// The peer's node name.
        node: String,
        /// The round.
        round: u64,
        /// What this node was doing.
        doing: &'static str,
        /// The transport error.
        #[source]
        source: Box<lockstep_transport::Error>,
    },
    /// A TLS file that is missing or does not fit (`[cluster.tls]`), named with its node.
    #[error(transparent)]
    Tls(Box<lockstep_transport::tls::TlsConfigError>),
    /// Transport set-up failed (bind, rendezvous).
    #[error("transport: {0}")]
    Transport(Box<lockstep_transport::Error>),
    /// A peer sent `Abort`.
    #[error("aborted by {node}: {reason}")]
    Aborted {
        /// Who aborted.
        node: String,
        /// Why.
        reason: String,
    },
    /// Control traffic that does not fit the protocol: who sent what, and what was expected.
    #[error("control protocol: {0}")]
    Control(#[from] ProtocolError),
    /// Data loading failed.
    #[error(transparent)]
    Data(#[from] lockstep_trainer::data::DataError),
    /// Building the model or the optimizer, or a training step, failed: the round, the step and
    /// the trainer's own error.
    #[error("model: {0}")]
    Training(#[from] TrainingError),
    /// A collective failed: the error names this rank, the round, the operation and, for a dead
    /// or misbehaving peer, that peer (match on it with [`lockstep_collective::CollectiveError::failed_rank`]).
    #[error(transparent)]
    Collective(Box<lockstep_collective::CollectiveError>),
    /// `lockstep predict --top-k` cannot rank items for this model or users file.
    #[error("predict --top-k: {0}")]
    TopK(#[from] crate::job::top_k::TopKError),
    /// Two nodes disagree (model shapes, data, final weights), or a worker's own bookkeeping
    /// broke (gradient buckets, parameter counts, rounds out of step).
    #[error(transparent)]
    Mismatch(#[from] MismatchError),
    /// The actor system failed: a mailbox closed, an actor stopped, a thread panicked.
    #[error("actor system: {0}")]
    ActorSystem(#[from] ActorError),
    /// A file operation failed.
    #[error("{op} {path}: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The error.
        message: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {ms} ms while {doing}")]
    Timeout {
        /// What was awaited.
        doing: String,
        /// How long.
        ms: u64,
    },
    /// A node is alive but made no progress within the progress timeout; the hang diagnosis
    /// named it (the table has every node's answer).
    #[error("node {node} is stuck in round {round} ({operation}): no progress for {waited_ms} ms\n{table}")]
    Stuck {
        /// The culprit.
        node: String,
        /// The stuck round.
        round: u64,
        /// What the culprit is doing.
        operation: String,
        /// How long the round made no progress.
        waited_ms: u64,
        /// The hang table.
        table: String,
    },
    /// An end-of-job wait (the model save, the final hash exchange) ran out: the members that
    /// did not answer, alive or not.
    #[error("node(s) {} did not answer {operation} after round {round} within {waited_ms} ms; stopping the job", .nodes.join(", "))]
    EndTimeout {
        /// What the coordinator waited for.
        operation: &'static str,
        /// The last round.
        round: u64,
        /// The members that did not answer.
        nodes: Vec<String>,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A node or the launcher cannot start: the environment, the manifest's nodes, a port, a
    /// thread, the run directory.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The job's processes or members: one failed, too few are left, an interrupt.
    #[error(transparent)]
    Supervision(#[from] LaunchError),
    /// A stream's producers failed the job (never connected, silent).
    #[error(transparent)]
    Stream(#[from] crate::stream::error::StreamFailure),
}

impl From<lockstep_transport::Error> for RuntimeError {
    fn from(e: lockstep_transport::Error) -> Self {
        RuntimeError::Transport(Box::new(e))
    }
}

impl From<lockstep_collective::CollectiveError> for RuntimeError {
    fn from(e: lockstep_collective::CollectiveError) -> Self {
        RuntimeError::Collective(Box::new(e))
    }
}

impl RuntimeError {
    /// A peer error with its context.
    pub fn peer(
        node: &str,
        round: u64,
        doing: &'static str,
        source: lockstep_transport::Error,
    ) -> Self {
        RuntimeError::Peer {
            node: node.to_string(),
            round,
            doing,
            source: Box::new(source),
        }
    }

    /// An I/O error on `path`.
    pub fn io(
        op: &'static str,
        path: impl AsRef<std::path::Path>,
        e: impl std::fmt::Display,
    ) -> Self {
        RuntimeError::Io {
            op,
            path: path.as_ref().display().to_string(),
            message: e.to_string(),
        }
    }
}

impl From<lockstep_transport::tls::TlsConfigError> for RuntimeError {
    fn from(e: lockstep_transport::tls::TlsConfigError) -> Self {
        RuntimeError::Tls(Box::new(e))
    }
}
