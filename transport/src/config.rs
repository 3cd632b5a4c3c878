//! Knobs shared by every backend's links: heartbeat interval, peer timeout, the bound on frame
//! lengths and the send-queue depth. One struct so tcp, shm and rdma links read alike and tests
//! can shrink the numbers (Gloo's `max_segment_size` idea).

use std::time::Duration;

/// Largest payload on a control link (registration, round windows, reports): control messages
/// are small, so a peer's length field is believed only up to this.
pub const CONTROL_MAX_FRAME_LEN: u64 = 16 << 20;
/// Largest payload on a data link by default (a piece of a collective or a benchmark message).
pub const DATA_MAX_FRAME_LEN: u64 = 1 << 31;

/// Per-link settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// A heartbeat goes out on an idle link this often.
    pub heartbeat: Duration,
    /// A peer silent for longer than this is declared dead ([`crate::Error::PeerTimeout`]).
    pub peer_timeout: Duration,
    /// Largest payload accepted; a longer length field is a protocol violation.
    pub max_frame_len: u64,
    /// Frames that may wait in a link's send queue before `send` waits (bounded).
    pub max_queued: usize,
    /// Bytes of each shared-memory ring (per directed pair).
    pub shm_ring_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            heartbeat: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(3),
            max_frame_len: DATA_MAX_FRAME_LEN,
            max_queued: 64,
            shm_ring_bytes: 8 << 20,
        }
    }
}

impl LinkConfig {
    /// The settings of a control link: as [`LinkConfig::default`] with frames of at most
    /// [`CONTROL_MAX_FRAME_LEN`] bytes.
    pub fn control() -> Self {
        LinkConfig {
            max_frame_len: CONTROL_MAX_FRAME_LEN,
            ..LinkConfig::default()
        }
    }
}
