//! `Tables`: the embedding table shards one rank serves (one [`TableShard`] per table), as the
//! collective's [`RowStore`], and their digest for the final weights hash.
//!
//! The digest is independent of how rows are spread over shards: each row contributes
//! `sha256(table, id, values)` read as a 256-bit little-endian integer, the contributions are
//! added modulo 2^256 (so shards add their partial sums in any grouping), and the result goes
//! into the weights hash. One shard or two, the same rows give the same digest.

use lockstep_collective::{RowStore, SparseRows};
use lockstep_trainer::model::embedding::{RowOptimizer, TableInfo, TableShard};
use sha2::{Digest, Sha256};

/// One rank's shards of every table.
pub(crate) struct Tables {
    shards: Vec<TableShard>,
    /// The learning rate of the next apply (set per round).
    pub lr: f32,
    /// The round of the next apply.
    pub round: u64,
}

impl Tables {
    /// Empty shards of `tables`, rows initialised from `seed`.
    pub(crate) fn new(
        tables: &[TableInfo],
        seed: u64,
        optimizer: RowOptimizer,
        decay: f32,
    ) -> Self {
        let shards = tables
            .iter()
            .enumerate()
            .map(|(t, info)| TableShard::new(info.clone(), t, seed, optimizer).with_decay(decay))
            .collect();
        Tables {
            shards,
            lr: 0.0,
            round: 0,
        }
    }

    /// Rows held over all tables.
    pub(crate) fn rows(&self) -> usize {
        self.shards.iter().map(TableShard::rows).sum()
    }

    /// Bytes held by rows and optimizer state over all tables.
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(TableShard::bytes).sum()
    }

    /// The shards, one per table.
    pub(crate) fn shards(&self) -> &[TableShard] {
        &self.shards
    }

    /// The shards, one per table, to restore rows into.
    pub(crate) fn shards_mut(&mut self) -> &mut [TableShard] {
        &mut self.shards
    }

    /// Every table's rows with their optimizer state (a checkpoint's part).
    pub(crate) fn export(&self) -> Vec<lockstep_trainer::model::embedding::ShardRows> {
        self.shards.iter().map(TableShard::export).collect()
    }

    /// Per table, the held row ids, ascending.
    pub(crate) fn held_ids(&self) -> Vec<Vec<u64>> {
        self.shards.iter().map(TableShard::ids).collect()
    }

    /// The sum of this rank's rows' hashes (see the module docs).
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut acc = [0u8; 32];
        for (t, s) in self.shards.iter().enumerate() {
            for (id, row) in s.iter() {
                let mut h = Sha256::new();
                h.update((t as u64).to_le_bytes());
                h.update(id.to_le_bytes());
                row.iter().for_each(|v| h.update(v.to_le_bytes()));
                add_mod(&mut acc, &h.finalize().into());
            }
        }
        acc
    }
}

/// `acc += x` modulo 2^256, both little-endian.
pub(crate) fn add_mod(acc: &mut [u8; 32], x: &[u8; 32]) {
    let mut carry = 0u16;
    for (a, b) in acc.iter_mut().zip(x) {
        let s = *a as u16 + *b as u16 + carry;
        *a = s as u8;
        carry = s >> 8;
    }
}

impl RowStore for Tables {
    fn read(&mut self, table: usize, ids: &[u64], out: &mut Vec<f32>) {
        self.shards[table].read(ids, out);
    }
    fn apply(&mut self, table: usize, grads: &SparseRows) {
        self.shards[table].apply(grads, self.lr, self.round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_does_not_depend_on_the_sharding() {
        let info = TableInfo {
            column: "u".into(),
            width: 3,
            buckets: None,
            init_std: 0.1,
        };
        let opt = RowOptimizer::new(lockstep_trainer::model::embedding::TableOptimizerKind::Sgd);
        let mut whole = Tables::new(std::slice::from_ref(&info), 1, opt, 0.0);
        let (mut a, mut b) = (
            Tables::new(std::slice::from_ref(&info), 1, opt, 0.0),
            Tables::new(&[info], 1, opt, 0.0),
        );
        let mut sink = Vec::new();
        whole.read(0, &[1, 2, 3], &mut sink);
        a.read(0, &[2], &mut sink);
        b.read(0, &[1, 3], &mut sink);
        let mut parts = a.digest();
        add_mod(&mut parts, &b.digest());
        assert_eq!(whole.digest(), parts);
        assert_ne!(a.digest(), b.digest());
    }
}
