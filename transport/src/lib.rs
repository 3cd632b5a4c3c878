//! # lockstep-transport
//!
//! Links between Lockstep nodes: a fixed-width, checksummed [`frame`] header in front of every
//! payload, the [`Link`] contract every backend meets (see [`link`]), and the backends:
//! in-process channels ([`local`]) for unit tests, [`tcp`] (optionally under [`tls`]), shared
//! memory ([`shm`]) and [`rdma`] (behind the `rdma` feature), following the Gloo shape: one folder per backend with
//! the same file names. Every connection starts with the authenticated [`handshake`];
//! [`rendezvous`] builds the full mesh from a peer list or through a [`coordinator`].
//!
//! No actors here: everything is plain blocking code with deadlines, testable without a runtime.

// `Error` carries node names, round and op by design (the contract in `error.rs`); boxing it
// would change that public type, so the size lint is allowed here.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod coordinator;
pub mod elastic;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod link;
mod liveness;
pub mod local;
mod outbox;
mod poison;
pub mod rdma;
pub mod registrar;
pub mod rendezvous;
pub mod shm;
pub mod tcp;
pub mod tls;

pub use config::LinkConfig;
pub use coordinator::{connect_mesh_via_coordinator, Coordinator};
pub use error::{ConfigError, Context, Error, HandshakeFailure, Result, TlsFailure};
pub use frame::{Expect, FrameHeader, FrameKind, Op, HEADER_LEN};
pub use handshake::Identity;
pub use link::{AnyLink, Frame, Group, Link};
pub use rendezvous::{connect_mesh, MeshConfig, PeerAddr, TransportKind};
pub use tcp::{Conn, Listener};
pub use tls::{TlsConfig, TlsFiles};
