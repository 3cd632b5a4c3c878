//! `DataLoader`: this node's shard of each round's global batch, produced one round ahead.
//! Runs on its own `SyncArbiter` thread: assembling a batch copies rows, which is work that must
//! not sit on an arbiter thread. `Compute` asks for round `r + 1` when it starts round `r`, so
//! the shard is ready (and moved, not copied) when the next round begins.

use super::deliver;
use super::messages::{Prefetch, SeekData, ShardReady};
use crate::control::hang::{Activity, Doing, Thread};
use crate::error::{MismatchError, RuntimeError, TrainingError};
use actix::{Actor, Handler, SyncContext};
use lockstep_trainer::data::{BatchSource, ShardBatch};

/// The data-loading actor over any [`BatchSource`] (a file table today, a stream tomorrow).
pub(crate) struct DataLoader {
    source: Box<dyn BatchSource>,
    round: u64,
    tracer: Option<crate::observe::trace::Tracer>,
    activity: Activity,
}

impl DataLoader {
    /// A loader whose next shard is for `first_round`.
    pub(crate) fn new(source: Box<dyn BatchSource>, first_round: u64) -> Self {
        DataLoader {
            source,
            round: first_round,
            tracer: None,
            activity: Activity::default(),
        }
    }

    /// Keep this thread's line on the worker's activity board.
    pub(crate) fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = activity;
        self
    }

    /// Record a `data` span per traced round (`--trace`).
    pub(crate) fn with_tracer(mut self, tracer: Option<crate::observe::trace::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    fn produce(&mut self, round: u64) -> Result<ShardBatch, RuntimeError> {
        if round != self.round {
            return Err(MismatchError::LoaderRound {
                at: self.round,
                asked: round,
            }
            .into());
        }
        let shard = self
            .source
            .next_shard()?
            .ok_or_else(|| TrainingError::Exhausted {
                data: self.source.name().to_string(),
                round,
            })?;
        self.round += 1;
        Ok(shard)
    }
}

impl Actor for DataLoader {
    type Context = SyncContext<Self>;
}

impl Handler<Prefetch> for DataLoader {
    type Result = ();
    fn handle(&mut self, msg: Prefetch, _: &mut SyncContext<Self>) {
        let started = std::time::Instant::now();
        let board = self.activity.clone();
        board.set(Thread::Data, Doing::NextBatch, msg.round, 0);
        let shard = self.produce(msg.round);
        board.set(Thread::Data, Doing::Idle, msg.round, 0);
        if let Some(t) = &self.tracer {
            t.span(
                msg.round,
                "data",
                "data",
                started,
                std::time::Instant::now(),
            );
        }
        let ready = ShardReady {
            round: msg.round,
            shard,
        };
        // A stopped compute actor means the node is shutting down: nothing left to tell.
        let _ = deliver(&msg.to, ready, "a data shard");
    }
}

impl Handler<SeekData> for DataLoader {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: SeekData, _: &mut SyncContext<Self>) -> Self::Result {
        self.source.seek(msg.cursor)?;
        Ok(())
    }
}
