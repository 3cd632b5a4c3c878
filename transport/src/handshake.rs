//! The handshake every connection starts with, before any frame may cross it.
//!
//! The two sides have different roles: the *initiator* opened the connection, the *acceptor*
//! took it. The exchange:
//! 1. each sends a `Hello`: magic, protocol version, cluster name, node name and a fresh 32-byte
//!    random nonce; each checks the other's version and cluster (and node name, when it knows
//!    whom it expects);
//! 2. the initiator sends `HMAC-SHA256(token, label | "initiator" | transcript)`, where the
//!    transcript is the initiator's `Hello` followed by the acceptor's, byte for byte as they
//!    crossed the wire (so both nonces, both names, the cluster and the version are bound);
//! 3. the acceptor verifies that proof and only then sends its own, the same MAC with
//!    `"acceptor"` in place of `"initiator"`;
//! 4. the initiator verifies it and sends `Accept`; the acceptor is done once it has received it.
//!
//! A side that refuses sends `Refuse(reason)` instead and closes, so the other side gets the same
//! typed [`HandshakeFailure`] and no frame ever reaches a refused connection.
//!
//! Why this order and this transcript: the acceptor is what anyone on the network can reach, so it
//! reveals nothing derived from the token before the peer has proved it holds the token. The
//! direction label makes an initiator's proof useless as an acceptor's and the other way round,
//! and the transcript binds both fresh nonces, so a proof cannot be replayed on another connection
//! or reflected back into the connection (or a second connection) it came from. The symmetric
//! exchange this replaces had both sides send their proofs first; an acceptor that expected its
//! own name (rank 0 in environment mode accepts every member, itself included) could then be made
//! to answer itself through two connections whose nonces an attacker swapped
//! (`transport/tests/handshake_attacks.rs` runs that attack).
//!
//! Bounds: names are at most [`MAX_NAME_LEN`] bytes, and the whole handshake has one deadline (each
//! read and write gets only the time left, so a peer that drips a byte at a time cannot stretch it).
//! Refusals are logged with the remote address and the reason.
//!
//! With `cluster.tls` the handshake runs inside a TLS session ([`crate::tls`]) and refuses a peer
//! whose certificate does not name the node its `Hello` claims ([`HandshakeFailure::CertificateName`]).

use crate::error::{Error, HandshakeFailure, Result};
use crate::frame::PROTOCOL_VERSION;
use crate::tls::TlsConfig;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod hello;
use hello::read_exact;
pub use hello::{reason_from_wire, reason_to_wire, Hello};

/// Magic at the start of every `Hello`.
pub const HELLO_MAGIC: [u8; 4] = *b"LKHS";
/// Longest cluster or node name accepted on the wire.
pub const MAX_NAME_LEN: usize = 255;
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const TAG_PROOF: u8 = 1;
pub(crate) const TAG_REFUSE: u8 = 2;
/// First byte of a TLS handshake record (a `ClientHello`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const TAG_ACCEPT: u8 = 3;

/// Who this side is: the cluster it belongs to, its node name and the shared secret.
#[derive(Clone)]
pub struct Identity {
    /// Cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// The cluster token (shared secret). Never sent.
    pub token: Vec<u8>,
    /// Protocol version to announce; [`PROTOCOL_VERSION`] except in tests of refusals.
    pub version: u8,
    /// TLS setup (`cluster.tls`): when set, every TCP connection runs TLS first and the peer's
    /// certificate must name the node it claims.
    pub tls: Option<Arc<TlsConfig>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("token", &"<redacted>")
            .field("version", &self.version)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Identity {
    /// An identity speaking the current protocol version.
    pub fn new(cluster: &str, node: &str, token: &[u8]) -> Identity {
        Identity {
            cluster: cluster.to_string(),
            node: node.to_string(),
            token: token.to_vec(),
            version: PROTOCOL_VERSION,
            tls: None,
        }
    }

    /// This identity with `tls` (or without TLS for `None`).
    pub fn with_tls(mut self, tls: Option<Arc<TlsConfig>>) -> Identity {
        self.tls = tls;
        self
    }
}

/// Which end of the connection this side is. The role is part of every proof, so a proof made
/// by one role is never accepted from the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This side opened the connection; it proves itself first.
    Initiator,
    /// This side accepted the connection; it proves itself only after checking the initiator.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Initiator => b"initiator",
            Role::Acceptor => b"acceptor",
        }
    }
}

