//! A frame header from a peer: any 64 bytes (and any bound) decode or fail with a typed error,
//! never panic, never believe a length above the bound, and round-trip when they decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_transport::frame::{Expect, FrameHeader, Op, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let (max, bytes) = match data.split_first_chunk::<8>() {
        Some((m, rest)) => (u64::from_le_bytes(*m), rest),
        None => (1 << 20, data),
    };
    if let Ok(h) = FrameHeader::try_read(bytes, max) {
        assert!(h.len <= max);
        assert!(bytes.len() >= HEADER_LEN);
        let again = FrameHeader::try_read(&h.encode(), max).expect("re-encoded header decodes");
        assert_eq!(again, h);
        let _ = Expect::op(Op::AllReduce, h.round, h.seq)
            .with_payload(h.shape_fp, h.dtype, h.len)
            .check(&h)
            .map(|m| panic!("a header mismatched itself: {m:?}"));
    }
});
