//! The activity board: what each of a worker's threads is doing right now, written by the
//! threads as they go (a few relaxed atomic stores per step, no lock) and read by the control
//! thread when the coordinator asks (`ToWorker::Probe`, see [`super`]). The collective's own
//! [`Waiting`] board adds which peer the aggregator is blocked on.

#[cfg(feature = "fault-injection")]
use super::fault::Fault;
use lockstep_collective::{now_us, Waiting};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// A worker thread with a slot on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Thread {
    /// The `Compute` actor.
    Compute = 0,
    /// The `Aggregator` actor (owns the communicator).
    Aggregate = 1,
    /// The `DataLoader` actor.
    Data = 2,
}

const THREADS: [Thread; 3] = [Thread::Compute, Thread::Aggregate, Thread::Data];

impl Thread {
    fn name(self) -> &'static str {
        match self {
            Thread::Compute => "compute",
            Thread::Aggregate => "aggregate",
            Thread::Data => "data",
        }
    }
}

/// What a thread is doing. The `Await*` states and `Idle` wait on this node's own actors or on
/// the coordinator; the others are work (or, for the aggregator, a collective that may be
/// blocked on a peer, which the [`Waiting`] board tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Doing {
    /// Nothing to do.
    Idle = 0,
    /// Compute: every granted round is done; waiting for the coordinator's next grant.
    AwaitGrant,
    /// Compute: waiting for the data loader's shard of the round.
    AwaitData,
    /// Compute: forward/backward of the round.
    ForwardBackward,
    /// Compute: the buckets are with the aggregator; waiting for the averaged gradient.
    AwaitAggregate,
    /// Compute: the optimizer step.
    OptimizerStep,
    /// Compute (rank 0): evaluation after the round.
    Evaluate,
    /// Compute (rank 0): writing a checkpoint after the round.
    Checkpoint,
    /// Aggregate: allreduce of gradient bucket `detail`.
    Allreduce,
    /// Aggregate: push to / pull from the parameter servers.
    PushPull,
    /// Data: assembling the shard of the round.
    NextBatch,
}

impl Doing {
    fn from_u8(v: u8) -> Doing {
        const ALL: [Doing; 11] = [
            Doing::Idle,
            Doing::AwaitGrant,
            Doing::AwaitData,
            Doing::ForwardBackward,
            Doing::AwaitAggregate,
            Doing::OptimizerStep,
            Doing::Evaluate,
            Doing::Checkpoint,
            Doing::Allreduce,
            Doing::PushPull,
            Doing::NextBatch,
        ];
        ALL.get(v as usize).copied().unwrap_or(Doing::Idle)
    }

    /// Whether this state is work (as opposed to waiting on this node's actors or the
    /// coordinator).
    fn busy(self) -> bool {
        !matches!(
            self,
            Doing::Idle | Doing::AwaitGrant | Doing::AwaitData | Doing::AwaitAggregate
        )
    }

    fn describe(self, detail: u32) -> String {
        match self {
            Doing::Idle => "idle".into(),
            Doing::AwaitGrant => "waiting for a grant".into(),
            Doing::AwaitData => "waiting for the data loader".into(),
            Doing::ForwardBackward => "forward_backward".into(),
            Doing::AwaitAggregate => "waiting for the averaged gradient".into(),
            Doing::OptimizerStep => "optimizer step".into(),
            Doing::Evaluate => "evaluate".into(),
            Doing::Checkpoint => "checkpoint".into(),
            Doing::Allreduce => format!("allreduce bucket {detail}"),
            Doing::PushPull => "parameter-server push/pull".into(),
            Doing::NextBatch => "data next batch".into(),
        }
    }
}

#[derive(Default)]
struct Slot {
    doing: AtomicU8,
    round: AtomicU64,
    detail: AtomicU32,
    since_us: AtomicU64,
}

struct Inner {
    slots: [Slot; 3],
    /// The communicator's board and the mesh's node names by rank.
    waiting: Option<(Waiting, Arc<[String]>)>,
    /// Test-only fault of this node (see `super::fault`; only with `fault-injection`).
    #[cfg(feature = "fault-injection")]
    fault: Option<Fault>,
}

impl Inner {
    /// Fresh slots (every thread idle since now), no fault.
    fn new(waiting: Option<(Waiting, Vec<String>)>) -> Inner {
        let now = now_us();
        let slots: [Slot; 3] = Default::default();
        for s in &slots {
            s.since_us.store(now, Ordering::Relaxed);
        }
        Inner {
            slots,
            waiting: waiting.map(|(w, n)| (w, n.into())),
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }
}

/// One worker's activity board (a shared handle, cheap to clone). See the module docs.
#[derive(Clone)]
pub(crate) struct Activity {
    inner: Arc<Inner>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(None)
    }
}

/// One thread's line in a node's answer to `Probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThreadDoing {
    /// `compute`, `aggregate` or `data`.
    pub thread: String,
    /// What it does, e.g. `forward_backward`, `allreduce bucket 3 / recv`.
    pub operation: String,
    /// The round it is in.
    pub round: u64,
    /// The collective's sequence number, while blocked in one.
    #[serde(default)]
    pub seq: Option<u64>,
    /// The peer it is blocked on, if any.
    #[serde(default)]
    pub waiting_on: Option<String>,
    /// How long it has been at it, in milliseconds.
    pub for_ms: u64,
    /// Work rather than waiting on its own node's actors or the coordinator.
    pub busy: bool,
}

