//! The RDMA backend. Without the `rdma` feature: the shell backend must say so. With it: on a
//! machine without an RDMA device the test prints `SKIPPED` and the reason (and checks that
//! the reason is about the machine, not the build, so it cannot pass by accident); with a device, two
//! threads build a real RC link over an authenticated loopback bootstrap and move sizes from
//! 0 B to 5 MiB (the eager path, its boundary, and the windowed zero-copy path) both ways.
//!
//! With or without the feature, on a machine without a device: a mesh with `transport = rdma`
//! fails at start naming the node and what is missing, and `auto` between two hosts (127.0.0.1
//! and 127.0.0.2, distinct IPs on loopback) falls back to TCP and logs why.

// The transport's `Error` is large by design (names, round, op).
#![allow(clippy::result_large_err)]

use lockstep_transport::rdma::{self, RdmaUnavailable};
#[cfg(feature = "rdma")]
use std::io::Write;

#[cfg(not(feature = "rdma"))]
#[test]
fn without_the_feature_rdma_says_how_to_get_it() {
    match rdma::open_device() {
        Err(RdmaUnavailable::NotBuilt) => {}
        other => panic!("expected NotBuilt, got {other:?}"),
    }
    let m = RdmaUnavailable::NotBuilt.to_string();
    assert!(
        m.starts_with("this lockstep was built without RDMA support; rebuild with")
            && m.contains("--features rdma"),
        "{m}"
    );
    assert!(!rdma::available());
}

/// The reason this machine has no RDMA, as `open_device` finds it: with the feature it must be
/// one about the machine or its settings (library, kernel, device, port, `LOCKSTEP_RDMA_*`),
/// never the build.
#[cfg(feature = "rdma")]
fn machine_reason(why: &RdmaUnavailable) {
    assert!(
        matches!(
            why,
            RdmaUnavailable::NoLibrary { .. }
                | RdmaUnavailable::NoKernelSupport { .. }
                | RdmaUnavailable::NoDevice
                | RdmaUnavailable::DeviceNotFound { .. }
                | RdmaUnavailable::BadSetting { .. }
                | RdmaUnavailable::CannotOpen { .. }
                | RdmaUnavailable::PortQuery { .. }
                | RdmaUnavailable::PortNotActive { .. }
        ),
        "unexpected reason: {why:?}"
    );
}

#[cfg(feature = "rdma")]
#[test]
fn rdma_link_moves_sizes_both_ways_or_skips_without_a_device() {
    let dev = match rdma::open_device() {
        Ok(d) => d,
        Err(why) => {
            // Straight to stderr, past libtest's capture, so CI logs show the skip.
            let _ = writeln!(std::io::stderr(), "SKIPPED rdma link test: {why}");
            machine_reason(&why);
            return;
        }
    };
    println!("rdma device {}", dev.name);
    with_device::exchange_between_threads(dev);
}

#[cfg(feature = "rdma")]
mod with_device {
    use lockstep_tensor::Buffer;
    use lockstep_transport::handshake::{handshake, Identity, Role};
    use lockstep_transport::rdma::{RdmaDevice, RdmaLink};
    use lockstep_transport::{Expect, FrameHeader, Link, LinkConfig, Op};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    const SIZES: [usize; 7] = [0, 1, 4096, 16 << 10, (16 << 10) + 1, 1 << 20, (5 << 20) + 3];

    fn body(from: usize, len: usize) -> Buffer {
        let v: Vec<u8> = (0..len).map(|i| (i * 31 + from * 7) as u8).collect();
        Buffer::copy_from_slice(&v)
    }

    fn run(mut link: RdmaLink, me: usize) {
        for (i, &len) in SIZES.iter().enumerate() {
            let h = FrameHeader::data(Op::P2p, 1, i as u64, 0, 0, len as u64);
            link.send(h, body(me, len)).unwrap();
            let f = link.recv(&Expect::op(Op::P2p, 1, i as u64)).unwrap();
            assert_eq!(&f.payload[..], &body(1 - me, len)[..], "size {len}");
        }
    }

    pub fn exchange_between_threads(dev: RdmaDevice) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Duration::from_secs(10);
        let peer = std::thread::spawn(move || {
            let dev = lockstep_transport::rdma::open_device().unwrap();
            let mut s = TcpStream::connect(addr).unwrap();
            handshake(
                &mut s,
                Role::Initiator,
                &Identity::new("c", "n1", b"tok"),
                Some(&["n0".into()]),
                t,
            )
            .unwrap();
            run(
                RdmaLink::establish(s, &dev, "n1", "n0", LinkConfig::default()).unwrap(),
                1,
            );
        });
        let (mut s, _) = l.accept().unwrap();
        handshake(
            &mut s,
            Role::Acceptor,
            &Identity::new("c", "n0", b"tok"),
            Some(&["n1".into()]),
            t,
        )
        .unwrap();
        run(
            RdmaLink::establish(s, &dev, "n0", "n1", LinkConfig::default()).unwrap(),
            0,
        );
        peer.join().unwrap();
    }
}

