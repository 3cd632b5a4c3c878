//! The logical order of a dataset: which rows are held out, and in which order an epoch visits the
//! training rows. Everything here is a function of the seed, the global batch, the number of lanes
//! and logical row positions (row `i` of the concatenation of the files in name order), never of
//! how the rows are cut into files and row groups, so the same rows as 1 file or 300 give the same
//! batches.
//!
//! - Held-out split: row `i` is held out when a hash of `(seed, i)` falls below `test_fraction`
//!   (about that share of rows, not an exact count; not stratified).
//! - Blocks: logical rows are cut into blocks of `block_rows` (the last one shorter).
//! - Epoch `e`: the blocks are permuted (ChaCha8, seed, stream `e + 1`); the epoch's sequence `S`
//!   is the training rows of the permuted blocks, each block's in position order.
//! - Lanes: every global batch is cut into `L` lane parts ([`shard_range`] of the batch), and `S`
//!   into `L` contiguous lanes, lane `l` as long as its parts of all the epoch's batches. Global
//!   batch `b` is the concatenation, lane by lane, of the next part of each lane.
//! - Windows: window `c` of the epoch covers batches `c*K .. (c+1)*K` (`K` from the memory
//!   budget) of every lane; a lane's window is its rows of those batches, sorted by position and
//!   then permuted by a generator seeded from `(seed, epoch, lane, c)`.
//!
//! A rank trains on a contiguous share of each batch: with `L` a multiple of the world size (the
//! runtime takes `L` = `job.micro_batches`, else the manifest's worker count), its share is whole
//! lanes, and it reads and decodes only those lanes' rows: about `1/world` of the data. Each
//! lane window is one contiguous stretch of permuted blocks, read in ascending order: sequential
//! reads, bounded memory. A batch never straddles two windows.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::shard::shard_range;

/// Salt of the held-out hash, so it is independent of the shuffles.
const SPLIT_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
/// Salt of the block permutation.
const BLOCK_SALT: u64 = 0xd1b5_4a32_d192_ed03;
/// Salt of the in-window permutations.
const WINDOW_SALT: u64 = 0x8cb9_2ba7_2f3d_8dd7;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether logical row `row` is held out for evaluation.
pub fn held_out(seed: u64, test_fraction: f64, row: u64) -> bool {
    let h = splitmix64(splitmix64(seed ^ SPLIT_SALT) ^ row);
    ((h >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < test_fraction
}

/// The cut of a dataset into blocks, with the training rows of each block.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Logical rows of the dataset (training and held out).
    pub rows: u64,
    /// Rows per block.
    pub block_rows: u64,
    /// Training rows one window holds, all lanes together (from the memory budget).
    pub window_rows: u64,
    /// Shuffle seed.
    pub seed: u64,
    /// Held-out share.
    pub test_fraction: f64,
    /// Training rows in each block.
    train_in_block: Vec<u32>,
    /// Training rows in all.
    pub train_rows: u64,
}

/// How every global batch of an epoch is cut into lanes, and the lanes into windows.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneCut {
    /// Lanes (`L`).
    pub lanes: usize,
    /// Per lane: its part of a full global batch.
    pub share: Vec<u64>,
    /// Per lane: its training rows in an epoch.
    pub len: Vec<u64>,
    /// Per lane: where it starts in the epoch's sequence.
    pub offset: Vec<u64>,
    /// Batches per window (`K`).
    pub window_batches: u64,
    /// Windows per epoch.
    pub windows: u64,
}

impl LaneCut {
    /// Lane `l`'s part of a global batch of `len` rows, as positions in the batch.
    pub fn part(&self, len: usize, l: usize) -> Range<usize> {
        shard_range(len, l, self.lanes)
    }
}

/// The permuted blocks of one epoch and where each starts in the epoch's sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochOrder {
    /// Epoch.
    pub epoch: u64,
    /// Blocks in epoch order.
    perm: Vec<u64>,
    /// `cum[k]`: training rows of `perm[..k]` (one more entry than blocks).
    cum: Vec<u64>,
}

