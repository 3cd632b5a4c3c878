//! Length fields are believed only up to the link kind's bound: a control link refuses a frame a
//! data link would take, before allocating anything for it.

use lockstep_transport::config::CONTROL_MAX_FRAME_LEN;
use lockstep_transport::handshake::Identity;
use lockstep_transport::tcp::{self, TcpLink};
use lockstep_transport::{Error, Expect, FrameHeader, Link, LinkConfig, Listener, Op};
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn a_control_link_refuses_a_long_frame_from_the_header() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("c", "n1", b"t"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    let mut raw = tcp::connect_once(
        addr,
        &Identity::new("c", "n0", b"t"),
        "n1",
        Duration::from_secs(10),
    )
    .unwrap();
    let (_, s) = acc.next(Instant::now() + Duration::from_secs(10)).unwrap();
    let mut link = TcpLink::new(s, "n1", "n0", LinkConfig::control()).unwrap();
    // A header claiming 32 MiB (a data link would accept it), and no payload at all: the
    // receiver must refuse it from the header alone.
    let h = FrameHeader::data(Op::Control, 0, 0, 0, 0, 2 * CONTROL_MAX_FRAME_LEN);
    raw.write_all(&h.encode()).unwrap();
    match link.recv(&Expect::default()) {
        Err(Error::Protocol { reason, .. }) => {
            assert!(reason.contains("exceeds the maximum"), "{reason}")
        }
        other => panic!("a {} byte control frame was not refused: {other:?}", h.len),
    }
    assert!(LinkConfig::default().max_frame_len >= h.len);
}
