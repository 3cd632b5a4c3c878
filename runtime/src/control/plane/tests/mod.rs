//! The control plane over real TCP control links (unit tests: the plane is internal to the
//! crate).

mod finish;
mod membership;

use lockstep_transport::handshake::Identity;
use lockstep_transport::tcp::{self, TcpLink};
use lockstep_transport::{AnyLink, LinkConfig, Listener};
use std::time::{Duration, Instant};

/// A control link pair: (coordinator side, member side).
pub(super) fn pair(member: &str) -> (AnyLink, AnyLink) {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let acc = l
        .start(
            Identity::new("c", "coordinator", b"t"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    let s = tcp::connect_once(
        addr,
        &Identity::new("c", member, b"t"),
        "coordinator",
        Duration::from_secs(10),
    )
    .unwrap();
    let (_, c) = acc.next(Instant::now() + Duration::from_secs(10)).unwrap();
    let cfg = LinkConfig::control();
    (
        AnyLink::Tcp(TcpLink::new(c, "coordinator", member, cfg).unwrap()),
        AnyLink::Tcp(TcpLink::new(s, member, "coordinator", cfg).unwrap()),
    )
}
