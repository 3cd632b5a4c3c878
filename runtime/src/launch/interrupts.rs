//! Signals in the launcher: the first SIGINT / SIGTERM asks the coordinator for a graceful stop,
//! a second one (or a stop that takes too long) stops every node at once.

use super::{stop_all, Node};
use crate::error::{LaunchError, RuntimeError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// SIGINT / SIGTERM received by the launcher so far.
static SIGNALS: AtomicU32 = AtomicU32::new(0);

/// How long a graceful stop may take before the launcher stops every node at once.
const STOP_GRACE: Duration = Duration::from_secs(300);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

pub(super) fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// What the launcher does about signals, checked each time it looks at its nodes: the first
/// asks the coordinator for a graceful stop (it finishes the granted rounds, writes a final
/// checkpoint, the model and the report, and every node exits 0); a second one, or a graceful
/// stop that has not ended within [`STOP_GRACE`], stops every node at once.
pub(super) struct Interrupts {
    graceful_until: Option<Instant>,
}

impl Interrupts {
    pub(super) fn new() -> Self {
        Interrupts {
            graceful_until: None,
        }
    }

    /// `Err` when every node must be stopped now.
    pub(super) fn check(&mut self, nodes: &mut [Node]) -> Result<(), RuntimeError> {
        let n = SIGNALS.load(Ordering::SeqCst);
        if n == 0 {
            return Ok(());
        }
        let Some(until) = self.graceful_until else {
            tracing::warn!(
                "stopping at a round boundary: the coordinator finishes the granted rounds and writes a final checkpoint, the model and the report (Ctrl-C again to stop at once)"
            );
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(nodes[0].child.id() as libc::pid_t, libc::SIGINT) };
            self.graceful_until = Some(Instant::now() + STOP_GRACE);
            return Ok(());
        };
        if n == 1 && Instant::now() < until {
            return Ok(());
        }
        for n in nodes.iter_mut() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(n.child.id() as libc::pid_t, libc::SIGINT) };
        }
        stop_all(nodes);
        Err(if n > 1 {
            LaunchError::InterruptedTwice.into()
        } else {
            LaunchError::StopTimedOut {
                grace_s: STOP_GRACE.as_secs(),
            }
            .into()
        })
    }
}

pub(super) fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
