//! Multi-process transport tests: the real `lockstep` binary as `bench-worker --kind link`
//! processes over loopback. Sizes both ways at once over tcp and shm; refusals (wrong token,
//! cluster, version) and garbage (random bytes, a huge length, a truncated header) against a
//! listening node that must still serve a good peer; a SIGKILLed peer detected within the peer
//! timeout.

mod common;
use common::{Proc, SpawnOwned};
use lockstep::bench::link::{crc, pattern, read_until, WorkerConfig};
use lockstep::transport::handshake::{Hello, Identity};
use lockstep::transport::{
    connect_mesh, tcp, Error, FrameHeader, HandshakeFailure, Link, Listener, MeshConfig, Op,
    PeerAddr,
};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [0, 1, 4096, 1 << 20, 64 << 20];

fn config(mode: &str, transport: &str, sizes: &[usize]) -> WorkerConfig {
    WorkerConfig {
        mode: mode.into(),
        coordinator: String::new(),
        cluster: format!("t{}{}", std::process::id(), transport),
        transport: transport.into(),
        sizes: sizes.to_vec(),
        iters: 1,
        peer_timeout_ms: 3000,
        tls_dir: None,
    }
}

fn run_exchange(transport: &str) {
    let exe = env!("CARGO_BIN_EXE_lockstep");
    let outs = spawn_with(exe, config("exchange", transport, &SIZES));
    for (rank, out) in outs.iter().enumerate() {
        for &len in &SIZES {
            let want = format!("OK {len} {:#010x}", crc(&pattern(1 - rank, len)));
            assert!(
                out.lines().any(|l| l == want),
                "rank {rank} lacks {want:?}:\n{out}"
            );
        }
    }
}

fn spawn_with(exe: &str, mut cfg: WorkerConfig) -> Vec<String> {
    let coord =
        lockstep::transport::Coordinator::bind("127.0.0.1:0", &cfg.cluster, b"test-token").unwrap();
    cfg.coordinator = coord.local_addr().unwrap().to_string();
    let json = serde_json::to_string(&cfg).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|r| {
            Command::new(exe)
                .args([
                    "bench-worker",
                    "--kind",
                    "link",
                    "--rank",
                    &r.to_string(),
                    "--config",
                    &json,
                ])
                .env("LOCKSTEP_TOKEN", "test-token")
                .stdout(Stdio::piped())
                .spawn_owned()
                .unwrap()
        })
        .collect();
    coord.serve(2, Duration::from_secs(30)).unwrap();
    kids.into_iter()
        .map(|k| {
            let o = k.wait_with_output().unwrap();
            assert!(o.status.success(), "worker failed: {o:?}");
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect()
}

#[test]
fn tcp_moves_all_sizes_both_ways_between_processes() {
    run_exchange("tcp");
}

#[test]
fn shm_moves_all_sizes_both_ways_between_processes() {
    run_exchange("shm");
}

/// Start a `listen` worker (rank 1 of a two-node mesh, expecting `n0`); its address and handle.
fn start_listener() -> (Proc, String, BufReader<std::process::ChildStdout>) {
    let json = serde_json::to_string(&config("listen", "tcp", &[])).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "bench-worker",
            "--kind",
            "link",
            "--rank",
            "1",
            "--config",
            &json,
        ])
        .env("LOCKSTEP_TOKEN", "test-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = read_until(&mut out, "ADDR ").expect("listener address");
    (child, addr, out)
}

