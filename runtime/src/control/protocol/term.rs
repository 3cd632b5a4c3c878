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

#[cfg(test)]
mod tests {
    use crate::control::protocol::{decode, ControlMessage, ToCoordinator, ToWorker};
    use crate::error::{ProtocolError, RuntimeError};

    // The term is the process's own, shared by every test thread: these tests only read it.

    #[test]
    fn a_member_refuses_a_replaced_coordinator_and_a_coordinator_stands_down() {
        let grant = ToWorker::Grant { rounds: vec![] };
        assert!(grant.fenced(1, 2).is_some(), "an older coordinator's frame");
        assert!(grant.fenced(2, 2).is_none());
        assert!(
            grant.fenced(3, 2).is_none(),
            "a newer coordinator is followed"
        );
        let abort = ToCoordinator::Abort { reason: "x".into() };
        assert!(abort.fenced(3, 2).is_some(), "a member of a newer term");
        assert!(abort.fenced(1, 2).is_none(), "a member not told yet");
        let mine = super::current();
        let payload = serde_json::to_vec(&abort).unwrap();
        let err = decode::<ToCoordinator>("worker-1", mine + 1, &payload).unwrap_err();
        match &err {
            RuntimeError::Control(ProtocolError::Fenced { node, theirs, .. }) => {
                assert_eq!((node.as_str(), *theirs), ("worker-1", mine + 1));
            }
            other => panic!("not fenced: {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("worker-1") && text.contains("stands down"),
            "{text}"
        );
    }

    #[test]
    fn a_survivors_register_of_a_newer_term_is_read_by_the_one_taking_over() {
        let mine = super::current();
        let register = serde_json::json!({"Register": {
            "node": "worker-0", "data_addr": "127.0.0.1:1",
            "signature": {"params": []},
            "rejoin": {"next_round": 52, "term": mine + 4, "lost_ms": 12.5, "reason": "gone"}
        }});
        let payload = serde_json::to_vec(&register).unwrap();
        match decode::<ToCoordinator>("worker-0", mine + 4, &payload).unwrap() {
            ToCoordinator::Register {
                rejoin: Some(r), ..
            } => {
                assert_eq!((r.next_round, r.term), (52, mine + 4));
            }
            other => panic!("{other:?}"),
        }
    }
}
