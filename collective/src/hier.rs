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
//! Pipelining: the data is cut into [`chunks`] chunks and the local phases of one chunk run
//! while the rings across hosts of another do (see `pipeline.rs`), so that a host's link
//! is busy nearly all the time instead of waiting for the local phases before and after it.
//!
//! Determinism: the local ring gives every rank of a host identical bits, the ring across hosts
//! gives every member identical bits for its slice, and the broadcast copies them; so every rank
//! holds identical bits, run after run, for a given topology, chunk size and number of pipeline
//! chunks (which depends only on the message size and [`CollectiveConfig::pipeline_bytes`]). The order of the
//! additions differs from the flat ring's and the tree's, so results are not the same bits as
//! theirs: jobs that ask for reproducible sums across world sizes (`micro_batches`) use the tree
//! explicitly and never reach this algorithm.

use super::comm::{Call, Communicator};
use super::{pipeline, ring, CollectiveConfig, CollectiveError};

/// The most pipeline chunks one allreduce is cut into.
pub const MAX_CHUNKS: usize = 16;

/// How many pipeline chunks an allreduce of `bytes` on `topo`-shaped hosts uses: one per
/// [`CollectiveConfig::pipeline_bytes`] (at most [`MAX_CHUNKS`], at most one per element);
/// one when `pipeline_bytes` is 0 or every host has a single rank (nothing local to hide).
pub fn chunks(bytes: usize, max_local: usize, config: &CollectiveConfig) -> usize {
    if config.pipeline_bytes == 0 || max_local <= 1 {
        return 1;
    }
    bytes
        .div_ceil(config.pipeline_bytes)
        .clamp(1, MAX_CHUNKS)
        .min((bytes / 4).max(1))
}

/// Hierarchical allreduce of `data` in place; `mean` divides by the world size.
pub(crate) fn allreduce(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    mean: bool,
) -> Result<(), CollectiveError> {
    let topo = c.topology().clone();
    let div = mean.then_some(c.world() as f32);
    if topo.hosts() == 1 {
        let local = topo.local(0);
        return ring::allreduce_among(c, call, data, local, div);
    }
    let k = chunks(data.len() * 4, topo.max_local(), c.config());
    pipeline::allreduce(c, call, data, &topo, k, div)
}
