//! The control plane over real TCP control links: it waits on every member at once (an `Abort`
//! from one member ends a wait on another at once), and an elastic membership change suspends
//! the survivors, drops the dead and hands out the next mesh at the newest survivor's round.

use super::pair;
use crate::control::plane::{ChangeMembership, Collect, ControlPlane, Elastic, Member};
use crate::control::protocol::{recv_msg, send_msg, ControlMessage, ToCoordinator, ToWorker};
use actix::SyncArbiter;
use lockstep_transport::AnyLink;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[test]
fn an_abort_from_one_member_ends_the_wait_for_another_at_once() {
    let (c0, w0) = pair("w0");
    let (c1, mut w1) = pair("w1");
    let (release, released) = std::sync::mpsc::channel::<()>();
    // w0 is alive but never reports (blocked on w1, as in an allreduce).
    let silent = std::thread::spawn(move || {
        let _ = released.recv();
        w0
    });
    let failing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let reason = "data error in round 3".to_string();
        send_msg(&mut w1, 3, "test", &ToCoordinator::Abort { reason }).unwrap();
        w1
    });
    let members = Mutex::new(Some(vec![
        Member::new("w0".into(), c0),
        Member::new("w1".into(), c1),
    ]));
    let started = Instant::now();
    let res = actix::System::new().block_on(async move {
        let plane = SyncArbiter::start(1, move || {
            ControlPlane::new(members.lock().unwrap().take().unwrap(), 2)
        });
        plane
            .send(Collect {
                round: 3,
                evaluate: false,
                checkpoint: false,
                timeout: Duration::from_secs(120),
            })
            .await
            .unwrap()
    });
    let waited = started.elapsed();
    let err = res.expect_err("the collection must end with w1's abort");
    match &err {
        crate::RuntimeError::Aborted { node, reason } => {
            assert_eq!(node, "w1");
            assert!(reason.contains("round 3"), "{reason}");
        }
        other => panic!("not w1's abort: {other}"),
    }
    // Not the collection's own bound (120 s), nor a peer timeout: the abort itself ended it.
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    let _ = release.send(());
    drop((silent.join().unwrap(), failing.join().unwrap()));
}

/// A survivor: answers `Suspend` with its next round and a data address, then returns the
/// `Remesh` it gets.
fn survivor(mut link: AnyLink, next_round: u64) -> std::thread::JoinHandle<(AnyLink, ToWorker)> {
    std::thread::spawn(move || {
        assert!(matches!(
            recv_msg(&mut link, 0, "test").unwrap(),
            ToWorker::Suspend { .. }
        ));
        let answer = ToCoordinator::Suspended {
            next_round,
            data_addr: format!("127.0.0.1:{}", 9000 + next_round),
        };
        send_msg(&mut link, 0, "test", &answer).unwrap();
        let remesh = recv_msg(&mut link, 0, "test").unwrap();
        (link, remesh)
    })
}

#[test]
fn a_membership_change_drops_the_dead_and_continues_at_the_newest_survivor() {
    let (c0, w0) = pair("w0");
    let (c1, w1) = pair("w1");
    let (c2, w2) = pair("w2");
    let s0 = survivor(w0, 7);
    let s1 = survivor(w1, 8);
    drop(w2); // w2 died
    let (_joiners_tx, joiners) = std::sync::mpsc::channel();
    let members = Mutex::new(Some((
        vec![
            Member::new("w0".into(), c0),
            Member::new("w1".into(), c1),
            Member::new("w2".into(), c2),
        ],
        joiners,
    )));
    let res = actix::System::new().block_on(async move {
        let plane = SyncArbiter::start(1, move || {
            let (m, joiners) = members.lock().unwrap().take().unwrap();
            ControlPlane::new(m, 3).with_elastic(Elastic {
                min_workers: 2,
                max_workers: 3,
                joiners,
                mesh: 1,
                duplicate_grace: Duration::from_secs(10),
                rollback: None,
            })
        });
        plane
            .send(ChangeMembership {
                dead: vec!["w2".into()],
                reason: "w2 died".into(),
            })
            .await
            .unwrap()
    });
    let changed = res.expect("the survivors continue");
    assert_eq!(changed.round, 8, "the newest survivor's next round");
    assert_eq!(changed.world, 2);
    assert_eq!(changed.dead, vec!["w2".to_string()]);
    assert_eq!(changed.source, "w1", "state from the survivor at round 8");
    for (s, name) in [(s0, "w0"), (s1, "w1")] {
        let (_link, remesh) = s.join().unwrap();
        match remesh {
            ToWorker::Remesh {
                peers,
                round,
                source,
                ..
            } => {
                let names: Vec<&str> = peers.iter().map(|p| p.0.as_str()).collect();
                assert_eq!(names, ["w0", "w1"], "{name}'s new mesh");
                assert_eq!((round, source), (8, 1), "{name}");
            }
            other => panic!("{name} got {} instead of Remesh", other.name()),
        }
    }
}
