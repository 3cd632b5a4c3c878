//! The rows a worker has received from its producers and not yet trained on: one bounded queue
//! per producer, their offsets and counters, and [`IngestRecords`], the `RowSource` that cuts them
//! into this worker's share of each round. The queues hold rows already converted by the job's
//! transform (the endpoint converts every batch on arrival to refuse bad values per producer), so
//! training takes them as they are.
//!
//! Offsets count rows: a producer's row `k` (from 0 at the start of its stream) has offset `k`.
//! `received` is the offset of the next new row; anything below it that arrives again (a replay
//! after a failover, or after `--resume`, where it starts at the checkpoint's committed offset)
//! is dropped and counted. With deterministic order round `r` takes rows
//! `r*b .. (r+1)*b` of every producer (`b` rows per producer per round), so the rounds a worker
//! can run are `min over its producers of received / b`, and the coordinator grants no round that
//! some worker could not fill. With arrival order each round takes this worker's share from
//! its producers' queues in arrival order, and the producers' offsets after each round are kept
//! until the round is reported ([`Ingest::offsets_after`]): they are what a checkpoint commits.

use super::error::Refusal;
use lockstep_trainer::data::{DataError, Fitted, Order, RowSource, Table};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the data loader waits for rows it was promised (granted rounds are available).
const TAKE_TIMEOUT: Duration = Duration::from_secs(600);

/// One producer as this worker sees it.
#[derive(Debug)]
pub(crate) struct ProducerState {
    /// Producer id.
    pub id: u32,
    queue: VecDeque<(u64, Table)>,
    queued_rows: usize,
    /// Offset of the next new row (everything below was received before, or committed).
    pub received: u64,
    /// Rows already handed to training (offset of the next row to train on).
    pub consumed: u64,
    /// Rows dropped as already received or trained.
    pub duplicates: u64,
    /// A connection for this id is open.
    pub connected: bool,
    /// It sent end-of-stream.
    pub closed: bool,
    /// Last time it was heard from (or the server started).
    pub last_seen: Instant,
    /// Its silence was already reported.
    pub silence_reported: bool,
    /// It has connected at least once since this worker started (before that,
    /// `connect_timeout_ms` applies instead of `on_silent`).
    pub seen: bool,
    /// Connection generation: a connection that took over a silent one bumps it, and the old
    /// one's rows are refused.
    pub generation: u64,
}

/// Counters a worker reports to the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Rounds this worker can fill (absolute round numbers below this are available).
    pub available: u64,
    /// Every producer of this worker has closed (bounded streams).
    pub closed: bool,
    /// New rows received.
    pub rows: u64,
    /// Rows dropped as duplicates.
    pub duplicates: u64,
}

struct State {
    producers: Vec<ProducerState>,
    arrivals: u64,
    failed: Option<String>,
    /// Arrival order: per round cut by the data loader, every producer's offset after it.
    cuts: VecDeque<(u64, BTreeMap<u32, u64>)>,
}

/// The shared state of a worker's ingest: queues, offsets and counters. See the module docs.
pub struct Ingest {
    state: Mutex<State>,
    changed: Condvar,
    /// Row order.
    pub order: Order,
    /// Rows per producer per round (deterministic order).
    pub per_producer: u64,
    /// Rows of this worker's share per round.
    pub share: u64,
    /// Round the stream starts at (resume).
    pub first_round: u64,
    /// Bounded stream: all closed means the end.
    pub bounded: bool,
    /// Rows buffered per producer before its connection is no longer read.
    pub buffer_rows: usize,
    start_rows: u64,
}

