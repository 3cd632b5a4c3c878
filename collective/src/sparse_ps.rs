//! Sharded embedding tables: the sparse half of the parameter server. Workers pull the rows a
//! batch needs and push the gradients of exactly those rows; each shard owns the rows whose id
//! hashes to it and updates them with its own optimizer state.
//!
//! **Sharding.** Row `id` of every table lives on shard `mix64(id) % shards` (SplitMix64's
//! finaliser, [`lockstep_tensor::sparse::mix64`]): balanced for any id distribution, sequential
//! ids included, and independent of the table. The shard ranks are given by the caller (every
//! worker when tables are co-located with the workers, or dedicated server ranks).
//!
//! **A pull** ([`SparseShards::pull`]), for each table the sorted unique ids of the batch:
//! 1. as a worker: to every shard, one frame of per-table counts and one of the ids it owns;
//! 2. as a shard: for each worker in ascending rank, read the ids, read (or create) the rows
//!    from the [`RowStore`] and send them back in request order;
//! 3. as a worker: receive each shard's rows and merge them into one sorted list per table.
//!
//! **A push** ([`SparseShards::push`]), per table the summed gradients of the touched rows:
//! each worker sends every shard its ids and rows; the shard sums the contributions of a row in a
//! balanced binary tree over the workers' ranks (a fixed order: with micro-batches, where each
//! worker already summed its own micro-batches in the same tree, the result does not depend on
//! the number of workers), scales the sum and applies it through the store. Nothing comes back:
//! the next pull reads the updated rows.
//!
//! Bytes per round are `O(touched rows x row width)` each way: nothing is sent, read or
//! allocated in proportion to a table's size. Sends never wait for the receiver (the `Link`
//! contract), so send-then-serve-then-receive cannot deadlock.

use super::comm::{Call, Communicator};
use super::CollectiveError;
use super::ConfigError;
use lockstep_tensor::sparse::{mix64, tree_sum};
use lockstep_tensor::{fingerprint_dims, DType, SparseRows};
use lockstep_transport::Op;

/// Most ids one frame may announce (a guard against a corrupt count).
const MAX_IDS: u64 = 1 << 30;

/// A shard's rows: read (creating rows on first use) and update.
pub trait RowStore {
    /// Append the rows of `ids` of `table` to `out`, in order.
    fn read(&mut self, table: usize, ids: &[u64], out: &mut Vec<f32>);
    /// Apply the summed gradient rows of `table`.
    fn apply(&mut self, table: usize, grads: &SparseRows);
}

/// The tables' layout over shard ranks; the same on every rank.
#[derive(Debug, Clone)]
pub struct SparseShards {
    widths: Vec<usize>,
    shards: Vec<usize>,
    workers: Vec<usize>,
}

/// The three calls of one exchange: counts, ids, rows.
struct Calls {
    counts: Call,
    ids: Call,
    rows: Call,
}

impl SparseShards {
    /// Tables of row `widths`, served by the ranks `shards`, used by the ranks `workers`
    /// (both sorted, distinct, below `world`).
    ///
    /// # Errors
    /// [`CollectiveError::Config`] for an empty or invalid rank list or a zero width.
    pub fn new(
        widths: Vec<usize>,
        shards: &[usize],
        workers: &[usize],
        world: usize,
    ) -> Result<Self, CollectiveError> {
        if let Some(table) = widths.iter().position(|&w| w == 0) {
            return Err(ConfigError::ZeroRowWidth { table }.into());
        }
        let check = |role, list| crate::ps::distinct_ranks("embedding table", role, list, world);
        Ok(SparseShards {
            widths,
            shards: check("shards", shards)?,
            workers: check("workers", workers)?,
        })
    }

    /// How many tables.
    pub fn tables(&self) -> usize {
        self.widths.len()
    }

    /// The shard ranks, ascending.
    pub fn shards(&self) -> &[usize] {
        &self.shards
    }

    /// Which shard (index into [`SparseShards::shards`]) owns row `id`.
    pub fn owner(&self, id: u64) -> usize {
        (mix64(id) % self.shards.len() as u64) as usize
    }

    fn begin(&self, c: &mut Communicator, op: Op) -> Result<Calls, CollectiveError> {
        let t = self.widths.len();
        Ok(Calls {
            counts: c.begin(op, fingerprint_dims(&[t, 1]), DType::I64.to_wire())?,
            ids: c.begin(op, fingerprint_dims(&[t, 2]), DType::I64.to_wire())?,
            rows: c.begin(op, fingerprint_dims(&[t, 3]), DType::F32.to_wire())?,
        })
    }

