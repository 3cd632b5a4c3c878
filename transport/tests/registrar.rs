//! Registration through [`gather`], the one rendezvous path (the runtime's coordinator and
//! `Coordinator` both use it): members come out in the expected order, strangers and second
//! connections for a registered name are refused, the deadline names who never came, and a fatal
//! `admit` stops the registration handing back who was in.

use lockstep_transport::handshake::Identity;
use lockstep_transport::registrar::{gather, Admit, Expected, GatherError};
use lockstep_transport::Conn;
use lockstep_transport::{tcp, Listener};
use std::time::{Duration, Instant};

const TOKEN: &[u8] = b"registrar-token";

fn join(addr: std::net::SocketAddr, name: &str) -> Conn {
    let me = Identity::new("reg", name, TOKEN);
    tcp::connect_once(addr, &me, "coord", Duration::from_secs(5)).unwrap()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn members_in_expected_order_and_strangers_and_duplicates_refused() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("reg", "coord", TOKEN),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
    // Held open until the end: a closed duplicate must not be mistaken for the member.
    let mut _conns: Vec<Conn> = ["b", "stranger", "b"]
        .iter()
        .map(|n| join(addr, n))
        .collect();
    // The last expected member comes after the others were queued, so that gather has to get
    // through the stranger and the duplicate first.
    std::thread::sleep(Duration::from_millis(300));
    _conns.push(join(addr, "a"));
    let expected = names(&["a", "b"]);
    let mut admitted = Vec::new();
    let got = gather(
        &acc,
        Expected::Names(&expected),
        Instant::now() + Duration::from_secs(10),
        |name, _s| {
            admitted.push(name.to_string());
            Ok::<_, ()>(Admit::Member(name.len()))
        },
    )
    .unwrap_or_else(|_| panic!("gather failed"));
    let order: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["a", "b"]);
    admitted.sort();
    assert_eq!(
        admitted,
        ["a", "b"],
        "the stranger or the duplicate reached admit"
    );
}

#[test]
fn the_deadline_names_who_never_came() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("reg", "coord", TOKEN),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
    let _a = join(addr, "w0");
    let expected = names(&["w0", "w1", "w2"]);
    let started = Instant::now();
    match gather(
        &acc,
        Expected::Names(&expected),
        started + Duration::from_millis(700),
        |_, s| Ok::<_, ()>(Admit::Member(s)),
    ) {
        Err(GatherError::Missing { missing, gathered }) => {
            assert_eq!(missing, "w1, w2");
            assert_eq!(gathered.len(), 1);
            assert_eq!(gathered[0].0, "w0");
        }
        _ => panic!("expected the deadline to name w1 and w2"),
    }
    match gather(
        &acc,
        Expected::Count(2),
        Instant::now() + Duration::from_millis(300),
        |_, s| Ok::<_, ()>(Admit::Member(s)),
    ) {
        Err(GatherError::Missing { missing, .. }) => assert_eq!(missing, "2 of 2 nodes (have: )"),
        _ => panic!("expected a count to time out"),
    }
}

#[test]
fn a_fatal_admit_stops_and_hands_back_the_members() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("reg", "coord", TOKEN),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
    let _a = join(addr, "ok");
    let _b = join(addr, "bad");
    let expected = names(&["ok", "bad", "late"]);
    let r = gather(
        &acc,
        Expected::Names(&expected),
        Instant::now() + Duration::from_secs(10),
        |name, _| {
            if name == "bad" {
                Err(format!("{name} has another model"))
            } else {
                Ok(Admit::Member(()))
            }
        },
    );
    match r {
        Err(GatherError::Fatal { error, gathered }) => {
            assert_eq!(error, "bad has another model");
            let who: Vec<&str> = gathered.iter().map(|(n, _)| n.as_str()).collect();
            assert!(who == ["ok"] || who.is_empty(), "{who:?}");
        }
        _ => panic!("expected the bad member to stop the registration"),
    }
}
