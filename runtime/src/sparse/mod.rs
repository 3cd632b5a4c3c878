//! Embedding tables in a round: the hybrid of allreduce (the dense part of the model) and a
//! sharded parameter server (the tables), on one data mesh.
//!
//! The tables are sharded over the workers themselves (each worker is also a shard,
//! [`lockstep_collective::SparseShards`]: row `id` on worker `mix64(id) % workers`), so a
//! table is spread over every worker's memory and no process holds all of it. The `Aggregator`
//! owns the communicator, so it also runs the tables' exchanges ([`SparseSide`]); `Compute` asks
//! for them with [`SparseOp`] messages, which the aggregator's mailbox orders with the dense
//! buckets. A round on a worker:
//!
//! 1. `Compute` reads the batch's ids and sends [`SparseOp::Pull`], waiting (bounded) for the
//!    rows; every worker's aggregator pulls and serves at the same point;
//! 2. forward/backward; the dense buckets go to the aggregator and are allreduced as usual;
//! 3. `Compute` sends [`SparseOp::Push`] with the touched rows' gradients; each shard sums a
//!    row's gradients over the workers in a fixed tree and updates it with the sparse optimizer;
//! 4. held-out evaluation pulls the test rows the same way; at the end [`SparseOp::Digest`]
//!    brings every shard's digest to every worker for the final weights hash.
//!
//! Dedicated parameter-server nodes for tables are not wired yet: an embedding model trains
//! with `aggregation = "allreduce"` (checked in [`SparseSide::new`]).

mod store;

pub use store::{add_mod, Tables};

use crate::error::RuntimeError;
use crate::manifest::Manifest;
use actix::Message;
use lockstep_collective::{Communicator, RowStore, SparseRows, SparseShards};
use lockstep_trainer::model::embedding::{RowOptimizer, TableInfo, TableOptimizerSpec};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// A request from `Compute` to the aggregator's tables side.
pub enum SparseOp {
    /// Pull the rows of these ids (per table, ascending) for `round`.
    Pull {
        /// The round (for messages and frame headers).
        round: u64,
        /// Per table, the ids.
        ids: Vec<Vec<u64>>,
        /// Where the rows go.
        reply: SyncSender<Result<Vec<SparseRows>, RuntimeError>>,
    },
    /// Push the touched rows' gradients of `round`; shards apply `scale * sum` at `lr`.
    Push {
        /// The round.
        round: u64,
        /// Per table, the gradients.
        grads: Vec<SparseRows>,
        /// The round's learning rate (used unless the tables have their own).
        lr: f32,
        /// Multiplies the summed gradients (`1 / workers` without micro-batches).
        scale: f32,
    },
    /// Every shard's digest, combined (see [`Tables::digest`]).
    Digest {
        /// Where the combined digest goes.
        reply: SyncSender<Result<[u8; 32], RuntimeError>>,
    },
}

impl Message for SparseOp {
    type Result = ();
}

/// The tables' side for `model` on a worker of `workers`; `None` for a model without tables.
///
/// # Errors
/// As [`SparseSide::new`].
/// Also a run that starts after round 0 (`--resume`, a restart, an elastic epoch): checkpoints
/// hold the dense part only, so the tables' rows would silently start afresh; and
/// `[job.elastic]`, which would move rows between shards.
pub fn for_model(
    m: &Manifest,
    model: &mut dyn lockstep_trainer::model::Model,
    workers: usize,
    first_round: u64,
) -> Result<Option<SparseSide>, RuntimeError> {
    let Some(s) = model.sparse() else {
        return Ok(None);
    };
    if m.elastic().is_some() {
        return Err(RuntimeError::Model(
            "job.elastic: embedding tables do not move between workers yet; train them without \
             elastic membership"
                .into(),
        ));
    }
    if first_round > 0 {
        return Err(RuntimeError::Model(format!(
            "round {first_round}: embedding tables are not in checkpoints yet, so a run with \
             tables cannot resume or restart (the rows would start afresh); start it again from \
             round 0"
        )));
    }
    SparseSide::new(m, s.tables(), workers).map(Some)
}

/// The tables' side of a worker's aggregator.
pub struct SparseSide {
    layout: SparseShards,
    tables: Tables,
    lr: Option<f32>,
    wait: Duration,
    rounds: u64,
    sent: u64,
}

