//! Alive but stuck: the progress timeout, the activity board every worker keeps, the hang
//! diagnosis and the test-only fault switch (`fault`, compiled only with the `fault-injection`
//! feature).
//!
//! A node whose heartbeats still flow but that sends no report for the round it owes within
//! the progress timeout ([`ProgressClock`], `cluster.progress_timeout_ms`) is declared stuck.
//! The coordinator then sends `Probe` to every member and waits (bounded, [`PROBE_WAIT`]) for
//! each `Doing` answer, which the worker's control thread reads off its [`Activity`] board
//! (written by the compute, aggregate and data threads as they go). [`diagnose`] puts the
//! answers in one table and names the culprit; the job stops with
//! [`crate::RuntimeError::Stuck`] naming it and its operation, or, with elastic membership,
//! the culprit is removed and the others continue.

mod activity;
mod diagnosis;
#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
mod timeout;

pub(crate) use activity::{Activity, Doing, Thread, ThreadDoing};
pub(crate) use diagnosis::{diagnose, NodeAnswer};
pub(crate) use timeout::ProgressClock;

/// How long the coordinator waits for the members' answers to `Probe`, all together.
pub(crate) const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
