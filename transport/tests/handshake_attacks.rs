//! Attacks on the handshake by someone who can reach a listener but does not hold the token:
//! reflection through two connections, a peer that drips bytes to hold a handshake thread, and a
//! flood of connections that never finish their handshake.

use lockstep_transport::handshake::{Hello, Identity};
use lockstep_transport::{tcp, Listener};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TOKEN: &[u8] = b"the-cluster-token";

/// Copy everything `from` sends into `to`, reporting the bytes to `seen`, until either closes.
fn relay(mut from: TcpStream, mut to: TcpStream, seen: mpsc::Sender<Vec<u8>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = seen.send(buf[..n].to_vec());
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    })
}

/// The reflection attack on an acceptor that expects its own name (rank 0 in environment mode
/// accepts every member, itself included): open two connections claiming to be rank 0, give each
/// the nonce the acceptor chose on the other, and relay everything the acceptor says on one into
/// the other. Against a handshake where both sides prove themselves first, the acceptor answered
/// its own challenges and registered both connections as rank 0. Now it must reveal nothing and
/// admit neither.
#[test]
fn reflection_through_two_connections_does_not_register_the_attacker() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let me = Identity::new("c", "rank0", TOKEN);
    let acc = l
        .start(
            me,
            Some(vec!["rank0".into(), "rank1".into()]),
            Duration::from_secs(2),
        )
        .unwrap();

    let mut c2 = TcpStream::connect(addr).unwrap();
    let h2 = Hello::read_from(&mut c2).unwrap();
    let mut c1 = TcpStream::connect(addr).unwrap();
    let forged = |nonce| Hello {
        version: h2.version,
        cluster: "c".into(),
        node: "rank0".into(),
        nonce,
    };
    c1.write_all(&forged(h2.nonce).encode()).unwrap();
    let h1 = Hello::read_from(&mut c1).unwrap();
    c2.write_all(&forged(h1.nonce).encode()).unwrap();

    let (tx, rx) = mpsc::channel();
    let a = relay(c1.try_clone().unwrap(), c2.try_clone().unwrap(), tx.clone());
    let b = relay(c2, c1, tx);
    let admitted = acc.next(Instant::now() + Duration::from_secs(6));
    assert!(
        admitted.is_none(),
        "the relayed connection was admitted as {:?}",
        admitted.map(|a| a.0)
    );
    a.join().unwrap();
    b.join().unwrap();
    // After its Hello the acceptor said nothing derived from the token: at most a refusal.
    let said: Vec<u8> = rx.try_iter().flatten().collect();
    assert!(
        said.first().is_none_or(|&t| t == 2),
        "the acceptor revealed {said:02x?}"
    );
}

/// A peer that sends its `Hello` one byte at a time, each byte well within any per-read timeout,
/// must not hold the handshake past its one deadline: the acceptor closes the connection before
/// the dripped `Hello` is complete.
#[test]
fn a_dripping_peer_is_cut_off_at_the_handshake_deadline() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _acc = l
        .start(
            Identity::new("c", "n1", TOKEN),
            None,
            Duration::from_millis(500),
        )
        .unwrap();
    let hello = Hello {
        version: lockstep_transport::frame::PROTOCOL_VERSION,
        cluster: "c".into(),
        node: "x".repeat(255),
        nonce: [7; 32],
    }
    .encode();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    for b in &hello {
        std::thread::sleep(Duration::from_millis(40));
        if s.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < hello.len(),
        "the acceptor read the whole dripped hello ({sent} bytes) instead of giving up"
    );
}

/// Connections that never finish their handshake hold at most `max_pending` slots; the next one
/// is closed at once without a word, and once the slots free up a real peer gets in.
#[test]
fn unauthenticated_connections_beyond_the_limit_are_closed_at_once() {
    let mut l = Listener::bind("127.0.0.1:0").unwrap();
    l.set_max_pending(2);
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("c", "n1", TOKEN),
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    let mut silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut silent {
        // Each holds a slot: the acceptor has started its handshake and sent its Hello.
        Hello::read_from(s).unwrap();
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut b = [0u8; 1];
    match extra.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection over the limit was served: {other:?}"),
    }
    drop(silent);
    let me = Identity::new("c", "n0", TOKEN);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tcp::connect_once(addr, &me, "n1", Duration::from_secs(5)) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying while the slots free up: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("a real peer was not served once the slots were free: {e}"),
        }
    }
    let (name, _) = acc.next(Instant::now() + Duration::from_secs(30)).unwrap();
    assert_eq!(name, "n0");
}
