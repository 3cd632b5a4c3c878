use super::*;

/// A ring of `cap` bytes in ordinary (8-aligned) memory.
fn ring(cap: usize) -> (Vec<u64>, Ring) {
    let mut mem = vec![0u64; (RING_HEADER + cap) / 8];
    // SAFETY: `mem` is 8-aligned, `RING_HEADER + cap` bytes long, and outlives the ring in
    // every test (returned together; the heap block does not move with the Vec).
    let r = unsafe {
        let bytes = std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<u8>(), mem.len() * 8);
        Ring::init(bytes, 7, cap)
    };
    (mem, r)
}

fn read_all(r: &Ring, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let p = r.readable(n - out.len());
        assert!(
            !p.is_empty(),
            "ring ran dry after {} of {n} bytes",
            out.len()
        );
        out.extend_from_slice(p);
        r.consume(p.len());
    }
    out
}

#[test]
fn reservation_wraps_around_the_end_and_is_invisible_until_published() {
    let (_mem, r) = ring(256);
    assert_eq!(r.write_some(&[&[1u8; 200]], 0), 200);
    assert_eq!(read_all(&r, 200), vec![1u8; 200]);
    // 100 bytes from position 200 of a 256-byte ring: 56 at the end, 44 at the start.
    let pos = r.try_reserve(100).unwrap();
    assert_eq!(pos, 200);
    // SAFETY: the test is the only producer; the room was just reserved.
    let (a, b) = unsafe { r.reserved(pos, 0, 100) };
    assert_eq!((a.len(), b.len()), (56, 44));
    for (i, x) in a.iter_mut().chain(b.iter_mut()).enumerate() {
        *x = i as u8;
    }
    assert_eq!(r.available(), 0, "nothing is visible before publish");
    // An offset inside the room starts past the wrap point too.
    // SAFETY: as above, a sub-range of the same room.
    let (c, d) = unsafe { r.reserved(pos, 60, 40) };
    assert_eq!((c.len(), d.len(), c[0]), (40, 0, 60));
    r.publish(pos + 100);
    assert_eq!(read_all(&r, 100), (0..100u8).collect::<Vec<_>>());
}

#[test]
fn reservation_needs_that_much_free_space() {
    let (_mem, r) = ring(256);
    assert_eq!(r.try_reserve(257), None);
    assert_eq!(r.write_some(&[&[0u8; 200]], 0), 200);
    assert_eq!(r.try_reserve(57), None);
    assert_eq!(r.try_reserve(56), Some(200));
    assert!(!r.wait_space_for(57, Duration::from_millis(1)));
    r.consume(10);
    assert!(r.wait_space_for(57, Duration::from_millis(1)));
    assert_eq!(r.try_reserve(66), Some(200));
}

/// Write `v` into the shared header at `off`, as a hostile peer could.
fn poke(mem: &mut [u64], off: usize, v: u64) {
    mem[off / 8] = v;
}

#[test]
fn a_hostile_head_reads_as_corrupt_not_as_data() {
    let (mut mem, r) = ring(256);
    assert_eq!(r.write_some(&[&[1u8; 10]], 0), 10);
    // SAFETY: the consumer view over the same memory (the test plays both processes).
    let c = unsafe {
        let bytes = std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<u8>(), mem.len() * 8);
        Ring::attach(bytes, 256)
    };
    assert_eq!(c.available(), 10);
    poke(&mut mem, OFF_HEAD, 10 + 257); // more than the capacity past the tail
    assert_eq!(c.available(), 0);
    assert!(c.readable(usize::MAX).is_empty());
    assert!(
        c.corruption().unwrap().contains("head 267"),
        "{:?}",
        c.corruption()
    );
    // Once corrupt, always corrupt, even if the header is put back.
    poke(&mut mem, OFF_HEAD, 10);
    assert_eq!(c.available(), 0);
}

#[test]
fn a_head_that_moves_backwards_or_a_tail_past_the_head_is_corrupt() {
    let (mut mem, r) = ring(256);
    assert_eq!(r.write_some(&[&[1u8; 10]], 0), 10);
    assert_eq!(r.available(), 10);
    poke(&mut mem, OFF_HEAD, 5);
    assert_eq!(r.available(), 0);
    assert!(r.corruption().is_some());

    let (mut mem, r) = ring(256);
    assert_eq!(r.write_some(&[&[1u8; 10]], 0), 10);
    poke(&mut mem, OFF_TAIL, 11); // the consumer claims to have read more than was written
    assert_eq!(r.free(), 0);
    assert_eq!(r.try_reserve(1), None);
    assert!(r.corruption().unwrap().contains("tail 11"));
}