fn refused(addr: &str, me: Identity) -> HandshakeFailure {
    let sa = tcp::resolve(addr).unwrap();
    match tcp::connect_once(sa, &me, "n1", Duration::from_secs(5)) {
        Err(Error::Handshake { reason, .. }) => reason,
        Ok(mut s) => {
            // Should not happen; if it did, prove a frame could get through.
            let _ = s.write_all(&FrameHeader::data(Op::P2p, 0, 0, 0, 0, 0).encode());
            panic!("handshake with {me:?} was accepted")
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn bad_peers_are_refused_and_a_good_peer_is_still_served() {
    let (mut child, addr, mut out) = start_listener();
    let cluster = config("listen", "tcp", &[]).cluster;
    assert_eq!(
        refused(&addr, Identity::new(&cluster, "n0", b"wrong-token")),
        HandshakeFailure::BadToken
    );
    assert_eq!(
        refused(&addr, Identity::new("other", "n0", b"test-token")),
        HandshakeFailure::WrongCluster
    );
    let mut old = Identity::new(&cluster, "n0", b"test-token");
    old.version = 99;
    assert_eq!(refused(&addr, old), HandshakeFailure::WrongVersion);
    // Random bytes, then a hello whose name length is huge, then half a hello (and a stall).
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(&[0x5a; 300]).unwrap();
    let mut huge = Hello {
        version: 1,
        cluster: cluster.clone(),
        node: "n0".into(),
        nonce: [0; 32],
    }
    .encode();
    huge[37..39].copy_from_slice(&u16::MAX.to_le_bytes());
    TcpStream::connect(&addr).unwrap().write_all(&huge).unwrap();
    let mut truncated = TcpStream::connect(&addr).unwrap();
    truncated.write_all(&huge[..20]).unwrap();
    // A frame header written with no handshake at all.
    TcpStream::connect(&addr)
        .unwrap()
        .write_all(&FrameHeader::data(Op::P2p, 0, 0, 0, 0, 5).encode())
        .unwrap();
    // The good peer.
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let peers = vec![
        PeerAddr {
            name: "n0".into(),
            addr: l.local_addr().unwrap().to_string(),
        },
        PeerAddr {
            name: "n1".into(),
            addr: addr.clone(),
        },
    ];
    let mut g = connect_mesh(&MeshConfig::new(&cluster, b"test-token", "n0", 0, peers), l).unwrap();
    let body = pattern(0, 12345);
    g.link(1)
        .send(FrameHeader::data(Op::P2p, 0, 0, 0, 0, 12345), body.clone())
        .unwrap();
    g.link(1).flush().unwrap();
    // The first and only frame the listener saw is the good one.
    let got = read_until(&mut out, "GOT ").expect("listener got a frame");
    assert_eq!(got, format!("12345 {:#010x}", crc(&body)));
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    for reason in [
        "wrong cluster token",
        "cluster name mismatch",
        "protocol version mismatch",
        "malformed",
    ] {
        assert!(
            err.contains(reason),
            "listener log lacks {reason:?}:\n{err}"
        );
    }
    drop(truncated);
}

fn killed_peer_is_detected(transport: &str) {
    let mut cfg = config("stream", transport, &[1 << 20]);
    let coord =
        lockstep::transport::Coordinator::bind("127.0.0.1:0", &cfg.cluster, b"test-token").unwrap();
    cfg.coordinator = coord.local_addr().unwrap().to_string();
    let json = serde_json::to_string(&cfg).unwrap();
    let mut kids: Vec<_> = (0..2)
        .map(|r| {
            Command::new(env!("CARGO_BIN_EXE_lockstep"))
                .args([
                    "bench-worker",
                    "--kind",
                    "link",
                    "--rank",
                    &r.to_string(),
                    "--config",
                    &json,
                ])
                .env("LOCKSTEP_TOKEN", "test-token")
                .stdout(Stdio::piped())
                .spawn_owned()
                .unwrap()
        })
        .collect();
    coord.serve(2, Duration::from_secs(30)).unwrap();
    let mut out0 = BufReader::new(kids[0].stdout.take().unwrap());
    let mut out1 = BufReader::new(kids[1].stdout.take().unwrap());
    read_until(&mut out0, "STARTED").unwrap();
    read_until(&mut out1, "STARTED").unwrap();
    std::thread::sleep(Duration::from_millis(200)); // mid-transfer
    let killed_at = Instant::now();
    kids[1].kill().unwrap(); // SIGKILL
    kids[1].wait().unwrap();
    let err = read_until(&mut out0, "ERR ").expect("survivor reports an error");
    let waited = killed_at.elapsed();
    kids[0].wait().unwrap();
    assert!(
        err.contains("peer n1"),
        "error does not name the peer: {err}"
    );
    assert!(
        err.contains("round 7") && err.contains("allreduce"),
        "error lacks round/op: {err}"
    );
    // The bound the issue asks for: within the peer timeout (3 s), with 2 s of slack for CI.
    assert!(
        waited <= Duration::from_millis(cfg.peer_timeout_ms + 2000),
        "took {waited:?}: {err}"
    );
}

#[test]
fn tcp_sigkilled_peer_is_reported_within_the_timeout() {
    killed_peer_is_detected("tcp");
}

#[test]
fn shm_sigkilled_peer_is_reported_within_the_timeout() {
    killed_peer_is_detected("shm");
}
