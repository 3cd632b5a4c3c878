//! Epochs, rounds and resumption: the seeded per-epoch permutation, the serialisable
//! `DataCursor`, the `BatchSource` trait the runtime's `DataLoader` pulls from, and its
//! implementation over an in-memory `Table` (a file).
//!
//! Round `r` of an epoch takes global batch `r` of that epoch's permutation; each rank takes its
//! [`shard`](super::shard::shard) of it. The permutation depends only on `(seed, epoch)` (ChaCha8
//! stream `epoch + 1`; stream 0 is the train/test split), so a checkpoint that stores the cursor
//! resumes exactly, at any world size.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::shard::{shard, shard_scale};
use super::table::Table;
use crate::batch::Batch;

/// Position of the next global batch: what a checkpoint stores to resume the data exactly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct DataCursor {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Global batch within the epoch, from 0.
    pub batch_in_epoch: u64,
}

/// The training rows' order in `epoch`: a permutation of `0..rows` depending only on `seed` and `epoch`.
pub fn epoch_permutation(rows: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch.wrapping_add(1));
    let mut perm: Vec<usize> = (0..rows).collect();
    perm.shuffle(&mut rng);
    perm
}

/// How an epoch is cut into global batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochPlan {
    /// Training rows.
    pub rows: usize,
    /// Rows per global batch (all ranks together).
    pub global_batch: usize,
    /// Drop a last, smaller batch (otherwise it is a round of its own).
    pub drop_last: bool,
    /// Shuffle seed.
    pub seed: u64,
    /// Every epoch in the first epoch's order (full-batch L-BFGS: the same rows, the same
    /// objective, at every evaluation).
    pub fixed_order: bool,
}

impl EpochPlan {
    /// Global batches (rounds) per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        if self.global_batch == 0 {
            return 0;
        }
        let n = if self.drop_last {
            self.rows / self.global_batch
        } else {
            self.rows.div_ceil(self.global_batch)
        };
        n as u64
    }

    /// The cursor of global round `round` (counted from 0 over all epochs).
    pub fn cursor_at(&self, round: u64) -> DataCursor {
        let per = self.batches_per_epoch().max(1);
        DataCursor {
            epoch: round / per,
            batch_in_epoch: round % per,
        }
    }

    /// The cursor after `c`.
    pub fn advance(&self, c: DataCursor) -> DataCursor {
        if c.batch_in_epoch + 1 >= self.batches_per_epoch() {
            DataCursor {
                epoch: c.epoch + 1,
                batch_in_epoch: 0,
            }
        } else {
            DataCursor {
                epoch: c.epoch,
                batch_in_epoch: c.batch_in_epoch + 1,
            }
        }
    }

    /// Row indices of the global batch at `c`, given that epoch's permutation.
    pub fn global_batch<'a>(&self, perm: &'a [usize], c: DataCursor) -> &'a [usize] {
        let start = (c.batch_in_epoch as usize * self.global_batch).min(perm.len());
        let end = (start + self.global_batch).min(perm.len());
        &perm[start..end]
    }
}

/// One rank's share of one round's global batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardBatch {
    /// This rank's rows (possibly empty when the global batch is smaller than the world).
    pub batch: Batch,
    /// Where this global batch sits.
    pub cursor: DataCursor,
    /// Rows in the whole global batch.
    pub global_rows: usize,
    /// Gradient factor for this share, see [`shard_scale`].
    pub scale: f32,
}

/// Where a `DataLoader` gets each round's shard; bounded files and unbounded streams alike.
pub trait BatchSource: Send {
    /// File or stream name, for messages.
    fn name(&self) -> &str;
    /// Features per row.
    fn cols(&self) -> usize;
    /// This rank's share of the next global batch; `None` when a bounded stream is exhausted
    /// (a file source cycles through epochs forever; the coordinator decides when to stop).
    ///
    /// # Errors
    /// A [`DataError`] naming the source.
    fn next_shard(&mut self) -> Result<Option<ShardBatch>, DataError>;
    /// Position of the next global batch (store it in a checkpoint).
    fn cursor(&self) -> DataCursor;
    /// Continue from `cursor` (from a checkpoint).
    ///
    /// # Errors
    /// `Source` if the position cannot be reached (e.g. a stream that cannot go back).
    fn seek(&mut self, cursor: DataCursor) -> Result<(), DataError>;
}

/// A `BatchSource` over an in-memory training table (from a file): seeded epochs, sharded by rank.
pub struct TableSource {
    name: String,
    table: Arc<Table>,
    plan: EpochPlan,
    rank: usize,
    world: usize,
    cursor: DataCursor,
    perm: Option<(u64, Vec<usize>)>,
}

impl TableSource {
    /// A source for `rank` of `world` over `table`, global batches of `global_batch` rows.
    ///
    /// # Errors
    /// `Source` if an epoch would have no batch, or `rank >= world`.
    pub fn new(
        name: &str,
        table: Arc<Table>,
        global_batch: usize,
        drop_last: bool,
        seed: u64,
        rank: usize,
        world: usize,
    ) -> Result<Self, DataError> {
        let plan = EpochPlan {
            rows: table.rows,
            global_batch,
            drop_last,
            seed,
            fixed_order: false,
        };
        let err = |message: String| DataError::Source {
            file: name.to_string(),
            message,
        };
        if plan.batches_per_epoch() == 0 {
            return Err(err(format!(
                "{} training rows give no global batch of {global_batch}",
                table.rows
            )));
        }
        if rank >= world {
            return Err(err(format!("rank {rank} is not in a world of {world}")));
        }
        Ok(TableSource {
            name: name.to_string(),
            table,
            plan,
            rank,
            world,
            cursor: DataCursor::default(),
            perm: None,
        })
    }

    /// The epoch plan.
    pub fn plan(&self) -> &EpochPlan {
        &self.plan
    }

    /// Take every epoch in the first epoch's order (see [`EpochPlan::fixed_order`]).
    pub fn with_fixed_order(mut self, fixed: bool) -> Self {
        self.plan.fixed_order = fixed;
        self
    }
}

impl BatchSource for TableSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn cols(&self) -> usize {
        self.table.cols
    }

    fn next_shard(&mut self) -> Result<Option<ShardBatch>, DataError> {
        let c = self.cursor;
        let order_of = if self.plan.fixed_order { 0 } else { c.epoch };
        if self.perm.as_ref().map(|(e, _)| *e) != Some(order_of) {
            self.perm = Some((
                order_of,
                epoch_permutation(self.table.rows, self.plan.seed, order_of),
            ));
        }
        let perm = self
            .perm
            .as_ref()
            .map(|(_, p)| p.as_slice())
            .unwrap_or_default();
        let global = self.plan.global_batch(perm, c);
        let batch = self.table.batch(shard(global, self.rank, self.world));
        let out = ShardBatch {
            batch,
            cursor: c,
            global_rows: global.len(),
            scale: shard_scale(global.len(), self.rank, self.world),
        };
        self.cursor = self.plan.advance(c);
        Ok(Some(out))
    }

    fn cursor(&self) -> DataCursor {
        self.cursor
    }

    fn seek(&mut self, cursor: DataCursor) -> Result<(), DataError> {
        if cursor.batch_in_epoch >= self.plan.batches_per_epoch() {
            return Err(DataError::Source {
                file: self.name.clone(),
                message: format!(
                    "cursor {cursor:?} is past the {} batches of an epoch",
                    self.plan.batches_per_epoch()
                ),
            });
        }
        self.cursor = cursor;
        Ok(())
    }
}
