//! Hierarchical allreduce (NCCL's and Horovod's "hierarchical" mode): the network carries
//! `2(H-1)/H` of the data per host instead of the flat ring's `2(n-1)/n`, and every rank of a host
//! drives a slice of it, so no one process has to saturate the host's link alone.
//!
//! With `H` hosts, `L_h` ranks on host `h` and `S = min_h L_h` slices:
//!
//! 1. every host runs a ring allreduce (sum) among its own ranks, over shared memory: each local
//!    rank now holds the host's sum;
//! 2. local rank `i < S` of every host runs a ring allreduce of slice `i` of the data among the
//!    local ranks `i` of all hosts (`S` rings across hosts side by side, each over the network);
//!    the slice's owner divides for a mean;
//! 3. every host broadcasts slice `i` from its local rank `i` to its other ranks.
//!
//! When every host has the same number of ranks `L` (the usual case), steps 1 and 3 are the two
//! halves of the local ring instead: a reduce-scatter leaves local rank `i` with the host's sum
//! of segment `i+1 mod L` only, which it carries across hosts, and an allgather shares the
//! results; each moves `(L-1)/L` of the data over shared memory.
//!
//! Every step is one of the flat algorithms over a subset of the group's links, inside the same
//! collective call (frames between two ranks stay in order, so the phases need no tags of their
//! own).
//!
//! Determinism: the local ring gives every rank of a host identical bits, the ring across hosts
//! gives every member identical bits for its slice, and the broadcast copies them; so every rank
//! holds identical bits, run after run, for a given topology and chunk size. The order of the
//! additions differs from the flat ring's and the tree's, so results are not the same bits as
//! theirs: jobs that ask for reproducible sums across world sizes (`micro_batches`) use the tree
//! explicitly and never reach this algorithm.

use super::comm::{Call, Communicator};
use super::kernels::split;
use super::ring::Phase;
use super::{bcast, ring, CollectiveError, Topology};

/// Hierarchical allreduce of `data` in place; `mean` divides by the world size.
pub(crate) fn allreduce(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    mean: bool,
) -> Result<(), CollectiveError> {
    let topo = c.topology().clone();
    let me = c.rank();
    let div = mean.then_some(c.world() as f32);
    let local = topo.local(topo.host_of(me));
    if topo.hosts() == 1 {
        return ring::allreduce_among(c, call, data, local, div);
    }
    let li = local.iter().position(|&r| r == me).unwrap_or(0);
    if topo.slices() == topo.max_local() {
        return uniform(c, call, data, &topo, local, li, div);
    }
    let slices = topo.slices();
    if local.len() > 1 {
        ring::allreduce_among(c, call, data, local, None)?;
    }
    if li < slices {
        let r = split(data.len(), slices, li);
        ring::allreduce_among(c, call, &mut data[r], &topo.cross(li), div)?;
    }
    if local.len() > 1 {
        for s in 0..slices {
            let r = split(data.len(), slices, s);
            bcast::broadcast_among(c, call, bytemuck::cast_slice_mut(&mut data[r]), local, s)?;
        }
    }
    Ok(())
}

/// Every host has `L` ranks: reduce-scatter within the host (local rank `i` ends with the host's
/// sum of segment `owned_segment(i, L)`), ring allreduce of that segment across hosts, allgather
/// within the host. Each local rank moves `(L-1)/L` of the data twice over shared memory instead
/// of a whole allreduce plus a broadcast.
fn uniform(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    topo: &Topology,
    local: &[usize],
    li: usize,
    div: Option<f32>,
) -> Result<(), CollectiveError> {
    let l = local.len();
    ring::run(c, call, data, local, None, Phase::ReduceScatter)?;
    let r = split(data.len(), l, ring::owned_segment(li, l));
    ring::allreduce_among(c, call, &mut data[r], &topo.cross(li), div)?;
    ring::run(c, call, data, local, None, Phase::AllGather)
}
