//! The receive side of an RDMA link as bookkeeping: which registered receive slots hold unread
//! bytes, which are posted (free for the peer's next SEND), and when a waiting slot must be
//! copied out so the peer is never starved. Pure logic (no verbs), so it is unit-tested here over
//! a fake pair of queues and compiled without the `rdma` feature, like [`super::window`].
//!
//! A SEND lands in the next posted slot ([`RecvQueue::arrived`]). The reader takes bytes from
//! the front ([`RecvQueue::front`], [`RecvQueue::consume`]) straight out of the slot, which
//! is reposted once read. While this side is itself sending it does not read, and the peer may
//! be sending to it at the same time (a ring step): then [`RecvQueue::spill`] copies the oldest
//! waiting slots out, but only while fewer than `low_water` slots are posted, so a message that
//! fits in the slots above the low-water mark is never copied, and the two sides can never wait
//! on each other's slots (each keeps `low_water` posted, at least one).

use std::collections::VecDeque;
use std::ops::Range;

/// Received bytes waiting to be read.
#[derive(Debug)]
enum Chunk<T> {
    /// Still in receive slot `idx` (`len` bytes), not posted again until read.
    Slot { idx: usize, len: usize },
    /// Copied out of its slot by [`RecvQueue::spill`].
    Owned(T),
}

/// Where the next unread bytes lie.
#[derive(Debug, PartialEq, Eq)]
pub enum Front<'a> {
    /// In receive slot `idx`, at these offsets within the slot.
    Slot {
        /// The slot.
        idx: usize,
        /// Unread byte offsets within the slot.
        range: Range<usize>,
    },
    /// In memory copied out of a slot.
    Owned(&'a [u8]),
}

/// The receive slots of one link and the unread bytes in arrival order.
#[derive(Debug)]
pub struct RecvQueue<T> {
    pending: VecDeque<Chunk<T>>,
    cursor: usize,
    posted: usize,
    low_water: usize,
    /// Bytes copied out by [`RecvQueue::spill`] (for tests and logs).
    pub spilled_bytes: u64,
}

impl<T: std::ops::Deref<Target = [u8]>> RecvQueue<T> {
    /// `posted` slots posted at start; [`RecvQueue::spill`] keeps at least `low_water` (at
    /// least 1) posted while this side sends.
    pub fn new(posted: usize, low_water: usize) -> RecvQueue<T> {
        RecvQueue {
            // Every slot waiting, and as many spilled copies: no growth on the hot path after
            // the first messages.
            pending: VecDeque::with_capacity(2 * posted),
            cursor: 0,
            posted,
            low_water: low_water.max(1),
            spilled_bytes: 0,
        }
    }

    /// A SEND of `len` bytes completed into slot `idx`.
    pub fn arrived(&mut self, idx: usize, len: usize) {
        self.posted = self.posted.saturating_sub(1);
        self.pending.push_back(Chunk::Slot { idx, len });
    }

    /// Slots posted now.
    pub fn posted(&self) -> usize {
        self.posted
    }

    /// Whether no unread bytes are waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// While fewer than `low_water` slots are posted, copy the oldest waiting slot out with
    /// `copy(idx, len)` and hand its index to `repost`; stops at the first error.
    ///
    /// # Errors
    /// The first error of `repost`.
    pub fn spill<E>(
        &mut self,
        mut copy: impl FnMut(usize, usize) -> T,
        mut repost: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.posted < self.low_water {
            let Some(chunk) = self
                .pending
                .iter_mut()
                .find(|c| matches!(c, Chunk::Slot { .. }))
            else {
                return Ok(());
            };
            let Chunk::Slot { idx, len } = *chunk else {
                return Ok(());
            };
            // The whole slot is copied, so a partly read front chunk keeps its cursor.
            *chunk = Chunk::Owned(copy(idx, len));
            self.spilled_bytes += len as u64;
            repost(idx)?;
            self.posted += 1;
        }
        Ok(())
    }