    /// Per shard, per table, the ids it owns (still ascending) and their positions in `ids`.
    fn split(&self, ids: &[Vec<u64>]) -> Vec<Vec<Vec<u64>>> {
        let mut out = vec![vec![Vec::new(); ids.len()]; self.shards.len()];
        for (t, list) in ids.iter().enumerate() {
            for &id in list {
                out[self.owner(id)][t].push(id);
            }
        }
        out
    }

    /// Pull the rows of `ids` (per table, ascending and unique); every rank of the group calls
    /// it, a shard with its `store`, a pure shard with empty `ids`. Returns, on a worker, the
    /// rows per table in `ids` order.
    ///
    /// # Errors
    /// A link failure (naming the peer, round and operation); [`CollectiveError::Invalid`] for
    /// ids that are not ascending, a peer's malformed request, or a shard without a store.
    pub fn pull(
        &mut self,
        c: &mut Communicator,
        ids: &[Vec<u64>],
        store: Option<&mut dyn RowStore>,
    ) -> Result<Vec<SparseRows>, CollectiveError> {
        let calls = self.begin(c, Op::PsPull)?;
        let me = c.rank();
        let is_worker = self.workers.contains(&me);
        self.check_request(c, &calls, ids, is_worker, store.is_some())?;
        let parts = self.split(ids);
        if is_worker {
            for (s, &rank) in self.shards.iter().enumerate().filter(|(_, &r)| r != me) {
                self.send_ids(c, &calls, rank, &parts[s])?;
            }
        }
        let mine = self.shards.iter().position(|&r| r == me);
        let mut local = None;
        if let (Some(s), Some(store)) = (mine, store) {
            for &w in &self.workers {
                if w == me {
                    local = Some(self.read_rows(store, &parts[s]));
                    continue;
                }
                let want = self.recv_ids(c, &calls, w, s)?;
                let rows = self.read_rows(store, &want);
                let flat: Vec<f32> = rows.into_iter().flat_map(|r| r.values).collect();
                if !flat.is_empty() {
                    c.send_from(&calls.rows, w, bytemuck::cast_slice(&flat))?;
                }
            }
        }
        if !is_worker {
            return Ok(Vec::new());
        }
        let mut per_shard = Vec::with_capacity(self.shards.len());
        for (s, &rank) in self.shards.iter().enumerate() {
            if rank == me {
                per_shard.push(local.take().unwrap_or_default());
                continue;
            }
            let n: usize = parts[s]
                .iter()
                .zip(&self.widths)
                .map(|(l, w)| l.len() * w)
                .sum();
            let mut flat = vec![0.0f32; n];
            if n > 0 {
                c.recv_slice(&calls.rows, rank, bytemuck::cast_slice_mut(&mut flat))?;
            }
            per_shard.push(self.unflatten(&parts[s], flat));
        }
        Ok(self.gather(per_shard))
    }

    /// Push the touched rows' gradients `grads` (per table); shards sum them over the workers
    /// in a fixed tree, multiply by `scale` and apply them through `store`. Every rank calls
    /// it, a pure shard with empty `grads`.
    ///
    /// # Errors
    /// As [`SparseShards::pull`].
    pub fn push(
        &mut self,
        c: &mut Communicator,
        grads: &[SparseRows],
        scale: f32,
        store: Option<&mut dyn RowStore>,
    ) -> Result<(), CollectiveError> {
        let calls = self.begin(c, Op::PsPush)?;
        let me = c.rank();
        let is_worker = self.workers.contains(&me);
        let ids: Vec<Vec<u64>> = grads.iter().map(|g| g.ids.clone()).collect();
        self.check_request(c, &calls, &ids, is_worker, store.is_some())?;
        if is_worker
            && grads
                .iter()
                .zip(&self.widths)
                .any(|(g, &w)| g.dim != w || !g.is_valid())
        {
            return Err(c.invalid(&calls.rows, "gradient rows do not fit the tables".into()));
        }
        let parts = self.split_rows(grads);
        if is_worker {
            for (s, &rank) in self.shards.iter().enumerate().filter(|(_, &r)| r != me) {
                let ids: Vec<Vec<u64>> = parts[s].iter().map(|p| p.ids.clone()).collect();
                self.send_ids(c, &calls, rank, &ids)?;
                let flat: Vec<f32> = parts[s]
                    .iter()
                    .flat_map(|p| p.values.iter().copied())
                    .collect();
                if !flat.is_empty() {
                    c.send_from(&calls.rows, rank, bytemuck::cast_slice(&flat))?;
                }
            }
        }
        let (Some(s), Some(store)) = (self.shards.iter().position(|&r| r == me), store) else {
            return Ok(());
        };
        let mut from: Vec<Vec<SparseRows>> = Vec::with_capacity(self.workers.len());
        for &w in &self.workers {
            if w == me {
                from.push(parts[s].clone());
                continue;
            }
            let ids = self.recv_ids(c, &calls, w, s)?;
            let n: usize = ids.iter().zip(&self.widths).map(|(l, w)| l.len() * w).sum();
            let mut flat = vec![0.0f32; n];
            if n > 0 {
                c.recv_slice(&calls.rows, w, bytemuck::cast_slice_mut(&mut flat))?;
            }
            from.push(self.unflatten(&ids, flat));
        }
        for t in 0..self.widths.len() {
            let contributions: Vec<SparseRows> = from.iter().map(|f| f[t].clone()).collect();
            if let Some(mut sum) = tree_sum(&contributions) {
                if scale != 1.0 {
                    sum.scale(scale);
                }
                if !sum.is_empty() {
                    store.apply(t, &sum);
                }
            }
        }
        Ok(())
    }

