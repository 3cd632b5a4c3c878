//! Fuzz target: the frame-header and handshake-hello decoders on arbitrary bytes. Neither may
//! panic; whatever decodes must re-encode to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_transport::frame::{FrameHeader, HEADER_LEN};
use lockstep_transport::handshake::Hello;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = FrameHeader::try_read(data, 1 << 30) {
        // Reserved bytes may be non-zero under a valid CRC, so compare decoded values.
        assert_eq!(FrameHeader::try_read(&h.encode(), 1 << 30), Ok(h));
        assert!(data.len() >= HEADER_LEN);
    }
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(h.encode(), data);
    }
});
