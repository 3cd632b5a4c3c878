//! An authenticated connection before it becomes a link: a plain socket, or a TLS session over
//! one (`cluster.tls`). Setup code (the handshake, a coordinator's registration, a shared-memory
//! bootstrap, a producer's stream) reads and writes it like a socket; [`super::TcpLink::new`]
//! turns either into a link.

use crate::handshake::HandshakeStream;
use crate::tls::TlsStream;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// A connection: plain TCP or TLS over TCP.
pub enum Conn {
    /// A plain socket.
    Plain(TcpStream),
    /// A TLS session (its handshake done) over a socket.
    Tls(Box<TlsStream>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("tls", &self.is_tls())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Conn {
        Conn::Plain(s)
    }
}

impl Conn {
    /// The socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    /// Whether this connection runs TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// The remote address.
    ///
    /// # Errors
    /// `getpeername`'s error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// `getsockname`'s error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    /// Bound each following read by `t` (`None`: no limit).
    ///
    /// # Errors
    /// The socket option's error.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(t)
    }

    /// Shut the socket down (everything written has already been handed to it).
    ///
    /// # Errors
    /// `shutdown`'s error.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }

    /// The TLS error that ended this connection, if it runs TLS and one did (e.g. the peer's
    /// refusal of this node's certificate, which TLS 1.3 delivers with the peer's first answer).
    pub fn tls_error(&self) -> Option<crate::TlsFailure> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(t) => t.tls_error(),
        }
    }

    /// The bare socket, leaving TLS: for a side channel that carries no data after its setup
    /// (a shared-memory link's heartbeats and EOF). The setup read whole records only, so no
    /// byte that follows was taken by TLS.
    pub(crate) fn into_socket(self) -> TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

impl HandshakeStream for Conn {
    fn set_io_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_io_timeout(t)
    }
    fn remote(&self) -> String {
        self.socket().remote()
    }
    fn close(&self) {
        self.socket().close()
    }
    fn check_peer_name(&self, node: &str) -> bool {
        match self {
            Conn::Plain(_) => true,
            Conn::Tls(t) => t.check_peer_name(node),
        }
    }
}
