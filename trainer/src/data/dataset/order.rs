//! The logical order of a dataset: which rows are held out, and in which order an epoch visits the
//! training rows. Everything here is a function of the seed and of logical row positions (row `i`
//! of the concatenation of the files in name order), never of how the rows are cut into files and
//! row groups, so the same rows as 1 file or 300 give the same batches.
//!
//! - Held-out split: row `i` is held out when a hash of `(seed, i)` falls below `test_fraction`
//!   (about that share of rows, not an exact count; not stratified).
//! - Blocks: logical rows are cut into blocks of `block_rows` (the last one shorter).
//! - Epoch `e`: the blocks are permuted (ChaCha8, seed, stream `e + 1`), and consecutive runs of
//!   `window_blocks` permuted blocks form windows. A window's training rows, sorted by position,
//!   are permuted again by a generator seeded from `(seed, e, window)`. The epoch is the
//!   concatenation of its windows; global batch `r` is its positions `r*B .. (r+1)*B`.
//!
//! A reader therefore needs one window (and the next, when a batch straddles two) at a time, and
//! reads each window's blocks in ascending order: sequential reads, bounded memory.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

/// The cut of a dataset into blocks and windows, with the training rows of each block.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Logical rows of the dataset (training and held out).
    pub rows: u64,
    /// Rows per block.
    pub block_rows: u64,
    /// Blocks per window.
    pub window_blocks: usize,
    /// Shuffle seed.
    pub seed: u64,
    /// Held-out share.
    pub test_fraction: f64,
    /// Training rows in each block.
    train_in_block: Vec<u32>,
    /// Training rows in all.
    pub train_rows: u64,
}

/// One window of one epoch: its blocks (ascending) and where it sits in the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// Epoch.
    pub epoch: u64,
    /// Window index within the epoch.
    pub index: usize,
    /// Its blocks, ascending.
    pub blocks: Vec<u64>,
    /// First epoch position of the window.
    pub start: u64,
    /// Training rows in the window.
    pub len: u64,
}

impl Layout {
    /// The layout of `rows` logical rows.
    pub fn new(
        rows: u64,
        block_rows: u64,
        window_blocks: usize,
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
            window_blocks: window_blocks.max(1),
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
    pub fn block_range(&self, b: u64) -> std::ops::Range<u64> {
        b * self.block_rows..((b + 1) * self.block_rows).min(self.rows)
    }

    /// Windows per epoch.
    pub fn windows(&self) -> usize {
        (self.blocks() as usize).div_ceil(self.window_blocks)
    }

    /// Every window of epoch `epoch`, in epoch order.
    pub fn epoch_windows(&self, epoch: u64) -> Vec<WindowPlan> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ BLOCK_SALT);
        rng.set_stream(epoch.wrapping_add(1));
        let mut order: Vec<u64> = (0..self.blocks()).collect();
        order.shuffle(&mut rng);
        let mut start = 0;
        order
            .chunks(self.window_blocks)
            .enumerate()
            .map(|(index, chunk)| {
                let mut blocks = chunk.to_vec();
                blocks.sort_unstable();
                let len = blocks
                    .iter()
                    .map(|&b| u64::from(self.train_in_block[b as usize]))
                    .sum();
                let w = WindowPlan {
                    epoch,
                    index,
                    blocks,
                    start,
                    len,
                };
                start += len;
                w
            })
            .collect()
    }

    /// The order in which window `w` visits its training rows: a permutation of `0..w.len`
    /// (indices into the window's training rows sorted by position).
    pub fn window_permutation(&self, w: &WindowPlan) -> Vec<u32> {
        let seed = splitmix64(self.seed ^ WINDOW_SALT) ^ splitmix64(w.index as u64);
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

    #[test]
    fn windows_cover_every_training_row_once() {
        let layout = Layout::new(10_000, 64, 5, 3, 0.2);
        assert!(layout.train_rows > 7_000 && layout.train_rows < 9_000);
        for epoch in 0..2 {
            let windows = layout.epoch_windows(epoch);
            let mut blocks: Vec<u64> = windows.iter().flat_map(|w| w.blocks.clone()).collect();
            blocks.sort_unstable();
            assert_eq!(blocks, (0..layout.blocks()).collect::<Vec<_>>());
            let last = windows.last().unwrap();
            assert_eq!(last.start + last.len, layout.train_rows);
        }
        assert_ne!(layout.epoch_windows(0), layout.epoch_windows(1));
    }
}
