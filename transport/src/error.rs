//! Transport errors. Every variant names the peer node, and where a collective was running, the
//! round and the operation, so the message a user finally reads says who failed, when and doing
//! what. Errors are `Clone` because a poisoned link returns its first error to every later call.

use crate::frame::Op;

mod config;
pub use config::ConfigError;

/// Where an error happened: the peer node, the round and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The remote node's name (or address when the name is not known yet).
    pub peer: String,
    /// The training round, when known.
    pub round: Option<u64>,
    /// The operation, when known.
    pub op: Option<Op>,
}

impl Context {
    /// Who a receive waits for and what for: `peer`, and the round and op `expect` names.
    pub fn expecting(peer: &str, expect: &crate::frame::Expect) -> Context {
        Context {
            peer: peer.to_string(),
            round: expect.round,
            op: expect.op,
        }
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {}", self.peer)?;
        if let Some(r) = self.round {
            write!(f, ", round {r}")?;
        }
        if let Some(op) = self.op {
            write!(f, ", during {op}")?;
        }
        Ok(())
    }
}

/// Errors of links, handshakes and rendezvous.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The peer closed the connection (or its process died).
    #[error("{ctx}: connection closed by peer")]
    PeerClosed {
        /// Who, when, what.
        ctx: Context,
    },
    /// Nothing (not even a heartbeat) arrived from the peer within the peer timeout.
    #[error("{ctx}: peer silent for {waited_ms} ms (peer timeout)")]
    PeerTimeout {
        /// Who, when, what.
        ctx: Context,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A frame arrived that does not match what this side expects.
    #[error("{ctx}: frame mismatch in {field}: {local_node} expects {expected}, {remote_node} sent {actual}")]
    Mismatch {
        /// Who, when, what.
        ctx: Context,
        /// Which header field differs (round, op, seq, shape, dtype, len).
        field: &'static str,
        /// This node's name.
        local_node: String,
        /// The peer's name.
        remote_node: String,
        /// The value this side expected.
        expected: String,
        /// The value the peer sent.
        actual: String,
    },
    /// A handshake was refused or failed.
    #[error("handshake with {remote}: {reason}")]
    Handshake {
        /// Remote address or node name.
        remote: String,
        /// Why (wrong token, wrong cluster, wrong version, ...).
        reason: HandshakeFailure,
    },
    /// The peer broke the protocol (bad header, oversized length, bad checksum).
    #[error("{ctx}: protocol violation: {reason}")]
    Protocol {
        /// Who, when, what.
        ctx: Context,
        /// What was wrong.
        reason: String,
    },
    /// An operating-system I/O error.
    #[error("{ctx}: {syscall} failed: {message}")]
    Io {
        /// Who, when, what.
        ctx: Context,
        /// The call that failed.
        syscall: &'static str,
        /// The OS error kind.
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
    /// The TLS layer under a handshake failed (`cluster.tls`).
    #[error("TLS with {remote}: {failure}")]
    Tls {
        /// Node name and address, or the address when the name is not known yet.
        remote: String,
        /// What failed.
        failure: TlsFailure,
    },
    /// `transport = "rdma"` was asked for and this node cannot run RDMA; `reason` names the
    /// one missing piece (build feature, libibverbs, kernel support, device, active port, or
    /// TLS being configured).
    #[error("node {node}: transport rdma: {reason}")]
    RdmaUnavailable {
        /// This node's name.
        node: String,
        /// What is missing.
        reason: crate::rdma::RdmaUnavailable,
    },
    /// A verbs call failed on an RDMA device while a link was built or used.
    #[error("rdma {device}: {verb} failed: {reason}")]
    RdmaVerb {
        /// The device's name.
        device: String,
        /// The call (and the state transition, for `ibv_modify_qp`).
        verb: &'static str,
        /// The error, with the size or the likely cause where known.
        reason: String,
    },
    /// A link the pair agreed on and this node cannot make (RDMA without an opened device or
    /// over a TLS bootstrap).
    #[error("unsupported: node {node}: rdma link to {peer} {reason}")]
    Unsupported {
        /// This node's name.
        node: String,
        /// The peer of the link.
        peer: String,
        /// What is missing.
        reason: Unsupported,
    },
    /// Bad configuration (addresses, sizes, names) or a link call the link cannot serve.
    #[error("configuration: {0}")]
    Config(ConfigError),
}

/// Why an agreed link cannot be made; see [`Error::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// The device was never opened (or failed to open) on this node.
    #[error("without an opened device")]
    NoDevice,
    /// The bootstrap connection is a TLS stream; RDMA needs the plain socket.
    #[error("over a TLS bootstrap")]
    TlsBootstrap,
}