impl Ingest {
    /// Ingest state for `producers` (ids, in order) starting at their `offsets`.
    pub fn new(
        producers: &[(u32, u64)],
        order: Order,
        per_producer: u64,
        share: u64,
        first_round: u64,
        bounded: bool,
        buffer_rows: usize,
    ) -> Arc<Ingest> {
        let now = Instant::now();
        let producers: Vec<ProducerState> = producers
            .iter()
            .map(|&(id, offset)| ProducerState {
                id,
                queue: VecDeque::new(),
                queued_rows: 0,
                received: offset,
                consumed: offset,
                duplicates: 0,
                connected: false,
                closed: false,
                last_seen: now,
                silence_reported: false,
                seen: false,
                generation: 0,
            })
            .collect();
        let start_rows = producers.iter().map(|p| p.received).sum();
        Arc::new(Ingest {
            state: Mutex::new(State {
                producers,
                arrivals: 0,
                failed: None,
                cuts: VecDeque::new(),
            }),
            changed: Condvar::new(),
            order,
            per_producer,
            share,
            first_round,
            bounded,
            buffer_rows,
            start_rows,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on producer `id`'s state (None if it is not this worker's).
    pub(crate) fn with_producer<T>(
        &self,
        id: u32,
        f: impl FnOnce(&mut ProducerState) -> T,
    ) -> Option<T> {
        let mut st = self.lock();
        let out = st.producers.iter_mut().find(|p| p.id == id).map(f);
        drop(st);
        self.changed.notify_all();
        out
    }

    /// Ids of this worker's producers.
    pub fn ids(&self) -> Vec<u32> {
        self.lock().producers.iter().map(|p| p.id).collect()
    }

    /// Wait until producer `id`'s queue has room (bounded buffer: the caller then reads the next
    /// message from the socket; until then TCP backpressure slows the producer).
    pub(crate) fn wait_for_room(&self, id: u32) {
        let mut st = self.lock();
        loop {
            let full = st
                .producers
                .iter()
                .find(|p| p.id == id)
                .is_some_and(|p| p.queued_rows >= self.buffer_rows);
            if !full || st.failed.is_some() {
                return;
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Accept `rows` (a batch converted by the job's transform) from producer `id`, whose first
    /// row has offset `offset`: rows below the producer's `received` offset are dropped and
    /// counted. Returns `(new rows, duplicates)`.
    ///
    /// # Errors
    /// A [`Refusal`] when rows are missing (`offset` is past `received`: a gap), the producer
    /// is not served here, or a newer connection took over.
    pub fn push(
        &self,
        id: u32,
        generation: u64,
        offset: u64,
        mut batch: Table,
    ) -> Result<(u64, u64), Refusal> {
        let mut st = self.lock();
        st.arrivals += 1;
        let stamp = st.arrivals;
        let p = st
            .producers
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(Refusal::NotServedHere { producer: id })?;
        if p.generation != generation {
            return Err(Refusal::TakenOver { producer: id });
        }
        p.last_seen = Instant::now();
        p.silence_reported = false;
        let rows = batch.rows as u64;
        if offset > p.received {
            return Err(Refusal::Gap {
                producer: id,
                received: p.received,
                offset,
            });
        }
        let dup = (p.received - offset).min(rows);
        p.duplicates += dup;
        let fresh = rows - dup;
        if fresh > 0 {
            let b = match dup {
                0 => batch,
                d => batch.split_off(d as usize),
            };
            p.queue.push_back((stamp, b));
            p.queued_rows += fresh as usize;
            p.received += fresh;
        }
        drop(st);
        self.changed.notify_all();
        Ok((fresh, dup))
    }

    /// Record that producer `id`'s connection `generation` ended, with end-of-stream (`eos`)
    /// or without (a crash: it may reconnect and replay).
    pub(crate) fn disconnect(&self, id: u32, generation: u64, eos: bool) {
        self.with_producer(id, |p| {
            if p.generation == generation {
                p.closed |= eos;
                p.connected = false;
            }
        });
    }

    /// Stop everything waiting on this state (the worker failed).
    pub fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Arrival order: the data loader has cut round `round`; remember every producer's offset
    /// after it (the rows of rounds up to `round`).
    fn cut(&self, round: u64) {
        let mut st = self.lock();
        let offsets = st.producers.iter().map(|p| (p.id, p.consumed)).collect();
        st.cuts.push_back((round, offsets));
    }

    /// Arrival order: per producer of this worker, the offset of the next row after the rows
    /// of rounds up to `round` (what a checkpoint after `round` commits). Empty for a round
    /// the loader has not cut. Forgets the rounds before it.
    pub fn offsets_after(&self, round: u64) -> BTreeMap<u32, u64> {
        let mut st = self.lock();
        while st.cuts.front().is_some_and(|(r, _)| *r < round) {
            st.cuts.pop_front();
        }
        match st.cuts.front() {
            Some((r, o)) if *r == round => o.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Why the stream failed, if it did (see [`Ingest::fail`]).
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// The counters the coordinator gates rounds on.
    pub fn progress(&self) -> Progress {
        let st = self.lock();
        let rows: u64 = st.producers.iter().map(|p| p.received).sum::<u64>() - self.start_rows;
        let available = match self.order {
            Order::Deterministic => st
                .producers
                .iter()
                .map(|p| p.received / self.per_producer.max(1))
                .min()
                .unwrap_or(0),
            Order::Arrival => self.first_round + rows / self.share.max(1),
        };
        Progress {
            available,
            closed: self.bounded && st.producers.iter().all(|p| p.closed),
            rows,
            duplicates: st.producers.iter().map(|p| p.duplicates).sum(),
        }
    }

    /// Up to `max` rows from the front of producer `id`'s queue (waits for rows); `None` when
    /// it has closed with nothing left.
    fn take_from(&self, id: Option<u32>, max: usize) -> Result<Option<Table>, String> {
        let deadline = Instant::now() + TAKE_TIMEOUT;
        let mut st = self.lock();
        loop {
            if let Some(why) = &st.failed {
                return Err(why.clone());
            }
            let pick = match id {
                Some(id) => st.producers.iter().position(|p| p.id == id),
                None => st
                    .producers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.queue.front().map(|(s, _)| (*s, i)))
                    .min()
                    .map(|(_, i)| i),
            };
            if let Some(i) = pick {
                let p = &mut st.producers[i];
                if let Some((stamp, mut head)) = p.queue.pop_front() {
                    let n = head.rows.min(max);
                    if n < head.rows {
                        p.queue.push_front((stamp, head.split_off(n)));
                    }
                    p.queued_rows -= n;
                    p.consumed += n as u64;
                    drop(st);
                    self.changed.notify_all();
                    return Ok(Some(head));
                }
            }
            let all_closed = st.producers.iter().all(|p| p.closed);
            let this_closed = pick.is_some_and(|i| st.producers[i].closed);
            if (id.is_some() && this_closed) || (id.is_none() && all_closed) {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no rows from producer(s) {:?} within {} s",
                    id,
                    TAKE_TIMEOUT.as_secs()
                ));
            }
            st = self
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// This worker's rows as a `RowSource`, in the order the job asks for: with
/// deterministic order each round's share is `b` rows of every producer in id order; with
/// arrival order, batches in the order they arrived.
pub struct IngestRecords {
    ingest: Arc<Ingest>,
    name: String,
    ids: Vec<u32>,
    /// Deterministic order: which producer is next in this round, and rows still due from it.
    next: usize,
    due: u64,
    /// Arrival order: the round being cut and its rows still due.
    round: u64,
    round_due: u64,
}

impl IngestRecords {
    /// A source over `ingest`, named `name` in errors.
    pub fn new(ingest: Arc<Ingest>, name: &str) -> Self {
        let ids = ingest.ids();
        let due = ingest.per_producer;
        let (round, round_due) = (ingest.first_round, ingest.share);
        IngestRecords {
            ingest,
            name: name.to_string(),
            ids,
            next: 0,
            due,
            round,
            round_due,
        }
    }
}

impl RowSource for IngestRecords {
    fn name(&self) -> &str {
        &self.name
    }

    /// The rows were converted on arrival (by the same `Fitted`), so they are handed over as
    /// they are.
    fn next_rows(&mut self, _fitted: &Fitted) -> Result<Option<Table>, DataError> {
        let err = |message: String| DataError::Source {
            file: self.name.clone(),
            message,
        };
        match self.ingest.order {
            Order::Arrival => {
                // Never past the end of a round's share, so that each round's rows, and the
                // producers' offsets after it, are known exactly.
                let got = self.ingest.take_from(None, self.round_due as usize);
                let Some(b) = got.map_err(err)? else {
                    return Ok(None);
                };
                self.round_due -= b.rows as u64;
                if self.round_due == 0 {
                    self.ingest.cut(self.round);
                    self.round += 1;
                    self.round_due = self.ingest.share;
                }
                Ok(Some(b))
            }
            Order::Deterministic => {
                let Some(&id) = self.ids.get(self.next) else {
                    return Ok(None);
                };
                let got = self.ingest.take_from(Some(id), self.due as usize);
                let b = match got.map_err(err)? {
                    Some(b) => b,
                    None => return Ok(None),
                };
                self.due -= b.rows as u64;
                if self.due == 0 {
                    self.next = (self.next + 1) % self.ids.len();
                    self.due = self.ingest.per_producer;
                }
                Ok(Some(b))
            }
        }
    }
}
