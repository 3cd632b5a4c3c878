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
//!   memory ring), possibly in several consecutive pieces `(offset, bytes)`; `recv_into` lands
//!   it in the caller's slice (a socket reads straight into it).
//! - `send_from` sends a payload the caller keeps: what the wire takes at once (room in the
//!   ring, in the socket buffer) is written straight from the caller's slice, and only the rest
//!   is copied into a pooled buffer for the writer; like `send` it never waits for the peer.
//! - `reserve` / `commit` (and `send_with`, the two together) let a sender write a payload in
//!   place: over shared memory the [`Reservation`] is room in the peer's ring itself (in two
//!   pieces when it wraps), elsewhere a pooled buffer that `commit` sends. Nothing reaches the
//!   peer before `commit`, whole frames only; a reservation dropped uncommitted sends nothing.
//!   Unlike `send`, `reserve` may wait for the peer to free room in its ring, with the same
//!   deadline as a receive (a peer silent for the peer timeout is [`Error::PeerTimeout`], a dead
//!   one [`Error::PeerClosed`]), so it is meant for algorithms that keep at most three frames per
//!   link in flight (the ring allreduce); a frame too large for that goes through a pooled
//!   buffer and never waits. A `send` while a reservation is open cancels it (its `commit`
//!   fails) and goes out after the reservation is dropped; so commit or drop a reservation
//!   before flushing or dropping its link, which would otherwise wait for it.

use crate::error::{ConfigError, Error, Result};
use crate::frame::{Expect, FrameHeader};
use crate::local::LocalLink;
use crate::shm::ShmLink;
use crate::tcp::TcpLink;
use lockstep_tensor::{Buffer, BufferMut, BufferPool};

/// A received frame: its header and its payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The validated header.
    pub header: FrameHeader,
    /// The payload (pooled buffer, ring slice or copy, depending on the backend).
    pub payload: Buffer,
}

/// Room for one frame's payload, written in place before [`Link::commit`] sends it. See the
/// module docs.
pub struct Reservation {
    pub(crate) header: FrameHeader,
    pub(crate) room: Room,
}

/// Where a reservation's payload lies.
pub(crate) enum Room {
    /// A pooled (or fresh) buffer, sent by `commit`.
    Buffer(BufferMut),
    /// Room in a shared-memory ring, published by `commit`.
    Ring(crate::shm::link::RingRoom),
}

impl Reservation {
    /// A reservation backed by an ordinary buffer of `header.len` bytes.
    pub(crate) fn buffer(header: FrameHeader, buf: BufferMut) -> Reservation {
        Reservation {
            header,
            room: Room::Buffer(buf),
        }
    }

    /// The header `commit` will send.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// Payload bytes (`header.len`).
    pub fn len(&self) -> usize {
        self.header.len as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the payload is written straight where the peer reads it (a shared-memory ring).
    pub fn in_place(&self) -> bool {
        matches!(self.room, Room::Ring(_))
    }

    /// The payload room: the first piece, then the rest (empty unless the room wraps around the
    /// end of a ring); together exactly [`Reservation::len`] bytes of unspecified content.
    pub fn pieces(&mut self) -> (&mut [u8], &mut [u8]) {
        match &mut self.room {
            Room::Buffer(b) => (&mut b[..], &mut []),
            Room::Ring(r) => r.pieces(),
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("header", &self.header)
            .field("in_place", &self.in_place())
            .finish()
    }
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

    /// Send one frame whose payload the caller keeps (`header.len` must equal `payload.len()`):
    /// written inline where the wire has room, the rest copied for the writer. Never waits for
    /// the peer to receive.
    ///
    /// # Errors
    /// As [`Link::send`].
    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        self.send(header, Buffer::copy_from_slice(payload))
    }

    /// Reserve room for a frame of `header.len` payload bytes, to be written through
    /// [`Reservation::pieces`] and sent by [`Link::commit`]. May wait for the peer to free room
    /// (see the module docs).
    ///
    /// # Errors
    /// The link's sticky error, [`Error::PeerTimeout`] / [`Error::PeerClosed`] naming the peer
    /// while waiting for room, [`Error::Config`] for a frame longer than `max_frame_len` or
    /// while another reservation is open.
    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        Ok(Reservation::buffer(
            header,
            BufferMut::zeroed(header.len as usize),
        ))
    }

    /// Send a reserved frame (its header, then the payload as written).
    ///
    /// # Errors
    /// As [`Link::send`]; [`Error::Config`] for a reservation made on another link or cancelled
    /// by a `send` in between.
    fn commit(&mut self, reservation: Reservation) -> Result<()> {
        match reservation.room {
            Room::Buffer(b) => self.send(reservation.header, b.freeze()),
            Room::Ring(_) => Err(ConfigError::RingReservation {
                peer: self.peer_name().to_string(),
            }
            .into()),
        }
    }

    /// [`Link::reserve`], `fill` the payload pieces, [`Link::commit`].
    ///
    /// # Errors
    /// As [`Link::reserve`] and [`Link::commit`].
    fn send_with(
        &mut self,
        header: FrameHeader,
        fill: &mut dyn FnMut(&mut [u8], &mut [u8]),
    ) -> Result<()> {
        let mut r = self.reserve(header)?;
        let (a, b) = r.pieces();
        fill(a, b);
        self.commit(r)
    }

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

