//! `DatasetSource`: the `BatchSource` of a dataset that is streamed rather than held in memory.
//!
//! A loader thread reads the windows of the epoch order (see [`super::order`]) one after another,
//! transforms the training rows *this rank trains on* with the fitted preprocessing (every rank
//! decodes the whole window, as the order needs, but keeps and transforms only its own share of
//! each global batch, about `1/world` of the rows), and hands them over a channel of capacity one,
//! so reading the next window overlaps the compute of the current one. At most four windows exist
//! at once (two in use when a batch straddles a boundary, one in the channel, one being built);
//! the window size is chosen from the memory budget so that this fits with one worker.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::order::{held_out, WindowPlan};
use super::store::block_on;
use super::Dataset;
use crate::batch::{Batch, Targets};
use crate::data::convert::Conversion;
use crate::data::cursor::{BatchSource, DataCursor, EpochPlan, ShardBatch};
use crate::data::error::DataError;
use crate::data::shard::{shard_range, shard_scale};
use crate::data::table::Table;

/// This rank's rows of a window, and where each epoch position of the window finds its row.
pub struct Window {
    plan: WindowPlan,
    /// This rank's rows, in window-row order (position order of the dataset).
    table: Table,
    /// Per epoch position of the window: its row in `table`, or [`NOT_MINE`].
    slot: Vec<u32>,
}

/// `Window::slot` of a position another rank trains on.
const NOT_MINE: u32 = u32::MAX;

/// Which epoch positions a rank trains on: its contiguous share of every global batch.
#[derive(Debug, Clone, Copy)]
struct Share {
    global_batch: u64,
    rows: u64,
    rank: usize,
    world: usize,
}

impl Share {
    fn mine(&self, position: u64) -> bool {
        let g = self.global_batch.max(1);
        let batch_start = position / g * g;
        let len = g.min(self.rows - batch_start) as usize;
        let share = shard_range(len, self.rank, self.world);
        let offset = (position - batch_start) as usize;
        share.contains(&offset)
    }
}

impl Window {
    fn end(&self) -> u64 {
        self.plan.start + self.plan.len
    }
}

/// Appends row `i` of `src` to `dst` (same width and target kind).
fn push_row(dst: &mut Table, src: &Table, i: usize) {
    dst.x
        .extend_from_slice(&src.x[i * src.cols..(i + 1) * src.cols]);
    match (&mut dst.y, &src.y) {
        (Targets::Real(d), Targets::Real(s)) => d.push(s[i]),
        (Targets::Class(d), Targets::Class(s)) => d.push(s[i]),
        (d, s) => *d = s.clone(),
    }
    dst.rows += 1;
}

/// An empty table of `cols` features with targets of the kind `like` has.
pub fn empty_table(cols: usize, like: &Targets, rows: usize) -> Table {
    Table {
        x: Vec::with_capacity(rows * cols),
        rows: 0,
        cols,
        y: match like {
            Targets::Real(_) => Targets::Real(Vec::with_capacity(rows)),
            Targets::Class(_) => Targets::Class(Vec::with_capacity(rows)),
        },
    }
}

/// Reads `plan`'s blocks and transforms the training rows `share` trains on.
async fn build_window(ds: &Dataset, plan: WindowPlan, share: Share) -> Result<Window, DataError> {
    let ranges = super::reader::merge(plan.blocks.iter().map(|&b| ds.layout.block_range(b)));
    let perm = ds.layout.window_permutation(&plan);
    // Window rows (training rows in position order) this rank needs.
    let mut needed = vec![false; plan.len as usize];
    for (j, &row) in perm.iter().enumerate() {
        if share.mine(plan.start + j as u64) {
            needed[row as usize] = true;
        }
    }
    let kept = needed.iter().filter(|n| **n).count();
    let mut compact = vec![NOT_MINE; plan.len as usize];
    let mut table = empty_table(ds.width, &ds.target_kind, kept);
    let (seed, tf) = (ds.layout.seed, ds.layout.test_fraction);
    let fitted = &ds.fitted;
    let mut seen = 0usize;
    let mut conversion = Conversion::default();
    let mut rows = Vec::new();
    let mut sink = |batch: arrow_array::RecordBatch, first: u64, file: &str| {
        rows.clear();
        for i in 0..batch.num_rows() {
            if held_out(seed, tf, first + i as u64) {
                continue;
            }
            if needed.get(seen).copied().unwrap_or(false) {
                compact[seen] = (table.rows + rows.len()) as u32;
                rows.push(i);
            }
            seen += 1;
        }
        if !rows.is_empty() {
            conversion.append(fitted, &batch, file, &rows, &mut table)?;
        }
        Ok(())
    };
    ds.ctx.read(&ranges, &mut sink).await?;
    if seen as u64 != plan.len || table.rows != kept {
        return Err(DataError::Source {
            file: ds.name.clone(),
            message: format!(
                "window {} of epoch {} has {seen} training rows, expected {} (did a file change?)",
                plan.index, plan.epoch, plan.len
            ),
        });
    }
    let slot = perm.iter().map(|&row| compact[row as usize]).collect();
    Ok(Window { plan, table, slot })
}

type Loaded = Result<Window, DataError>;

