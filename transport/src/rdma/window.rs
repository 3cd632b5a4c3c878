//! The send window of an RDMA link: which pieces of a message to post next, with at most `cap`
//! work requests in flight, and when the message is done. Pure bookkeeping (no verbs), so it is
//! unit-tested here over a fake completion queue and compiled without the `rdma` feature.
//!
//! A message of `total` bytes (frame header plus payload, read as one byte stream) is cut into
//! pieces of at most `piece` bytes, the receiver's slot size, because one SEND must fit one
//! posted receive. The link posts every piece [`SendWindow::next_range`] gives while fewer than `cap`
//! are in flight, polls the completion queue (several completions per poll), reports them with
//! [`SendWindow::completed`] (completions of one queue pair arrive in posting order) and posts
//! again; the message is sent when [`SendWindow::done`].

use std::ops::Range;

/// Progress of one message through the send queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    total: usize,
    piece: usize,
    cap: usize,
    posted: usize,
    in_flight: usize,
    /// Pieces completed (all but the last are `piece` bytes long, so this gives the bytes).
    completed: usize,
}

impl SendWindow {
    /// A message of `total` bytes in pieces of at most `piece` bytes, `cap` in flight at most
    /// (both at least 1). An empty message still has one (empty) piece: the receiver's stream
    /// sees nothing, but the caller never posts zero work requests for a frame.
    pub fn new(total: usize, piece: usize, cap: usize) -> SendWindow {
        SendWindow {
            total,
            piece: piece.max(1),
            cap: cap.max(1),
            posted: 0,
            in_flight: 0,
            completed: 0,
        }
    }

    /// The next byte range to post, when the window has room and bytes are left.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        if self.in_flight >= self.cap || self.posted >= self.total {
            return None;
        }
        let r = self.posted..(self.posted + self.piece).min(self.total);
        self.posted = r.end;
        self.in_flight += 1;
        Some(r)
    }

    /// `n` posted pieces completed (the oldest `n`).
    ///
    /// # Panics
    /// When more complete than are in flight: a bug in the caller's completion accounting.
    pub fn completed(&mut self, n: usize) {
        assert!(
            n <= self.in_flight,
            "{n} send completions with {} in flight",
            self.in_flight
        );
        self.completed += n;
        self.in_flight -= n;
    }

    /// Work requests posted and not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every byte posted and every posted piece completed.
    pub fn done(&self) -> bool {
        self.posted >= self.total && self.in_flight == 0
    }

    /// Bytes whose SENDs have completed (the memory before this offset may be reused).
    pub fn acked(&self) -> usize {
        (self.completed * self.piece).min(self.total)
    }
}

/// One scatter/gather entry of a SEND: (local key, address, length).
pub type Sge = (u32, u64, u32);

/// The SENDs of one large frame, as the link posts them: first the header (from the link's
/// registered header slot), then the payload **from its own memory** in pieces of at most
/// `piece` bytes, with at most `cap` work requests in flight, the header's included. Pure
/// bookkeeping over addresses: it never touches or copies the payload, and allocates nothing
/// (the link hands it a batch array on the stack), which `tests/rdma_zero_copy.rs` checks with
/// a counting allocator.
#[derive(Debug, Clone)]
pub struct FramePlan {
    header: Option<Sge>,
    header_in_flight: bool,
    lkey: u32,
    base: u64,
    window: SendWindow,
}

impl FramePlan {
    /// The plan for `header` then `payload` (registered under `lkey`), `cap` (at least 2)
    /// SENDs in flight at most.
    pub fn new(header: Sge, lkey: u32, payload: &[u8], piece: usize, cap: usize) -> FramePlan {
        FramePlan {
            header: Some(header),
            header_in_flight: false,
            lkey,
            base: payload.as_ptr() as u64,
            // The header's SEND counts against the window.
            window: SendWindow::new(payload.len(), piece, cap.max(2) - 1),
        }
    }

    /// Write the next SENDs to post into `out` (in posting order); how many. `out` must hold
    /// `cap` entries.
    pub fn next_batch(&mut self, out: &mut [Sge]) -> usize {
        let mut n = 0;
        if let Some(h) = self.header.take() {
            out[0] = h;
            self.header_in_flight = true;
            n = 1;
        }
        while let Some(r) = self.window.next_range() {
            out[n] = (self.lkey, self.base + r.start as u64, r.len() as u32);
            n += 1;
        }
        n
    }

    /// `n` posted SENDs completed (completions of one queue pair come in posting order, so the
    /// header's first).
    pub fn completed(&mut self, n: usize) {
        let h = usize::from(self.header_in_flight && n > 0);
        self.header_in_flight &= n == 0;
        self.window.completed(n - h);
    }

