//! The handshake every connection starts with, before any frame may cross it.
//!
//! Both sides run the same symmetric exchange, so neither can be tricked into proving itself
//! first with the other's challenge:
//! 1. each sends a `Hello`: magic, protocol version, cluster name, node name and a fresh 32-byte
//!    random nonce; each checks the other's version and cluster (and node name, when it knows
//!    whom it expects);
//! 2. each sends `HMAC-SHA256(token, label | peer nonce | own nonce | own name | peer name |
//!    cluster)` and verifies the other's proof (so the token never crosses the wire and a proof
//!    cannot be replayed or reflected);
//! 3. each sends `Accept`, and only once it has *received* the peer's `Accept` is the handshake
//!    done. A side that refuses sends `Refuse(reason)` instead and closes, so the other side gets
//!    the same typed [`HandshakeFailure`] and no frame ever reaches a refused connection.
//!
//! Lengths are bounded ([`MAX_NAME_LEN`]), every read has the handshake deadline, and refusals
//! are logged with the remote address and the reason.

use crate::error::{Error, HandshakeFailure, Result};
use crate::frame::PROTOCOL_VERSION;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Magic at the start of every `Hello`.
pub const HELLO_MAGIC: [u8; 4] = *b"LKHS";
/// Longest cluster or node name accepted on the wire.
pub const MAX_NAME_LEN: usize = 255;
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const TAG_PROOF: u8 = 1;
const TAG_REFUSE: u8 = 2;
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
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("token", &"<redacted>")
            .field("version", &self.version)
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
        }
    }
}