mod selection {
    use lockstep_tensor::Buffer;
    use lockstep_transport::{
        connect_mesh, Error, Expect, FrameHeader, Link, Listener, MeshConfig, Op, PeerAddr,
        TransportKind,
    };
    use std::io::Write;
    use std::sync::{Arc, Mutex, OnceLock};

    /// Everything this test binary logs (one global subscriber).
    fn log() -> Arc<Mutex<Vec<u8>>> {
        static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
        LOG.get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let w = buf.clone();
            let sub = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || Sink(w.clone()))
                .finish();
            tracing::subscriber::set_global_default(sub).unwrap();
            buf
        })
        .clone()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Two ranks as threads on `ips`; each returns its link kind to the other after one
    /// exchange, or the mesh error.
    fn mesh(kind: TransportKind, ips: [&str; 2]) -> Vec<Result<&'static str, Error>> {
        let listeners: Vec<Listener> = ips
            .iter()
            .map(|ip| Listener::bind(&format!("{ip}:0")).unwrap())
            .collect();
        let peers: Vec<PeerAddr> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| PeerAddr {
                name: format!("n{i}"),
                addr: l.local_addr().unwrap().to_string(),
            })
            .collect();
        let cluster = format!("sel{}", std::process::id());
        let hs: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let mut cfg =
                    MeshConfig::new(&cluster, b"secret", &format!("n{r}"), r, peers.clone());
                cfg.transport = kind;
                cfg.connect_timeout_ms = 10_000;
                std::thread::spawn(move || {
                    let mut g = connect_mesh(&cfg, l)?;
                    let p = 1 - r;
                    let h = FrameHeader::data(Op::P2p, 1, p as u64, 0, 0, 3);
                    g.link(p).send(h, Buffer::copy_from_slice(&[r as u8; 3]))?;
                    let f = g.link(p).recv(&Expect::op(Op::P2p, 1, r as u64))?;
                    assert_eq!(&f.payload[..], &[p as u8; 3]);
                    Ok(g.link(p).kind())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn rdma_without_a_device_fails_at_start_naming_the_node_and_what_is_missing() {
        if lockstep_transport::rdma::available() {
            return; // a machine with a device runs the link test instead
        }
        for (r, res) in mesh(TransportKind::Rdma, ["127.0.0.1", "127.0.0.1"])
            .into_iter()
            .enumerate()
        {
            let Err(Error::RdmaUnavailable { node, reason }) = res else {
                panic!("rank {r}: expected RdmaUnavailable, got {res:?}");
            };
            assert_eq!(node, format!("n{r}"));
            // The mesh reports exactly what `open_device` finds missing on this machine.
            assert_eq!(
                Err(reason.clone()),
                lockstep_transport::rdma::open_device().map(|_| ())
            );
            let m = Error::RdmaUnavailable { node, reason }.to_string();
            assert!(
                m.starts_with(&format!("node n{r}: transport rdma: ")),
                "{m}"
            );
        }
        assert_eq!(
            "rdma".parse::<TransportKind>().unwrap(),
            TransportKind::Rdma
        );
        let e = "infiniband"
            .parse::<TransportKind>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("tcp, shm, rdma or auto"), "{e}");
    }

    #[test]
    fn auto_between_hosts_without_rdma_uses_tcp_and_logs_why() {
        if lockstep_transport::rdma::available() {
            return; // with a device, auto would (rightly) pick rdma
        }
        let log = log();
        let kinds = mesh(TransportKind::Auto, ["127.0.0.1", "127.0.0.2"]);
        for k in kinds {
            assert_eq!(k.unwrap(), "tcp");
        }
        // Same IP: auto means shared memory, no negotiation.
        for k in mesh(TransportKind::Auto, ["127.0.0.1", "127.0.0.1"]) {
            assert_eq!(k.unwrap(), "shm");
        }
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("auto: link between hosts uses tcp"))
            .collect();
        assert_eq!(lines.len(), 2, "one line per side:\n{text}");
        for l in lines {
            let why = lockstep_transport::rdma::open_device()
                .unwrap_err()
                .to_string();
            assert!(
                l.contains(&format!("this node cannot run RDMA: {why}")),
                "{l}"
            );
        }
    }
}
