//! `RunFinish` takes nothing but `Finished` from every member: a member that answers anything
//! else is a protocol error naming it, never skipped (a skipped reply loses a weights hash).

use super::pair;
use crate::control::plane::RunFinish;
use crate::control::plane::{ControlPlane, Member};
use crate::control::protocol::{recv_msg, send_msg, ToCoordinator, ToWorker};
use actix::SyncArbiter;
use std::sync::Mutex;
use std::time::Duration;

#[test]
fn an_unexpected_reply_to_finish_is_an_error_naming_the_member() {
    let (c0, mut w0) = pair("w0");
    let (c1, mut w1) = pair("w1");
    let honest = std::thread::spawn(move || {
        assert!(matches!(
            recv_msg(&mut w0, 9, "test").unwrap(),
            ToWorker::Finish
        ));
        let done = ToCoordinator::Finished {
            weights_sha256: "abc".into(),
            solver: None,
        };
        send_msg(&mut w0, 9, "test", &done).unwrap();
        w0
    });
    let odd = std::thread::spawn(move || {
        assert!(matches!(
            recv_msg(&mut w1, 9, "test").unwrap(),
            ToWorker::Finish
        ));
        // Not `Finished`: the weights hash of this member never comes.
        send_msg(&mut w1, 9, "test", &ToWorker::Finish).unwrap();
        w1
    });
    let members = Mutex::new(Some(vec![
        Member::new("w0".into(), c0),
        Member::new("w1".into(), c1),
    ]));
    let res = actix::System::new().block_on(async move {
        let plane = SyncArbiter::start(1, move || {
            ControlPlane::new(members.lock().unwrap().take().unwrap(), 2)
        });
        plane
            .send(RunFinish {
                round: 9,
                timeout: Duration::from_secs(60),
            })
            .await
            .unwrap()
    });
    let err = res
        .expect_err("an unexpected reply was skipped")
        .to_string();
    assert!(err.contains("w1") && err.contains("Finish"), "{err}");
    drop((honest.join().unwrap(), odd.join().unwrap()));
}

/// A member that is alive (its link and heartbeats are up) but never answers `Finish` is named
/// when the wait's own bound runs out; a member after it whose answer did arrive is not.
#[test]
fn a_silent_member_is_named_when_the_finish_wait_runs_out() {
    let (c0, mut w0) = pair("w0");
    let (c1, mut w1) = pair("w1");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let silent = std::thread::spawn(move || {
        assert!(matches!(
            recv_msg(&mut w0, 9, "test").unwrap(),
            ToWorker::Finish
        ));
        // Stuck: no answer until the test is over (the link stays up).
        let _ = released.recv();
        w0
    });
    let honest = std::thread::spawn(move || {
        assert!(matches!(
            recv_msg(&mut w1, 9, "test").unwrap(),
            ToWorker::Finish
        ));
        let done = ToCoordinator::Finished {
            weights_sha256: "abc".into(),
            solver: None,
        };
        send_msg(&mut w1, 9, "test", &done).unwrap();
        w1
    });
    let members = Mutex::new(Some(vec![
        Member::new("w0".into(), c0),
        Member::new("w1".into(), c1),
    ]));
    let res = actix::System::new().block_on(async move {
        let plane = SyncArbiter::start(1, move || {
            ControlPlane::new(members.lock().unwrap().take().unwrap(), 2)
        });
        plane
            .send(RunFinish {
                round: 9,
                timeout: Duration::from_millis(500),
            })
            .await
            .unwrap()
    });
    let err = res.expect_err("a silent member was waited for");
    let msg = err.to_string();
    match &err {
        crate::RuntimeError::EndTimeout { nodes, .. } => {
            assert_eq!(nodes, &["w0".to_string()], "{msg}")
        }
        other => panic!("not an end-of-job timeout: {other}"),
    }
    assert!(msg.contains("w0") && msg.contains("Finish"), "{msg}");
    drop(release);
    drop((silent.join().unwrap(), honest.join().unwrap()));
}
