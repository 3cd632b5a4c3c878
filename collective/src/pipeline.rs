//! The pipelined schedule of the hierarchical allreduce: the data is cut into `K` chunks, and
//! the ring across hosts of one chunk runs while the local (shared-memory) phases of other
//! chunks do, so that the local phases hide behind the network instead of adding to it.
//!
//! Per chunk `k` there are three phases (see [`super::hier`]): a local phase before
//! (`before(k)`: the reduce-scatter within the host, or on uneven hosts a local allreduce), the
//! ring across hosts of this rank's slice (`cross(k)`), and a local phase after (`after(k)`: the
//! allgather, or the broadcast of every slice). They run in `K + 2` stages: stage `s` holds
//! `cross(s-1)`, `after(s-2)` and `before(s)`, so a chunk's phases fall in three consecutive
//! stages and every phase finds its input ready.
//!
//! # Order and deadlock freedom
//! The Communicator is single-threaded and only receives wait (sends never wait for the
//! receiver). Inside a stage, this rank posts the first frames of `cross(s-1)` and then
//! alternates between its steps (one receive each) and the two local phases, each of which runs
//! whole. Every operation carries a key, the same on every rank that takes part in it:
//! `(stage, position)`, where the `q`-th receive of `cross(s-1)` (of `Q`) sits at `(q+1)/(Q+1)`
//! of the stage, `after(s-2)` at 1/3 and `before(s)` at 2/3 (a tie goes to the local phase).
//! Every rank runs its operations in key order, and every frame a receive waits for is posted
//! by an operation with a smaller key (an earlier step of the same ring: `Q` is the same for
//! every member of a ring) or by the same local phase on another rank of the host (same key);
//! so by induction on the key every operation completes, whatever the timing, and hosts with
//! different numbers of ranks (different local phases) cannot deadlock either.
//!
//! Frames between two ranks stay in order without tags: a link within a host carries only the
//! local phases, one after the other in stage order; a link across hosts carries only the
//! rings across hosts, `cross(k)` wholly in stage `k+1`, and within one ring the order is the
//! ring's own. Every order depends on counts only, never on timing.
//!
//! Determinism: each chunk is summed exactly as the unpipelined algorithm sums the whole data,
//! so every rank holds identical bits, run after run, for a given topology, chunk size and
//! number of chunks; `K = 1` is exactly the unpipelined algorithm.

use super::comm::{Call, Communicator};
use super::kernels::split;
use super::ring::{self, Phase, Stepper};
use super::{bcast, CollectiveError, Topology};
use std::ops::Range;

/// Where this rank stands in the hierarchy, and the chunks.
struct Plan<'a> {
    len: usize,
    chunks: usize,
    local: &'a [usize],
    /// This rank's position on its host.
    li: usize,
    /// Slices carried across hosts: the fewest ranks on any host.
    slices: usize,
    /// Every host has `slices` ranks: reduce-scatter / allgather instead of allreduce /
    /// broadcast.
    uniform: bool,
    /// The ring across hosts this rank drives (none for a rank beyond the slices).
    cross: Option<Vec<usize>>,
    div: Option<f32>,
}

impl Plan<'_> {
    fn chunk(&self, k: usize) -> Range<usize> {
        split(self.len, self.chunks, k)
    }

    /// The part of chunk `k` this rank carries across hosts.
    fn slice(&self, k: usize) -> Range<usize> {
        let ch = self.chunk(k);
        let r = if self.uniform {
            let l = self.local.len();
            split(ch.len(), l, ring::owned_segment(self.li, l))
        } else {
            split(ch.len(), self.slices, self.li)
        };
        ch.start + r.start..ch.start + r.end
    }

    /// The local phase before the network for chunk `k`.
    fn before(
        &self,
        c: &mut Communicator,
        call: &Call,
        data: &mut [f32],
        k: usize,
    ) -> Result<(), CollectiveError> {
        let d = &mut data[self.chunk(k)];
        match (self.local.len(), self.uniform) {
            (1, _) => Ok(()),
            (_, true) => ring::run(c, call, d, self.local, None, Phase::ReduceScatter),
            (_, false) => ring::allreduce_among(c, call, d, self.local, None),
        }
    }

    /// The local phase after the network for chunk `k`.
    fn after(
        &self,
        c: &mut Communicator,
        call: &Call,
        data: &mut [f32],
        k: usize,
    ) -> Result<(), CollectiveError> {
        let d = &mut data[self.chunk(k)];
        match (self.local.len(), self.uniform) {
            (1, _) => Ok(()),
            (_, true) => ring::run(c, call, d, self.local, None, Phase::AllGather),
            (_, false) => {
                let len = d.len();
                for s in 0..self.slices {
                    let piece = bytemuck::cast_slice_mut(&mut d[split(len, self.slices, s)]);
                    bcast::broadcast_among(c, call, piece, self.local, s)?;
                }
                Ok(())
            }
        }
    }
}

/// Hierarchical allreduce of `data` in `chunks` pipelined chunks (see the module docs); `div`
/// divides the sums. The topology must have more than one host.
pub(crate) fn allreduce(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    topo: &Topology,
    chunks: usize,
    div: Option<f32>,
) -> Result<(), CollectiveError> {
    let me = c.rank();
    let local = topo.local(topo.host_of(me));
    let li = local.iter().position(|&r| r == me).unwrap_or(0);
    let slices = topo.slices();
    let plan = Plan {
        len: data.len(),
        chunks: chunks.max(1),
        local,
        li,
        slices,
        uniform: slices == topo.max_local(),
        cross: (li < slices).then(|| topo.cross(li)),
        div,
    };
    let k = plan.chunks;
    for stage in 0..k + 2 {
        let net = stage.checked_sub(1).filter(|&n| n < k);
        let mut cross = match (&plan.cross, net) {
            (Some(members), Some(n)) => {
                let r = plan.slice(n);
                let mut s = Stepper::new(c, call, r.len(), members, plan.div, Phase::Both)?;
                s.start(c, call, &mut data[r.clone()])?;
                Some((s, r))
            }
            _ => None,
        };
        let q_total = cross.as_ref().map_or(0, |(s, _)| s.receives());
        // Local phases at 1/3 (after) and 2/3 (before) of the stage.
        let mut locals = [
            stage
                .checked_sub(2)
                .filter(|&a| a < k)
                .map(|a| (1, false, a)),
            (stage < k).then_some((2, true, stage)),
        ]
        .into_iter()
        .flatten()
        .peekable();
        let mut q = 0;
        loop {
            // The next local phase goes first unless the next receive's key is smaller:
            // (q+1)/(Q+1) < p/3.
            let local_first = match locals.peek() {
                Some(&(p, _, _)) => q >= q_total || 3 * (q + 1) >= p * (q_total + 1),
                None => false,
            };
            if let Some((_, before, chunk)) = locals.next_if(|_| local_first) {
                if before {
                    plan.before(c, call, data, chunk)?;
                } else {
                    plan.after(c, call, data, chunk)?;
                }
            } else if let Some((s, r)) = cross.as_mut().filter(|_| q < q_total) {
                s.step(c, call, &mut data[r.clone()])?;
                q += 1;
            } else {
                break;
            }
        }
    }
    Ok(())
}
