//! Ring allreduce: reduce-scatter then allgather around the ring `r -> r+1`, chunked and
//! pipelined.
//!
//! The data is cut into `world` segments and every segment into `k` pieces of at most
//! `chunk_bytes`. Step `u` (of `2(world-1)`) sends segment `(r-u) mod n` to the right neighbour
//! and receives segment `(r-u-1) mod n` from the left, piece by piece: each received piece is
//! reduced (inside the link's `recv_with`, so over shared memory straight out of the ring) and
//! its result is posted to the right at once, so while piece `j` travels, piece `j+1` is being
//! received and reduced.
//!
//! No piece is staged in a buffer of its own: the first step sends this rank's piece straight
//! from `data` (`send_from`: into the right neighbour's ring, or the socket), the reduce-scatter
//! writes `x + local` into room reserved for the outgoing frame (`reduce_forward`: over shared
//! memory the sum goes from the left neighbour's ring straight into the right neighbour's), and
//! the allgather receives into `data` (a socket reads straight into it) and sends from there. Sends never wait for the receiver (the `Link` contract), and a rank
//! posts at most `SEND_AHEAD` frames more than it has received, which bounds what sits in a
//! link's queue (no deadlock with bounded queues, whatever the message size).
//!
//! Determinism: segment `c` is summed in the fixed rank order `c, c+1, ..., c-1` (each rank adds
//! its own value to the partial sum it receives), the owner divides for a mean, and the
//! allgather copies the owner's bits to everyone, so every rank holds identical bits, run after
//! run, for a given world size and chunk size.

use super::comm::{Call, Communicator, Reduce};
use super::kernels::{split, Consumer, Sink};
use super::CollectiveError;
use std::collections::VecDeque;
use std::ops::Range;

/// Frames this rank may have posted beyond those it has received: pieces of its own segment
/// are posted only while fewer are outstanding. Every receive (but those of the last step) posts
/// exactly one frame, so sends and receives stay balanced and at most this many frames per link
/// are in flight: they fit in a shared-memory ring or a socket buffer, the send completes inline
/// and no writer thread, queue or fresh buffer is involved.
const SEND_AHEAD: usize = 3;

/// The layout of segments and pieces, the same on every rank.
#[derive(Default)]
struct Layout {
    len: usize,
    world: usize,
    pieces: usize,
}

impl Layout {
    fn new(len: usize, world: usize, chunk_elems: usize) -> Layout {
        let largest = split(len, world, 0).len();
        Layout {
            len,
            world,
            pieces: largest.div_ceil(chunk_elems.max(1)).max(1),
        }
    }

    fn piece(&self, seg: usize, j: usize) -> Range<usize> {
        let s = split(self.len, self.world, seg);
        let p = split(s.len(), self.pieces, j);
        s.start + p.start..s.start + p.end
    }
}

/// Ring allreduce of `data` in place over every rank; `mean` divides by the world size.
pub(crate) fn allreduce(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    mean: bool,
) -> Result<(), CollectiveError> {
    let n = c.world();
    let all: Vec<usize> = (0..n).collect();
    allreduce_among(c, call, data, &all, mean.then_some(n as f32))
}

/// Ring allreduce of `data` in place among `members` (global ranks in ring order; this rank
/// must be one of them), dividing the sums by `div` when given. Ranks outside `members` take
/// no part; the hierarchical allreduce runs one such ring per host and one across hosts.
pub(crate) fn allreduce_among(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    members: &[usize],
    div: Option<f32>,
) -> Result<(), CollectiveError> {
    run(c, call, data, members, div, Phase::Both)
}

/// Which part of the ring runs.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reduce-scatter then allgather: an allreduce.
    #[default]
    Both,
    /// Reduce-scatter only: afterwards the member at ring position `p` holds the sum of segment
    /// [`owned_segment`]`(p, n)` (of `split(len, n, _)`), the rest of `data` is partial.
    ReduceScatter,
    /// Allgather only: the member at position `p` contributes its segment
    /// [`owned_segment`]`(p, n)`; afterwards every member holds every segment.
    AllGather,
}

/// The segment ring position `pos` of `n` owns after a reduce-scatter.
pub(crate) fn owned_segment(pos: usize, n: usize) -> usize {
    (pos + 1) % n
}

/// One phase (or both) of the ring among `members`.
pub(crate) fn run(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    members: &[usize],
    div: Option<f32>,
    phase: Phase,
) -> Result<(), CollectiveError> {
    let mut ring = Stepper::new(c, call, data.len(), members, div, phase)?;
    ring.start(c, call, data)?;
    while ring.step(c, call, data)? {}
    Ok(())
}

/// One ring run driven a receive at a time, so that a caller can interleave it with other
/// work of the same collective (the pipelined hierarchical allreduce runs the ring across hosts
/// of one chunk between the local phases of others). [`run`] is `start` and then `step` until
/// it returns `false`; every step waits for exactly one frame from the left neighbour, and
/// neither `start` nor a step waits for anything else (sends never wait for the receiver).
pub(crate) struct Stepper {
    ring: Ring,
    receives: usize,
}

impl Stepper {
    /// A ring over `len` elements among `members` (global ranks in ring order; this rank must
    /// be one of them).
    pub(crate) fn new(
        c: &Communicator,
        call: &Call,
        len: usize,
        members: &[usize],
        div: Option<f32>,
        phase: Phase,
    ) -> Result<Stepper, CollectiveError> {
        let n = members.len();
        let Some(pos) = members.iter().position(|&m| m == c.rank()) else {
            return Err(c.invalid(
                call,
                format!("rank {} is not in the ring {members:?}", c.rank()),
            ));
        };
        let lay = Layout::new(len, n, c.config().chunk_bytes / 4);
        let steps = match phase {
            Phase::Both => 2 * (n - 1),
            Phase::ReduceScatter | Phase::AllGather => n - 1,
        };
        let receives = steps * lay.pieces;
        let ring = Ring {
            lay,
            div,
            pos,
            phase,
            left: members[(pos + n - 1) % n],
            right: members[(pos + 1) % n],
            ..Ring::default()
        };
        Ok(Stepper { ring, receives })
    }

