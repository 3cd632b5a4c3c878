//! Embedding tables in a round: the hybrid of allreduce (the dense part of the model) and a
//! sharded parameter server (the tables), on one data mesh.
//!
//! With allreduce the tables are sharded over the workers themselves (each worker is also a
//! shard, [`lockstep_collective::SparseShards`]: row `id` on worker `mix64(id) % workers`), so
//! a table is spread over every worker's memory and no process holds all of it. The `Aggregator`
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
//!    brings every shard's rows to the first worker (it writes them beside the model, see
//!    [`crate::job::model_tables`]) and every shard's digest to every worker for the final
//!    weights hash.
//!
//! With `aggregation = "parameter-server"` and nodes with `roles = ["server"]`, the server nodes
//! are the tables' shards instead (and the dense part goes through the dense parameter server):
//! each server runs [`SparseSide::serve_round`] around its dense step.

mod parts;
mod store;

pub(crate) use parts::{has_parts as has_table_parts, list as table_parts};

pub(crate) use store::{add_mod, Tables};

use crate::error::{RuntimeError, TrainingError};
use crate::manifest::Manifest;
use actix::Message;
use lockstep_collective::{Communicator, RowStore, SparseRows, SparseShards};
use lockstep_trainer::model::embedding::{RowOptimizer, TableInfo, TableOptimizerSpec};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// A request from `Compute` to the aggregator's tables side.
pub(crate) enum SparseOp {
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
    /// Write this rank's part of the tables into checkpoint `dir` (after the round's push; a
    /// rank that is no shard writes nothing).
    Checkpoint {
        /// The checkpoint round.
        round: u64,
        /// The checkpoint directory.
        dir: std::path::PathBuf,
    },
    /// Every shard's digest, combined (see [`Tables::digest`]), and on the first worker every
    /// table's rows (ascending ids; empty lists elsewhere).
    Digest {
        /// Where the combined digest and the rows go.
        reply: SyncSender<Result<Finale, RuntimeError>>,
    },
}

/// The tables at the end of a run: the combined digest, and on the first worker every row.
pub(crate) type Finale = ([u8; 32], Vec<SparseRows>);

impl Message for SparseOp {
    type Result = ();
}

/// The tables' side for `model` on a worker of `workers`; `None` for a model without tables.
///
/// With `resume` (a checkpoint directory), each shard takes the rows it owns from the
/// checkpoint's table parts (see `parts.rs`), whatever the number of shards that wrote them.
///
/// # Errors
/// As [`SparseSide::new`]; the checkpoint's parts missing or not fitting. Also a run that
/// starts after round 0 without a checkpoint (an elastic epoch), `[job.elastic]` (which would
/// move rows between shards) and checkpoints on object storage (every shard writes its part
/// into the checkpoint directory).
pub(crate) fn for_model(
    m: &Manifest,
    model: &mut dyn lockstep_trainer::model::Model,
    (workers, world, rank): (usize, usize, usize),
    (first_round, resume): (u64, Option<&std::path::Path>),
) -> Result<Option<SparseSide>, RuntimeError> {
    let Some(s) = model.sparse() else {
        return Ok(None);
    };
    if m.elastic().is_some() {
        return Err(TrainingError::TablesNotElastic.into());
    }
    if let Some(dir) = m.job.checkpoint.remote() {
        return Err(TrainingError::TablesRemoteCheckpoint { dir }.into());
    }
    if first_round > 0 && resume.is_none() {
        return Err(TrainingError::TablesNotResumable { round: first_round }.into());
    }
    let mut side = SparseSide::new(m, s.tables(), (workers, world, rank))?;
    if let Some(dir) = resume {
        side.restore(dir, rank)?;
    }
    Ok(Some(side))
}

/// The tables' side of a worker's aggregator.
pub(crate) struct SparseSide {
    layout: SparseShards,
    /// Ranks below this are workers.
    workers: usize,
    tables: Option<Tables>,
    lr: Option<f32>,
    wait: Duration,
    rounds: u64,
    sent: u64,
    /// On a server node: the scale of the summed pushes (as the workers' `Compute` sets it).
    server_scale: f32,
}

