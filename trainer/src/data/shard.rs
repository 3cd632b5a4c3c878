//! Deterministic sharding of a global batch by rank, so that 1 worker and N workers see the same
//! samples in every round.
//!
//! Rank `r` of `world` takes a contiguous share of the global batch: the first `len % world` ranks
//! take `len / world + 1` rows, the rest `len / world`. The shares partition the batch in order,
//! so concatenating them in rank order gives the global batch back.
//!
//! # Gradient weighting for unequal shares
//! Shares differ by at most one row, so a plain average of per-rank *mean* gradients would weight
//! the rows of a smaller share slightly more. Two equivalent ways to get exactly the one-worker
//! gradient (the mean over the whole global batch):
//! - each rank divides its gradient *sum* by the global batch size
//!   (`Model::forward_backward_scaled(batch, global_rows, ..)`) and the ranks *sum* the buckets; or
//! - each rank takes its mean gradient times [`shard_scale`] = `share * world / len` and the ranks
//!   *average* (the usual allreduce-mean).
//!
//! A rank with an empty share (global batch smaller than the world) contributes zeros.

use std::ops::Range;

/// Positions (into the global batch) that `rank` of `world` takes.
///
/// # Panics
/// If `world == 0` or `rank >= world` (a configuration bug, checked when the cluster forms).
pub fn shard_range(len: usize, rank: usize, world: usize) -> Range<usize> {
    assert!(
        world > 0 && rank < world,
        "shard: rank {rank} is not in a world of {world}"
    );
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..start + size
}

/// This rank's share of the global batch's row indices (a contiguous slice of it).
///
/// # Panics
/// As [`shard_range`].
pub fn shard(global_batch: &[usize], rank: usize, world: usize) -> &[usize] {
    &global_batch[shard_range(global_batch.len(), rank, world)]
}

/// Factor for a rank's mean-over-share gradient before a plain average over `world` ranks, so the
/// result equals the mean gradient over all `len` rows: `share * world / len` (0 for an empty share).
///
/// # Panics
/// As [`shard_range`].
pub fn shard_scale(len: usize, rank: usize, world: usize) -> f32 {
    let share = shard_range(len, rank, world).len();
    if len == 0 {
        return 0.0;
    }
    (share * world) as f32 / len as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_partition_the_batch_for_every_world() {
        for len in 0..40usize {
            let batch: Vec<usize> = (100..100 + len).collect();
            for world in 1..9 {
                let mut joined = Vec::new();
                let mut sizes = Vec::new();
                let mut weighted = 0.0f64;
                for rank in 0..world {
                    let s = shard(&batch, rank, world);
                    sizes.push(s.len());
                    joined.extend_from_slice(s);
                    weighted += f64::from(shard_scale(len, rank, world));
                }
                assert_eq!(joined, batch, "len {len} world {world}");
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "len {len} world {world}: sizes {sizes:?}");
                if len > 0 {
                    // The scales average to 1, so a plain average of scaled means is the global mean.
                    assert!((weighted / world as f64 - 1.0).abs() < 1e-6);
                }
            }
        }
    }
}
