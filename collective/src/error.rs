//! `CollectiveError`: what a collective returns when it fails. Every variant names this rank, its
//! node, the round, the operation and the collective sequence number, and where another rank is
//! to blame, that rank and its node too, so a log line alone says who failed, when and doing what.

use lockstep_transport::{Error as TransportError, Op};

/// Why a rank gave up a collective; carried by abort notices between ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The rank's process or connection is gone (closed, silent past the peer timeout, I/O error).
    Lost,
    /// The rank sent frames that do not match (other round, sequence number, shape, dtype).
    Mismatch,
}

impl FailureKind {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            FailureKind::Lost => 1,
            FailureKind::Mismatch => 2,
        }
    }

    pub(crate) fn from_wire(v: u8) -> FailureKind {
        if v == 2 {
            FailureKind::Mismatch
        } else {
            FailureKind::Lost
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Lost => "lost",
            FailureKind::Mismatch => "sent mismatching frames",
        })
    }
}

/// Errors of the aggregation algorithms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectiveError {
    /// The link to `peer` failed (closed, timed out, mismatching frame, I/O error).
    #[error("rank {rank} ({node}), round {round}, {op} #{seq}: link to rank {peer}: {source}")]
    Transport {
        /// This rank.
        rank: usize,
        /// This rank's node name.
        node: String,
        /// The training round.
        round: u64,
        /// The collective.
        op: Op,
        /// The collective sequence number.
        seq: u64,
        /// The rank at the other end of the link.
        peer: usize,
        /// What the link reported (its message names the peer node and, for a mismatch, both
        /// nodes and both values). Boxed to keep `Result<_, CollectiveError>` small.
        #[source]
        source: Box<TransportError>,
    },
    /// Another rank reported that `failed` broke the collective; this rank stopped waiting.
    #[error(
        "rank {rank} ({node}), round {round}, {op} #{seq}: rank {failed} ({failed_node}) {kind} \
         (reported by rank {reporter} ({reporter_node}))"
    )]
    PeerFailed {
        /// This rank.
        rank: usize,
        /// This rank's node name.
        node: String,
        /// The training round.
        round: u64,
        /// The collective.
        op: Op,
        /// The collective sequence number.
        seq: u64,
        /// The rank that failed.
        failed: usize,
        /// Its node name.
        failed_node: String,
        /// How it failed.
        kind: FailureKind,
        /// The rank whose notice this rank received.
        reporter: usize,
        /// Its node name.
        reporter_node: String,
    },
    /// The call itself is wrong (shape that does not fit the data, root out of range).
    #[error("rank {rank} ({node}), round {round}, {op} #{seq}: {reason}")]
    Invalid {
        /// This rank.
        rank: usize,
        /// This rank's node name.
        node: String,
        /// The training round.
        round: u64,
        /// The collective.
        op: Op,
        /// The collective sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A configuration that cannot work (parameter-server layout, algorithm name).
    #[error("aggregation configuration: {0}")]
    Config(ConfigError),
}

/// Why a layout, a topology or an algorithm name cannot work; see [`CollectiveError::Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A list of ranks that is empty, repeats a rank or names one outside the world.
    #[error("{layout} {role} {ranks:?}: need distinct ranks below the world size {world}")]
    Ranks {
        /// The layout (`parameter server`, `embedding table`).
        layout: &'static str,
        /// Which list (`servers`, `shards`, `workers`).
        role: &'static str,
        /// The ranks given.
        ranks: Vec<usize>,
        /// The world size.
        world: usize,
    },
    /// An embedding table whose rows have no values.
    #[error("embedding tables: a row width of 0 (table {table})")]
    ZeroRowWidth {
        /// The table's index.
        table: usize,
    },
    /// A topology for another world size than the group's.
    #[error("a topology of {topology} ranks for a group of {group}")]
    TopologyWorld {
        /// Ranks in the topology.
        topology: usize,
        /// Ranks in the group.
        group: usize,
    },
    /// An allreduce algorithm name that is not one.
    #[error("unknown allreduce algorithm {name:?} (ring, tree, hier, auto)")]
    UnknownAlgo {
        /// The name given.
        name: String,
    },
}

impl From<ConfigError> for CollectiveError {
    fn from(e: ConfigError) -> CollectiveError {
        CollectiveError::Config(e)
    }
}

impl CollectiveError {
    /// The rank to blame, when another rank is: the failed peer of a lost link, or the rank an
    /// abort notice names.
    pub fn failed_rank(&self) -> Option<usize> {
        match self {
            CollectiveError::Transport { peer, .. } => Some(*peer),
            CollectiveError::PeerFailed { failed, .. } => Some(*failed),
            _ => None,
        }
    }

    /// The collective sequence number the error happened in.
    pub fn seq(&self) -> Option<u64> {
        match self {
            CollectiveError::Transport { seq, .. }
            | CollectiveError::PeerFailed { seq, .. }
            | CollectiveError::Invalid { seq, .. } => Some(*seq),
            CollectiveError::Config(..) => None,
        }
    }
}