impl SparseSide {
    /// The side of rank `rank` of a mesh of `world` ranks whose first `workers` are workers.
    /// With `aggregation = "allreduce"` every worker is also a shard of `tables`; with
    /// `"parameter-server"` the server nodes (ranks `workers..world`) are the shards.
    ///
    /// # Errors
    /// [`TrainingError`] naming `job.aggregation` for a parameter server without server
    /// nodes (the coordinator does not serve tables), or `embeddings[i].buckets` when a table
    /// has fewer rows than there are shards.
    pub(crate) fn new(
        m: &Manifest,
        tables: &[TableInfo],
        (workers, world, rank): (usize, usize, usize),
    ) -> Result<Self, RuntimeError> {
        let servers = m.nodes_with(crate::manifest::Role::Server).len();
        let shards: Vec<usize> = match m.job.aggregation {
            crate::manifest::Aggregation::Allreduce => (0..workers).collect(),
            _ if servers == 0 => return Err(TrainingError::TablesNeedServers.into()),
            _ => (workers..world).collect(),
        };
        if let Some((i, t)) = tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.buckets.is_some_and(|b| b < shards.len() as u64))
        {
            return Err(TrainingError::TooFewBuckets {
                index: i,
                column: t.column.clone(),
                rows: t.buckets.unwrap_or(0),
                shards: shards.len(),
            }
            .into());
        }
        let spec = m
            .job
            .model
            .table_optimizer
            .clone()
            .unwrap_or_else(TableOptimizerSpec::sgd);
        let widths = tables.iter().map(|t| t.width).collect();
        let all: Vec<usize> = (0..workers).collect();
        let layout = SparseShards::new(widths, &shards, &all, world)?;
        let optimizer = RowOptimizer::new(spec.kind);
        let decay = spec.decay.unwrap_or(0.0);
        Ok(SparseSide {
            tables: shards
                .contains(&rank)
                .then(|| Tables::new(tables, m.job.seed, optimizer, decay)),
            layout,
            workers,
            lr: spec.lr,
            wait: Duration::from_millis(m.cluster.peer_timeout_ms) * 2 + Duration::from_secs(10),
            rounds: 0,
            sent: 0,
            server_scale: match m.job.micro_batches {
                0 => 1.0 / workers.max(1) as f32,
                _ => 1.0,
            },
        })
    }

    /// How long `Compute` may wait for a pull: twice the peer timeout and some slack (a dead
    /// peer fails the exchange within one peer timeout).
    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }

    /// Run `op` over `comm`. A pull's or digest's result goes to its reply; a push's error is
    /// returned (nobody waits for a push).
    ///
    /// # Errors
    /// A failed push (the collective's error, naming the peer and round).
    pub(crate) fn run(
        &mut self,
        comm: &mut Communicator,
        op: SparseOp,
    ) -> Result<(), RuntimeError> {
        let before = sent_bytes(comm);
        match op {
            SparseOp::Pull { round, ids, reply } => {
                comm.set_round(round);
                let store = self.tables.as_mut().map(|t| t as &mut dyn RowStore);
                let rows = self.layout.pull(comm, &ids, store);
                let _ = reply.send(rows.map_err(RuntimeError::from));
            }
            SparseOp::Push {
                round,
                grads,
                lr,
                scale,
            } => {
                comm.set_round(round);
                if let Some(t) = self.tables.as_mut() {
                    t.lr = self.lr.unwrap_or(lr);
                    t.round = round;
                }
                let store = self.tables.as_mut().map(|t| t as &mut dyn RowStore);
                self.layout.push(comm, &grads, scale, store)?;
                self.rounds += 1;
            }
            SparseOp::Checkpoint { round, dir } => {
                comm.set_round(round);
                self.write_part(&dir, comm.rank())?;
                return Ok(());
            }
            SparseOp::Digest { reply } => {
                let digest = self
                    .export(comm)
                    .and_then(|rows| Ok((self.digest(comm)?, rows)));
                self.log_totals(); // before the reply: the node may end right after it
                let _ = reply.send(digest);
                return Ok(());
            }
        }
        self.sent += sent_bytes(comm) - before;
        Ok(())
    }

    /// A server node's part of round `plan` around the dense step `dense`: serve the pull, run
    /// `dense`, apply the push, serve the held-out pull of an evaluating round (the order every
    /// worker's aggregator runs them in).
    ///
    /// # Errors
    /// A failed exchange or dense step.
    pub(crate) fn serve_round(
        &mut self,
        comm: &mut Communicator,
        plan: &crate::control::protocol::RoundPlan,
        dense: impl FnOnce(&mut Communicator) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let round = plan.round;
        let (reply, _rx) = std::sync::mpsc::sync_channel(1);
        let pull = SparseOp::Pull {
            round,
            ids: Vec::new(),
            reply,
        };
        self.run(comm, pull)?;
        dense(comm)?;
        let push = SparseOp::Push {
            round,
            grads: Vec::new(),
            lr: plan.lr,
            scale: self.server_scale,
        };
        self.run(comm, push)?;
        if let Some(c) = &plan.checkpoint {
            let dir = crate::checkpoint::dir_for(std::path::Path::new(&c.root), round + 1);
            self.write_part(&dir, comm.rank())?;
        }
        if plan.evaluate {
            let (reply, _rx) = std::sync::mpsc::sync_channel(1);
            let pull = SparseOp::Pull {
                round,
                ids: Vec::new(),
                reply,
            };
            self.run(comm, pull)?;
        }
        Ok(())
    }

    /// Write this rank's part of the tables into checkpoint `dir`, if it is a shard.
    ///
    /// # Errors
    /// [`RuntimeError::Io`] naming the file.
    pub(crate) fn write_part(
        &self,
        dir: &std::path::Path,
        rank: usize,
    ) -> Result<(), RuntimeError> {
        let shards = self.layout.shards();
        match (self.tables.as_ref(), shards.iter().position(|&r| r == rank)) {
            (Some(t), Some(k)) => parts::write(dir, k, shards.len(), t),
            _ => Ok(()),
        }
    }

    /// Take the rows this rank owns from checkpoint `dir`'s table parts.
    fn restore(&mut self, dir: &std::path::Path, rank: usize) -> Result<(), RuntimeError> {
        let layout = &self.layout;
        let (Some(t), Some(k)) = (
            self.tables.as_mut(),
            layout.shards().iter().position(|&r| r == rank),
        ) else {
            return Ok(());
        };
        let kept = parts::restore(dir, t, |id| layout.owner(id) == k)?;
        tracing::info!(rows = kept, "embedding rows taken from {}", dir.display());
        Ok(())
    }

    /// A server node's part of the final digest exchange.
    ///
    /// # Errors
    /// A failed exchange.
    pub(crate) fn serve_digest(&mut self, comm: &mut Communicator) -> Result<(), RuntimeError> {
        self.export(comm)?;
        self.digest(comm).map(|_| self.log_totals())
    }

    /// Every table's rows at the first worker (rank 0): the shards' held ids gathered there,
    /// then pulled like a batch's. Every rank calls it; the rows are empty except on rank 0.
    fn export(&mut self, comm: &mut Communicator) -> Result<Vec<SparseRows>, RuntimeError> {
        let held = self.tables.as_ref().map(Tables::held_ids);
        let ids = self.layout.gather_ids(comm, held, 0)?;
        let tables = self.layout.tables();
        let ids = match comm.rank() {
            r if r >= self.workers => Vec::new(), // a server: serves, asks nothing
            0 => ids,
            _ => vec![Vec::new(); tables],
        };
        let store = self.tables.as_mut().map(|t| t as &mut dyn RowStore);
        let rows = self.layout.pull(comm, &ids, store)?;
        Ok(if comm.rank() == 0 { rows } else { Vec::new() })
    }

    fn digest(&mut self, comm: &mut Communicator) -> Result<[u8; 32], RuntimeError> {
        let mine = self.tables.as_ref().map_or([0; 32], Tables::digest);
        let parts = self.layout.share_digests(comm, mine)?;
        let mut acc = [0u8; 32];
        parts.iter().for_each(|p| add_mod(&mut acc, p));
        Ok(acc)
    }

    fn log_totals(&self) {
        let (rows, bytes) = self
            .tables
            .as_ref()
            .map_or((0, 0), |t| (t.rows(), t.bytes()));
        tracing::info!(
            rows_held = rows,
            bytes_held = bytes,
            rounds = self.rounds,
            sparse_bytes_sent = self.sent,
            sparse_bytes_per_round = self.sent / self.rounds.max(1),
            "embedding tables: this shard holds {} rows ({} bytes); sent {} bytes of pulls and pushes over {} rounds ({} per round)",
            rows,
            bytes,
            self.sent,
            self.rounds,
            self.sent / self.rounds.max(1)
        );
    }
}

fn sent_bytes(comm: &Communicator) -> u64 {
    comm.traffic().snapshot().iter().map(|(s, _)| s).sum()
}
