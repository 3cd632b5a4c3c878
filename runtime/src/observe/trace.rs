//! The timeline (`--trace`): spans recorded on every node, gathered by the coordinator, written
//! as `<run dir>/trace.json` in the Chrome trace event format (Perfetto, chrome://tracing).
//!
//! - On a worker, a [`Tracer`] records spans (data, forward/backward, each bucket's collective,
//!   waiting, optimizer step, evaluation, checkpoint) of *sampled* rounds: the first
//!   `trace_first_rounds` rounds, then every `trace_every`-th, so the file stays bounded on long
//!   runs. Its clock is the Unix time at start plus a monotonic `Instant`, so spans on one thread
//!   nest exactly. Spans go to the coordinator in batches (`ToCoordinator::Trace`) on the control
//!   link the worker already reports on.
//! - On the coordinator, a [`TraceCollector`] keeps them per node and estimates each node's clock
//!   offset from the batches themselves: every batch carries the sender's clock at sending, so
//!   `receive time - send time` is the offset plus the one-way delay; the minimum over all
//!   batches is the estimate (the error is the smallest one-way delay seen: microseconds on one
//!   host, well under a millisecond on a LAN), as NTP's minimum-delay filter does.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One finished span, in the recording node's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TraceSpan {
    /// What ran, e.g. `forward/backward` or `allreduce bucket 3`.
    pub name: String,
    /// The thread (actor) it ran on: `data`, `compute`, `aggregator`, `coordinator`.
    pub thread: String,
    /// The round.
    pub round: u64,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration in microseconds.
    pub dur_us: u64,
}

/// A process-local clock: Unix time at creation plus a monotonic offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    unix_us: u64,
    anchor: Instant,
}

