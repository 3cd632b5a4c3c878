//! `Compute`'s side of embedding tables (see [`crate::ps::sparse`]): pull the rows a batch needs
//! before forward, push the touched rows' gradients after backward, pull the held-out rows
//! before evaluating, and fold the tables' digest into the final weights hash. Models without
//! tables skip all of it.

use super::super::deliver;
use super::Compute;
use crate::error::{ActorError, MismatchError, RuntimeError, TrainingError};
use crate::ps::sparse::SparseOp;
use actix::Recipient;
use lockstep_trainer::Batch;
use sha2::{Digest, Sha256};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;

/// Where table exchanges go (the aggregator) and how long a pull may take.
pub(super) type SparseLink = (Recipient<SparseOp>, Duration);

impl Compute {
    /// Exchange embedding tables through `link` (from the aggregator's [`crate::ps::sparse::SparseSide`]).
    pub(crate) fn with_sparse_link(mut self, link: Option<SparseLink>) -> Self {
        self.sparse_link = link;
        self
    }

    fn link(&self, round: u64) -> Result<&SparseLink, RuntimeError> {
        self.sparse_link
            .as_ref()
            .ok_or_else(|| MismatchError::NoTableExchange { round }.into())
    }

    /// Pull the rows `batch` looks up and hand them to the model; nothing without tables.
    ///
    /// # Errors
    /// A bad id (named by column and row), a failed exchange, or no answer within the wait.
    pub(super) fn sparse_pull(&mut self, round: u64, batch: &Batch) -> Result<(), RuntimeError> {
        let Some(model) = self.model.sparse() else {
            return Ok(());
        };
        let ids = model
            .batch_ids(&batch.x, batch.rows)
            .map_err(TrainingError::step(round, None))?;
        let (to, wait) = self.link(round)?.clone();
        let (reply, rx) = sync_channel(1);
        deliver(&to, SparseOp::Pull { round, ids, reply }, "a table pull")?;
        let rows = match rx.recv_timeout(wait) {
            Ok(r) => r?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(RuntimeError::Timeout {
                    doing: format!("round {round}: pulling embedding rows"),
                    ms: wait.as_millis() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ActorError::Dropped {
                    round,
                    actor: "the aggregator",
                    what: "a table pull",
                }
                .into())
            }
        };
        let model = self.model.sparse().expect("checked above");
        model
            .install_rows(rows)
            .map_err(TrainingError::step(round, None))?;
        Ok(())
    }

    /// Push the gradients of the rows this round touched; nothing without tables.
    ///
    /// # Errors
    /// The aggregator is gone.
    pub(super) fn sparse_push(&mut self, round: u64, lr: f32) -> Result<(), RuntimeError> {
        let Some(model) = self.model.sparse() else {
            return Ok(());
        };
        let grads = model.take_grads();
        // Micro-batches: gradients are already divided by the global batch and summed;
        // otherwise each worker's is a mean over its shard and the shards' sum is divided here.
        let scale = match self.micro {
            0 => 1.0 / self.world as f32,
            _ => 1.0,
        };
        let (to, _) = self.link(round)?;
        let op = SparseOp::Push {
            round,
            grads,
            lr,
            scale,
        };
        deliver(to, op, "a table push")
    }

    /// After the push of a checkpoint round: every shard writes its part of the tables into the
    /// checkpoint's directory (the aggregator's mailbox orders it after the push).
    ///
    /// # Errors
    /// The aggregator is gone.
    pub(super) fn sparse_checkpoint(
        &mut self,
        round: u64,
        plan: Option<&crate::control::protocol::CheckpointPlan>,
    ) -> Result<(), RuntimeError> {
        let (Some(plan), Some(_)) = (plan, self.model.sparse()) else {
            return Ok(());
        };
        let dir = crate::checkpoint::dir_for(std::path::Path::new(&plan.root), round + 1);
        let (to, _) = self.link(round)?;
        deliver(
            to,
            SparseOp::Checkpoint { round, dir },
            "a table checkpoint",
        )
    }

    /// Before held-out evaluation: pull every row the held-out set looks up.
    ///
    /// # Errors
    /// As [`Compute::sparse_pull`].
    pub(super) fn sparse_pull_test(&mut self, round: u64) -> Result<(), RuntimeError> {
        if self.model.sparse().is_none() {
            return Ok(());
        }
        let test = std::mem::replace(&mut self.test, empty_batch());
        let res = self.sparse_pull(round, &test);
        self.test = test;
        res
    }

    /// The final weights hash: the dense parameters, then (with tables) the combined digest of
    /// every shard's rows. The first worker also writes every table's rows beside the model it
    /// saved (`model.tables.safetensors`).
    ///
    /// # Errors
    /// A failed exchange or no answer within the wait.
    pub(super) fn weights_hash(&mut self) -> Result<String, RuntimeError> {
        if self.model.sparse().is_none() {
            return Ok(crate::job::weights_sha256(self.model.params()));
        }
        let (to, wait) = self.link(self.next_round)?.clone();
        let (reply, rx) = sync_channel(1);
        deliver(&to, SparseOp::Digest { reply }, "a table digest request")?;
        let (digest, rows) = rx.recv_timeout(wait).map_err(|_| RuntimeError::Timeout {
            doing: "gathering the embedding tables' digest".into(),
            ms: wait.as_millis() as u64,
        })??;
        if let (Some(path), Some(model)) = (&self.saved_model, self.model.sparse()) {
            if !rows.is_empty() {
                crate::job::model_tables::write(path, model.tables(), &rows)?;
            }
        }
        let mut h = Sha256::new();
        self.model
            .params()
            .iter()
            .for_each(|p| h.update(p.to_le_bytes()));
        h.update(digest);
        Ok(hex::encode(h.finalize()))
    }
}

fn empty_batch() -> Batch {
    Batch {
        x: Vec::new(),
        rows: 0,
        cols: 0,
        y: lockstep_trainer::Targets::Real(Vec::new()),
    }
}