    /// The unread bytes at the front, at most `max` of them.
    pub fn front(&self, max: usize) -> Option<Front<'_>> {
        match self.pending.front()? {
            Chunk::Slot { idx, len } => Some(Front::Slot {
                idx: *idx,
                range: self.cursor..(self.cursor + max).min(*len),
            }),
            Chunk::Owned(v) => Some(Front::Owned(
                &v[self.cursor..(self.cursor + max).min(v.len())],
            )),
        }
    }

    /// `n` bytes of the front were read. Returns the slot to post again when its last byte
    /// was read (the caller posts it; it counts as posted from here).
    pub fn consume(&mut self, n: usize) -> Option<usize> {
        let len = match self.pending.front()? {
            Chunk::Slot { len, .. } => *len,
            Chunk::Owned(v) => v.len(),
        };
        self.cursor += n;
        if self.cursor < len {
            return None;
        }
        self.cursor = 0;
        match self.pending.pop_front()? {
            Chunk::Slot { idx, .. } => {
                self.posted += 1;
                Some(idx)
            }
            Chunk::Owned(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: usize = 8;

    /// One side of a fake link: its posted receive slots (their bytes) and its queue.
    struct Side {
        slots: Vec<Vec<u8>>,
        free: VecDeque<usize>,
        q: RecvQueue<Vec<u8>>,
        read: Vec<u8>,
    }

    impl Side {
        fn new(n: usize, low: usize) -> Side {
            Side {
                slots: vec![vec![0; SLOT]; n],
                free: (0..n).collect(),
                q: RecvQueue::new(n, low),
                read: Vec::new(),
            }
        }

        /// The peer's SEND of `bytes`: lands in the oldest posted slot, or `false` (the NIC
        /// would retry: receiver not ready).
        fn land(&mut self, bytes: &[u8]) -> bool {
            let Some(idx) = self.free.pop_front() else {
                return false;
            };
            self.slots[idx][..bytes.len()].copy_from_slice(bytes);
            self.q.arrived(idx, bytes.len());
            assert_eq!(self.q.posted(), self.free.len());
            true
        }

        fn spill(&mut self) {
            let (slots, free) = (&self.slots, &mut self.free);
            self.q
                .spill::<()>(
                    |idx, len| slots[idx][..len].to_vec(),
                    |idx| {
                        free.push_back(idx);
                        Ok(())
                    },
                )
                .unwrap();
        }

        /// Read up to `max` bytes (in pieces of at most 3, as a header read would).
        fn read(&mut self, mut max: usize) {
            while max > 0 {
                let got = match self.q.front(max.min(3)) {
                    None => return,
                    Some(Front::Slot { idx, range }) => self.slots[idx][range].to_vec(),
                    Some(Front::Owned(b)) => b.to_vec(),
                };
                self.read.extend_from_slice(&got);
                max -= got.len();
                if let Some(idx) = self.q.consume(got.len()) {
                    self.free.push_back(idx);
                }
            }
        }
    }

    fn message(from: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ from).collect()
    }

    /// Both sides send a long message to each other before either reads (a ring step), in
    /// SLOT-byte SENDs; while sending each spills. Both finish, and every byte arrives in order.
    #[test]
    fn two_sides_sending_at_once_never_starve_and_keep_order() {
        for (n, low, len) in [(4, 1, 100), (4, 2, 37), (8, 4, 8 * 40 + 3), (2, 1, 1)] {
            let msg = [message(1, len), message(2, len)];
            let mut sides = [Side::new(n, low), Side::new(n, low)];
            let mut sent = [0usize; 2];
            let mut steps = 0;
            while sent[0] < len || sent[1] < len {
                for s in 0..2 {
                    if sent[s] < len {
                        let end = (sent[s] + SLOT).min(len);
                        if sides[1 - s].land(&msg[s][sent[s]..end]) {
                            sent[s] = end;
                        }
                    }
                    // The receiving side is itself sending: it only spills.
                    sides[1 - s].spill();
                }
                steps += 1;
                assert!(steps < 10_000, "deadlock: n {n} low {low} len {len}");
            }
            for (s, side) in sides.iter_mut().enumerate() {
                side.read(len);
                assert_eq!(side.read, msg[1 - s], "n {n} low {low} len {len}");
                assert!(side.q.is_empty());
                assert_eq!(side.q.posted(), n, "every slot posted again");
            }
        }
    }

    /// A message that fits in the slots above the low-water mark is never copied.
    #[test]
    fn a_message_above_the_low_water_mark_stays_in_its_slots() {
        let mut side = Side::new(8, 4);
        let msg = message(3, 4 * SLOT);
        for piece in msg.chunks(SLOT) {
            assert!(side.land(piece));
            side.spill();
        }
        assert_eq!(side.q.spilled_bytes, 0);
        assert_eq!(side.q.posted(), 4);
        // One more piece crosses the mark: the oldest slot is copied out and posted again.
        assert!(side.land(&message(4, SLOT)));
        side.spill();
        assert_eq!(side.q.spilled_bytes, SLOT as u64);
        assert_eq!(side.q.posted(), 4);
        side.read(5 * SLOT);
        assert_eq!(&side.read[..4 * SLOT], &msg[..]);
        assert_eq!(&side.read[4 * SLOT..], &message(4, SLOT)[..]);
    }

    /// A partly read front slot keeps its cursor when it is spilled.
    #[test]
    fn spilling_a_partly_read_slot_keeps_the_position() {
        let mut side = Side::new(1, 1);
        let msg = message(5, SLOT);
        assert!(side.land(&msg));
        side.read(3);
        side.spill();
        assert_eq!(side.q.posted(), 1);
        side.read(SLOT - 3);
        assert_eq!(side.read, msg);
    }
}
