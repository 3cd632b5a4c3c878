//! Parameter servers: the dense server's optimizer state in checkpoints ([`state`]), serving
//! granted rounds on the coordinator ([`serve`]), a server node of its own ([`node`],
//! `roles = ["server"]`), and embedding tables sharded over shards with sparse pulls and pushes
//! ([`sparse`]).
//!
//! May call: [`crate::round`] (the aggregator's messages), [`crate::control::protocol`],
//! [`crate::checkpoint`], [`crate::manifest`].

pub(crate) mod node;
pub(crate) mod serve;
pub(crate) mod sparse;
pub(crate) mod state;
