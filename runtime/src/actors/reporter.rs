//! `Reporter`: how a worker's actors tell the coordinator about finished rounds, evaluations and
//! checkpoints without a round trip: they send on the control link's sending side
//! ([`lockstep_transport::tcp::TcpSender`]) while the control thread keeps receiving on it.
//!
//! It also holds the worker's first failure. An actor that fails stores its error here and sends
//! `Abort` to the coordinator; the coordinator stops every node, and the control thread, whose
//! receive then ends, returns the stored (local, more precise) error rather than the echo.

use crate::error::RuntimeError;
use crate::protocol::{encode, ControlMsg};
use lockstep_transport::tcp::TcpSender;
use std::sync::{Arc, Mutex};

/// A worker's channel to the coordinator, shared by its actors. See the module docs.
#[derive(Clone)]
pub struct Reporter {
    sender: TcpSender,
    failure: Arc<Mutex<Option<RuntimeError>>>,
}

impl Reporter {
    /// A reporter sending on `sender` (the control link's sending side).
    pub fn new(sender: TcpSender) -> Self {
        Reporter {
            sender,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Send `msg` (about `round`) to the coordinator.
    ///
    /// # Errors
    /// [`RuntimeError::Peer`] naming the coordinator when the link is gone.
    pub fn send(&self, round: u64, msg: &ControlMsg) -> Result<(), RuntimeError> {
        let (header, payload) = encode(round, msg)?;
        self.sender.send(header, payload).map_err(|source| {
            RuntimeError::peer(
                self.sender.peer_name(),
                round,
                "reporting to the coordinator",
                source,
            )
        })
    }

    /// Record `e` as this worker's failure (the first one wins) and tell the coordinator.
    pub fn fail(&self, round: u64, e: RuntimeError) {
        tracing::error!(round, error = %e, "worker failed");
        let reason = e.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(e);
        }
        let _ = self.send(round, &ControlMsg::Abort { reason });
    }

    /// The recorded failure, if any.
    pub fn take_failure(&self) -> Option<RuntimeError> {
        self.failure.lock().ok().and_then(|mut s| s.take())
    }

    /// True once an actor has failed.
    pub fn failed(&self) -> bool {
        self.failure.lock().map(|s| s.is_some()).unwrap_or(true)
    }
}
