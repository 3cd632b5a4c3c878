//! `TableShard`: the rows of one embedding table that one parameter-server shard owns, created
//! on first use and updated in place by a [`RowOptimizer`].
//!
//! Memory is proportional to the rows touched so far (ids seen in training or evaluation), never
//! to the id space: a row is created when first pulled, from a generator seeded by
//! `(seed, table, id)` alone, so its initial values do not depend on which shard owns it, on the
//! number of shards or on the order rows are first touched. Each row holds `dim` vector values
//! and one bias (`width = dim + 1`), then its optimizer state.

use super::optim::RowOptimizer;
pub use lockstep_tensor::sparse::mix64;
use lockstep_tensor::SparseRows;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// What a shard needs to know about a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The id column (the table's name).
    pub column: String,
    /// Values per stored row: the vector and one bias.
    pub width: usize,
    /// Rows in the id space (`buckets`, or `None`: any id below 2^24).
    pub buckets: Option<u64>,
    /// Standard deviation of the initial vectors.
    pub init_std: f32,
}

/// A shard's rows with their optimizer state, ascending by id: `values` is `ids.len() x width`,
/// `state` `ids.len() x state_len`, `since` the round after each row's last update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardRows {
    /// Row ids, ascending.
    pub ids: Vec<u64>,
    /// Row values.
    pub values: Vec<f32>,
    /// Optimizer state.
    pub state: Vec<f32>,
    /// Per row, the round after its last update (0: never updated).
    pub since: Vec<u64>,
}

/// One shard of one table.
#[derive(Debug, Clone)]
pub struct TableShard {
    info: TableInfo,
    table: u64,
    seed: u64,
    optimizer: RowOptimizer,
    decay: f32,
    index: HashMap<u64, usize>,
    values: Vec<f32>,
    state: Vec<f32>,
    /// Per row, the round after its last update (0: never updated).
    since: Vec<u64>,
}

impl TableShard {
    /// An empty shard of table number `table` described by `info`.
    pub fn new(info: TableInfo, table: usize, seed: u64, optimizer: RowOptimizer) -> Self {
        TableShard {
            info,
            table: table as u64,
            seed,
            optimizer,
            decay: 0.0,
            index: HashMap::new(),
            values: Vec::new(),
            state: Vec::new(),
            since: Vec::new(),
        }
    }

    /// Lazy whole-table L2 (see [`TableOptimizerSpec::decay`](super::TableOptimizerSpec)).
    pub fn with_decay(mut self, decay: f32) -> Self {
        self.decay = decay;
        self
    }

    /// The table's description.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// Bytes held by rows and optimizer state.
    pub fn bytes(&self) -> usize {
        (self.values.len() + self.state.len()) * 4
    }

    fn slot(&mut self, id: u64) -> usize {
        if let Some(&s) = self.index.get(&id) {
            return s;
        }
        let w = self.info.width;
        let s = self.index.len();
        let key = mix64(self.seed ^ mix64(self.table.wrapping_mul(0x1000_0000_01B3) ^ id));
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let std = self.info.init_std as f64;
        let normal = Normal::new(0.0f64, std.max(0.0)).ok();
        for _ in 0..w - 1 {
            let v = normal.as_ref().map_or(0.0, |n| n.sample(&mut rng) as f32);
            self.values.push(v);
        }
        self.values.push(0.0); // the bias
        let sl = self.optimizer.state_len(w);
        self.state.resize(self.state.len() + sl, 0.0);
        self.since.push(0);
        self.index.insert(id, s);
        s
    }

    /// Append the rows of `ids` (created if new) to `out`, in order.
    pub fn read(&mut self, ids: &[u64], out: &mut Vec<f32>) {
        let w = self.info.width;
        out.reserve(ids.len() * w);
        for &id in ids {
            let s = self.slot(id);
            out.extend_from_slice(&self.values[s * w..(s + 1) * w]);
        }
    }

