//! A TLS session over one TCP socket, from the TLS handshake until the connection becomes a link:
//! the token handshake, a coordinator's registration, a shared-memory setup and a producer's
//! stream run on it as on a plain socket ([`std::io::Read`] + [`std::io::Write`]).
//!
//! It reads the socket one TLS record at a time (the 5-byte record header, then exactly the
//! length it announces), never further: so a connection that leaves TLS after its setup (the
//! side channel of a shared-memory link) has no byte of what follows swallowed, and a peer that
//! is not speaking TLS is recognised from its first five bytes, before anything is allocated.
//! The link built on it afterwards ([`super::io`]) reads in large blocks instead.

use super::config::TlsConfig;
use crate::error::{Error, HandshakeFailure, TlsFailure};
use crate::handshake::{refuse_raw, HandshakeStream, HELLO_MAGIC, TAG_REFUSE};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Largest TLS record on the wire: 2^14 bytes of plaintext plus the AEAD's expansion.
const MAX_RECORD: usize = (1 << 14) + 256;

/// One TLS session on a socket. See the module docs.
pub struct TlsStream {
    pub(crate) sock: TcpStream,
    pub(crate) conn: Connection,
    /// The first TLS error met after the handshake (e.g. the peer's alert refusing this node's
    /// certificate, which TLS 1.3 delivers only with the peer's first answer).
    last_error: Option<rustls::Error>,
    /// Whether the TLS handshake got any record from the peer.
    heard: bool,
}

fn remote(sock: &TcpStream) -> String {
    sock.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The text of the error [`read_record`] returns for a plain Lockstep handshake.
const PLAIN_LOCKSTEP: &str = "not TLS: a plain Lockstep handshake";

/// Read one whole TLS record from `sock` (header included). A header that is not a TLS record's
/// is [`io::ErrorKind::InvalidData`] with the text "not TLS", or [`PLAIN_LOCKSTEP`] when it is
/// the start of a plain Lockstep handshake (a `Hello` or a refusal).
pub(crate) fn read_record(sock: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut rec = vec![0u8; 5];
    sock.read_exact(&mut rec)?;
    let len = u16::from_be_bytes([rec[3], rec[4]]) as usize;
    // Content types 20..=23 (change_cipher_spec, alert, handshake, application_data), legacy
    // version 3.x, and a length no record may exceed.
    if !(20..=23).contains(&rec[0]) || rec[1] != 3 || len > MAX_RECORD {
        let plain = rec[..4] == HELLO_MAGIC || rec[0] == TAG_REFUSE;
        let why = if plain { PLAIN_LOCKSTEP } else { "not TLS" };
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    rec.resize(5 + len, 0);
    sock.read_exact(&mut rec[5..])?;
    Ok(rec)
}

fn failure(e: &io::Error) -> TlsFailure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TlsFailure::Timeout,
        io::ErrorKind::InvalidData if e.to_string() == "not TLS" => TlsFailure::NotTls,
        io::ErrorKind::InvalidData if e.to_string() == PLAIN_LOCKSTEP => TlsFailure::PeerWithoutTls,
        io::ErrorKind::InvalidData => {
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => TlsFailure::from_rustls(r.clone()),
                None => TlsFailure::NotTls,
            }
        }
        _ => TlsFailure::Closed,
    }
}

impl TlsStream {
    /// Run the TLS handshake as the connecting side, all of it before `deadline`.
    ///
    /// # Errors
    /// [`Error::Tls`] naming `peer` (the node or address dialled) and what failed.
    pub fn connect(
        sock: TcpStream,
        cfg: &TlsConfig,
        peer: &str,
        deadline: Instant,
    ) -> Result<TlsStream, Error> {
        // The name is not checked by rustls (see `verify`); SNI is off, so it is never sent.
        let name = ServerName::try_from("lockstep.invalid").expect("a valid DNS name");
        let conn = ClientConnection::new(cfg.client.clone(), name).map_err(|e| Error::Tls {
            remote: peer.to_string(),
            failure: TlsFailure::from_rustls(e),
        })?;
        Self::finish(sock, conn.into(), peer, deadline)
    }

