//! [`ConfigError`]: a setting, an argument or a local resource that cannot work, as data. Each
//! variant names what is wrong (the node, the peer, the address, the file, the value against
//! its bound), and `Display` renders the message [`crate::Error::Config`] prefixes with
//! "configuration: ". None of these poisons a link: the caller asked for something the link
//! cannot do, and the link itself is still sound.

use std::path::PathBuf;

/// Why a mesh, a link call or a shared-memory segment could not be set up as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `transport = "..."` names no backend.
    #[error("unknown transport {name:?} (tcp, shm, rdma or auto)")]
    UnknownTransport {
        /// The name given.
        name: String,
    },
    /// This node is not the member at its own rank in the mesh's peer list.
    #[error("node {node} is not peers[{rank}] in a mesh of {size}")]
    NotInMesh {
        /// This node's name.
        node: String,
        /// The rank it claims.
        rank: usize,
        /// Members in the mesh.
        size: usize,
    },
    /// Two members of the mesh share a name.
    #[error("node names in the mesh are not unique ({node} appears more than once)")]
    DuplicateNode {
        /// The repeated name.
        node: String,
    },
    /// A registering node asked for a rank that another node holds or that is out of range.
    #[error("node {node} asked for rank {rank}: taken or >= {size}")]
    RankTaken {
        /// The node that asked.
        node: String,
        /// The rank it asked for.
        rank: u32,
        /// Members in the mesh.
        size: usize,
    },
    /// A `host:port` that does not resolve.
    #[error("address {addr:?}: {message}")]
    Address {
        /// The address as given.
        addr: String,
        /// The resolver's message.
        message: String,
    },
    /// A `host:port` that resolves to no socket address.
    #[error("address {addr:?} resolves to nothing")]
    AddressEmpty {
        /// The address as given.
        addr: String,
    },
    /// A group whose parts do not fit together (as many names as links, a rank among them).
    #[error("group of {names} names and {links} links cannot have rank {rank}")]
    GroupShape {
        /// Names given.
        names: usize,
        /// Link slots given.
        links: usize,
        /// The rank asked for.
        rank: usize,
    },
    /// A group whose own rank has a link, or another rank has none.
    #[error("rank {rank}: link slot {slot} is wrong")]
    LinkSlot {
        /// This process's rank.
        rank: usize,
        /// The slot that is (or is not) filled.
        slot: usize,
    },
    /// A frame longer than the link accepts.
    #[error("frame of {len} bytes to {peer} exceeds max_frame_len {max_frame_len}")]
    FrameTooLong {
        /// The receiving node.
        peer: String,
        /// The frame's payload length.
        len: u64,
        /// The bound (`max_frame_len`).
        max_frame_len: u64,
    },
    /// A header that announces another payload length than the one it travels with.
    #[error("send to {peer}: header.len {header_len} != payload length {payload_len}")]
    PayloadLen {
        /// The receiving node.
        peer: String,
        /// The length in the header.
        header_len: u64,
        /// The payload's length.
        payload_len: usize,
    },
    /// More payload bytes counted as written inline than the payload has (a sink's bug).
    #[error(
        "send to {peer}: {written} payload bytes written inline, the payload has {payload_len}"
    )]
    InlineOverrun {
        /// The receiving node.
        peer: String,
        /// Payload bytes the sink reported written.
        written: usize,
        /// The payload's length.
        payload_len: usize,
    },
    /// A second reservation while one is open on the same link.
    #[error("a reservation on the link to {peer} is still open")]
    ReservationOpen {
        /// The link's peer.
        peer: String,
    },
    /// A shared-memory reservation committed on a link that did not make it.
    #[error("reservation committed on the link to {peer}, which did not make it")]
    ReservationForeign {
        /// The peer of the link it was committed on.
        peer: String,
    },
    /// A reservation committed after a `send` on the same link cancelled it.
    #[error("reservation on the link to {peer} was cancelled by a send")]
    ReservationCancelled {
        /// The link's peer.
        peer: String,
    },
    /// A shared-memory reservation committed on a link of another backend.
    #[error("a shared-memory reservation cannot be committed on the link to {peer}")]
    RingReservation {
        /// The peer of the link it was committed on.
        peer: String,
    },
    /// A shared-memory segment of another run that is still alive (same cluster name?).
    #[error("shared-memory segment {} is in use by live process {pid} (another run with the same cluster name?)", path.display())]
    SegmentInUse {
        /// The segment's file.
        path: PathBuf,
        /// The live process that created it.
        pid: u32,
    },
    /// A stale shared-memory segment that cannot be removed.
    #[error("cannot remove stale {}: {message}", path.display())]
    StaleSegment {
        /// The segment's file.
        path: PathBuf,
        /// The system's reason.
        message: String,
    },
    /// A shared-memory ring that cannot be created.
    #[error("shm ring {}: {message}", path.display())]
    ShmRing {
        /// The ring's file.
        path: PathBuf,
        /// What creating or mapping it said.
        message: String,
    },
}