    /// Every shard's held ids (`held`: per table, ascending) at worker `root`, merged into one
    /// ascending list per table (empty on the other ranks): the ids a following
    /// [`SparseShards::pull`] reads to export whole tables. Every rank calls it.
    ///
    /// # Errors
    /// A link failure (naming the peer); [`CollectiveError::Invalid`] for a shard's malformed
    /// list or a shard rank without `held`.
    pub fn gather_ids(
        &mut self,
        c: &mut Communicator,
        held: Option<Vec<Vec<u64>>>,
        root: usize,
    ) -> Result<Vec<Vec<u64>>, CollectiveError> {
        let calls = self.begin(c, Op::PsState)?;
        let me = c.rank();
        let shard = self.shards.contains(&me);
        if shard && held.as_ref().is_none_or(|h| h.len() != self.widths.len()) {
            return Err(c.invalid(&calls.counts, "a shard rank without its id lists".into()));
        }
        if shard && me != root {
            self.send_ids(c, &calls, root, held.as_deref().unwrap_or_default())?;
        }
        if me != root {
            return Ok(Vec::new());
        }
        let mut out = vec![Vec::new(); self.widths.len()];
        for (s, &rank) in self.shards.iter().enumerate() {
            let ids = match rank == me {
                true => held.clone().unwrap_or_default(),
                false => self.recv_ids(c, &calls, rank, s)?,
            };
            out.iter_mut().zip(ids).for_each(|(o, l)| o.extend(l));
        }
        out.iter_mut().for_each(|l| l.sort_unstable());
        Ok(out)
    }