    /// Work requests posted and not completed.
    pub fn in_flight(&self) -> usize {
        self.window.in_flight() + usize::from(self.header_in_flight)
    }

    /// The header and every payload piece posted and completed.
    pub fn done(&self) -> bool {
        self.header.is_none() && !self.header_in_flight && self.window.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake completion queue: posted work requests complete in order, a pseudo-random number
    /// per poll (0 to 3), as a real CQ hands back batches of varying size.
    struct FakeCq {
        outstanding: usize,
        seed: u64,
    }

    impl FakeCq {
        fn poll(&mut self) -> usize {
            self.seed = self
                .seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let n = ((self.seed >> 33) % 4) as usize;
            let n = n.min(self.outstanding);
            self.outstanding -= n;
            n
        }
    }

    fn run(total: usize, piece: usize, cap: usize, seed: u64) -> (Vec<Range<usize>>, usize) {
        let mut w = SendWindow::new(total, piece, cap);
        let mut cq = FakeCq {
            outstanding: 0,
            seed,
        };
        let (mut posted, mut peak, mut polls) = (Vec::new(), 0, 0);
        while !w.done() {
            while let Some(r) = w.next_range() {
                posted.push(r);
                cq.outstanding += 1;
            }
            peak = peak.max(w.in_flight());
            assert_eq!(w.in_flight(), cq.outstanding);
            w.completed(cq.poll());
            polls += 1;
            assert!(polls < 1_000_000, "window never finished");
        }
        assert_eq!(w.acked(), total);
        (posted, peak)
    }

    #[test]
    fn posts_every_byte_once_in_order_with_at_most_cap_in_flight() {
        for (total, piece, cap, seed) in [
            (0, 64, 4, 1),
            (1, 64, 4, 2),
            (64, 64, 4, 3),
            (65, 64, 4, 4),
            (10 << 20, 64 << 10, 16, 5),
            (1000, 7, 1, 6),
            (1000, 7, 3, 7),
        ] {
            let (posted, peak) = run(total, piece, cap, seed);
            assert!(peak <= cap, "peak {peak} > cap {cap}");
            if total > piece * cap {
                assert_eq!(peak, cap, "a long message fills the window");
            }
            let mut at = 0;
            for r in &posted {
                assert_eq!(r.start, at, "pieces are contiguous");
                assert!(r.len() <= piece && !r.is_empty());
                at = r.end;
            }
            assert_eq!(at, total);
            assert_eq!(posted.len(), total.div_ceil(piece));
        }
    }

    #[test]
    fn acked_follows_completions_and_overcounting_is_caught() {
        let mut w = SendWindow::new(300, 100, 2);
        assert_eq!(w.next_range(), Some(0..100));
        assert_eq!(w.next_range(), Some(100..200));
        assert_eq!(w.next_range(), None, "window full");
        w.completed(1);
        assert_eq!(w.acked(), 100);
        assert_eq!(w.next_range(), Some(200..300));
        assert_eq!(w.next_range(), None, "no bytes left");
        w.completed(2);
        assert!(w.done());
        let r = std::panic::catch_unwind(move || {
            let mut w = SendWindow::new(10, 5, 2);
            w.next_range();
            w.completed(2);
        });
        assert!(r.is_err());
    }

    #[test]
    fn a_frame_plan_posts_the_header_first_then_the_payload_from_its_own_memory() {
        let payload = vec![0u8; 1000];
        let base = payload.as_ptr() as u64;
        let mut plan = FramePlan::new((9, 0xabc, 64), 7, &payload, 300, 3);
        let mut out = [(0, 0, 0); 3];
        assert_eq!(plan.next_batch(&mut out), 3);
        assert_eq!(out, [(9, 0xabc, 64), (7, base, 300), (7, base + 300, 300)]);
        assert_eq!(plan.next_batch(&mut out), 0, "window full");
        plan.completed(1); // the header; its place is not taken by the payload (cap - 1)
        assert_eq!(plan.in_flight(), 2);
        assert_eq!(plan.next_batch(&mut out), 0);
        plan.completed(1);
        assert_eq!(plan.next_batch(&mut out), 1);
        assert_eq!(out[0], (7, base + 600, 300));
        plan.completed(2);
        assert_eq!(plan.next_batch(&mut out), 1);
        assert_eq!(out[0], (7, base + 900, 100));
        assert!(!plan.done());
        plan.completed(1);
        assert!(plan.done());
    }
}
