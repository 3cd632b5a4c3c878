//! The link contract every backend meets, the enum that dispatches over backends without trait
//! objects on the per-message path, and the `Group` (this rank plus one link per peer) that
//! collectives run over.
//!
//! # Contract of a link (every backend)
//! - `send` hands a frame (header + payload as it lies in memory) to the link. It may complete
//!   inline (small frames into a ring or a socket buffer) or queue the payload `Buffer` (a cheap
//!   refcounted handle, never a copy) for a writer; it never waits for the peer to *receive*, so
//!   two ranks that send to each other before receiving cannot deadlock. Queues are bounded; a
//!   full queue waits at most the peer timeout.
//! - `recv` returns the next data frame after checking its header against an [`Expect`];
//!   heartbeats are consumed silently. Every receive has a deadline: a peer silent for longer than
//!   the peer timeout is [`Error::PeerTimeout`], a closed peer [`Error::PeerClosed`], both naming
//!   the peer, the round and the operation from the `Expect`.
//! - The first error poisons the link: every later call returns the same error.
//! - `recv_with` lets a receiver consume the payload where it lies (straight out of a shared
//!   memory ring), possibly in several consecutive pieces `(offset, bytes)`.

use crate::error::{Error, Result};
use crate::frame::{Expect, FrameHeader};
use crate::local::LocalLink;
use crate::shm::ShmLink;
use crate::tcp::TcpLink;
use lockstep_tensor::Buffer;

/// A received frame: its header and its payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The validated header.
    pub header: FrameHeader,
    /// The payload (pooled buffer, ring slice or copy, depending on the backend).
    pub payload: Buffer,
}

/// One connection to one peer. See the module docs for the contract.
pub trait Link: Send {
    /// The peer's node name.
    fn peer_name(&self) -> &str;

    /// Send one frame. `header.len` must equal `payload.len()`.
    ///
    /// # Errors
    /// The link's sticky error, or a new one naming the peer, round and op.
    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()>;

    /// Wait until every queued frame has been handed to the OS or the ring (bounded by the peer
    /// timeout).
    ///
    /// # Errors
    /// As [`Link::send`].
    fn flush(&mut self) -> Result<()>;

    /// Receive the next data frame, checked against `expect`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when the header differs from `expect`, [`Error::PeerTimeout`],
    /// [`Error::PeerClosed`], [`Error::Protocol`].
    fn recv(&mut self, expect: &Expect) -> Result<Frame>;

    /// Receive the next data frame and hand its payload to `consume` in one or more consecutive
    /// pieces `(offset, bytes)`, without staging where the backend allows.
    ///
    /// # Errors
    /// As [`Link::recv`].
    fn recv_with(
        &mut self,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<FrameHeader> {
        let frame = self.recv(expect)?;
        consume(0, &frame.payload);
        Ok(frame.header)
    }
}

/// Every backend behind one type: `match` dispatch keeps trait objects off the hot path
/// (the timely `Generic` allocator pattern).
pub enum AnyLink {
    /// In-process channels (unit tests, threads as ranks).
    Local(LocalLink),
    /// A TCP connection.
    Tcp(TcpLink),
    /// Shared-memory rings (with a TCP side channel for liveness).
    Shm(ShmLink),
    /// An RDMA queue pair (only with the `rdma` feature).
    #[cfg(feature = "rdma")]
    Rdma(crate::rdma::RdmaLink),
}

macro_rules! dispatch {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLink::Local($l) => $e,
            AnyLink::Tcp($l) => $e,
            AnyLink::Shm($l) => $e,
            #[cfg(feature = "rdma")]
            AnyLink::Rdma($l) => $e,
        }
    };
}

impl AnyLink {
    /// A handle that sends on this link from another thread, for TCP links (control links are
    /// always TCP); `None` for other backends.
    pub fn tcp_sender(&self) -> Option<crate::tcp::TcpSender> {
        match self {
            AnyLink::Tcp(l) => Some(l.sender()),
            _ => None,
        }
    }
}

impl Link for AnyLink {
    fn peer_name(&self) -> &str {
        dispatch!(self, l => l.peer_name())
    }
    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()> {
        dispatch!(self, l => l.send(header, payload))
    }
    fn flush(&mut self) -> Result<()> {
        dispatch!(self, l => l.flush())
    }
    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        dispatch!(self, l => l.recv(expect))
    }
    fn recv_with(
        &mut self,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<FrameHeader> {
        dispatch!(self, l => l.recv_with(expect, consume))
    }
}

/// This rank's view of a fully connected group: its rank, every member's name, and one link per
/// peer (none to itself).
pub struct Group {
    rank: usize,
    names: Vec<String>,
    links: Vec<Option<AnyLink>>,
}

impl Group {
    /// A group from its parts; `links[rank]` must be `None` and every other entry `Some`.
    ///
    /// # Errors
    /// [`Error::Config`] when the parts do not fit together.
    pub fn new(rank: usize, names: Vec<String>, links: Vec<Option<AnyLink>>) -> Result<Group> {
        if names.len() != links.len() || rank >= names.len() {
            return Err(Error::Config(format!(
                "group of {} names and {} links cannot have rank {rank}",
                names.len(),
                links.len()
            )));
        }
        for (i, l) in links.iter().enumerate() {
            if (i == rank) != l.is_none() {
                return Err(Error::Config(format!(
                    "rank {rank}: link slot {i} is wrong"
                )));
            }
        }
        Ok(Group { rank, names, links })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.names.len()
    }

    /// Node name of `rank`.
    pub fn name(&self, rank: usize) -> &str {
        &self.names[rank]
    }

    /// This node's name.
    pub fn my_name(&self) -> &str {
        &self.names[self.rank]
    }

    /// The link to `peer`.
    ///
    /// # Panics
    /// When `peer` is this rank or out of range: a bug in the caller's algorithm.
    pub fn link(&mut self, peer: usize) -> &mut AnyLink {
        match self.links.get_mut(peer) {
            Some(Some(l)) => l,
            _ => panic!("rank {} has no link to rank {peer}", self.rank),
        }
    }

    /// Two distinct links at once (send to one while receiving from the other).
    ///
    /// # Panics
    /// When `a == b` or either is this rank.
    pub fn link_pair(&mut self, a: usize, b: usize) -> (&mut AnyLink, &mut AnyLink) {
        assert_ne!(a, b, "link_pair needs two different peers");
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let (left, right) = self.links.split_at_mut(hi);
        let (l, h) = match (left[lo].as_mut(), right[0].as_mut()) {
            (Some(l), Some(h)) => (l, h),
            _ => panic!("rank {} has no link to {a} or {b}", self.rank),
        };
        if a < b {
            (l, h)
        } else {
            (h, l)
        }
    }
}
