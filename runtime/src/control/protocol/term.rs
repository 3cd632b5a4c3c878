//! The coordinator's term: a number every control frame carries (in its header's `job` field),
//! which fences a coordinator that was replaced. A job starts at term 0; a coordinator that takes
//! over from the survivors of a dead one leads term `newest + 1` (see
//! [`crate::control::takeover`]). A member follows the newest term it has seen: a frame from an
//! older coordinator is refused (it was replaced and must not lead anyone), and a coordinator
//! that sees a member of a newer term stands down. A node process hosts one role, so the term
//! is the process's own.

use std::sync::atomic::{AtomicU64, Ordering};

static TERM: AtomicU64 = AtomicU64::new(0);

/// The term this process leads (a coordinator) or follows (a member).
pub(crate) fn current() -> u64 {
    TERM.load(Ordering::SeqCst)
}

/// Follow (or lead) term `t` from now on, if it is newer than the current one.
pub(crate) fn follow(t: u64) {
    TERM.fetch_max(t, Ordering::SeqCst);
}
