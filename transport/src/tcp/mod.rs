//! TCP backend (Gloo shape: `mod.rs` = device/setup, `link.rs` = one peer connection,
//! `listener.rs` = the accepting side).
//!
//! Sockets are tuned once with socket2: no Nagle (small frames and heartbeats must not wait),
//! large kernel buffers (a 64 MiB message should stream, not ping-pong), keepalive as a second
//! line of defence behind our own heartbeats, and on loopback a congestion control that does not
//! pace (see [`congestion_control`]). Every connection passes the [`crate::handshake`] before a
//! link is built on it; with TLS ([`crate::tls`], when the [`Identity`] carries a setup) the TLS
//! handshake comes first and the token handshake runs inside it, both within one deadline.

pub mod conn;
pub mod link;
pub mod listener;
pub(crate) mod send;

pub use conn::Conn;
pub use link::{TcpLink, TcpSender};
pub use listener::Listener;

use crate::error::{ConfigError, Error, Result};
use crate::handshake::{handshake, Identity, Role};
use crate::tls::TlsStream;
use socket2::{SockRef, TcpKeepalive};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Kernel socket buffer size asked for on every connection.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Congestion control of loopback connections, unless `LOCKSTEP_TCP_CONGESTION` says otherwise.
pub const LOOPBACK_CONGESTION: &str = "reno";

/// The congestion control to ask for on `stream`, `None` for the system's default.
///
/// On loopback there is no network to congest, and a pacing algorithm only costs CPU: with the
/// common default `bbr` (which paces with a timer per socket when the qdisc does not) a loopback
/// stream of 64 MiB messages ran at ~3 GB/s on the 2-core test machine against ~5-6 GB/s with
/// `reno` (and `cubic`), and `tcp_write_xmit` under the pacing timer's lock was the largest item
/// of the allreduce profile. So loopback connections use [`LOOPBACK_CONGESTION`], which every
/// kernel allows unprivileged processes. Between machines the system's choice stands: that is the
/// operator's call. `LOCKSTEP_TCP_CONGESTION=<name>` asks for `<name>` on every connection,
/// `LOCKSTEP_TCP_CONGESTION=system` keeps the default everywhere. Like the buffer sizes this is a
/// hint: a kernel that refuses it leaves the default.
pub fn congestion_control(stream: &TcpStream) -> Option<String> {
    match std::env::var("LOCKSTEP_TCP_CONGESTION") {
        Ok(v) if v.is_empty() || v == "system" => None,
        Ok(v) => Some(v),
        Err(_) => stream
            .peer_addr()
            .ok()
            .filter(|a| a.ip().is_loopback())
            .map(|_| LOOPBACK_CONGESTION.to_string()),
    }
}

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
    if let Some(cc) = congestion_control(stream) {
        if let Err(e) = s.set_tcp_congestion(cc.as_bytes()) {
            tracing::debug!(peer, congestion = %cc, error = %e, "congestion control refused");
        }
    }
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
    let addr_of = || addr.to_string();
    addr.to_socket_addrs()
        .map_err(|e| ConfigError::Address {
            addr: addr_of(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ConfigError::AddressEmpty { addr: addr_of() }.into())
}

/// Connect once to `addr`, tune the socket and run the handshake expecting `peer` (TLS first when
/// `me` has a TLS setup), all within `timeout`.
///
/// # Errors
/// [`Error::Io`] when the connection fails, [`Error::Tls`] when TLS fails (including the peer's
/// refusal of this node's certificate), [`Error::Handshake`] when the handshake is refused.
pub fn connect_once(
    addr: SocketAddr,
    me: &Identity,
    peer: &str,
    timeout: Duration,
) -> Result<Conn> {
    let ctx = || crate::Context {
        peer: format!("{peer} at {addr}"),
        round: None,
        op: None,
    };
    let deadline = Instant::now() + timeout;
    let s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::io(ctx(), "connect", &e))?;
    tune(&s, peer)?;
    let mut conn = match &me.tls {
        Some(tls) => Conn::Tls(Box::new(TlsStream::connect(
            s,
            tls,
            &format!("{peer} at {addr}"),
            deadline,
        )?)),
        None => Conn::Plain(s),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match handshake(
        &mut conn,
        Role::Initiator,
        me,
        Some(&[peer.to_string()]),
        left,
    ) {
        Ok(_) => Ok(conn),
        // Over TLS 1.3 a peer that refuses this node's certificate says so with its first answer.
        Err(e) => Err(match conn.tls_error() {
            Some(failure) => Error::Tls {
                remote: format!("{peer} at {addr}"),
                failure,
            },
            // Refused before the peer's Hello arrived (a TLS listener refusing a plain node):
            // name the node dialled, not only its address.
            None => match e {
                Error::Handshake { remote, reason } if !remote.contains(peer) => Error::Handshake {
                    remote: format!("{peer} at {remote}"),
                    reason,
                },
                e => e,
            },
        }),
    }
}