/// Why a handshake failed; tests match on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The HMAC over the challenge did not verify: different cluster token.
    #[error("authentication failed (wrong cluster token)")]
    BadToken,
    /// The peer belongs to another cluster.
    #[error("cluster name mismatch")]
    WrongCluster,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch")]
    WrongVersion,
    /// The peer's node name is not one we expect.
    #[error("unknown node name")]
    UnknownNode,
    /// Malformed handshake bytes.
    #[error("malformed handshake message")]
    Malformed,
    /// The handshake did not finish within its deadline.
    #[error("handshake timed out")]
    Timeout,
    /// The connection closed during the handshake (often: the other side refused us).
    #[error("connection closed during handshake (refused by the other side?)")]
    Closed,
    /// The peer's TLS certificate does not name the node it claims (`cluster.tls`).
    #[error("the peer's TLS certificate does not name the node it claims")]
    CertificateName,
    /// The peer expects TLS and this side spoke plain TCP (the peer's refusal, sent in plain
    /// text by its TLS listener).
    #[error("the peer expects TLS (cluster.tls is on there); this node has cluster.tls off")]
    PeerExpectsTls,
    /// The peer opened a TLS session and this side has `cluster.tls` off.
    #[error("the peer speaks TLS (cluster.tls is on there); this node has cluster.tls off")]
    PeerSpeaksTls,
}

/// Why a TLS session could not be set up or ended; tests match on this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsFailure {
    /// The peer sent something that is not TLS (and not a Lockstep handshake either).
    #[error("the peer does not speak TLS (is cluster.tls set on both sides?)")]
    NotTls,
    /// The peer is a Lockstep node with `cluster.tls` off: it answered with a plain handshake.
    #[error("the peer does not speak TLS: it has cluster.tls off; this node has cluster.tls on")]
    PeerWithoutTls,
    /// This side refused the peer's certificate (not from the cluster's CA, expired, ...).
    #[error("the peer's certificate was refused: {0}")]
    PeerCertificate(rustls::Error),
    /// The peer refused this side (typically its CA does not trust this node's certificate).
    #[error("the peer refused this node: {0}")]
    Refused(rustls::Error),
    /// Any other TLS protocol error.
    #[error("{0}")]
    Protocol(rustls::Error),
    /// The TLS handshake did not finish within the handshake deadline.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The connection closed during the TLS handshake.
    #[error("connection closed during the TLS handshake (refused by the other side?)")]
    Closed,
}

impl TlsFailure {
    /// Classify a rustls error.
    pub fn from_rustls(e: rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsFailure::PeerCertificate(e)
            }
            rustls::Error::AlertReceived(_) => TlsFailure::Refused(e),
            rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
            e => TlsFailure::Protocol(e),
        }
    }
}

impl Error {
    /// An I/O error with context.
    pub fn io(ctx: Context, syscall: &'static str, e: &std::io::Error) -> Error {
        Error::Io {
            ctx,
            syscall,
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// Whether this is a final refusal (a wrong token, cluster, version or name, a certificate
    /// refused either way, a peer not speaking TLS), which retrying cannot cure, as opposed to
    /// a peer that is not up yet or went away.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Handshake { reason, .. } => {
                !matches!(reason, HandshakeFailure::Closed | HandshakeFailure::Timeout)
            }
            Error::Tls { failure, .. } => {
                !matches!(failure, TlsFailure::Closed | TlsFailure::Timeout)
            }
            _ => false,
        }
    }

    /// The context, if this error has one.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Error::PeerClosed { ctx }
            | Error::PeerTimeout { ctx, .. }
            | Error::Mismatch { ctx, .. }
            | Error::Protocol { ctx, .. }
            | Error::Io { ctx, .. } => Some(ctx),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
