//! # lockstep-transport
//!
//! Links between Lockstep nodes: a fixed-width, checksummed [`frame`] header in front of every
//! payload, the [`Link`] contract every backend meets (see [`link`]), and the backends:
//! in-process channels ([`local`]) for unit tests; TCP, shared memory and RDMA follow the Gloo
//! shape, one folder per backend with the same file names.
//!
//! No actors here: everything is plain blocking code with deadlines, testable without a runtime.

pub mod error;
pub mod frame;
pub mod link;
pub mod local;

pub use error::{Context, Error, HandshakeFailure, Result};
pub use frame::{Expect, FrameHeader, FrameKind, Op, HEADER_LEN};
pub use link::{AnyLink, Frame, Group, Link};
