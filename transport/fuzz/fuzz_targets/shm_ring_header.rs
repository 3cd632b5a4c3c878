//! A shared ring whose header a hostile peer wrote, and keeps writing: the input gives the
//! header's first bytes, then a script of operations of this side (producer or consumer) mixed
//! with the peer overwriting `head` and `tail`. Nothing may panic or touch memory outside the
//! mapping (the fuzzer's sanitizers watch), and a ring found corrupt stays empty and full.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_transport::shm::ring::{read_info, Ring, RING_HEADER};

const OFF_HEAD: usize = 64;
const OFF_TAIL: usize = 128;

fuzz_target!(|data: &[u8]| {
    let (head, script) = data.split_at(data.len().min(64));
    let cap = match read_info(head) {
        // What the link checks before attaching: a power of two that fits the mapping.
        Some(i) if i.capacity.is_power_of_two() && i.capacity <= 1 << 12 => i.capacity as usize,
        _ => 256,
    };
    let mut mem = vec![0u64; (RING_HEADER + cap).div_ceil(8)];
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: `mem` is 8-aligned, RING_HEADER + cap bytes, and outlives `ring` (dropped first);
    // the peer's writes below go through raw volatile stores, as another process's would.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base, mem.len() * 8) };
    bytes[..head.len()].copy_from_slice(head);
    // SAFETY: as above; the mapping holds RING_HEADER + cap bytes and cap is a power of two.
    let ring = unsafe { Ring::attach(bytes, cap) };
    let poke = |off: usize, v: u64| {
        // SAFETY: an aligned u64 inside the header of the live allocation.
        unsafe { std::ptr::write_volatile(base.add(off).cast::<u64>(), v) }
    };
    let mut it = script.chunks(9);
    for op in it.by_ref() {
        let arg = op
            .get(1..9)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0);
        match op[0] % 6 {
            0 => poke(OFF_HEAD, arg),
            1 => poke(OFF_TAIL, arg),
            2 => {
                let p = ring.readable(arg as usize);
                assert!(p.len() <= cap);
                let n = p.len();
                ring.consume(n);
            }
            3 => {
                let chunk = [op[0]; 64];
                let n = ring.write_some(&[&chunk[..(arg as usize) % 65]], 0);
                assert!(n <= 64);
            }
            4 => {
                let n = (arg as usize) % (cap + 1);
                if let Some(pos) = ring.try_reserve(n) {
                    // SAFETY: `n` bytes were just reserved; this is the only producer.
                    let (a, b) = unsafe { ring.reserved(pos, 0, n) };
                    assert_eq!(a.len() + b.len(), n);
                    a.fill(1);
                    b.fill(2);
                    ring.publish(pos + n as u64);
                }
            }
            _ => {
                // Corruption found before these reads makes both zero (a read may also be
                // the one that finds it, and then only the later reads are zero).
                let was_corrupt = ring.corruption().is_some();
                let (f, a) = (ring.free(), ring.available());
                assert!(f <= cap && a <= cap);
                if was_corrupt {
                    assert_eq!((f, a), (0, 0));
                }
            }
        }
    }
    drop(ring);
    drop(mem);
});
