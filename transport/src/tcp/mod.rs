//! TCP backend (Gloo shape: `mod.rs` = device/setup, `link.rs` = one peer connection,
//! `listener.rs` = the accepting side).
//!
//! Sockets are tuned once with socket2: no Nagle (small frames and heartbeats must not wait),
//! large kernel buffers (a 64 MiB message should stream, not ping-pong), keepalive as a second
//! line of defence behind our own heartbeats. Every connection passes the [`crate::handshake`]
//! before a link is built on it.

pub mod link;
pub mod listener;

pub use link::{TcpLink, TcpSender};
pub use listener::Listener;

use crate::error::{Error, Result};
use crate::handshake::{handshake, Identity};
use socket2::{SockRef, TcpKeepalive};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Kernel socket buffer size asked for on every connection.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Apply the tuning to a connected stream.
///
/// # Errors
/// [`Error::Io`] naming the socket option that failed.
pub fn tune(stream: &TcpStream, peer: &str) -> Result<()> {
    let ctx = || crate::Context {
        peer: peer.to_string(),
        round: None,
        op: None,
    };
    let s = SockRef::from(stream);
    s.set_nodelay(true)
        .map_err(|e| Error::io(ctx(), "setsockopt(TCP_NODELAY)", &e))?;
    // Buffer sizes are hints the kernel may clamp; a refusal is not fatal.
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(2));
    s.set_tcp_keepalive(&ka)
        .map_err(|e| Error::io(ctx(), "setsockopt(SO_KEEPALIVE)", &e))?;
    Ok(())
}

/// Resolve `addr` ("host:port") to one socket address.
///
/// # Errors
/// [`Error::Config`] when it does not resolve.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::Config(format!("address {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| Error::Config(format!("address {addr:?} resolves to nothing")))
}

/// Connect once to `addr`, tune the socket and run the handshake expecting `peer`.
///
/// # Errors
/// [`Error::Io`] when the connection fails, [`Error::Handshake`] when it is refused.
pub fn connect_once(
    addr: SocketAddr,
    me: &Identity,
    peer: &str,
    timeout: Duration,
) -> Result<TcpStream> {
    let ctx = || crate::Context {
        peer: format!("{peer} at {addr}"),
        round: None,
        op: None,
    };
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::io(ctx(), "connect", &e))?;
    tune(&s, peer)?;
    handshake(&mut s, me, Some(&[peer.to_string()]), timeout)?;
    Ok(s)
}
