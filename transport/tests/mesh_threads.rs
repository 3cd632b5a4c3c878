//! Mesh building over real loopback sockets with ranks as threads (fast; the multi-process
//! versions live in the root crate's `tests/transport_*.rs`): every pair exchanges frames both
//! ways at once, over tcp and shm, and through a coordinator.

use lockstep_tensor::Buffer;
use lockstep_transport::{
    connect_mesh, connect_mesh_via_coordinator, Coordinator, Expect, FrameHeader, Group, Link,
    Listener, MeshConfig, Op, PeerAddr, TransportKind,
};
use std::time::Duration;

fn payload(from: usize, to: usize, len: usize) -> Buffer {
    let v: Vec<u8> = (0..len)
        .map(|i| (i * 31 + from * 7 + to * 13) as u8)
        .collect();
    Buffer::copy_from_slice(&v)
}

fn exchange(g: &mut Group, len: usize) {
    let me = g.rank();
    for p in (0..g.world()).filter(|&p| p != me) {
        let h = FrameHeader::data(Op::P2p, 1, p as u64, 0, 0, len as u64);
        g.link(p).send(h, payload(me, p, len)).unwrap();
    }
    for p in (0..g.world()).filter(|&p| p != me) {
        let f = g.link(p).recv(&Expect::op(Op::P2p, 1, me as u64)).unwrap();
        assert_eq!(&f.payload[..], &payload(p, me, len)[..], "from {p} to {me}");
    }
}

fn run_mesh(kind: TransportKind, world: usize, len: usize) {
    let listeners: Vec<Listener> = (0..world)
        .map(|_| Listener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<PeerAddr> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| PeerAddr {
            name: format!("n{i}"),
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let cluster = format!("t{}", std::process::id());
    let hs: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let mut cfg = MeshConfig::new(&cluster, b"secret", &format!("n{r}"), r, peers.clone());
            cfg.transport = kind;
            cfg.shm_ring_bytes = 1 << 16;
            std::thread::spawn(move || {
                let mut g = connect_mesh(&cfg, l).unwrap();
                exchange(&mut g, len);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn tcp_mesh_of_three_exchanges_both_ways() {
    run_mesh(TransportKind::Tcp, 3, 100_000);
}

#[test]
fn shm_mesh_of_three_exchanges_both_ways() {
    run_mesh(TransportKind::Shm, 3, 300_000);
}

#[test]
fn coordinator_hands_out_the_table() {
    let c = Coordinator::bind("127.0.0.1:0", "coord", b"tok").unwrap();
    let addr = c.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || c.serve(3, Duration::from_secs(20)).unwrap());
    let hs: Vec<_> = (0..3)
        .map(|r| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let l = Listener::bind("127.0.0.1:0").unwrap();
                let cfg = MeshConfig::new("coord", b"tok", &format!("w{r}"), usize::MAX, vec![]);
                let mut g = connect_mesh_via_coordinator(&addr, &cfg, l).unwrap();
                assert_eq!(g.my_name(), format!("w{}", g.rank()));
                exchange(&mut g, 1000);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(server.join().unwrap().len(), 3);
}