/// Starts a loader thread at window `window` of `epoch`; it runs until its receiver is dropped.
fn spawn_loader(ds: Arc<Dataset>, epoch: u64, window: usize, share: Share) -> Receiver<Loaded> {
    let (tx, rx) = sync_channel::<Loaded>(1);
    std::thread::Builder::new()
        .name("lockstep-dataset".into())
        .spawn(move || {
            let (mut epoch, mut first) = (epoch, window);
            loop {
                let plans = ds.layout.epoch_windows(epoch);
                for plan in plans.into_iter().skip(first) {
                    let loaded = block_on(&ds.name, build_window(&ds, plan, share));
                    let failed = loaded.is_err();
                    if tx.send(loaded).is_err() || failed {
                        return;
                    }
                }
                epoch += 1;
                first = 0;
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("cannot start the dataset loader thread: {e}"));
    rx
}

/// A `BatchSource` that streams a [`Dataset`]: seeded epochs in windows, sharded by rank.
pub struct DatasetSource {
    ds: Arc<Dataset>,
    plan: EpochPlan,
    rank: usize,
    world: usize,
    cursor: DataCursor,
    windows: VecDeque<Window>,
    rx: Option<Receiver<Loaded>>,
}

impl DatasetSource {
    /// A source for `rank` of `world`, global batches of `global_batch` rows.
    ///
    /// # Errors
    /// `Source` if an epoch would have no batch, or `rank >= world`.
    pub fn new(
        ds: Arc<Dataset>,
        global_batch: usize,
        drop_last: bool,
        rank: usize,
        world: usize,
    ) -> Result<Self, DataError> {
        let plan = EpochPlan {
            rows: ds.layout.train_rows as usize,
            global_batch,
            drop_last,
            seed: ds.layout.seed,
        };
        let err = |message: String| DataError::Source {
            file: ds.name.clone(),
            message,
        };
        if plan.batches_per_epoch() == 0 {
            return Err(err(format!(
                "{} training rows give no global batch of {global_batch}",
                plan.rows
            )));
        }
        if rank >= world {
            return Err(err(format!("rank {rank} is not in a world of {world}")));
        }
        Ok(DatasetSource {
            ds,
            plan,
            rank,
            world,
            cursor: DataCursor::default(),
            windows: VecDeque::new(),
            rx: None,
        })
    }

    /// Makes sure the windows covering epoch positions `start..end` of the cursor's epoch are loaded.
    fn load_until(&mut self, start: u64, end: u64) -> Result<(), DataError> {
        let epoch = self.cursor.epoch;
        while self
            .windows
            .front()
            .is_some_and(|w| w.plan.epoch < epoch || (w.end() <= start && w.plan.len > 0))
        {
            self.windows.pop_front();
        }
        if self.rx.is_none() {
            let first = self
                .ds
                .layout
                .epoch_windows(epoch)
                .iter()
                .position(|w| w.start + w.len > start)
                .unwrap_or(0);
            self.windows.clear();
            let share = Share {
                global_batch: self.plan.global_batch as u64,
                rows: self.plan.rows as u64,
                rank: self.rank,
                world: self.world,
            };
            self.rx = Some(spawn_loader(Arc::clone(&self.ds), epoch, first, share));
        }
        while !self
            .windows
            .back()
            .is_some_and(|w| w.plan.epoch > epoch || (w.plan.epoch == epoch && w.end() >= end))
        {
            let rx = self.rx.as_ref().ok_or_else(|| self.gone())?;
            let w = rx.recv().map_err(|_| self.gone())??;
            if w.plan.epoch == epoch && w.end() > start || w.plan.epoch > epoch {
                self.windows.push_back(w);
            }
        }
        Ok(())
    }

    fn gone(&self) -> DataError {
        DataError::Source {
            file: self.ds.name.clone(),
            message: "the dataset loader thread stopped".into(),
        }
    }

    /// Rows at epoch positions `a..b` as a batch.
    fn gather(&self, a: u64, b: u64) -> Batch {
        let mut out = empty_table(self.ds.width, &self.ds.target_kind, (b - a) as usize);
        for w in self
            .windows
            .iter()
            .filter(|w| w.plan.epoch == self.cursor.epoch)
        {
            let (lo, hi) = (a.max(w.plan.start), b.min(w.end()));
            for p in lo..hi {
                let row = w.slot[(p - w.plan.start) as usize];
                debug_assert_ne!(row, NOT_MINE, "position {p} is another rank's");
                push_row(&mut out, &w.table, row as usize);
            }
        }
        Batch {
            x: out.x,
            rows: out.rows,
            cols: out.cols,
            y: out.y,
        }
    }
}

impl BatchSource for DatasetSource {
    fn name(&self) -> &str {
        &self.ds.name
    }

    fn cols(&self) -> usize {
        self.ds.width
    }

    fn next_shard(&mut self) -> Result<Option<ShardBatch>, DataError> {
        let c = self.cursor;
        let g = self.plan.global_batch as u64;
        let start = c.batch_in_epoch * g;
        let end = (start + g).min(self.plan.rows as u64);
        let len = (end - start) as usize;
        let mine = shard_range(len, self.rank, self.world);
        self.load_until(start, end)?;
        let batch = self.gather(start + mine.start as u64, start + mine.end as u64);
        let out = ShardBatch {
            batch,
            cursor: c,
            global_rows: len,
            scale: shard_scale(len, self.rank, self.world),
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
                file: self.ds.name.clone(),
                message: format!(
                    "cursor {cursor:?} is past the {} batches of an epoch",
                    self.plan.batches_per_epoch()
                ),
            });
        }
        self.cursor = cursor;
        self.windows.clear();
        self.rx = None;
        Ok(())
    }
}