/// A byte stream the handshake can run on: a socket, or a TLS session over one. The handshake
/// sets the time left before each read and write through [`HandshakeStream::set_io_timeout`].
pub trait HandshakeStream: Read + Write {
    /// Bound each following read and write by `t` (`None`: block without a limit).
    ///
    /// # Errors
    /// The socket option's error.
    fn set_io_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// The remote address, for logs.
    fn remote(&self) -> String;
    /// Close both directions (after a refusal).
    fn close(&self);
    /// Whether the peer's certificate names `node` (always true without TLS, where there is no
    /// certificate; over TLS the certificate's chain was checked in the TLS handshake).
    fn check_peer_name(&self, node: &str) -> bool {
        let _ = node;
        true
    }
}

impl HandshakeStream for TcpStream {
    fn set_io_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn remote(&self) -> String {
        self.peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// The proof of the side in `role`: `HMAC-SHA256(token, label | role | transcript)`, where the
/// transcript is the initiator's encoded `Hello` followed by the acceptor's.
pub fn proof(token: &[u8], role: Role, initiator_hello: &[u8], acceptor_hello: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(b"lockstep-handshake-v2");
    for part in [role.label(), initiator_hello, acceptor_hello] {
        mac.update(&(part.len() as u32).to_le_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Run the handshake on `stream` in `role`, all of it within `timeout`. `expect_peer`, when given,
/// lists the node names this side accepts. Returns the peer's node name.
///
/// # Errors
/// [`Error::Handshake`] with the reason (also logged with the remote address).
pub fn handshake<S: HandshakeStream>(
    stream: &mut S,
    role: Role,
    me: &Identity,
    expect_peer: Option<&[String]>,
    timeout: Duration,
) -> Result<String> {
    let remote = stream.remote();
    let mut bounded = Bounded {
        s: stream,
        deadline: Instant::now() + timeout,
    };
    let res = run(&mut bounded, role, me, expect_peer);
    // Restore blocking I/O without a timeout; the link sets its own.
    let _ = bounded.s.set_io_timeout(None);
    res.map_err(|(reason, peer)| {
        let who = peer
            .map(|p| format!("{p} at {remote}"))
            .unwrap_or(remote.clone());
        tracing::warn!(remote = %who, node = %me.node, ?role, %reason, "handshake refused");
        Error::Handshake {
            remote: who,
            reason,
        }
    })
}

/// A stream whose every read and write gets only the time left until one deadline.
struct Bounded<'a, S: HandshakeStream> {
    s: &'a mut S,
    deadline: Instant,
}

impl<S: HandshakeStream> Bounded<'_, S> {
    fn arm(&self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.s.set_io_timeout(Some(left))
    }
}

impl<S: HandshakeStream> Read for Bounded<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.s.read(buf)
    }
}

impl<S: HandshakeStream> Write for Bounded<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.arm()?;
        self.s.flush()
    }
}

type HsResult<T> = std::result::Result<T, (HandshakeFailure, Option<String>)>;

fn run<S: HandshakeStream>(
    s: &mut Bounded<'_, S>,
    role: Role,
    me: &Identity,
    expect_peer: Option<&[String]>,
) -> HsResult<String> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mine = Hello {
        version: me.version,
        cluster: me.cluster.clone(),
        node: me.node.clone(),
        nonce,
    }
    .encode();
    write(s, &mine, None)?;
    let theirs = match Hello::read_from(s) {
        Ok(h) => h,
        Err(r @ HandshakeFailure::PeerSpeaksTls) => {
            // Tell it why; its TLS client sees a plain Lockstep node from our Hello and
            // closes. Drain its bytes meanwhile, so our close does not reset the connection
            // before it read ours.
            let _ = s.write_all(&[TAG_REFUSE, reason_to_wire(r)]);
            let _ = s.flush();
            drain(s);
            s.s.close();
            return Err((r, None));
        }
        Err(r) => return Err((r, None)),
    };
    let peer = Some(theirs.node.clone());
    let fail = |r: HandshakeFailure| (r, peer.clone());
    let check = if theirs.version != me.version {
        Err(HandshakeFailure::WrongVersion)
    } else if theirs.cluster != me.cluster {
        Err(HandshakeFailure::WrongCluster)
    } else if expect_peer.is_some_and(|e| !e.contains(&theirs.node)) {
        Err(HandshakeFailure::UnknownNode)
    } else if !s.s.check_peer_name(&theirs.node) {
        Err(HandshakeFailure::CertificateName)
    } else {
        Ok(())
    };
    if let Err(r) = check {
        refuse(s, r);
        return Err(fail(r));
    }
    let theirs_bytes = theirs.encode();
    let (ini, acc) = match role {
        Role::Initiator => (&mine, &theirs_bytes),
        Role::Acceptor => (&theirs_bytes, &mine),
    };
    let my_proof = proof(&me.token, role, ini, acc);
    let peer_role = match role {
        Role::Initiator => Role::Acceptor,
        Role::Acceptor => Role::Initiator,
    };
    let want = proof(&me.token, peer_role, ini, acc);
    let mut proof_msg = vec![TAG_PROOF];
    proof_msg.extend_from_slice(&my_proof);
    match role {
        Role::Initiator => {
            write(s, &proof_msg, peer.clone())?;
            verify(s, &want).map_err(fail)?;
            write(s, &[TAG_ACCEPT], peer.clone())?;
        }
        Role::Acceptor => {
            // Nothing derived from the token leaves this side before the initiator's proof
            // checked out.
            verify(s, &want).map_err(fail)?;
            write(s, &proof_msg, peer.clone())?;
            read_tagged(s, TAG_ACCEPT, &mut []).map_err(fail)?;
        }
    }
    Ok(theirs.node)
}

