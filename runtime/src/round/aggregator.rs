//! `Aggregator`: averages gradient buckets across the data mesh, on its own `SyncArbiter` thread
//! (collectives block on links). Each bucket is an owned piece of the round's one gradient
//! buffer: with allreduce it is reduced in place as soon as it arrives, so communication
//! overlaps the backprop of the next bucket; with a parameter server the whole gradient is
//! pushed and the new parameters pulled after the last bucket. After the last bucket the pieces
//! are joined again (no copy) and the buffer goes back to `Compute`.
//!
//! A failure is reported through the [`Reporter`] (the coordinator then stops every node); the
//! communicator stays poisoned, so later buckets fail at once with the same error.

use super::messages::*;
use super::{deliver, Reporter};
use crate::control::hang::{Doing, Thread};
use crate::error::{MismatchError, RuntimeError};
use actix::{Actor, Handler, SyncContext};
use lockstep_collective::{Algo, AllReduce, Communicator, ParameterServer};
use lockstep_tensor::{cast_slice, cast_slice_mut, BufferMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the aggregator averages.
pub(crate) enum Mode {
    /// Allreduce (mean) of each bucket among the workers.
    Allreduce,
    /// Allreduce (sum) by recursive doubling: with micro-batch gradients pre-scaled by the global
    /// batch, the order of additions is a fixed binary tree whatever the world size.
    AllreduceTreeSum,
    /// Push/pull through parameter server ranks.
    ParameterServer {
        /// The shard layout.
        ps: ParameterServer,
        /// Parameters as last pulled; shared with `Compute` for one round, then reused.
        params: Arc<Vec<f32>>,
        /// The optimizer's buffer names (to gather the servers' state for a checkpoint).
        buffers: Vec<String>,
    },
}

/// The aggregator actor.
pub(crate) struct Aggregator {
    comm: Communicator,
    mode: Mode,
    num_params: usize,
    pieces: Vec<BufferMut>,
    /// Consecutive buckets joined (no copy) until they reach `min_bucket` bytes.
    pending: Option<BufferMut>,
    min_bucket: usize,
    comm_time: Duration,
    reporter: Reporter,
    /// Embedding tables: this worker's shards and their exchanges (see [`crate::ps::sparse`]).
    sparse: Option<crate::ps::sparse::SparseSide>,
}

impl Aggregator {
    /// An aggregator over `comm` for `num_params` parameters.
    pub(crate) fn new(
        comm: Communicator,
        mode: Mode,
        num_params: usize,
        reporter: Reporter,
    ) -> Self {
        Aggregator {
            comm,
            mode,
            num_params,
            pieces: Vec::new(),
            pending: None,
            min_bucket: 0,
            comm_time: Duration::ZERO,
            reporter,
            sparse: None,
        }
    }

    /// Serve and exchange embedding tables (see [`crate::ps::sparse`]).
    pub(crate) fn with_sparse(mut self, sparse: Option<crate::ps::sparse::SparseSide>) -> Self {
        self.sparse = sparse;
        self
    }

    /// With tables: how long `Compute` may wait for a pull.
    pub(crate) fn sparse_wait(&self) -> Option<Duration> {
        self.sparse.as_ref().map(|s| s.wait())
    }

    /// Reduce consecutive model buckets together until they hold at least `bytes` (the size the
    /// cost model recommends so that a link's latency stays a small share of each transfer);
    /// 0 reduces every model bucket on its own. Joining pieces copies nothing.
    pub(crate) fn with_min_bucket(mut self, bytes: usize) -> Self {
        self.min_bucket = bytes;
        self
    }

    /// Add `piece` to the pending bucket; the buckets now due for reduction, in order. Small
    /// pieces are joined until they reach `min_bucket`; a piece that would make the join more
    /// than twice that size is not absorbed (the pending bucket goes first), so that a large
    /// layer's gradient still overlaps the backprop of the layers before it.
    fn coalesce(
        &mut self,
        round: u64,
        piece: BufferMut,
        last: bool,
    ) -> Result<Vec<BufferMut>, RuntimeError> {
        let mut ready = Vec::new();
        let pending = match self.pending.take() {
            None => piece,
            Some(p) if p.len() + piece.len() > 2 * self.min_bucket => {
                ready.push(p);
                piece
            }
            Some(mut p) => {
                p.unsplit(piece)
                    .map_err(|_| MismatchError::BucketsNotPieces { round })?;
                p
            }
        };
        if last || pending.len() >= self.min_bucket {
            ready.push(pending);
        } else {
            self.pending = Some(pending);
        }
        Ok(ready)
    }

    fn bucket(&mut self, msg: GradBucket) -> Result<(), RuntimeError> {
        let round = msg.round;
        let values = msg.data.len() / 4;
        if !msg.data.len().is_multiple_of(4)
            || msg.range.end > self.num_params
            || msg.range.len() != values
        {
            return Err(MismatchError::BucketMisfit {
                round,
                range: msg.range,
                bytes: msg.data.len(),
                params: self.num_params,
            }
            .into());
        }
        let ready = if matches!(self.mode, Mode::ParameterServer { .. }) {
            vec![msg.data]
        } else {
            self.coalesce(round, msg.data, msg.last.is_some())?
        };
        for mut data in ready {
            self.reduce_piece(round, &mut data)?;
            self.pieces.push(data);
        }
        let board = self.reporter.activity().clone();
        let Some(reply) = msg.last else {
            board.set(
                Thread::Aggregate,
                Doing::Idle,
                round,
                self.pieces.len() as u32,
            );
            return Ok(());
        };
        let grads = self.join(round)?;
        let (params, optimizer) = match &mut self.mode {
            Mode::ParameterServer {
                ps,
                params,
                buffers,
            } => {
                board.set(Thread::Aggregate, Doing::PushPull, round, 0);
                let started = Instant::now();
                self.comm.set_round(round);
                let g = cast_slice::<f32>(&grads).map_err(|source| MismatchError::Gradients {
                    round,
                    what: None,
                    source,
                })?;
                // Unique again once Compute dropped last round's handle; a copy only if not.
                let p = Arc::make_mut(params);
                ps.step(&mut self.comm, g, p, |_, _, _| {})?;
                let state = match msg.gather_state {
                    true => crate::ps::state::gather(ps, &mut self.comm, buffers, p.len())?,
                    false => None,
                };
                self.comm_time += started.elapsed();
                let r = &self.reporter;
                r.span(round, "aggregator", "push/pull", started, Instant::now());
                (Some(params.clone()), state)
            }
            _ => (None, None),
        };
        board.set(Thread::Aggregate, Doing::Idle, round, 0);
        let reduced = Reduced {
            round,
            grads,
            params,
            comm: std::mem::take(&mut self.comm_time),
            optimizer,
        };
        deliver(&reply, reduced, "the reduced gradients")
    }

    /// Allreduce one (possibly joined) bucket in place; nothing to do with a parameter server.
    fn reduce_piece(&mut self, round: u64, data: &mut BufferMut) -> Result<(), RuntimeError> {
        if !matches!(self.mode, Mode::Allreduce | Mode::AllreduceTreeSum) {
            return Ok(());
        }
        let grads = cast_slice_mut::<f32>(data).map_err(|source| MismatchError::Gradients {
            round,
            what: Some("bucket"),
            source,
        })?;
        let bucket = self.pieces.len() as u32;
        let board = self.reporter.activity();
        board.set(Thread::Aggregate, Doing::Allreduce, round, bucket);
        let started = Instant::now();
        self.comm.set_round(round);
        let how = match self.mode {
            Mode::AllreduceTreeSum => AllReduce::sum().algo(Algo::Tree),
            _ => AllReduce::mean(),
        };
        let len = grads.len();
        self.comm.allreduce(grads, how.shape(&[len]))?;
        self.comm_time += started.elapsed();
        if self.reporter.traced(round) {
            let name = format!("allreduce bucket {} ({} KiB)", self.pieces.len(), len / 256);
            let r = &self.reporter;
            r.span(round, "aggregator", &name, started, Instant::now());
        }
        Ok(())
    }

    /// Join the round's pieces back into the one buffer they were cut from.
    fn join(&mut self, round: u64) -> Result<BufferMut, RuntimeError> {
        let mut pieces = std::mem::take(&mut self.pieces).into_iter();
        let mut whole = pieces.next().ok_or(MismatchError::NoBucket { round })?;
        for p in pieces {
            whole
                .unsplit(p)
                .map_err(|_| MismatchError::BucketsNotPieces { round })?;
        }
        if whole.len() != self.num_params * 4 {
            return Err(MismatchError::BucketCoverage {
                round,
                covered: whole.len() / 4,
                params: self.num_params,
            }
            .into());
        }
        Ok(whole)
    }
}

impl Actor for Aggregator {
    type Context = SyncContext<Self>;
}

impl Handler<GradBucket> for Aggregator {
    type Result = ();
    fn handle(&mut self, msg: GradBucket, _: &mut SyncContext<Self>) {
        let round = msg.round;
        if self.reporter.failed() {
            return; // the node is stopping; the first error was reported
        }
        if let Err(e) = self.bucket(msg) {
            self.pieces.clear();
            self.pending = None;
            self.reporter.failed_or_lost(round, e);
        }
    }
}

impl Handler<crate::ps::sparse::SparseOp> for Aggregator {
    type Result = ();
    fn handle(&mut self, op: crate::ps::sparse::SparseOp, _: &mut SyncContext<Self>) {
        let round = self.comm.round();
        let Some(side) = self.sparse.as_mut() else {
            let e = MismatchError::NoTables.into();
            return self.reporter.fail(round, e);
        };
        if let Err(e) = side.run(&mut self.comm, op) {
            self.reporter.failed_or_lost(self.comm.round(), e);
        }
    }
}

impl Handler<SyncParams> for Aggregator {
    type Result = Result<Vec<f32>, RuntimeError>;
    fn handle(&mut self, mut msg: SyncParams, _: &mut SyncContext<Self>) -> Self::Result {
        match &mut self.mode {
            Mode::Allreduce | Mode::AllreduceTreeSum => {
                self.comm.set_round(0);
                self.comm.broadcast(&mut msg.params, 0)?;
            }
            // Servers hold the authoritative copy; every replica was initialised from the same
            // seed, which the coordinator checked at registration (same layout).
            Mode::ParameterServer { params, .. } => *params = Arc::new(msg.params.clone()),
        }
        Ok(msg.params)
    }
}