    /// Every shard's 32-byte summary (`mine` on a shard) at every worker, in shard order (the
    /// tables' share of the final weights hash). Every rank calls it.
    ///
    /// # Errors
    /// A link failure, naming the peer.
    pub fn share_digests(
        &mut self,
        c: &mut Communicator,
        mine: [u8; 32],
    ) -> Result<Vec<[u8; 32]>, CollectiveError> {
        let call = c.begin(Op::PsState, fingerprint_dims(&[32]), DType::U8.to_wire())?;
        let me = c.rank();
        if self.shards.contains(&me) {
            for &w in self.workers.iter().filter(|&&w| w != me) {
                c.send_from(&call, w, &mine)?;
            }
        }
        if !self.workers.contains(&me) {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(self.shards.len());
        for &s in &self.shards {
            let mut d = [0u8; 32];
            match s == me {
                true => d = mine,
                false => c.recv_slice(&call, s, &mut d)?,
            }
            out.push(d);
        }
        Ok(out)
    }

    fn check_request(
        &self,
        c: &Communicator,
        calls: &Calls,
        ids: &[Vec<u64>],
        is_worker: bool,
        has_store: bool,
    ) -> Result<(), CollectiveError> {
        if self.shards.contains(&c.rank()) && !has_store {
            return Err(c.invalid(&calls.counts, "a shard rank without its rows".into()));
        }
        if !is_worker {
            return Ok(());
        }
        if ids.len() != self.widths.len() {
            let why = format!("{} id lists for {} tables", ids.len(), self.widths.len());
            return Err(c.invalid(&calls.counts, why));
        }
        if ids.iter().any(|l| l.windows(2).any(|w| w[0] >= w[1])) {
            return Err(c.invalid(&calls.ids, "ids must be ascending and unique".into()));
        }
        Ok(())
    }

    fn send_ids(
        &self,
        c: &mut Communicator,
        calls: &Calls,
        rank: usize,
        ids: &[Vec<u64>],
    ) -> Result<(), CollectiveError> {
        let counts: Vec<u64> = ids.iter().map(|l| l.len() as u64).collect();
        c.send_from(&calls.counts, rank, bytemuck::cast_slice(&counts))?;
        let flat: Vec<u64> = ids.iter().flatten().copied().collect();
        if !flat.is_empty() {
            c.send_from(&calls.ids, rank, bytemuck::cast_slice(&flat))?;
        }
        Ok(())
    }

    /// Receive worker `w`'s ids for shard `s`, checked: ascending, owned by `s`, bounded.
    fn recv_ids(
        &self,
        c: &mut Communicator,
        calls: &Calls,
        w: usize,
        s: usize,
    ) -> Result<Vec<Vec<u64>>, CollectiveError> {
        let mut counts = vec![0u64; self.widths.len()];
        c.recv_slice(&calls.counts, w, bytemuck::cast_slice_mut(&mut counts))?;
        let total: u64 = counts.iter().sum();
        let name = c.group().name(w).to_string();
        if total > MAX_IDS {
            return Err(c.invalid(&calls.counts, format!("{name} announced {total} ids")));
        }
        let mut flat = vec![0u64; total as usize];
        if total > 0 {
            c.recv_slice(&calls.ids, w, bytemuck::cast_slice_mut(&mut flat))?;
        }
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0;
        for &n in &counts {
            let list = flat[at..at + n as usize].to_vec();
            at += n as usize;
            let sorted = list.windows(2).all(|p| p[0] < p[1]);
            if !sorted || list.iter().any(|&id| self.owner(id) != s) {
                let why = format!("{name} sent ids that are not ascending or not this shard's");
                return Err(c.invalid(&calls.ids, why));
            }
            out.push(list);
        }
        Ok(out)
    }

    fn read_rows(&self, store: &mut dyn RowStore, ids: &[Vec<u64>]) -> Vec<SparseRows> {
        ids.iter()
            .enumerate()
            .map(|(t, list)| {
                let mut values = Vec::new();
                store.read(t, list, &mut values);
                SparseRows {
                    dim: self.widths[t],
                    ids: list.clone(),
                    values,
                }
            })
            .collect()
    }

    fn unflatten(&self, ids: &[Vec<u64>], flat: Vec<f32>) -> Vec<SparseRows> {
        let mut at = 0;
        ids.iter()
            .zip(&self.widths)
            .map(|(list, &w)| {
                let n = list.len() * w;
                let values = flat[at..at + n].to_vec();
                at += n;
                SparseRows {
                    dim: w,
                    ids: list.clone(),
                    values,
                }
            })
            .collect()
    }

    fn split_rows(&self, grads: &[SparseRows]) -> Vec<Vec<SparseRows>> {
        let mut out: Vec<Vec<SparseRows>> = (0..self.shards.len())
            .map(|_| self.widths.iter().map(|&w| SparseRows::empty(w)).collect())
            .collect();
        for (t, g) in grads.iter().enumerate() {
            for (i, &id) in g.ids.iter().enumerate() {
                let p = &mut out[self.owner(id)][t];
                p.ids.push(id);
                p.values.extend_from_slice(g.row(i));
            }
        }
        out
    }

    /// Merge the shards' answers into one ascending list per table.
    fn gather(&self, per_shard: Vec<Vec<SparseRows>>) -> Vec<SparseRows> {
        (0..self.widths.len())
            .map(|t| {
                let mut all: Vec<(u64, usize, usize)> = Vec::new();
                for (s, rows) in per_shard.iter().enumerate() {
                    if let Some(r) = rows.get(t) {
                        all.extend(r.ids.iter().enumerate().map(|(i, &id)| (id, s, i)));
                    }
                }
                all.sort_unstable();
                let mut out = SparseRows::empty(self.widths[t]);
                for (id, s, i) in all {
                    out.ids.push(id);
                    out.values.extend_from_slice(per_shard[s][t].row(i));
                }
                out
            })
            .collect()
    }
}
