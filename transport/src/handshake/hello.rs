//! The `Hello` each side sends first, its wire form, and the refusal reasons' wire codes.

use super::{io_failure, HELLO_MAGIC, MAX_NAME_LEN, NONCE_LEN, TAG_REFUSE, TLS_HANDSHAKE_RECORD};
use crate::error::HandshakeFailure;
use std::io::Read;

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
    ///
    /// # Errors
    /// [`HandshakeFailure::Malformed`] as [`Hello::decode`]; `Timeout` or `Closed` from the stream.
    ///
    /// A refusal in its place (a TLS listener refusing a plain peer answers with one) is that
    /// refusal's reason; a TLS record in its place is [`HandshakeFailure::PeerSpeaksTls`].
    pub fn read_from(s: &mut impl Read) -> Result<Hello, HandshakeFailure> {
        let mut buf = vec![0u8; 4 + 1 + NONCE_LEN];
        read_exact(s, &mut buf[..1])?;
        match buf[0] {
            TAG_REFUSE => {
                let mut r = [0u8; 1];
                read_exact(s, &mut r)?;
                return Err(reason_from_wire(r[0]));
            }
            TLS_HANDSHAKE_RECORD => return Err(HandshakeFailure::PeerSpeaksTls),
            _ => {}
        }
        read_exact(s, &mut buf[1..])?;
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

pub(super) fn read_exact(s: &mut impl Read, buf: &mut [u8]) -> Result<(), HandshakeFailure> {
    s.read_exact(buf).map_err(|e| io_failure(&e))
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
        HandshakeFailure::CertificateName => 8,
        HandshakeFailure::PeerExpectsTls => 9,
        HandshakeFailure::PeerSpeaksTls => 10,
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
        8 => HandshakeFailure::CertificateName,
        9 => HandshakeFailure::PeerExpectsTls,
        10 => HandshakeFailure::PeerSpeaksTls,
        _ => HandshakeFailure::Malformed,
    }
}
