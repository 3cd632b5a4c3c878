//! TLS for TCP links (`cluster.tls`): rustls (TLS 1.3 only, the `ring` provider) with a cluster CA.
//!
//! Every TCP connection of a node with TLS (control, data, ingest, the bootstrap of shared
//! memory) starts with a TLS handshake in which both sides present a certificate that must chain
//! to the CA; the token handshake ([`crate::handshake`]) then runs inside TLS and also requires
//! that the peer's certificate names the node it claims in its `Hello` ([`verify`]). So a peer is
//! authenticated twice, by the token and by its certificate, and every frame after that is
//! encrypted and integrity-protected on the wire.
//!
//! - [`config`]: loading and checking a node's PEM files once, at start-up ([`TlsConfig`]);
//! - [`verify`]: how a peer's certificate is judged;
//! - [`stream`]: a session from its TLS handshake until it becomes a link ([`TlsStream`]);
//! - [`io`]: the link's two halves over one session, behind the same [`crate::Link`] as plain TCP;
//! - [`gen`]: making a CA and node certificates for tests and small clusters.
//!
//! The TLS handshake runs inside the same deadline and the same cap on unauthenticated
//! connections as the token handshake ([`crate::tcp::listener`]).

pub mod config;
pub mod gen;
pub(crate) mod io;
pub mod stream;
pub mod verify;

pub use config::{TlsConfig, TlsConfigError, TlsFiles};
pub use stream::TlsStream;