    /// Receive the next data frame into `dst`. When the payload length differs from
    /// `dst.len()` the bytes that fit are copied and the header tells the length (the caller
    /// checks it); an abort notice or other empty frame leaves `dst` untouched.
    ///
    /// # Errors
    /// As [`Link::recv`].
    fn recv_into(&mut self, expect: &Expect, dst: &mut [u8]) -> Result<FrameHeader> {
        self.recv_with(expect, &mut |off, piece| {
            if let Some(d) = dst.get_mut(off..off + piece.len()) {
                lockstep_tensor::kernels::copy(d, piece);
            }
        })
    }
}

/// The length check every backend's `send` and `send_from` makes: the header must announce the
/// payload it travels with.
pub(crate) fn check_payload_len(peer: &str, header: &FrameHeader, len: usize) -> Result<()> {
    if header.len != len as u64 {
        return Err(ConfigError::PayloadLen {
            peer: peer.to_string(),
            header_len: header.len,
            payload_len: len,
        }
        .into());
    }
    Ok(())
}

/// A received header, decoded and checked as every backend's receive does: `Ok(None)` for a
/// heartbeat, [`Error::PeerClosed`] for a close, [`Error::Protocol`] for bytes that are no
/// header (or announce more than `max_frame_len`), [`Error::Mismatch`] when `expect` refuses
/// it. `ctx` is only called on an error (it allocates).
pub(crate) fn admit_header(
    hb: &[u8; crate::frame::HEADER_LEN],
    max_frame_len: u64,
    expect: &crate::frame::Expect,
    ctx: impl Fn() -> crate::error::Context,
    (me, peer): (&str, &str),
) -> Result<Option<FrameHeader>> {
    use crate::frame::FrameKind;
    let h = FrameHeader::try_read(hb, max_frame_len).map_err(|e| Error::Protocol {
        ctx: ctx(),
        reason: e.to_string(),
    })?;
    match h.kind {
        FrameKind::Heartbeat => return Ok(None),
        FrameKind::Close => return Err(Error::PeerClosed { ctx: ctx() }),
        FrameKind::Data | FrameKind::Control => {}
    }
    if let Some((field, expected, actual)) = expect.check(&h) {
        return Err(Error::Mismatch {
            ctx: ctx(),
            field,
            local_node: me.to_string(),
            remote_node: peer.to_string(),
            expected,
            actual,
        });
    }
    Ok(Some(h))
}

/// The bound every backend's `reserve` checks: no frame longer than `max_frame_len`.
pub(crate) fn check_frame_len(peer: &str, len: u64, max_frame_len: u64) -> Result<()> {
    if len > max_frame_len {
        return Err(ConfigError::FrameTooLong {
            peer: peer.to_string(),
            len,
            max_frame_len,
        }
        .into());
    }
    Ok(())
}

/// The reservation of a backend without shared memory: after the length bound, a pooled
/// buffer that `commit` sends like any payload.
pub(crate) fn buffer_reservation(
    peer: &str,
    header: FrameHeader,
    max_frame_len: u64,
    pool: &BufferPool,
) -> Result<Reservation> {
    check_frame_len(peer, header.len, max_frame_len)?;
    Ok(Reservation::buffer(header, pool.take(header.len as usize)))
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
    Rdma(Box<crate::rdma::RdmaLink>),
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
    /// The backend's name: `local`, `tcp`, `shm` or `rdma`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyLink::Local(_) => "local",
            AnyLink::Tcp(_) => "tcp",
            AnyLink::Shm(_) => "shm",
            #[cfg(feature = "rdma")]
            AnyLink::Rdma(_) => "rdma",
        }
    }

    /// A handle that sends on this link from another thread, for TCP links (control links are
    /// always TCP); `None` for other backends.
    pub fn tcp_sender(&self) -> Option<crate::tcp::TcpSender> {
        match self {
            AnyLink::Tcp(l) => Some(l.sender()),
            _ => None,
        }
    }

    /// Receive the next data frame, giving up at `deadline` with `Ok(None)` and the link still
    /// usable (see [`crate::tcp::TcpLink::recv_before`]). Only TCP links (control links) have a
    /// deadline; on other backends this waits as [`Link::recv`] does.
    ///
    /// # Errors
    /// As [`Link::recv`].
    pub fn recv_before(
        &mut self,
        expect: &Expect,
        deadline: std::time::Instant,
    ) -> Result<Option<Frame>> {
        match self {
            AnyLink::Tcp(l) => l.recv_before(expect, deadline),
            other => other.recv(expect).map(Some),
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
    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        dispatch!(self, l => l.send_from(header, payload))
    }
    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        dispatch!(self, l => l.reserve(header))
    }
    fn commit(&mut self, reservation: Reservation) -> Result<()> {
        dispatch!(self, l => l.commit(reservation))
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
    fn recv_into(&mut self, expect: &Expect, dst: &mut [u8]) -> Result<FrameHeader> {
        dispatch!(self, l => l.recv_into(expect, dst))
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
            return Err(ConfigError::GroupShape {
                names: names.len(),
                links: links.len(),
                rank,
            }
            .into());
        }
        for (i, l) in links.iter().enumerate() {
            if (i == rank) != l.is_none() {
                return Err(ConfigError::LinkSlot { rank, slot: i }.into());
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