    /// How many steps (receives) the whole run takes; the same on every member.
    pub(crate) fn receives(&self) -> usize {
        self.receives
    }

    /// Post the frames that go before the first receive (a ring of one divides, if asked).
    pub(crate) fn start(
        &mut self,
        c: &mut Communicator,
        call: &Call,
        data: &mut [f32],
    ) -> Result<(), CollectiveError> {
        if self.ring.lay.world == 1 {
            if let (Some(d), false) = (self.ring.div, self.ring.phase == Phase::AllGather) {
                super::kernels::divide(data, d as usize);
            }
            return Ok(());
        }
        self.ring.top_up(c, call, data)
    }

    /// Wait for the next frame, reduce or place it, and post what it allows; `false` (without
    /// waiting) once every receive is done.
    pub(crate) fn step(
        &mut self,
        c: &mut Communicator,
        call: &Call,
        data: &mut [f32],
    ) -> Result<bool, CollectiveError> {
        let Some((u, j)) = self.ring.upcoming.pop_front() else {
            return Ok(false);
        };
        self.ring.receive(c, call, data, u, j)?;
        self.ring.top_up(c, call, data)?;
        Ok(true)
    }
}

/// The state of one ring allreduce on this rank.
///
/// Frames between two neighbours arrive in the order they were sent, so the receiver must
/// expect exactly the sender's order. Every rank generates the same send sequence (it depends
/// on counts only, never on timing): before each receive, pieces of its own segment while fewer
/// than `SEND_AHEAD` sends are unmatched, and after each receive the piece that receive produced
/// (if any). `upcoming` holds the tags `(step, piece)` of this rank's sends not yet matched by a
/// receive, which is the order its left neighbour's frames arrive in. A rank only waits when
/// `upcoming` is not empty, and its left neighbour has then posted that frame already, so the
/// ring cannot deadlock.
#[derive(Default)]
struct Ring {
    lay: Layout,
    div: Option<f32>,
    pos: usize,
    phase: Phase,
    left: usize,
    right: usize,
    first_sent: usize,
    upcoming: VecDeque<(usize, usize)>,
}

impl Ring {
    /// Send pieces of this rank's own segment while fewer than `SEND_AHEAD` are unmatched.
    fn top_up(
        &mut self,
        c: &mut Communicator,
        call: &Call,
        data: &[f32],
    ) -> Result<(), CollectiveError> {
        while self.first_sent < self.lay.pieces && self.upcoming.len() < SEND_AHEAD {
            self.emit_first(c, call, data)?;
        }
        Ok(())
    }

    /// Send the next piece of this rank's own segment (step 0).
    fn emit_first(
        &mut self,
        c: &mut Communicator,
        call: &Call,
        data: &[f32],
    ) -> Result<(), CollectiveError> {
        let j = self.first_sent;
        let n = self.lay.world;
        // The allgather alone starts where the reduce-scatter ends: step n-1, own segment.
        let (step, seg) = if self.phase == Phase::AllGather {
            (n - 1, owned_segment(self.pos, n))
        } else {
            (0, self.pos)
        };
        let piece = &data[self.lay.piece(seg, j)];
        c.send_from(call, self.right, bytemuck::cast_slice(piece))?;
        self.first_sent += 1;
        self.upcoming.push_back((step, j));
        Ok(())
    }

    /// Receive piece `j` of step `u` from the left and pass on what it produces.
    fn receive(
        &mut self,
        c: &mut Communicator,
        call: &Call,
        data: &mut [f32],
        u: usize,
        j: usize,
    ) -> Result<(), CollectiveError> {
        let n = self.lay.world;
        let steps = 2 * (n - 1);
        let pr = self.lay.piece((self.pos + 2 * n - u - 1) % n, j);
        let bytes = pr.len() * 4;
        if u + 2 == n && self.phase == Phase::ReduceScatter {
            // Last reduce-scatter step of a reduce-scatter alone: keep the sum, send nothing.
            let mut consumer = Consumer::new(Sink::Accumulate(&mut data[pr.clone()]));
            c.recv_into(call, self.left, bytes, &mut consumer)?;
            if let Some(d) = self.div {
                for v in &mut data[pr] {
                    *v /= d;
                }
            }
        } else if u + 2 <= n {
            // Reduce-scatter: partial (or, at step n-2, final) sum of this piece, written
            // straight into the frame to the right; the final one is also kept in `data`.
            let how = if u + 2 == n {
                Reduce::Finish(&mut data[pr], self.div)
            } else {
                Reduce::AddTo(&data[pr])
            };
            c.reduce_forward(call, self.left, self.right, bytes, how)?;
            self.upcoming.push_back((u + 1, j));
        } else if u + 1 < steps {
            // Allgather: receive into place, forward from there unchanged.
            c.recv_slice(
                call,
                self.left,
                bytemuck::cast_slice_mut(&mut data[pr.clone()]),
            )?;
            c.send_from(call, self.right, bytemuck::cast_slice(&data[pr]))?;
            self.upcoming.push_back((u + 1, j));
        } else {
            c.recv_slice(call, self.left, bytemuck::cast_slice_mut(&mut data[pr]))?;
        }
        Ok(())
    }
}
