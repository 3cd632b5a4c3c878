//! Graceful stop: SIGINT or SIGTERM to the coordinator of a running job asks it to stop at a
//! round boundary. It grants no further round, lets the rounds already granted finish (at most
//! [`crate::control::protocol::GRANT_WINDOW`]), then writes a final checkpoint (with a stream's producer
//! offsets), the model and the report (`"status": "stopped"`), and exits 0. `lockstep launch`
//! forwards its first Ctrl-C / SIGTERM to the coordinator only and waits for that.
//!
//! Before training starts (registration, mesh set-up) there is nothing to save: a signal ends
//! the process at once (exit status 128 + signal). A second signal during a graceful stop does
//! the same.
//!
//! Only `lockstep node` installs the handlers ([`install`]); a cluster embedded in another
//! process ([`crate::node::embed`]) leaves that process's signals alone.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Signals received so far.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// Training runs: a signal asks for a graceful stop instead of ending the process.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The handlers are installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    let before = COUNT.fetch_add(1, Ordering::SeqCst);
    if !ARMED.load(Ordering::SeqCst) || before > 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Install the SIGINT and SIGTERM handlers (once; `lockstep node` of a coordinator).
pub(crate) fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: the handler only touches atomics and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Training has started: from now on a signal asks for a graceful stop.
pub(crate) fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// The signal that asked for a graceful stop, if one did.
pub(crate) fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A signal's name for logs and the report.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