/// One lane's window of one epoch: the logical rows to read and where it sits in its lane.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// Epoch.
    pub epoch: u64,
    /// Lane.
    pub lane: usize,
    /// Window index within the epoch (the same for every lane).
    pub index: u64,
    /// Logical row ranges, ascending and disjoint, whose training rows are the window's rows.
    pub pieces: Vec<Range<u64>>,
    /// First lane position of the window.
    pub start: u64,
    /// Training rows in the window.
    pub len: u64,
}

impl Layout {
    /// The layout of `rows` logical rows.
    pub fn new(
        rows: u64,
        block_rows: u64,
        window_rows: u64,
        seed: u64,
        test_fraction: f64,
    ) -> Self {
        let block_rows = block_rows.max(1);
        let blocks = rows.div_ceil(block_rows);
        let mut train_in_block = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let (lo, hi) = (b * block_rows, ((b + 1) * block_rows).min(rows));
            let n = (lo..hi)
                .filter(|&r| !held_out(seed, test_fraction, r))
                .count();
            train_in_block.push(n as u32);
        }
        let train_rows = train_in_block.iter().map(|&n| u64::from(n)).sum();
        Layout {
            rows,
            block_rows,
            window_rows: window_rows.max(1),
            seed,
            test_fraction,
            train_in_block,
            train_rows,
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.train_in_block.len() as u64
    }

    /// Logical rows of block `b`.
    pub fn block_range(&self, b: u64) -> Range<u64> {
        b * self.block_rows..((b + 1) * self.block_rows).min(self.rows)
    }

    /// The cut of global batches of `global_batch` rows into `lanes` lanes.
    pub fn lanes(&self, lanes: usize, global_batch: u64) -> LaneCut {
        let lanes = lanes.max(1);
        let g = global_batch.max(1);
        let n = self.train_rows;
        let (full, part) = (n / g, (n % g) as usize);
        let share: Vec<u64> = (0..lanes)
            .map(|l| shard_range(g as usize, l, lanes).len() as u64)
            .collect();
        let len: Vec<u64> = (0..lanes)
            .map(|l| full * share[l] + shard_range(part, l, lanes).len() as u64)
            .collect();
        let offset = len
            .iter()
            .scan(0u64, |at, &n| {
                let o = *at;
                *at += n;
                Some(o)
            })
            .collect();
        let window_batches = (self.window_rows / g).max(1);
        LaneCut {
            lanes,
            share,
            len,
            offset,
            window_batches,
            windows: n.div_ceil(g).div_ceil(window_batches),
        }
    }

