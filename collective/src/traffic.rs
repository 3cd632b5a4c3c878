//! `Traffic`: bytes sent to and received from each peer of a [`crate::Communicator`], counted
//! where every collective frame passes (header and payload), and readable from other threads
//! (metrics, reports) while collectives run. Counting is two relaxed atomic adds per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct PeerBytes {
    sent: AtomicU64,
    received: AtomicU64,
}

/// Per-peer byte counters of one communicator; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Traffic {
    peers: Arc<[PeerBytes]>,
}

impl Traffic {
    /// Counters for a group of `world` ranks, all zero.
    pub fn new(world: usize) -> Self {
        Traffic {
            peers: (0..world).map(|_| PeerBytes::default()).collect(),
        }
    }

    pub(crate) fn sent(&self, peer: usize, bytes: usize) {
        if let Some(p) = self.peers.get(peer) {
            p.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn received(&self, peer: usize, bytes: usize) {
        if let Some(p) = self.peers.get(peer) {
            p.received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// `(sent, received)` bytes per peer rank so far (this rank's own entry stays zero).
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.peers
            .iter()
            .map(|p| {
                (
                    p.sent.load(Ordering::Relaxed),
                    p.received.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}
