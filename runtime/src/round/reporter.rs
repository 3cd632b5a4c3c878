//! `Reporter`: how a worker's actors tell the coordinator about finished rounds, evaluations and
//! checkpoints without a round trip: they send on the control link's sending side
//! ([`lockstep_transport::tcp::TcpSender`]) while the control thread keeps receiving on it.
//!
//! It also carries what the worker tells about itself besides results: the byte counters of
//! its data-mesh links (sent with every `RoundDone`) and, with `--trace`, the [`Tracer`] its
//! actors record timeline spans into (sent in batches as `Trace`).
//!
//! It also holds the worker's first failure. An actor that fails stores its error here and sends
//! `Abort` to the coordinator; the coordinator stops every node, and the control thread, whose
//! receive then ends, returns the stored (local, more precise) error rather than the echo.

use crate::control::hang::Activity;
use crate::control::protocol::{encode, LinkBytes, ToCoordinator};
use crate::error::RuntimeError;
use crate::observe::trace::Tracer;
use lockstep_collective::Traffic;
use lockstep_transport::tcp::TcpSender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A worker's channel to the coordinator, shared by its actors. See the module docs.
///
/// With elastic membership ([`Reporter::elastic`]) a collective that fails naming a peer is not
/// this worker's failure: the reporter sends `PeerLost` once and the coordinator decides (see
/// `docs/elastic.md`). One reporter serves one mesh; [`Reporter::silence`] ends it.
#[derive(Clone)]
pub(crate) struct Reporter {
    sender: TcpSender,
    failure: Arc<Mutex<Option<RuntimeError>>>,
    /// Elastic membership: the mesh id this reporter's actors run on.
    mesh: Option<u64>,
    /// Set once a peer was reported lost (later buckets are dropped).
    lost: Arc<AtomicBool>,
    /// Set when the worker suspends: nothing more of this mesh goes out.
    silenced: Arc<AtomicBool>,
    tracer: Option<Tracer>,
    traffic: Option<(Traffic, Arc<[String]>)>,
    activity: Activity,
}

impl Reporter {
    /// A reporter sending on `sender` (the control link's sending side).
    pub(crate) fn new(sender: TcpSender) -> Self {
        Reporter {
            sender,
            failure: Arc::new(Mutex::new(None)),
            mesh: None,
            lost: Arc::new(AtomicBool::new(false)),
            silenced: Arc::new(AtomicBool::new(false)),
            tracer: None,
            traffic: None,
            activity: Activity::default(),
        }
    }