    /// The permuted blocks of epoch `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> EpochOrder {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ BLOCK_SALT);
        rng.set_stream(epoch.wrapping_add(1));
        let mut perm: Vec<u64> = (0..self.blocks()).collect();
        perm.shuffle(&mut rng);
        let mut cum = Vec::with_capacity(perm.len() + 1);
        cum.push(0);
        let mut at = 0u64;
        for &b in &perm {
            at += u64::from(self.train_in_block[b as usize]);
            cum.push(at);
        }
        EpochOrder { epoch, perm, cum }
    }

    /// Window `index` of lane `lane` in `order`'s epoch.
    pub fn window(&self, order: &EpochOrder, cut: &LaneCut, lane: usize, index: u64) -> WindowPlan {
        let per = cut.window_batches * cut.share[lane];
        let start = (index * per).min(cut.len[lane]);
        let end = (start + per).min(cut.len[lane]);
        let at = cut.offset[lane];
        WindowPlan {
            epoch: order.epoch,
            lane,
            index,
            pieces: self.pieces(order, at + start, at + end),
            start,
            len: end - start,
        }
    }

    /// Logical ranges, ascending, holding exactly the training rows `a..b` of `order`'s sequence.
    fn pieces(&self, order: &EpochOrder, a: u64, b: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        let mut k = order.cum.partition_point(|&c| c <= a).saturating_sub(1);
        while k < order.perm.len() && order.cum[k] < b {
            let (lo, hi) = (order.cum[k], order.cum[k + 1]);
            let (from, to) = (a.max(lo) - lo, b.min(hi) - lo);
            if from < to {
                out.push(self.train_span(order.perm[k], from, to));
            }
            k += 1;
        }
        out.sort_unstable_by_key(|r| r.start);
        out
    }

    /// The logical rows of block `block` holding its training rows `from..to` (counted from 0).
    fn train_span(&self, block: u64, from: u64, to: u64) -> Range<u64> {
        let r = self.block_range(block);
        if from == 0 && to == u64::from(self.train_in_block[block as usize]) {
            return r;
        }
        let (mut start, mut end) = (r.end, r.end);
        let mut seen = 0u64;
        for row in r {
            if held_out(self.seed, self.test_fraction, row) {
                continue;
            }
            if seen == from {
                start = row;
            }
            if seen == to {
                end = row;
                break;
            }
            seen += 1;
        }
        start..end
    }

    /// The order in which window `w` visits its training rows: a permutation of `0..w.len`
    /// (indices into the window's training rows sorted by position).
    pub fn window_permutation(&self, w: &WindowPlan) -> Vec<u32> {
        let seed = splitmix64(splitmix64(self.seed ^ WINDOW_SALT) ^ w.index) ^ w.lane as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(w.epoch.wrapping_add(1));
        let mut perm: Vec<u32> = (0..w.len as u32).collect();
        perm.shuffle(&mut rng);
        perm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training rows of `pieces`, in position order.
    fn rows_of(layout: &Layout, pieces: &[Range<u64>]) -> Vec<u64> {
        pieces
            .iter()
            .flat_map(|r| r.clone())
            .filter(|&r| !held_out(layout.seed, layout.test_fraction, r))
            .collect()
    }

    #[test]
    fn lanes_and_windows_cover_every_training_row_once() {
        let layout = Layout::new(10_000, 64, 700, 3, 0.2);
        assert!(layout.train_rows > 7_000 && layout.train_rows < 9_000);
        for (lanes, g) in [(1, 128), (2, 128), (4, 100), (3, 7), (8, 5)] {
            let cut = layout.lanes(lanes, g);
            assert_eq!(cut.len.iter().sum::<u64>(), layout.train_rows);
            for epoch in 0..2 {
                let order = layout.epoch_order(epoch);
                let mut all = Vec::new();
                for lane in 0..lanes {
                    let mut at = 0;
                    for index in 0..cut.windows {
                        let w = layout.window(&order, &cut, lane, index);
                        assert_eq!(w.start, at, "lanes {lanes} lane {lane} window {index}");
                        let rows = rows_of(&layout, &w.pieces);
                        assert_eq!(rows.len() as u64, w.len);
                        assert!(w.pieces.windows(2).all(|p| p[0].end <= p[1].start));
                        all.extend(rows);
                        at += w.len;
                    }
                    assert_eq!(at, cut.len[lane]);
                }
                all.sort_unstable();
                let want: Vec<u64> = (0..layout.rows).filter(|&r| !held_out(3, 0.2, r)).collect();
                assert_eq!(all, want, "lanes {lanes} epoch {epoch}");
            }
        }
        assert_ne!(layout.epoch_order(0), layout.epoch_order(1));
    }

    #[test]
    fn a_lane_is_its_parts_of_every_batch() {
        let layout = Layout::new(5_000, 100, 1_000, 9, 0.1);
        let (lanes, g) = (4usize, 50u64);
        let cut = layout.lanes(lanes, g);
        let batches = layout.train_rows.div_ceil(g);
        for lane in 0..lanes {
            let used: u64 = (0..batches)
                .map(|b| {
                    let len = g.min(layout.train_rows - b * g) as usize;
                    cut.part(len, lane).len() as u64
                })
                .sum();
            assert_eq!(used, cut.len[lane]);
        }
        // Window c holds batches c*K .. (c+1)*K of every lane.
        assert_eq!(cut.window_batches, 20);
        assert_eq!(cut.windows, batches.div_ceil(20));
    }
}