    /// Apply the summed gradient rows `grads` of `round` at learning rate `lr` (with the lazy
    /// decay of the rounds since each row's last update).
    ///
    /// # Panics
    /// If `grads` rows are not `width` wide (the exchange checks widths first).
    pub fn apply(&mut self, grads: &SparseRows, lr: f32, round: u64) {
        let w = self.info.width;
        assert_eq!(grads.dim, w, "gradient rows of the wrong width");
        let sl = self.optimizer.state_len(w);
        let mut g = vec![0.0f32; w];
        for (i, &id) in grads.ids.iter().enumerate() {
            let s = self.slot(id);
            let row = &mut self.values[s * w..(s + 1) * w];
            g.copy_from_slice(grads.row(i));
            if self.decay > 0.0 {
                let k = self.decay * (round + 1).saturating_sub(self.since[s]) as f32;
                g.iter_mut().zip(row.iter()).for_each(|(g, w)| *g += k * w);
            }
            self.since[s] = round + 1;
            let state = &mut self.state[s * sl..(s + 1) * sl];
            self.optimizer.update(lr, row, &g, state);
        }
    }

    /// Set row `id` to `values` (a stored model's row), creating it if new.
    ///
    /// # Panics
    /// If `values` is not `width` long (the reader checks shapes first).
    pub fn load_row(&mut self, id: u64, values: &[f32]) {
        let w = self.info.width;
        assert_eq!(values.len(), w, "a stored row of the wrong width");
        let s = self.slot(id);
        self.values[s * w..(s + 1) * w].copy_from_slice(values);
    }

    /// Every held row with its optimizer state, ascending by id (a checkpoint's part).
    pub fn export(&self) -> ShardRows {
        let (w, sl) = (self.info.width, self.optimizer.state_len(self.info.width));
        let ids = self.ids();
        let mut out = ShardRows {
            values: Vec::with_capacity(ids.len() * w),
            state: Vec::with_capacity(ids.len() * sl),
            since: Vec::with_capacity(ids.len()),
            ids: Vec::new(),
        };
        for &id in &ids {
            let s = self.index[&id];
            out.values
                .extend_from_slice(&self.values[s * w..(s + 1) * w]);
            out.state
                .extend_from_slice(&self.state[s * sl..(s + 1) * sl]);
            out.since.push(self.since[s]);
        }
        out.ids = ids;
        out
    }

    /// Restore row `i` of `rows` (a checkpoint's part), creating it if new.
    ///
    /// # Panics
    /// If `rows` does not hold `i` rows of this shard's width and state length (the reader
    /// checks shapes first).
    pub fn restore(&mut self, rows: &ShardRows, i: usize) {
        let (w, sl) = (self.info.width, self.optimizer.state_len(self.info.width));
        let s = self.slot(rows.ids[i]);
        self.values[s * w..(s + 1) * w].copy_from_slice(&rows.values[i * w..(i + 1) * w]);
        self.state[s * sl..(s + 1) * sl].copy_from_slice(&rows.state[i * sl..(i + 1) * sl]);
        self.since[s] = rows.since[i];
    }

    /// Optimizer state values per row.
    pub fn state_len(&self) -> usize {
        self.optimizer.state_len(self.info.width)
    }

    /// The held row ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.index.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Every held row: `(id, values)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[f32])> + '_ {
        let w = self.info.width;
        self.index
            .iter()
            .map(move |(&id, &s)| (id, &self.values[s * w..(s + 1) * w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::embedding::spec::TableOptimizerKind;

    fn shard() -> TableShard {
        let info = TableInfo {
            column: "u".into(),
            width: 4,
            buckets: None,
            init_std: 0.1,
        };
        TableShard::new(info, 0, 7, RowOptimizer::new(TableOptimizerKind::Adagrad))
    }

    #[test]
    fn rows_start_the_same_whatever_the_order_of_first_use() {
        let (mut a, mut b) = (shard(), shard());
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        a.read(&[3, 9], &mut ra);
        b.read(&[9], &mut rb);
        b.read(&[3], &mut rb);
        assert_eq!(&ra[..4], &rb[4..]);
        assert_eq!(&ra[4..], &rb[..4]);
        assert_eq!(ra[3], 0.0, "the bias starts at zero");
        assert_ne!(ra[0], ra[4]);
    }

    #[test]
    fn apply_touches_only_the_given_rows() {
        let mut s = shard();
        let mut before = Vec::new();
        s.read(&[1, 2], &mut before);
        let g = SparseRows {
            dim: 4,
            ids: vec![2],
            values: vec![1.0; 4],
        };
        s.apply(&g, 0.5, 0);
        let mut after = Vec::new();
        s.read(&[1, 2], &mut after);
        assert_eq!(before[..4], after[..4]);
        assert!(after[4..].iter().zip(&before[4..]).all(|(a, b)| a < b));
        assert_eq!(s.rows(), 2);
    }
}