    /// Keep what the threads are doing on `activity` (answers the coordinator's `Probe`).
    pub(crate) fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = activity;
        self
    }

    /// The worker's activity board (see [`crate::control::hang`]).
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Elastic membership on mesh `mesh`: a lost peer is reported, not failed.
    pub(crate) fn elastic(mut self, mesh: u64) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// True with elastic membership.
    pub(crate) fn is_elastic(&self) -> bool {
        self.mesh.is_some()
    }

    /// Elastic: a collective of `round` failed naming `node` (empty: nobody named). Sent once;
    /// the coordinator suspends every survivor and rebuilds the mesh.
    pub(crate) fn lost(&self, round: u64, node: &str, e: &RuntimeError) {
        if self.lost.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(round, peer = node, error = %e, "a peer was lost; waiting for the coordinator");
        let msg = ToCoordinator::PeerLost {
            mesh: self.mesh.unwrap_or_default(),
            round,
            node: node.to_string(),
            reason: e.to_string(),
        };
        let _ = self.send(round, &msg);
    }

    /// `e` ended this worker's round: with elastic membership a collective that failed naming
    /// a peer is that peer lost ([`Reporter::lost`]), anything else this worker's failure
    /// ([`Reporter::fail`]).
    pub(crate) fn failed_or_lost(&self, round: u64, e: RuntimeError) {
        let RuntimeError::Collective(c) = &e else {
            return self.fail(round, e);
        };
        if !self.is_elastic() {
            return self.fail(round, e);
        }
        let names = self.traffic.as_ref().map(|(_, n)| n.clone());
        let node = c
            .failed_rank()
            .and_then(|r| names.as_ref().and_then(|n| n.get(r).cloned()))
            .unwrap_or_default();
        self.lost(round, &node, &e);
    }

    /// Nothing more goes out through this reporter (the worker suspended).
    pub(crate) fn silence(&self) {
        self.silenced.store(true, Ordering::SeqCst);
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Also report `traffic` (peer names by rank) and, with `tracer`, timeline spans.
    pub(crate) fn with_observe(
        mut self,
        tracer: Option<Tracer>,
        traffic: Traffic,
        peers: Vec<String>,
    ) -> Self {
        self.tracer = tracer;
        self.traffic = Some((traffic, peers.into()));
        self
    }

    /// Record a timeline span (when tracing and `round` is sampled).
    pub(crate) fn span(&self, round: u64, thread: &str, name: &str, start: Instant, end: Instant) {
        if let Some(t) = &self.tracer {
            t.span(round, thread, name, start, end);
        }
    }

    /// The tracer, when tracing.
    pub(crate) fn tracer(&self) -> Option<Tracer> {
        self.tracer.clone()
    }

    /// Whether spans of `round` are recorded (callers skip building span names otherwise).
    pub(crate) fn traced(&self, round: u64) -> bool {
        self.tracer.as_ref().is_some_and(|t| t.traced(round))
    }

    /// Bytes exchanged with each data-mesh peer so far (empty without counters).
    pub(crate) fn links(&self) -> Vec<LinkBytes> {
        let Some((traffic, names)) = &self.traffic else {
            return Vec::new();
        };
        traffic
            .snapshot()
            .into_iter()
            .zip(names.iter())
            .filter(|((s, r), _)| s + r > 0)
            .map(|((sent, received), peer)| LinkBytes {
                peer: peer.clone(),
                sent,
                received,
            })
            .collect()
    }

    /// Send the spans recorded so far, if any.
    ///
    /// # Errors
    /// As [`Reporter::send`].
    pub(crate) fn flush_trace(&self, round: u64) -> Result<(), RuntimeError> {
        let Some(t) = &self.tracer else { return Ok(()) };
        let (sent_us, spans) = t.take();
        if spans.is_empty() {
            return Ok(());
        }
        self.send(round, &ToCoordinator::Trace { sent_us, spans })
    }

    /// Send `msg` (about `round`) to the coordinator.
    ///
    /// # Errors
    /// [`RuntimeError::Peer`] naming the coordinator when the link is gone.
    pub(crate) fn send(&self, round: u64, msg: &ToCoordinator) -> Result<(), RuntimeError> {
        if self.silenced.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (header, payload) = encode(round, msg)?;
        match self.sender.send(header, payload) {
            // Elastic: a dead coordinator is the control thread's to handle (it keeps this
            // worker's state for the one taking over); the rounds granted go on meanwhile.
            Err(e) if self.is_elastic() => {
                tracing::debug!(round, error = %e, "report to the coordinator not sent");
                Ok(())
            }
            Err(source) => Err(RuntimeError::peer(
                self.sender.peer_name(),
                round,
                "reporting to the coordinator",
                source,
            )),
            Ok(()) => Ok(()),
        }
    }

    /// Record `e` as this worker's failure (the first one wins) and tell the coordinator.
    pub(crate) fn fail(&self, round: u64, e: RuntimeError) {
        tracing::error!(round, error = %e, "worker failed");
        let reason = e.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(e);
        }
        let _ = self.send(round, &ToCoordinator::Abort { reason });
    }

    /// The recorded failure, if any.
    pub(crate) fn take_failure(&self) -> Option<RuntimeError> {
        self.failure.lock().ok().and_then(|mut s| s.take())
    }

    /// True once an actor has failed (or, elastic, a peer was lost).
    pub(crate) fn failed(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || self.failure.lock().map(|s| s.is_some()).unwrap_or(true)
    }
}
