//! Elastic membership, worker side: which rows a rank computes when the world is not what the
//! manifest says, and how a new mesh takes the state of the newest completed round from one
//! survivor (a broadcast over the data links). The coordinator's side is in
//! [`crate::control::plane`] and [`crate::control::coordinator`]; the whole story is in
//! `docs/elastic.md`.
//!
//! # Rows with `micro_batches`
//! A global batch is `k` micro-batches (a power of two); the reproducible gradient is their sum
//! in the balanced binary tree over the `k` leaves. Recursive-doubling allreduce over `p` ranks
//! (`p` a power of two) continues that tree when rank `r` holds the subtree of leaves
//! `[r k/p, (r+1) k/p)`. With a world of `n` ranks, `p <= n < 2p`, the tree allreduce first folds
//! rank `p + i` into rank `i`; so rank `i` takes the first half of subtree `i` and rank `p + i`
//! the second half, and the fold computes exactly subtree `i`. Every world size from 1 to `k`
//! therefore produces the same bits ([`leaf_block`]).

use crate::error::{RuntimeError, TrainingError};
use lockstep_collective::Communicator;
use lockstep_trainer::data::{BatchSource, DataCursor, DataError, ShardBatch};
use lockstep_trainer::optim::{Optimizer, OptimizerState};
use std::ops::Range;

/// The micro-batches (leaves, out of `k`) that `rank` of `world` computes. See the module docs.
///
/// # Panics
/// If `world` is 0, `rank >= world`, or `world > k` (checked when the manifest is validated).
pub(crate) fn leaf_block(rank: usize, world: usize, k: usize) -> Range<usize> {
    assert!(
        rank < world && world <= k,
        "rank {rank} of {world}, {k} leaves"
    );
    let p = 1usize << (usize::BITS - 1 - world.leading_zeros());
    let size = k / p;
    let (i, half) = if rank < p {
        (rank, if rank + p < world { Some(0) } else { None })
    } else {
        (rank - p, Some(1))
    };
    let start = i * size;
    match half {
        None => start..start + size,
        Some(h) => start + h * size / 2..start + (h + 1) * size / 2,
    }
}

/// A source that reads the whole global batch and keeps the rows of some micro-batches (a
/// world size that is not a power of two; see the module docs).
pub(crate) struct LeafRows {
    inner: Box<dyn BatchSource>,
    leaves: Range<usize>,
    k: usize,
}

impl LeafRows {
    /// Rows of micro-batches `leaves` (of `k`) of each global batch `inner` (rank 0 of 1) reads.
    pub(crate) fn new(inner: Box<dyn BatchSource>, leaves: Range<usize>, k: usize) -> Self {
        LeafRows { inner, leaves, k }
    }
}

impl BatchSource for LeafRows {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn cols(&self) -> usize {
        self.inner.cols()
    }
    fn next_shard(&mut self) -> Result<Option<ShardBatch>, DataError> {
        Ok(self.inner.next_shard()?.map(|mut s| {
            let per = s.batch.rows / self.k.max(1);
            s.batch = s
                .batch
                .slice_rows(self.leaves.start * per..self.leaves.end * per);
            s
        }))
    }
    fn cursor(&self) -> DataCursor {
        self.inner.cursor()
    }
    fn seek(&mut self, cursor: DataCursor) -> Result<(), DataError> {
        self.inner.seek(cursor)
    }
}

/// The state every member of a new mesh takes from rank `source`.
pub(crate) struct Synced {
    /// The round to continue at (the source's next round).
    pub next_round: u64,
    /// The source's data cursor for that round.
    pub cursor: DataCursor,
}

/// Broadcast parameters, optimizer state, next round and data cursor from `source` to every
/// rank of `comm`; every rank calls it (after setting the same round on `comm`). The local values are replaced only when everything
/// arrived.
///
/// # Errors
/// The collective's error (a peer died during the transfer), or an optimizer-state mismatch.
pub(crate) fn sync_state(
    comm: &mut Communicator,
    source: usize,
    params: &mut [f32],
    optimizer: &mut Optimizer,
    next_round: u64,
    cursor: DataCursor,
) -> Result<Synced, RuntimeError> {
    let mine = comm.rank() == source;
    let state = optimizer.state();
    let mut head = [
        next_round as i64,
        state.step as i64,
        cursor.epoch as i64,
        cursor.batch_in_epoch as i64,
    ];
    comm.broadcast(&mut head, source)?;
    let mut p = if mine {
        params.to_vec()
    } else {
        vec![0.0; params.len()]
    };
    comm.broadcast(&mut p, source)?;
    let mut buffers = Vec::with_capacity(state.buffers.len());
    for (name, b) in &state.buffers {
        let mut v = if mine { b.clone() } else { vec![0.0; b.len()] };
        comm.broadcast(&mut v, source)?;
        buffers.push((name.clone(), v));
    }
    optimizer
        .load_state(&OptimizerState {
            step: head[1] as u64,
            buffers,
        })
        .map_err(|e| TrainingError::RankState {
            rank: source,
            source: e,
        })?;
    params.copy_from_slice(&p);
    Ok(Synced {
        next_round: head[0] as u64,
        cursor: DataCursor {
            epoch: head[2] as u64,
            batch_in_epoch: head[3] as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_blocks_partition_the_leaves_and_match_even_shards() {
        for k in [1usize, 2, 4, 8, 16] {
            for world in 1..=k {
                let mut all: Vec<usize> =
                    (0..world).flat_map(|r| leaf_block(r, world, k)).collect();
                all.sort_unstable();
                assert_eq!(all, (0..k).collect::<Vec<_>>(), "k {k} world {world}");
                if world.is_power_of_two() {
                    for r in 0..world {
                        let b = leaf_block(r, world, k);
                        assert_eq!(b, r * k / world..(r + 1) * k / world);
                    }
                }
                for r in 0..world {
                    assert!(leaf_block(r, world, k).len().is_power_of_two());
                }
            }
        }
    }

    #[test]
    fn three_of_four_fold_into_the_same_tree() {
        // p = 2: rank 2 folds into rank 0, whose first half it completes.
        assert_eq!(leaf_block(0, 3, 4), 0..1);
        assert_eq!(leaf_block(1, 3, 4), 2..4);
        assert_eq!(leaf_block(2, 3, 4), 1..2);
    }
}
