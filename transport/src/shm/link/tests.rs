use super::*;
use crate::frame::Op;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// A linked pair `a` <-> `b` over real segments (removed once both sides have mapped).
fn pair(a_cfg: LinkConfig, b_cfg: LinkConfig) -> (ShmLink, ShmLink) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let cluster = format!(
        "unit{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = cluster.clone();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        ShmLink::establish(s.into(), &c, "b", "a", false, b_cfg).unwrap()
    });
    let s = TcpStream::connect(addr).unwrap();
    let a = ShmLink::establish(s.into(), &cluster, "a", "b", true, a_cfg).unwrap();
    (a, t.join().unwrap())
}

fn small() -> LinkConfig {
    LinkConfig {
        shm_ring_bytes: 4096,
        ..LinkConfig::default()
    }
}

fn header(seq: u64, len: usize) -> FrameHeader {
    FrameHeader::data(Op::P2p, 1, seq, 0, 0, len as u64)
}

fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 * 7 + seq * 31) as u8).collect()
}

#[test]
fn reserved_frames_wrap_around_the_ring_and_arrive_whole() {
    let (mut a, mut b) = pair(small(), small());
    let cap = a.out.ring().capacity();
    let (mut payload_split, mut header_split) = (0, 0);
    for seq in 0..60u64 {
        // Odd lengths too, so frames start at every alignment.
        let len = (seq as usize * 149) % (cap / 4 - HEADER_LEN + 1);
        let mut r = a.reserve(header(seq, len)).unwrap();
        assert!(
            r.in_place(),
            "a frame of {len} bytes fits a quarter of the ring"
        );
        let Room::Ring(room) = &r.room else {
            unreachable!()
        };
        let at = room.pos as usize % cap;
        header_split += usize::from(at + HEADER_LEN > cap);
        let want = pattern(seq, len);
        let (p, q) = r.pieces();
        assert_eq!(p.len() + q.len(), len);
        payload_split += usize::from(!q.is_empty());
        p.copy_from_slice(&want[..p.len()]);
        q.copy_from_slice(&want[p.len()..]);
        assert_eq!(b.inbound.ring.available(), 0, "visible before commit");
        a.commit(r).unwrap();
        let f = b.recv(&Expect::op(Op::P2p, 1, seq)).unwrap();
        assert_eq!(&f.payload[..], &want[..], "frame {seq}");
    }
    assert!(
        payload_split > 0 && header_split > 0,
        "{payload_split} {header_split}"
    );
}

#[test]
fn reservation_waits_for_room_until_the_peer_reads() {
    let (mut a, mut b) = pair(small(), small());
    let len = 1024 - HEADER_LEN; // four fill the ring
    for seq in 0..4 {
        let r = a.reserve(header(seq, len)).unwrap();
        a.commit(r).unwrap();
    }
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        b.recv(&Expect::op(Op::P2p, 1, 0)).unwrap();
        b
    });
    let t = Instant::now();
    let r = a.reserve(header(4, len)).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    assert!(r.in_place());
    a.commit(r).unwrap();
    let mut b = reader.join().unwrap();
    for seq in 1..5 {
        assert_eq!(
            b.recv(&Expect::op(Op::P2p, 1, seq)).unwrap().payload.len(),
            len
        );
    }
}

#[test]
fn reservation_larger_than_the_free_space_times_out_naming_the_peer() {
    let a_cfg = LinkConfig {
        peer_timeout: Duration::from_millis(300),
        ..small()
    };
    // `b` sends no heartbeat in time and reads nothing: silent.
    let b_cfg = LinkConfig {
        heartbeat: Duration::from_secs(60),
        ..small()
    };
    let (mut a, _b) = pair(a_cfg, b_cfg);
    // Beyond a quarter of the ring: a pooled buffer, which never waits.
    let r = a.reserve(header(0, 1025 - HEADER_LEN)).unwrap();
    assert!(!r.in_place());
    drop(r);
    for seq in 0..4 {
        let r = a.reserve(header(seq, 900)).unwrap();
        assert!(r.in_place());
        a.commit(r).unwrap();
    }
    let t = Instant::now();
    let e = a.reserve(header(2, 900)).unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    match &e {
        Error::PeerTimeout { ctx, .. } => {
            assert_eq!(
                (ctx.peer.as_str(), ctx.round, ctx.op),
                ("b", Some(1), Some(Op::P2p))
            )
        }
        other => panic!("expected a peer timeout, got {other}"),
    }
    assert!(e.to_string().contains("peer b"), "{e}");
    // The link is poisoned with that error.
    assert_eq!(
        a.send_from(header(3, 4), &[0; 4]).unwrap_err().to_string(),
        e.to_string()
    );
}

#[test]
fn oversized_frame_is_refused_before_the_payload_is_touched() {
    let cfg = LinkConfig {
        max_frame_len: 1000,
        ..small()
    };
    let (mut a, mut b) = pair(cfg, cfg);
    // The sender refuses to reserve one, without poisoning the link.
    assert!(matches!(a.reserve(header(0, 1001)), Err(Error::Config(_))));
    // A forged one in the ring is refused by the receiver from its header alone.
    let forged = header(0, 1001).encode();
    assert_eq!(a.out.ring().write_some(&[&forged, &[9u8; 100]], 0), 164);
    let mut touched = false;
    let e = b
        .recv_with(&Expect::default(), &mut |_, _| touched = true)
        .unwrap_err();
    assert!(
        !touched,
        "a reduction kernel saw payload of a refused frame"
    );
    assert!(
        matches!(&e, Error::Protocol { ctx, reason } if ctx.peer == "a" && reason.contains("exceeds")),
        "{e}"
    );
}

#[test]
fn a_send_while_reserved_cancels_the_reservation_and_goes_out_after_it() {
    let (mut a, mut b) = pair(small(), small());
    let mut r = a.reserve(header(0, 100)).unwrap();
    r.pieces().0.fill(1);
    a.send_from(header(1, 3), &[1, 2, 3]).unwrap();
    assert!(matches!(a.commit(r), Err(Error::Config(_))));
    let f = b.recv(&Expect::default()).unwrap();
    assert_eq!((f.header.seq, &f.payload[..]), (1, &[1u8, 2, 3][..]));
    a.flush().unwrap();
    assert_eq!(
        b.inbound.ring.available(),
        0,
        "the cancelled frame never went out"
    );
    // A second reservation while one is open is refused.
    let r = a.reserve(header(2, 8)).unwrap();
    assert!(matches!(a.reserve(header(3, 8)), Err(Error::Config(_))));
    a.commit(r).unwrap();
    assert_eq!(b.recv(&Expect::default()).unwrap().header.seq, 2);
}