impl Clock {
    /// Anchored now.
    pub(crate) fn new() -> Self {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            unix_us,
            anchor: Instant::now(),
        }
    }

    /// `t` in microseconds since the Unix epoch (0 before the anchor).
    pub(crate) fn at(&self, t: Instant) -> u64 {
        self.unix_us + t.saturating_duration_since(self.anchor).as_micros() as u64
    }

    /// Now, in microseconds since the Unix epoch.
    pub(crate) fn now_us(&self) -> u64 {
        self.at(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Which rounds are traced: the first `first`, then every `every`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampling {
    /// Rounds traced from the start.
    pub first: u64,
    /// Then every this many rounds (0: none after the first ones).
    pub every: u64,
}

impl Sampling {
    /// Whether `round` is traced.
    pub(crate) fn traced(&self, round: u64) -> bool {
        round < self.first || (self.every > 0 && round.is_multiple_of(self.every))
    }
}

/// A worker's span recorder, shared by its actors (clone freely). See the module docs.
#[derive(Clone)]
pub(crate) struct Tracer {
    clock: Clock,
    sampling: Sampling,
    spans: Arc<Mutex<Vec<TraceSpan>>>,
}

impl Tracer {
    /// A recorder of the rounds `sampling` selects.
    pub(crate) fn new(sampling: Sampling) -> Self {
        Tracer {
            clock: Clock::new(),
            sampling,
            spans: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Whether `round` is traced.
    pub(crate) fn traced(&self, round: u64) -> bool {
        self.sampling.traced(round)
    }

    /// Record `name` on `thread` from `start` to `end`, if `round` is traced.
    pub(crate) fn span(&self, round: u64, thread: &str, name: &str, start: Instant, end: Instant) {
        if !self.traced(round) {
            return;
        }
        let start_us = self.clock.at(start);
        let span = TraceSpan {
            name: name.to_string(),
            thread: thread.to_string(),
            round,
            start_us,
            dur_us: self.clock.at(end).saturating_sub(start_us),
        };
        if let Ok(mut v) = self.spans.lock() {
            v.push(span);
        }
    }

    /// The spans recorded since the last call, and the clock now (for `ToCoordinator::Trace`).
    pub(crate) fn take(&self) -> (u64, Vec<TraceSpan>) {
        let spans = self
            .spans
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        (self.clock.now_us(), spans)
    }
}

#[derive(Default)]
struct NodeSpans {
    spans: Vec<TraceSpan>,
    /// Minimum of `received - sent` over the batches: offset plus the smallest delay.
    offset_us: Option<i64>,
}

/// The coordinator's collection of every node's spans (clone freely; one shared store).
#[derive(Clone, Default)]
pub(crate) struct TraceCollector {
    nodes: Arc<Mutex<BTreeMap<String, NodeSpans>>>,
    clock: Clock,
}

impl TraceCollector {
    /// An empty collection whose own clock is the reference.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The coordinator's clock.
    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// Add a batch `node` sent at its `sent_us`, received now.
    pub(crate) fn add(&self, node: &str, sent_us: u64, spans: Vec<TraceSpan>) {
        let delta = self.clock.now_us() as i64 - sent_us as i64;
        if let Ok(mut nodes) = self.nodes.lock() {
            let n = nodes.entry(node.to_string()).or_default();
            n.offset_us = Some(n.offset_us.map_or(delta, |o| o.min(delta)));
            n.spans.extend(spans);
        }
    }

    /// Add spans recorded in the coordinator's own clock.
    pub(crate) fn add_local(&self, node: &str, spans: Vec<TraceSpan>) {
        if let Ok(mut nodes) = self.nodes.lock() {
            let n = nodes.entry(node.to_string()).or_default();
            n.offset_us.get_or_insert(0);
            n.spans.extend(spans);
        }
    }

    /// The Chrome trace event document: one process per node (`pid` by node order, the
    /// coordinator's row first when `first` names it), one thread per actor, complete (`X`)
    /// events in microseconds from the earliest span, clocks corrected.
    pub(crate) fn to_chrome(&self, first: &str) -> Value {
        let nodes = match self.nodes.lock() {
            Ok(n) => n,
            Err(p) => p.into_inner(),
        };
        let mut order: Vec<&String> = nodes.keys().collect();
        order.sort_by_key(|n| (n.as_str() != first, n.as_str()));
        let corrected = |n: &NodeSpans, s: &TraceSpan| s.start_us as i64 + n.offset_us.unwrap_or(0);
        let t0 = nodes
            .values()
            .flat_map(|n| n.spans.iter().map(move |s| corrected(n, s)))
            .min()
            .unwrap_or(0);
        let mut events = Vec::new();
        for (pid, name) in order.into_iter().enumerate() {
            let n = &nodes[name];
            events.push(
                json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": {"name": name}}),
            );
            events.push(
                json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": {"sort_index": pid}}),
            );
            let mut threads: Vec<&str> = n.spans.iter().map(|s| s.thread.as_str()).collect();
            threads.sort_by_key(|t| (thread_rank(t), *t));
            threads.dedup();
            for (tid, t) in threads.iter().enumerate() {
                events.push(
                    json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                    "args": {"name": t}}),
                );
            }
            for s in &n.spans {
                let tid = threads.iter().position(|t| *t == s.thread).unwrap_or(0);
                events.push(
                    json!({"ph": "X", "name": s.name, "cat": s.thread, "pid": pid,
                    "tid": tid, "ts": corrected(n, s) - t0, "dur": s.dur_us,
                    "args": {"round": s.round}}),
                );
            }
        }
        let offsets: BTreeMap<&String, i64> = nodes
            .iter()
            .map(|(k, n)| (k, n.offset_us.unwrap_or(0)))
            .collect();
        json!({"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"clock_offsets_us": offsets, "origin_unix_us": t0}})
    }

    /// Write [`Self::to_chrome`] to `path` (atomically).
    ///
    /// # Errors
    /// [`crate::RuntimeError::Io`] naming the file.
    pub(crate) fn write(&self, path: &Path, first: &str) -> Result<(), crate::RuntimeError> {
        let bytes = serde_json::to_vec(&self.to_chrome(first))
            .map_err(|e| crate::RuntimeError::io("serialise", path, e))?;
        lockstep_tensor::safetensors_io::write_atomic(path, &bytes)
            .map_err(|e| crate::RuntimeError::io("write", path, e))
    }
}

/// Rows in a fixed order: the round's flow from data to aggregation.
fn thread_rank(t: &str) -> usize {
    ["coordinator", "data", "compute", "aggregator"]
        .iter()
        .position(|x| *x == t)
        .unwrap_or(9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn samples_first_rounds_then_every_nth() {
        let s = Sampling {
            first: 3,
            every: 10,
        };
        let traced: Vec<u64> = (0..35).filter(|r| s.traced(*r)).collect();
        assert_eq!(traced, vec![0, 1, 2, 10, 20, 30]);
    }

    #[test]
    fn offsets_are_corrected_per_node() {
        let c = TraceCollector::new();
        let now = c.clock().now_us();
        let span = |start_us| TraceSpan {
            name: "forward/backward".into(),
            thread: "compute".into(),
            round: 0,
            start_us,
            dur_us: 10,
        };
        // Node b's clock runs 5 s behind: its spans must land next to a's after correction.
        c.add("a", now, vec![span(now - 1000)]);
        c.add("b", now - 5_000_000, vec![span(now - 5_001_000)]);
        let doc = c.to_chrome("a");
        let ts: Vec<i64> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| e["ts"].as_i64().unwrap())
            .collect();
        assert_eq!(ts.len(), 2);
        assert!((ts[0] - ts[1]).abs() < Duration::from_millis(50).as_micros() as i64);
    }
}
