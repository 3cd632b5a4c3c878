//! Collectives over real links, ranks as threads: tcp and shared memory (small rings, so frames
//! wrap around the ring's end, reservations fall back to pooled buffers when a piece is over a
//! quarter of the ring, and an odd-length broadcast leaves later frames unaligned). Every result
//! must have the same bits as over the in-process mesh, where no frame is written in place.

use lockstep_collective::{Algo, AllReduce, CollectiveConfig, Communicator};
use lockstep_transport::{connect_mesh, Listener, MeshConfig, PeerAddr, TransportKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];

fn input(r: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + r * 13) % 101) as f32 * 0.37 - 17.0 + (r as f32) * 1e-3)
        .collect()
}

/// What every rank runs: an odd-length broadcast, then allreduces (sum and mean) of several
/// lengths; the bits of every result.
fn workload(c: &mut Communicator, lens: &[usize]) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut odd: Vec<u8> = (0..1001).map(|i| (i * c.rank()) as u8).collect();
    c.broadcast(&mut odd, 1).unwrap();
    out.push(odd.iter().map(|&b| u32::from(b)).collect());
    for (k, &len) in lens.iter().enumerate() {
        let mut x = input(c.rank(), len);
        let how = if k % 2 == 0 {
            AllReduce::sum()
        } else {
            AllReduce::mean()
        };
        c.allreduce(&mut x, how.algo(Algo::Ring)).unwrap();
        out.push(x.iter().map(|v| v.to_bits()).collect());
        let mut t = input(c.rank() + 5, 37);
        c.allreduce(&mut t, AllReduce::sum().algo(Algo::Tree))
            .unwrap();
        out.push(t.iter().map(|v| v.to_bits()).collect());
    }
    out
}

fn run(
    kind: Option<TransportKind>,
    world: usize,
    ring_bytes: usize,
    config: CollectiveConfig,
    lens: &'static [usize],
) -> Vec<Vec<Vec<u32>>> {
    let groups = match kind {
        None => lockstep_transport::local::mesh(&NAMES[..world], Duration::from_secs(10)),
        Some(kind) => {
            static N: AtomicUsize = AtomicUsize::new(0);
            let cluster = format!(
                "links{}x{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            let listeners: Vec<Listener> = (0..world)
                .map(|_| Listener::bind("127.0.0.1:0").unwrap())
                .collect();
            let peers: Vec<PeerAddr> = listeners
                .iter()
                .enumerate()
                .map(|(i, l)| PeerAddr {
                    name: NAMES[i].to_string(),
                    addr: l.local_addr().unwrap().to_string(),
                })
                .collect();
            let hs: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .map(|(r, l)| {
                    let mut m = MeshConfig::new(&cluster, b"secret", NAMES[r], r, peers.clone());
                    m.transport = kind;
                    m.shm_ring_bytes = ring_bytes;
                    std::thread::spawn(move || connect_mesh(&m, l).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        }
    };
    let hs: Vec<_> = groups
        .into_iter()
        .map(|g| std::thread::spawn(move || workload(&mut Communicator::new(g, config), lens)))
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

fn check(kind: TransportKind, world: usize, ring_bytes: usize, chunk_bytes: usize) {
    const LENS: &[usize] = &[0, 1, 7, 1000, 20_001];
    let config = CollectiveConfig {
        chunk_bytes,
        ..CollectiveConfig::default()
    };
    let want = run(None, world, ring_bytes, config, LENS);
    let got = run(Some(kind), world, ring_bytes, config, LENS);
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "{kind:?} world {world}: rank {r} differs from the local mesh"
        );
        assert!(
            g == &got[0],
            "{kind:?} world {world}: rank {r} differs from rank 0"
        );
    }
}

#[test]
fn shm_in_place_frames_give_the_local_bits() {
    for world in 2..=4 {
        // Pieces of 1 KiB in a 16 KiB ring: written in place, wrapping often.
        check(TransportKind::Shm, world, 16 << 10, 1024);
    }
}

#[test]
fn shm_pieces_too_large_for_the_ring_go_through_buffers() {
    // Pieces of 8 KiB in a 16 KiB ring: more than a quarter, so pooled buffers.
    check(TransportKind::Shm, 3, 16 << 10, 8 << 10);
}

#[test]
fn tcp_gives_the_local_bits() {
    for world in [2, 3] {
        check(TransportKind::Tcp, world, 0, 1024);
    }
}

/// A peer that answers an allreduce with a frame far longer than the piece expected: the length
/// is refused with the header, before anything is allocated for it or fed to the reduction
/// kernel, and the collective returns an error naming the peer instead of panicking.
fn oversized_frame_is_an_error(kind: TransportKind) {
    use lockstep_tensor::Buffer;
    use lockstep_transport::{FrameHeader, Link, Op};
    static N: AtomicUsize = AtomicUsize::new(0);
    let cluster = format!(
        "big{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let listeners: Vec<Listener> = (0..2)
        .map(|_| Listener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<PeerAddr> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| PeerAddr {
            name: NAMES[i].to_string(),
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let mut hs: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let mut m = MeshConfig::new(&cluster, b"secret", NAMES[r], r, peers.clone());
            m.transport = kind;
            m.shm_ring_bytes = 1 << 20;
            std::thread::spawn(move || connect_mesh(&m, l).unwrap())
        })
        .collect();
    let mut rogue = hs.pop().unwrap().join().unwrap();
    let honest = hs.pop().unwrap().join().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let rogue = std::thread::spawn(move || {
        let big = 64 << 20;
        let h = FrameHeader::data(Op::AllReduce, 0, 0, 0, 0, big as u64);
        let _ = rogue.link(0).send(h, Buffer::zeroed(big));
        let _ = rogue.link(0).flush();
        let _ = done_rx.recv(); // keep the link up until the honest rank has its answer
    });
    let mut c = Communicator::new(honest, CollectiveConfig::default());
    let mut x = input(0, 1000);
    let err = c
        .allreduce(&mut x, AllReduce::sum().algo(Algo::Ring))
        .expect_err("an oversized frame was accepted");
    let msg = err.to_string();
    assert!(
        msg.contains("n1") && msg.contains("payload length"),
        "{msg}"
    );
    drop(done_tx);
    rogue.join().unwrap();
}

#[test]
fn oversized_frame_over_shm_is_an_error_not_a_panic() {
    oversized_frame_is_an_error(TransportKind::Shm);
}

#[test]
fn oversized_frame_over_tcp_is_an_error_not_a_panic() {
    oversized_frame_is_an_error(TransportKind::Tcp);
}
