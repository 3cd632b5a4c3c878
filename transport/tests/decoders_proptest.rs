//! Property tests of the wire decoders: every header and hello round-trips, and arbitrary bytes
//! never make a decoder panic (the cargo-fuzz targets in `transport/fuzz/` push further).

use lockstep_transport::frame::{FrameHeader, FrameKind, Op, HEADER_LEN};
use lockstep_transport::handshake::{Hello, MAX_NAME_LEN};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    (1u16..=9).prop_map(|v| Op::from_wire(v).unwrap())
}

fn kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Data),
        Just(FrameKind::Heartbeat),
        Just(FrameKind::Close),
        Just(FrameKind::Control)
    ]
}

proptest! {
    #[test]
    fn header_round_trips(kind in kind(), op in op(), dtype: u8, flags: u8, src_rank: u32, job: u64,
                          round: u64, seq: u64, shape_fp: u64, len in 0u64..(1 << 40)) {
        let h = FrameHeader { kind, dtype, flags, op, src_rank, job, round, seq, shape_fp, len };
        prop_assert_eq!(FrameHeader::try_read(&h.encode(), 1 << 40), Ok(h));
        if len > 0 {
            prop_assert!(FrameHeader::try_read(&h.encode(), len - 1).is_err());
        }
    }

    #[test]
    fn header_flipped_bit_is_caught(bit in 0usize..(HEADER_LEN * 8)) {
        let mut b = FrameHeader::data(Op::AllReduce, 3, 4, 5, 6, 7).encode();
        b[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(FrameHeader::try_read(&b, u64::MAX).is_err());
    }

    #[test]
    fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let _ = FrameHeader::try_read(&bytes, 1 << 20);
    }

    #[test]
    fn hello_round_trips(version: u8, cluster in "[a-z0-9-]{0,40}", node in "\\PC{0,30}", nonce: [u8; 32]) {
        prop_assume!(node.len() <= MAX_NAME_LEN);
        let h = Hello { version, cluster, node, nonce };
        prop_assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn hello_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Hello::decode(&bytes);
    }
}
