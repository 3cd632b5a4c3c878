//! `StreamSource` cuts an (unbounded) `RowSource` (any `RecordBatchSource`, or rows converted on
//! arrival) into sharded
//! global batches in arrival order. Two shapes: every rank reads the same stream and takes its
//! shard ([`StreamSource::new`]), or each rank's source already holds only its own share, as the
//! Arrow IPC ingest does when producers send their rows straight to the worker that trains on them
//! ([`StreamSource::local_shard`]).

use super::cursor::{BatchSource, DataCursor, ShardBatch};
use super::error::DataError;
use super::shard::{shard_range, shard_scale};
use super::source::RowSource;
use super::table::{Fitted, Table};
use crate::batch::Targets;

/// A `BatchSource` over a `RowSource`, in arrival order (no shuffle): global batch `n` is
/// rows `n*B .. (n+1)*B` of the stream; the cursor's epoch stays 0.
pub struct StreamSource<R: RowSource> {
    source: R,
    fitted: Fitted,
    global_batch: usize,
    rank: usize,
    world: usize,
    pending: Option<Table>,
    cursor: DataCursor,
    /// The source holds only this rank's share: take `global_batch / world` rows per round and
    /// never hand out a partial round.
    local: bool,
}

impl<R: RowSource> StreamSource<R> {
    /// A stream source for `rank` of `world`, global batches of `global_batch` rows.
    ///
    /// # Errors
    /// `Source` for a zero batch size or `rank >= world`.
    pub fn new(
        source: R,
        fitted: Fitted,
        global_batch: usize,
        rank: usize,
        world: usize,
    ) -> Result<Self, DataError> {
        if global_batch == 0 || rank >= world {
            return Err(DataError::Source {
                file: source.name().to_string(),
                message: format!(
                    "global batch {global_batch}, rank {rank} of {world} is not a valid sharding"
                ),
            });
        }
        Ok(StreamSource {
            source,
            fitted,
            global_batch,
            rank,
            world,
            pending: None,
            cursor: DataCursor::default(),
            local: false,
        })
    }

    /// A source whose record batches are already this rank's share of every global batch (in
    /// order): each round takes `global_batch / world` rows of it, and a last, partial share
    /// ends the stream instead of becoming a round. `first_round` numbers the cursor (resume).
    ///
    /// # Errors
    /// As [`StreamSource::new`], and `Source` when `world` does not divide `global_batch`.
    pub fn local_shard(
        source: R,
        fitted: Fitted,
        global_batch: usize,
        rank: usize,
        world: usize,
        first_round: u64,
    ) -> Result<Self, DataError> {
        let mut s = Self::new(source, fitted, global_batch, rank, world)?;
        if !global_batch.is_multiple_of(world) {
            return Err(DataError::Source {
                file: s.source.name().to_string(),
                message: format!("{world} ranks cannot share a global batch of {global_batch}"),
            });
        }
        s.local = true;
        s.cursor.batch_in_epoch = first_round;
        Ok(s)
    }

    fn want(&self) -> usize {
        if self.local {
            self.global_batch / self.world
        } else {
            self.global_batch
        }
    }

    /// Buffers rows until a global batch is available (or the stream ends); returns the buffer.
    fn fill(&mut self) -> Result<Option<Table>, DataError> {
        let mut buf = self.pending.take();
        while buf.as_ref().map_or(0, |t| t.rows) < self.want() {
            let Some(t) = self.source.next_rows(&self.fitted)? else {
                break;
            };
            buf = Some(match buf {
                None => t,
                Some(b) => append(b, t),
            });
        }
        Ok(buf.filter(|t| t.rows > 0))
    }
}

impl<R: RowSource> StreamSource<R> {
    /// The next round from a rank-local buffer: all of it is this rank's share.
    fn next_local(&mut self, mut buf: Table) -> Option<ShardBatch> {
        let want = self.want();
        if buf.rows < want {
            return None;
        }
        if buf.rows > want {
            self.pending = Some(buf.split_off(want));
        }
        let batch = buf.into_batch();
        let cursor = self.cursor;
        self.cursor.batch_in_epoch += 1;
        Some(ShardBatch {
            batch,
            cursor,
            global_rows: self.global_batch,
            scale: 1.0,
        })
    }
}

fn append(mut a: Table, b: Table) -> Table {
    a.x.extend_from_slice(&b.x);
    a.rows += b.rows;
    a.y = match (a.y, b.y) {
        (Targets::Real(mut u), Targets::Real(v)) => {
            u.extend(v);
            Targets::Real(u)
        }
        (Targets::Class(mut u), Targets::Class(v)) => {
            u.extend(v);
            Targets::Class(u)
        }
        (u, _) => u,
    };
    a
}

impl<R: RowSource> BatchSource for StreamSource<R> {
    fn name(&self) -> &str {
        self.source.name()
    }

    fn cols(&self) -> usize {
        self.fitted.features.width()
    }

    fn next_shard(&mut self) -> Result<Option<ShardBatch>, DataError> {
        let Some(mut buf) = self.fill()? else {
            return Ok(None);
        };
        if self.local {
            return Ok(self.next_local(buf));
        }
        let global_rows = buf.rows.min(self.global_batch);
        let mine: Vec<usize> = shard_range(global_rows, self.rank, self.world).collect();
        let batch = buf.batch(&mine);
        if buf.rows > global_rows {
            self.pending = Some(buf.split_off(global_rows));
        }
        let cursor = self.cursor;
        self.cursor.batch_in_epoch += 1;
        Ok(Some(ShardBatch {
            batch,
            cursor,
            global_rows,
            scale: shard_scale(global_rows, self.rank, self.world),
        }))
    }

    fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Moves forward by reading and dropping batches; a stream cannot go back.
    fn seek(&mut self, cursor: DataCursor) -> Result<(), DataError> {
        if cursor.epoch != 0 || cursor < self.cursor {
            return Err(DataError::Source {
                file: self.source.name().to_string(),
                message: format!(
                    "cannot seek a stream back from {:?} to {cursor:?}",
                    self.cursor
                ),
            });
        }
        while self.cursor < cursor {
            if self.next_shard()?.is_none() {
                return Err(DataError::Source {
                    file: self.source.name().to_string(),
                    message: format!("stream ended before {cursor:?}"),
                });
            }
        }
        Ok(())
    }
}
