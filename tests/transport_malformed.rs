//! A malformed frame header sent *after* a successful handshake: the real `lockstep` binary is
//! node `n1` of a three-node tcp mesh; this test plays `n0` with a raw authenticated socket that
//! sends a header with a bad checksum (or an oversized length), and `n2` as a real mesh member.
//! `n1` must report a protocol error naming `n0`, log why it closes that link, close it (the
//! raw socket sees EOF), and still move a frame to and from `n2` on its other link.

mod common;
use common::SpawnOwned;
use lockstep::bench::link::{crc, pattern, read_until, WorkerConfig};
use lockstep::transport::handshake::Identity;
use lockstep::transport::{
    connect_mesh, tcp, Expect, FrameHeader, Link, Listener, MeshConfig, Op, PeerAddr,
};
use std::io::{BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &[u8] = b"test-token";

fn peer(name: &str, addr: &str) -> PeerAddr {
    PeerAddr {
        name: name.into(),
        addr: addr.into(),
    }
}

/// Read until EOF (heartbeats may come first); true when EOF came before the deadline.
fn closes_within(s: &mut lockstep::transport::Conn, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true, // reset: closed as well
        }
    }
    false
}

fn malformed_header_closes_only_that_link(bad: [u8; 64], reason: &str) {
    let cluster = format!("mal{}", std::process::id());
    let l2 = Listener::bind("127.0.0.1:0").unwrap();
    let addr2 = l2.local_addr().unwrap().to_string();
    let cfg = WorkerConfig {
        mode: "listen3".into(),
        coordinator: addr2.clone(),
        cluster: cluster.clone(),
        transport: "tcp".into(),
        sizes: vec![],
        iters: 1,
        peer_timeout_ms: 3000,
        tls_dir: None,
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["bench-worker", "--kind", "link", "--rank", "1"])
        .args(["--config", &serde_json::to_string(&cfg).unwrap()])
        .env("LOCKSTEP_TOKEN", "test-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr1 = read_until(&mut out, "ADDR ").expect("worker address");
    // n2: a real mesh member (accepts n0 and n1).
    let peers = vec![
        peer("n0", "127.0.0.1:1"),
        peer("n1", &addr1),
        peer("n2", ""),
    ];
    let mut m2 = MeshConfig::new(&cluster, TOKEN, "n2", 2, peers);
    m2.peer_timeout_ms = 3000;
    let n2 = std::thread::spawn(move || {
        let mut g = connect_mesh(&m2, l2).unwrap();
        let body = pattern(2, 70_000);
        let h = FrameHeader::data(Op::P2p, 3, 0, 0, 0, body.len() as u64);
        g.link(1).send(h, body.clone()).unwrap();
        let echo = g.link(1).recv(&Expect::op(Op::P2p, 3, 0)).unwrap();
        assert_eq!(crc(&echo.payload), crc(&body), "echo from n1 differs");
    });
    // n0: authenticated raw sockets to n1 and n2, then garbage to n1 only.
    let me = Identity::new(&cluster, "n0", TOKEN);
    let t = Duration::from_secs(10);
    let mut to1 = tcp::connect_once(tcp::resolve(&addr1).unwrap(), &me, "n1", t).unwrap();
    let _to2 = tcp::connect_once(tcp::resolve(&addr2).unwrap(), &me, "n2", t).unwrap();
    to1.write_all(&bad).unwrap();
    let err = read_until(&mut out, "ERR0 ").expect("n1 reports the bad header");
    assert!(err.contains("peer n0"), "error does not name n0: {err}");
    assert!(
        err.contains("protocol violation"),
        "not a protocol error: {err}"
    );
    assert!(err.contains(reason), "error lacks {reason:?}: {err}");
    assert!(
        closes_within(&mut to1, t),
        "n1 kept the bad connection open"
    );
    // The other link is unaffected.
    let got = read_until(&mut out, "GOT2 ").expect("n1 still receives from n2");
    assert_eq!(got, format!("70000 {:#010x}", crc(&pattern(2, 70_000))));
    n2.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "worker failed: {status}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("closing link") && log.contains(reason),
        "worker log lacks the reason {reason:?}:\n{log}"
    );
}

#[test]
fn bad_checksum_after_handshake_closes_only_that_link() {
    let mut bad = FrameHeader::data(Op::P2p, 0, 0, 0, 0, 16).encode();
    bad[20] ^= 0xff; // a header field flipped: the stored checksum no longer matches
    malformed_header_closes_only_that_link(bad, "checksum mismatch");
}

#[test]
fn huge_length_after_handshake_closes_only_that_link() {
    let bad = FrameHeader::data(Op::P2p, 0, 0, 0, 0, u64::MAX / 2).encode();
    malformed_header_closes_only_that_link(bad, "exceeds the maximum");
}