    /// Run the TLS handshake as the accepting side, all of it before `deadline`.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the remote address and what failed.
    pub fn accept(sock: TcpStream, cfg: &TlsConfig, deadline: Instant) -> Result<TlsStream, Error> {
        let peer = remote(&sock);
        let conn = ServerConnection::new(cfg.server.clone()).map_err(|e| Error::Tls {
            remote: peer.clone(),
            failure: TlsFailure::from_rustls(e),
        })?;
        Self::finish(sock, conn.into(), &peer, deadline)
    }

    fn finish(
        sock: TcpStream,
        conn: Connection,
        peer: &str,
        deadline: Instant,
    ) -> Result<TlsStream, Error> {
        let mut s = TlsStream {
            sock,
            conn,
            last_error: None,
            heard: false,
        };
        let res = s.drive(deadline);
        let _ = s.sock.set_read_timeout(None);
        let _ = s.sock.set_write_timeout(None);
        res.map_err(|failure| {
            let who = format!("{peer} ({})", remote(&s.sock));
            tracing::warn!(remote = %who, %failure, "TLS handshake failed");
            let plain = matches!(failure, TlsFailure::NotTls | TlsFailure::PeerWithoutTls)
                // Silent to the end: likely a plain client waiting for our Hello first.
                || (failure == TlsFailure::Timeout && !s.heard);
            if plain && matches!(s.conn, Connection::Server(_)) {
                // A plain peer at this TLS listener: refuse it in the plain handshake's format,
                // which its handshake reads as final (it would otherwise retry until its
                // connect timeout, seeing only a closed connection).
                refuse_raw(&s.sock, HandshakeFailure::PeerExpectsTls, deadline);
            }
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
            Error::Tls {
                remote: who,
                failure,
            }
        })?;
        Ok(s)
    }

    fn arm(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.sock.set_read_timeout(Some(left))?;
        self.sock.set_write_timeout(Some(left))
    }

    fn drive(&mut self, deadline: Instant) -> Result<(), TlsFailure> {
        while self.conn.is_handshaking() {
            self.arm(deadline).map_err(|e| failure(&e))?;
            self.send_pending().map_err(|e| failure(&e))?;
            if !self.conn.is_handshaking() {
                break;
            }
            let rec = read_record(&mut self.sock).map_err(|e| failure(&e))?;
            self.heard = true;
            if let Err(e) = self.feed(&rec) {
                // Tell the peer why (the alert rustls queued), then give up.
                let _ = self.send_pending();
                return Err(failure(&e));
            }
        }
        self.arm(deadline).map_err(|e| failure(&e))?;
        self.send_pending().map_err(|e| failure(&e))
    }

    fn feed(&mut self, mut rec: &[u8]) -> io::Result<()> {
        while !rec.is_empty() {
            if self.conn.read_tls(&mut rec)? == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not TLS"));
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.last_error.get_or_insert(e.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }

    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// The TLS error that ended this session after its handshake, if any.
    pub fn tls_error(&self) -> Option<TlsFailure> {
        self.last_error.clone().map(TlsFailure::from_rustls)
    }

    /// The certificate the peer presented (checked against the CA in the TLS handshake).
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(|c| c.first())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let rec = read_record(&mut self.sock)?;
            self.feed(&rec)?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.send_pending()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl HandshakeStream for TlsStream {
    fn set_io_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_io_timeout(t)
    }
    fn remote(&self) -> String {
        remote(&self.sock)
    }
    fn close(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
    fn check_peer_name(&self, node: &str) -> bool {
        self.peer_certificate()
            .is_some_and(|c| super::verify::certificate_names(c, node))
    }
}