/// The first message of each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u8,
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Fresh random challenge.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// Encode: magic, version, nonce, then two u16-length-prefixed UTF-8 names.
    pub fn encode(&self) -> Vec<u8> {
        let mut v =
            Vec::with_capacity(4 + 1 + NONCE_LEN + 4 + self.cluster.len() + self.node.len());
        v.extend_from_slice(&HELLO_MAGIC);
        v.push(self.version);
        v.extend_from_slice(&self.nonce);
        for s in [&self.cluster, &self.node] {
            v.extend_from_slice(&(s.len() as u16).to_le_bytes());
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    /// Decode from a complete byte slice. Never panics.
    ///
    /// # Errors
    /// [`HandshakeFailure::Malformed`] for bad magic, bounds, UTF-8 or trailing bytes.
    pub fn decode(b: &[u8]) -> Result<Hello, HandshakeFailure> {
        let mut r = b;
        let fixed = take(&mut r, 4 + 1 + NONCE_LEN)?;
        if fixed[..4] != HELLO_MAGIC {
            return Err(HandshakeFailure::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&fixed[5..]);
        let cluster = take_name(&mut r)?;
        let node = take_name(&mut r)?;
        if !r.is_empty() {
            return Err(HandshakeFailure::Malformed);
        }
        Ok(Hello {
            version: fixed[4],
            cluster,
            node,
            nonce,
        })
    }

    /// Read one `Hello` from a stream, bounding every length before reading it.
    fn read_from(s: &mut impl Read) -> Result<Hello, HandshakeFailure> {
        let mut buf = vec![0u8; 4 + 1 + NONCE_LEN];
        read_exact(s, &mut buf)?;
        for _ in 0..2 {
            let mut l = [0u8; 2];
            read_exact(s, &mut l)?;
            let n = u16::from_le_bytes(l) as usize;
            if n > MAX_NAME_LEN {
                return Err(HandshakeFailure::Malformed);
            }
            buf.extend_from_slice(&l);
            let at = buf.len();
            buf.resize(at + n, 0);
            read_exact(s, &mut buf[at..])?;
        }
        Hello::decode(&buf)
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], HandshakeFailure> {
    if r.len() < n {
        return Err(HandshakeFailure::Malformed);
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Ok(a)
}

fn take_name(r: &mut &[u8]) -> Result<String, HandshakeFailure> {
    let l = take(r, 2)?;
    let n = u16::from_le_bytes([l[0], l[1]]) as usize;
    if n > MAX_NAME_LEN {
        return Err(HandshakeFailure::Malformed);
    }
    let s = take(r, n)?;
    String::from_utf8(s.to_vec()).map_err(|_| HandshakeFailure::Malformed)
}

fn read_exact(s: &mut impl Read, buf: &mut [u8]) -> Result<(), HandshakeFailure> {
    s.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
        _ => HandshakeFailure::Closed,
    })
}

/// Encode a refusal reason for the wire.
pub fn reason_to_wire(r: HandshakeFailure) -> u8 {
    match r {
        HandshakeFailure::BadToken => 1,
        HandshakeFailure::WrongCluster => 2,
        HandshakeFailure::WrongVersion => 3,
        HandshakeFailure::UnknownNode => 4,
        HandshakeFailure::Malformed => 5,
        HandshakeFailure::Timeout => 6,
        HandshakeFailure::Closed => 7,
    }
}

/// Decode a refusal reason; unknown values are `Malformed`.
pub fn reason_from_wire(v: u8) -> HandshakeFailure {
    match v {
        1 => HandshakeFailure::BadToken,
        2 => HandshakeFailure::WrongCluster,
        3 => HandshakeFailure::WrongVersion,
        4 => HandshakeFailure::UnknownNode,
        6 => HandshakeFailure::Timeout,
        7 => HandshakeFailure::Closed,
        _ => HandshakeFailure::Malformed,
    }
}

/// The proof one side sends: binds both nonces, both names (in sender order) and the cluster.
pub fn proof(
    token: &[u8],
    cluster: &str,
    sender: (&str, &[u8]),
    receiver: (&str, &[u8]),
) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(b"lockstep-handshake-v1");
    for part in [
        receiver.1,
        sender.1,
        sender.0.as_bytes(),
        receiver.0.as_bytes(),
        cluster.as_bytes(),
    ] {
        mac.update(&(part.len() as u32).to_le_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Run the handshake on `stream` within `timeout`. `expect_peer`, when given, lists the node
/// names this side accepts. Returns the peer's node name.
///
/// # Errors
/// [`Error::Handshake`] with the reason (also logged with the remote address).
pub fn handshake(
    stream: &mut TcpStream,
    me: &Identity,
    expect_peer: Option<&[String]>,
    timeout: Duration,
) -> Result<String> {
    let remote = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let deadline = Instant::now() + timeout;
    let res = run(stream, me, expect_peer, deadline);
    // Restore blocking reads without a timeout; the link sets its own.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    res.map_err(|(reason, peer)| {
        let who = peer
            .map(|p| format!("{p} at {remote}"))
            .unwrap_or(remote.clone());
        tracing::warn!(remote = %who, node = %me.node, %reason, "handshake refused");
        Error::Handshake {
            remote: who,
            reason,
        }
    })
}

type HsResult<T> = std::result::Result<T, (HandshakeFailure, Option<String>)>;

fn run(
    s: &mut TcpStream,
    me: &Identity,
    expect_peer: Option<&[String]>,
    deadline: Instant,
) -> HsResult<String> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let hello = Hello {
        version: me.version,
        cluster: me.cluster.clone(),
        node: me.node.clone(),
        nonce,
    };
    set_deadline(s, deadline).map_err(|r| (r, None))?;
    s.write_all(&hello.encode())
        .map_err(|_| (HandshakeFailure::Closed, None))?;
    let theirs = Hello::read_from(s).map_err(|r| (r, None))?;
    let peer = Some(theirs.node.clone());
    let check = if theirs.version != me.version {
        Err(HandshakeFailure::WrongVersion)
    } else if theirs.cluster != me.cluster {
        Err(HandshakeFailure::WrongCluster)
    } else if expect_peer.is_some_and(|e| !e.contains(&theirs.node)) {
        Err(HandshakeFailure::UnknownNode)
    } else {
        Ok(())
    };
    if let Err(r) = check {
        refuse(s, r);
        return Err((r, peer));
    }
    let mine = proof(
        &me.token,
        &me.cluster,
        (&me.node, &nonce),
        (&theirs.node, &theirs.nonce),
    );
    let mut msg = vec![TAG_PROOF];
    msg.extend_from_slice(&mine);
    set_deadline(s, deadline).map_err(|r| (r, peer.clone()))?;
    s.write_all(&msg)
        .map_err(|_| (HandshakeFailure::Closed, peer.clone()))?;
    let mut their_proof = [0u8; PROOF_LEN];
    read_tagged(s, TAG_PROOF, &mut their_proof).map_err(|r| (r, peer.clone()))?;
    let want = proof(
        &me.token,
        &me.cluster,
        (&theirs.node, &theirs.nonce),
        (&me.node, &nonce),
    );
    if !constant_time_eq(&want, &their_proof) {
        refuse(s, HandshakeFailure::BadToken);
        return Err((HandshakeFailure::BadToken, peer));
    }
    set_deadline(s, deadline).map_err(|r| (r, peer.clone()))?;
    s.write_all(&[TAG_ACCEPT])
        .map_err(|_| (HandshakeFailure::Closed, peer.clone()))?;
    read_tagged(s, TAG_ACCEPT, &mut []).map_err(|r| (r, peer.clone()))?;
    Ok(theirs.node)
}

/// Read a tag byte; `Refuse(reason)` becomes that reason, another tag `Malformed`.
fn read_tagged(s: &mut TcpStream, want: u8, body: &mut [u8]) -> Result<(), HandshakeFailure> {
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

fn refuse(s: &mut TcpStream, r: HandshakeFailure) {
    let _ = s.write_all(&[TAG_REFUSE, reason_to_wire(r)]);
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn set_deadline(s: &TcpStream, deadline: Instant) -> Result<(), HandshakeFailure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HandshakeFailure::Timeout);
    }
    s.set_read_timeout(Some(left))
        .map_err(|_| HandshakeFailure::Closed)?;
    s.set_write_timeout(Some(left))
        .map_err(|_| HandshakeFailure::Closed)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
