//! `Waiting`: which peer a [`crate::Communicator`] is blocked on right now, in which collective
//! and since when, readable from other threads (a hang diagnosis asks every node what it is
//! doing). Updated around every blocking receive: a few relaxed atomic stores, no lock.

use lockstep_transport::Op;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Microseconds on the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: a few milliseconds of
/// resolution, a few nanoseconds per read, where a precise read costs tens): the clock every
/// activity board of this process uses, so `since` values compare across boards. A hang is
/// reported in milliseconds, and this read sits on every blocking receive of a collective.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

const NOBODY: u32 = u32::MAX;

#[derive(Default)]
struct Board {
    /// Peer rank waited on, `NOBODY` when not waiting.
    peer: AtomicU32,
    /// `Op` wire value of the collective.
    op: AtomicU8,
    /// Its sequence number.
    seq: AtomicU64,
    /// Its round.
    round: AtomicU64,
    /// [`now_us`] when the wait began.
    since_us: AtomicU64,
}

/// What a communicator waits for now (a shared handle, cheap to clone).
#[derive(Clone)]
pub struct Waiting {
    board: Arc<Board>,
}

/// A snapshot of a [`Waiting`] board while the communicator is blocked on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingOn {
    /// The peer's rank.
    pub peer: usize,
    /// The collective.
    pub op: Op,
    /// Its sequence number.
    pub seq: u64,
    /// Its round.
    pub round: u64,
    /// How long it has been waiting, in microseconds.
    pub for_us: u64,
}

impl Default for Waiting {
    fn default() -> Self {
        let board = Board::default();
        board.peer.store(NOBODY, Ordering::Relaxed);
        Waiting {
            board: Arc::new(board),
        }
    }
}

impl Waiting {
    /// Blocked on `peer` in collective `op` number `seq` of `round` from now on.
    #[inline]
    pub(crate) fn on(&self, peer: usize, op: Op, seq: u64, round: u64) {
        let b = &self.board;
        b.op.store(op as u8, Ordering::Relaxed);
        b.seq.store(seq, Ordering::Relaxed);
        b.round.store(round, Ordering::Relaxed);
        b.since_us.store(now_us(), Ordering::Relaxed);
        b.peer.store(peer as u32, Ordering::Relaxed);
    }

    /// No longer blocked.
    #[inline]
    pub(crate) fn clear(&self) {
        self.board.peer.store(NOBODY, Ordering::Relaxed);
    }

    /// The current wait, if any. Fields are read one by one without a lock: a snapshot taken
    /// while the board changes may mix two consecutive waits, which is fine for a diagnosis.
    pub fn snapshot(&self) -> Option<WaitingOn> {
        let b = &self.board;
        let peer = b.peer.load(Ordering::Relaxed);
        if peer == NOBODY {
            return None;
        }
        Some(WaitingOn {
            peer: peer as usize,
            op: Op::from_wire(u16::from(b.op.load(Ordering::Relaxed))).unwrap_or(Op::P2p),
            seq: b.seq.load(Ordering::Relaxed),
            round: b.round.load(Ordering::Relaxed),
            for_us: now_us().saturating_sub(b.since_us.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_seen_until_it_is_cleared() {
        let w = Waiting::default();
        assert_eq!(w.snapshot(), None);
        w.on(2, Op::AllReduce, 7, 5);
        let s = w.snapshot().expect("waiting");
        assert_eq!((s.peer, s.op, s.seq, s.round), (2, Op::AllReduce, 7, 5));
        w.clear();
        assert_eq!(w.snapshot(), None);
    }
}
