//! `DatasetSource`: the `BatchSource` of a dataset that is streamed rather than held in memory.
//!
//! A loader thread reads, window after window of the epoch order (see [`super::order`]), the lane
//! windows this rank trains on, transforms their training rows with the fitted preprocessing and
//! hands them over a channel holding one window per lane, so reading the next window overlaps the
//! compute of the current one. A rank whose share of every batch is whole lanes (the lane count is
//! a multiple of the world size) reads, decodes and keeps only its own rows. At most about three
//! windows' worth of this rank's lanes exist at once (the one in use, the one in the channel, the
//! one being built); a batch never straddles two windows.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::order::{held_out, LaneCut, WindowPlan};
use super::store::block_on;
use super::Dataset;
use crate::batch::{Batch, Targets};
use crate::data::convert::Conversion;
use crate::data::cursor::{BatchSource, DataCursor, EpochPlan, ShardBatch};
use crate::data::error::DataError;
use crate::data::shard::{shard_range, shard_scale};
use crate::data::table::Table;

/// One lane's window: its training rows in position order and the order the lane visits them.
pub struct Window {
    plan: WindowPlan,
    /// The window's rows, in position order.
    table: Table,
    /// Per lane position of the window: its row in `table`.
    slot: Vec<u32>,
}

impl Window {
    fn key(&self) -> (u64, u64) {
        (self.plan.epoch, self.plan.index)
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

/// `table` emptied, with room for `rows` rows, or a new table when there is none: the loader
/// reuses the tables of windows the source is done with, whose pages are already mapped (a fresh
/// window's tens of MiB were otherwise faulted in and zeroed page by page, every window).
fn reuse(table: Option<Table>, ds: &Dataset, rows: usize) -> Table {
    match table {
        Some(mut t) if t.cols == ds.width => {
            t.x.clear();
            t.x.reserve(rows * t.cols);
            t.rows = 0;
            match &mut t.y {
                Targets::Real(v) => v.clear(),
                Targets::Class(v) => v.clear(),
            }
            t
        }
        _ => empty_table(ds.width, &ds.target_kind, rows),
    }
}

/// Reads `plan`'s pieces and transforms their training rows into `table` (emptied first).
async fn build_window(ds: &Dataset, plan: WindowPlan, table: Table) -> Result<Window, DataError> {
    let ranges = super::reader::merge(plan.pieces.iter().cloned());
    let mut table = table;
    let (seed, tf) = (ds.layout.seed, ds.layout.test_fraction);
    let fitted = &ds.fitted;
    let mut conversion = Conversion::default();
    let mut rows = Vec::new();
    let mut sink = |batch: arrow_array::RecordBatch, first: u64, file: &str| {
        rows.clear();
        rows.extend((0..batch.num_rows()).filter(|&i| !held_out(seed, tf, first + i as u64)));
        if !rows.is_empty() {
            conversion.append(fitted, &batch, file, &rows, &mut table)?;
        }
        Ok(())
    };
    ds.ctx.read(&ranges, &mut sink).await?;
    if table.rows as u64 != plan.len {
        return Err(DataError::Source {
            file: ds.name.clone(),
            message: format!(
                "window {} of lane {} in epoch {} has {} training rows, expected {} (did a file \
                 change?)",
                plan.index, plan.lane, plan.epoch, table.rows, plan.len
            ),
        });
    }
    let slot = ds.layout.window_permutation(&plan);
    Ok(Window { plan, table, slot })
}

type Loaded = Result<Window, DataError>;

/// The loader's side of a [`DatasetSource`]: windows one way, spent tables the other.
struct Loader {
    rx: Receiver<Loaded>,
    spent: SyncSender<Table>,
}

/// Starts a loader thread at window `index` of `epoch` for `lanes`; it runs until its receiver is
/// dropped. With `fixed` every epoch reads the windows of epoch 0 (the same rows in the same
/// order: full-batch solvers), labelled with its own epoch.
fn spawn_loader(
    ds: Arc<Dataset>,
    cut: Arc<LaneCut>,
    lanes: Vec<usize>,
    (epoch, index): (u64, u64),
    fixed: bool,
) -> Loader {
    let (tx, rx) = sync_channel::<Loaded>(lanes.len().max(1));
    let (spent, tables) = sync_channel::<Table>(lanes.len().max(1));
    std::thread::Builder::new()
        .name("lockstep-dataset".into())
        .spawn(move || {
            let (mut epoch, mut first) = (epoch, index);
            loop {
                let order = ds.layout.epoch_order(if fixed { 0 } else { epoch });
                for index in first..cut.windows {
                    for &lane in &lanes {
                        let plan = ds.layout.window(&order, &cut, lane, index);
                        let table = reuse(tables.try_recv().ok(), &ds, plan.len as usize);
                        let loaded =
                            block_on(&ds.name, build_window(&ds, plan, table)).map(|mut w| {
                                w.plan.epoch = epoch;
                                w
                            });
                        let failed = loaded.is_err();
                        if tx.send(loaded).is_err() || failed {
                            return;
                        }
                    }
                }
                epoch += 1;
                first = 0;
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("cannot start the dataset loader thread: {e}"));
    Loader { rx, spent }
}

/// A `BatchSource` that streams a [`Dataset`]: seeded epochs in lane windows, sharded by rank.
pub struct DatasetSource {
    ds: Arc<Dataset>,
    plan: EpochPlan,
    rank: usize,
    world: usize,
    cut: Arc<LaneCut>,
    /// The lanes this rank's shares touch, ascending.
    mine: Vec<usize>,
    cursor: DataCursor,
    /// The windows of the current window index, one per lane of `mine`, in lane order.
    windows: VecDeque<Window>,
    loader: Option<Loader>,
}

impl DatasetSource {
    /// A source for `rank` of `world`, global batches of `global_batch` rows cut into `lanes`
    /// lanes (the same for every world size, so the batches are too).
    ///
    /// # Errors
    /// `Source` if an epoch would have no batch, or `rank >= world`.
    pub fn new(
        ds: Arc<Dataset>,
        global_batch: usize,
        drop_last: bool,
        lanes: usize,
        rank: usize,
        world: usize,
    ) -> Result<Self, DataError> {
        let plan = EpochPlan {
            rows: ds.layout.train_rows as usize,
            global_batch,
            drop_last,
            seed: ds.layout.seed,
            fixed_order: false,
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
        let cut = ds.layout.lanes(lanes, global_batch as u64);
        // The lanes a share of a full batch or of the last, partial one touches.
        let partial = plan.rows % global_batch.max(1);
        let mine: Vec<usize> = (0..cut.lanes)
            .filter(|&l| {
                [global_batch, partial].iter().any(|&len| {
                    let (s, p) = (shard_range(len, rank, world), cut.part(len, l));
                    !s.is_empty() && !p.is_empty() && s.start < p.end && p.start < s.end
                })
            })
            .collect();
        Ok(DatasetSource {
            ds,
            plan,
            rank,
            world,
            cut: Arc::new(cut),
            mine,
            cursor: DataCursor::default(),
            windows: VecDeque::new(),
            loader: None,
        })
    }

    /// Read every epoch in the first epoch's order (the same rows, windows and row order: the
    /// full-batch solvers' fixed objective; see [`EpochPlan::fixed_order`]).
    pub fn with_fixed_order(mut self, fixed: bool) -> Self {
        self.plan.fixed_order = fixed;
        self
    }

    /// Makes sure the windows of index `index` of the cursor's epoch are loaded.
    fn load(&mut self, index: u64) -> Result<(), DataError> {
        let key = (self.cursor.epoch, index);
        while self.windows.front().is_some_and(|w| w.key() < key) {
            if let (Some(w), Some(l)) = (self.windows.pop_front(), self.loader.as_ref()) {
                // Full (the loader has tables to spare) or gone: the table is freed instead.
                let _ = l.spent.try_send(w.table);
            }
        }
        if self.loader.is_none() {
            self.windows.clear();
            self.loader = Some(spawn_loader(
                Arc::clone(&self.ds),
                Arc::clone(&self.cut),
                self.mine.clone(),
                key,
                self.plan.fixed_order,
            ));
        }
        while self.windows.iter().filter(|w| w.key() == key).count() < self.mine.len() {
            let loader = self.loader.as_ref().ok_or_else(|| self.gone())?;
            let w = loader.rx.recv().map_err(|_| self.gone())??;
            if w.key() >= key {
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

    /// This rank's rows of global batch `b` (of `len` rows) as a batch, lane by lane.
    fn gather(&self, b: u64, len: usize, index: u64) -> Batch {
        let mine = shard_range(len, self.rank, self.world);
        let mut out = empty_table(self.ds.width, &self.ds.target_kind, mine.len());
        let key = (self.cursor.epoch, index);
        let first_batch = index * self.cut.window_batches;
        for w in self.windows.iter().filter(|w| w.key() == key) {
            let l = w.plan.lane;
            let part = self.cut.part(len, l);
            let (lo, hi) = (mine.start.max(part.start), mine.end.min(part.end));
            // Lane position of this batch's part, relative to the window.
            let at = (b - first_batch) * self.cut.share[l];
            for p in lo..hi {
                let row = w.slot[(at + (p - part.start) as u64) as usize];
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
        let len = ((start + g).min(self.plan.rows as u64) - start) as usize;
        let index = c.batch_in_epoch / self.cut.window_batches;
        self.load(index)?;
        let batch = self.gather(c.batch_in_epoch, len, index);
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
        self.loader = None;
        Ok(())
    }
}