impl Activity {
    /// A board; `waiting` is the communicator's board with the mesh's names by rank.
    pub(crate) fn new(waiting: Option<(Waiting, Vec<String>)>) -> Activity {
        Activity {
            inner: Arc::new(Inner::new(waiting)),
        }
    }

    /// [`Activity::new`] with this node's test-only fault (see `super::fault`).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn with_fault(
        waiting: Option<(Waiting, Vec<String>)>,
        fault: Option<Fault>,
    ) -> Activity {
        let mut inner = Inner::new(waiting);
        inner.fault = fault;
        Activity {
            inner: Arc::new(inner),
        }
    }

    /// `thread` does `doing` in `round` from now on (`detail`: the bucket of an allreduce).
    #[inline]
    pub(crate) fn set(&self, thread: Thread, doing: Doing, round: u64, detail: u32) {
        let s = &self.inner.slots[thread as usize];
        s.round.store(round, Ordering::Relaxed);
        s.detail.store(detail, Ordering::Relaxed);
        s.since_us.store(now_us(), Ordering::Relaxed);
        s.doing.store(doing as u8, Ordering::Relaxed);
    }

    /// Test-only fault ([`super::fault`]): when this board's stall is set for `round`, never
    /// return (the thread sleeps; heartbeats and the control thread go on); when its failure is,
    /// an error. Only with `fault-injection`: without it, neither this nor its call exists.
    ///
    /// # Errors
    /// The test-only failure of `round`.
    #[cfg(feature = "fault-injection")]
    #[inline]
    pub(crate) fn stall_point(&self, round: u64) -> Result<(), crate::error::RuntimeError> {
        match &self.inner.fault {
            Some(Fault::Stall { round: r, .. }) if *r == round => {
                stall_for_good("forward_backward", round)
            }
            Some(Fault::Fail { round: r, .. }) if *r == round => {
                tracing::warn!(round, "LOCKSTEP_FAULT: failing forward_backward");
                Err(crate::error::TrainingError::InjectedFault { round }.into())
            }
            _ => Ok(()),
        }
    }

    /// Test-only fault ([`super::fault`]): with `stall_save` set, never return from the final
    /// model save of `round`. Only with `fault-injection`.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn stall_save_point(&self, round: u64) {
        if matches!(self.inner.fault, Some(Fault::StallSave { .. })) {
            stall_for_good("the final model save", round);
        }
    }

    /// Test-only fault ([`super::fault`]): with `slow_checkpoint` set for `round`, spend 3 s in
    /// the checkpoint write after it (logged first). Only with `fault-injection`.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn slow_checkpoint_point(&self, round: u64) {
        if matches!(&self.inner.fault, Some(Fault::SlowCheckpoint { round: r, .. }) if *r == round)
        {
            tracing::warn!(round, "LOCKSTEP_FAULT: writing the checkpoint slowly (3 s)");
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    }

    /// Every thread's line, read now.
    pub(crate) fn snapshot(&self) -> Vec<ThreadDoing> {
        let now = now_us();
        THREADS
            .iter()
            .map(|&t| {
                let s = &self.inner.slots[t as usize];
                let doing = Doing::from_u8(s.doing.load(Ordering::Relaxed));
                let mut line = ThreadDoing {
                    thread: t.name().into(),
                    operation: doing.describe(s.detail.load(Ordering::Relaxed)),
                    round: s.round.load(Ordering::Relaxed),
                    seq: None,
                    waiting_on: None,
                    for_ms: now.saturating_sub(s.since_us.load(Ordering::Relaxed)) / 1000,
                    busy: doing.busy(),
                };
                let blocked = (t == Thread::Aggregate)
                    .then(|| self.inner.waiting.as_ref())
                    .flatten()
                    .and_then(|(w, names)| w.snapshot().map(|on| (on, names)));
                if let Some((on, names)) = blocked {
                    line.operation = format!("{} / recv", line.operation);
                    line.seq = Some(on.seq);
                    line.round = on.round;
                    line.waiting_on = names.get(on.peer).cloned();
                    line.for_ms = on.for_us / 1000;
                }
                line
            })
            .collect()
    }
}

/// The test-only stall: log it, then sleep for good (the caller's thread never returns).
#[cfg(feature = "fault-injection")]
fn stall_for_good(what: &str, round: u64) -> ! {
    tracing::warn!(round, "LOCKSTEP_FAULT: stalling {what} for good");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_reads_back_what_the_threads_wrote() {
        let a = Activity::default();
        a.set(Thread::Compute, Doing::ForwardBackward, 5, 0);
        a.set(Thread::Aggregate, Doing::Allreduce, 4, 3);
        let s = a.snapshot();
        assert_eq!(s[0].operation, "forward_backward");
        assert_eq!(s[0].round, 5);
        assert!(s[0].busy);
        assert_eq!(s[1].operation, "allreduce bucket 3");
        assert_eq!(s[2].operation, "idle");
        assert!(!s[2].busy);
    }

    /// The hot-path cost of one board update (prints; no timing assertion). Run with
    /// `cargo test --release -p lockstep-runtime --lib board_update_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn board_update_cost() {
        let a = Activity::default();
        let n = 10_000_000u64;
        let t = std::time::Instant::now();
        for i in 0..n {
            a.set(Thread::Aggregate, Doing::Allreduce, i, i as u32);
        }
        let set_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let t = std::time::Instant::now();
        let mut x = 0u64;
        for i in 0..n {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        let empty_ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("board update: {set_ns:.1} ns (empty loop {empty_ns:.1} ns, {x})");
    }
}
