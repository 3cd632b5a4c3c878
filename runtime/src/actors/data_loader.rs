//! `DataLoader`: this node's shard of each round's global batch, prefetched one round ahead.
//! Runs on its own `SyncArbiter` thread: assembling a batch copies rows, which is work that must
//! not sit on an arbiter thread.

use super::messages::{NextShard, Prefetch, SeekData};
use crate::error::RuntimeError;
use actix::{Actor, Handler, SyncContext};
use lockstep_trainer::data::{BatchSource, ShardBatch};

/// The data-loading actor over any [`BatchSource`] (a file table today, a stream tomorrow).
pub struct DataLoader {
    source: Box<dyn BatchSource>,
    ready: Option<ShardBatch>,
    round: u64,
}

impl DataLoader {
    /// A loader whose next shard is for `first_round`.
    pub fn new(source: Box<dyn BatchSource>, first_round: u64) -> Self {
        DataLoader {
            source,
            ready: None,
            round: first_round,
        }
    }

    fn produce(&mut self) -> Result<ShardBatch, RuntimeError> {
        self.source.next_shard()?.ok_or_else(|| {
            RuntimeError::Model(format!(
                "data source {} is exhausted at round {}",
                self.source.name(),
                self.round
            ))
        })
    }
}

impl Actor for DataLoader {
    type Context = SyncContext<Self>;
}

impl Handler<NextShard> for DataLoader {
    type Result = Result<ShardBatch, RuntimeError>;
    fn handle(&mut self, msg: NextShard, _: &mut SyncContext<Self>) -> Self::Result {
        if msg.round != self.round {
            return Err(RuntimeError::Inconsistent(format!(
                "data loader is at round {} but round {} was asked for",
                self.round, msg.round
            )));
        }
        let shard = match self.ready.take() {
            Some(s) => s,
            None => self.produce()?,
        };
        self.round += 1;
        Ok(shard)
    }
}

impl Handler<Prefetch> for DataLoader {
    type Result = ();
    fn handle(&mut self, _: Prefetch, _: &mut SyncContext<Self>) {
        if self.ready.is_none() {
            // An error here resurfaces on the next `NextShard`, which produces again.
            self.ready = self.produce().ok();
        }
    }
}

impl Handler<SeekData> for DataLoader {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: SeekData, _: &mut SyncContext<Self>) -> Self::Result {
        self.ready = None;
        self.source.seek(msg.cursor)?;
        Ok(())
    }
}