impl SparseSide {
    /// The side for a worker of `workers`, all of them shards of `tables`.
    ///
    /// # Errors
    /// [`RuntimeError::Model`] naming `job.aggregation` when it is not allreduce, or
    /// `embeddings[i].buckets` when a table has fewer rows than there are shards.
    pub fn new(m: &Manifest, tables: &[TableInfo], workers: usize) -> Result<Self, RuntimeError> {
        if m.job.aggregation != crate::manifest::Aggregation::Allreduce {
            return Err(RuntimeError::Model(
                "job.aggregation: embedding models train with \"allreduce\" (the tables are \
                 sharded over the workers; dedicated parameter-server nodes for tables are not \
                 supported yet)"
                    .into(),
            ));
        }
        if let Some((i, t)) = tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.buckets.is_some_and(|b| b < workers as u64))
        {
            return Err(RuntimeError::Model(format!(
                "job.model.embeddings[{i}].buckets: table {:?} has {} rows but {workers} shards \
                 (one per worker); use at least as many buckets as workers",
                t.column,
                t.buckets.unwrap_or(0)
            )));
        }
        let spec = m
            .job
            .model
            .table_optimizer
            .clone()
            .unwrap_or_else(TableOptimizerSpec::sgd);
        let widths = tables.iter().map(|t| t.width).collect();
        let all: Vec<usize> = (0..workers).collect();
        let layout = SparseShards::new(widths, &all, &all, workers)?;
        let optimizer = RowOptimizer::new(spec.kind);
        Ok(SparseSide {
            layout,
            tables: Tables::new(tables, m.job.seed, optimizer, spec.decay.unwrap_or(0.0)),
            lr: spec.lr,
            wait: Duration::from_millis(m.cluster.peer_timeout_ms) * 2 + Duration::from_secs(10),
            rounds: 0,
            sent: 0,
        })
    }

    /// How long `Compute` may wait for a pull: twice the peer timeout and some slack (a dead
    /// peer fails the exchange within one peer timeout).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Run `op` over `comm`. A pull's or digest's result goes to its reply; a push's error is
    /// returned (nobody waits for a push).
    ///
    /// # Errors
    /// A failed push (the collective's error, naming the peer and round).
    pub fn run(&mut self, comm: &mut Communicator, op: SparseOp) -> Result<(), RuntimeError> {
        let before = sent_bytes(comm);
        match op {
            SparseOp::Pull { round, ids, reply } => {
                comm.set_round(round);
                let store: &mut dyn RowStore = &mut self.tables;
                let rows = self.layout.pull(comm, &ids, Some(store));
                let _ = reply.send(rows.map_err(RuntimeError::from));
            }
            SparseOp::Push {
                round,
                grads,
                lr,
                scale,
            } => {
                comm.set_round(round);
                self.tables.lr = self.lr.unwrap_or(lr);
                self.tables.round = round;
                let store: &mut dyn RowStore = &mut self.tables;
                self.layout.push(comm, &grads, scale, Some(store))?;
                self.rounds += 1;
            }
            SparseOp::Digest { reply } => {
                let digest = self.digest(comm);
                self.log_totals(); // before the reply: the node may end right after it
                let _ = reply.send(digest);
                return Ok(());
            }
        }
        self.sent += sent_bytes(comm) - before;
        Ok(())
    }

    fn digest(&mut self, comm: &mut Communicator) -> Result<[u8; 32], RuntimeError> {
        let parts = self.layout.share_digests(comm, self.tables.digest())?;
        let mut acc = [0u8; 32];
        parts.iter().for_each(|p| add_mod(&mut acc, p));
        Ok(acc)
    }

    fn log_totals(&self) {
        tracing::info!(
            rows_held = self.tables.rows(),
            bytes_held = self.tables.bytes(),
            rounds = self.rounds,
            sparse_bytes_sent = self.sent,
            sparse_bytes_per_round = self.sent / self.rounds.max(1),
            "embedding tables: this shard holds {} rows ({} bytes); sent {} bytes of pulls and pushes over {} rounds ({} per round)",
            self.tables.rows(),
            self.tables.bytes(),
            self.sent,
            self.rounds,
            self.sent / self.rounds.max(1)
        );
    }
}

fn sent_bytes(comm: &Communicator) -> u64 {
    comm.traffic().snapshot().iter().map(|(s, _)| s).sum()
}