/// Read the peer's proof and compare it with `want`; a wrong one is refused.
fn verify<S: HandshakeStream>(
    s: &mut Bounded<'_, S>,
    want: &[u8; 32],
) -> Result<(), HandshakeFailure> {
    let mut their_proof = [0u8; PROOF_LEN];
    read_tagged(s, TAG_PROOF, &mut their_proof)?;
    if !constant_time_eq(want, &their_proof) {
        refuse(s, HandshakeFailure::BadToken);
        return Err(HandshakeFailure::BadToken);
    }
    Ok(())
}

fn write<S: HandshakeStream>(
    s: &mut Bounded<'_, S>,
    bytes: &[u8],
    peer: Option<String>,
) -> HsResult<()> {
    s.write_all(bytes)
        .and_then(|_| s.flush())
        .map_err(|e| (io_failure(&e), peer))
}

fn io_failure(e: &std::io::Error) -> HandshakeFailure {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
        _ => HandshakeFailure::Closed,
    }
}

/// Read a tag byte; `Refuse(reason)` becomes that reason, another tag `Malformed`.
fn read_tagged(s: &mut impl Read, want: u8, body: &mut [u8]) -> Result<(), HandshakeFailure> {
    let mut tag = [0u8; 1];
    read_exact(s, &mut tag)?;
    if tag[0] == TAG_REFUSE {
        let mut r = [0u8; 1];
        read_exact(s, &mut r)?;
        return Err(reason_from_wire(r[0]));
    }
    if tag[0] != want {
        return Err(HandshakeFailure::Malformed);
    }
    read_exact(s, body)
}

fn refuse<S: HandshakeStream>(s: &mut Bounded<'_, S>, r: HandshakeFailure) {
    let _ = s.write_all(&[TAG_REFUSE, reason_to_wire(r)]);
    let _ = s.flush();
    s.s.close();
}

/// Read and drop what the peer sends (at most 64 KiB) until it closes, for at most a second
/// and never past the handshake's deadline.
fn drain<S: HandshakeStream>(s: &mut Bounded<'_, S>) {
    let until = s.deadline.min(Instant::now() + Duration::from_secs(1));
    let mut b = Bounded {
        s: s.s,
        deadline: until,
    };
    let mut sink = [0u8; 4096];
    let mut left = 64usize << 10;
    while left > 0 {
        match b.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Refuse a peer on a raw socket with `r` (the handshake's refusal format) and close it, after
/// letting the peer read the refusal: our sending side is shut first, then whatever the peer
/// sent is drained (at most 64 KiB, until `deadline`), so that closing with unread bytes does
/// not reset the connection before the refusal arrives.
pub(crate) fn refuse_raw(sock: &TcpStream, r: HandshakeFailure, deadline: Instant) {
    let mut w = sock;
    let _ = w.write_all(&[TAG_REFUSE, reason_to_wire(r)]);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 << 10;
    while left > 0 {
        let t = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        if t.is_zero() || sock.set_read_timeout(Some(t)).is_err() {
            break;
        }
        match w.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
