//! Loading a node's TLS material (the CA, its certificate chain and its key, from PEM files) into
//! the rustls client and server configurations its connections use, with every check that can be
//! made before the first connection: each file read and parsed, the key matching the certificate,
//! the certificate chaining to the CA and naming this node. A failure names the file and the node.

use super::verify::{certificate_names, CaVerifier};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a node's TLS material lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) every peer's certificate must chain to.
    pub ca: PathBuf,
    /// PEM file with this node's certificate (then any intermediates).
    pub cert: PathBuf,
    /// PEM file with this node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A TLS file or setting that cannot be used; every variant names the node and, where one is at
/// fault, the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsConfigError {
    /// The file cannot be read.
    #[error("TLS {what} file {} for node {node}: {message}", path.display())]
    Read {
        /// The node whose file it is.
        node: String,
        /// "CA", "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        message: String,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("TLS {what} file {} for node {node}: {message}", path.display())]
    Parse {
        /// The node whose file it is.
        node: String,
        /// "CA", "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate does not chain to the CA.
    #[error("TLS certificate {} for node {node} is not signed by the CA in {}: {reason}", cert.display(), ca.display())]
    NotFromCa {
        /// The node.
        node: String,
        /// Its certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// rustls' reason.
        reason: rustls::Error,
    },
    /// The certificate does not name the node.
    #[error("TLS certificate {} does not name node {node} (its subject alternative names must include the DNS name {node:?})", cert.display())]
    WrongName {
        /// The node.
        node: String,
        /// Its certificate file.
        cert: PathBuf,
    },
    /// The key does not fit the certificate, or rustls refused the pair.
    #[error("TLS key {} and certificate {} for node {node}: {reason}", key.display(), cert.display())]
    KeyPair {
        /// The node.
        node: String,
        /// Its certificate file.
        cert: PathBuf,
        /// Its key file.
        key: PathBuf,
        /// rustls' reason.
        reason: rustls::Error,
    },
    /// The node name cannot appear in a certificate (not a DNS name).
    #[error("node name {node:?} cannot be named in a TLS certificate: use letters, digits, '-' and '_', not all digits")]
    BadName {
        /// The node.
        node: String,
    },
}

/// A node's loaded TLS setup: what its connecting side and its accepting side present and
/// trust. Built once at start-up ([`TlsConfig::load`]) and shared by every connection.
pub struct TlsConfig {
    node: String,
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A node name as the DNS name its certificate must carry.
///
/// # Errors
/// [`TlsConfigError::BadName`] when the name is not a valid DNS name.
pub fn server_name(node: &str) -> Result<ServerName<'static>, TlsConfigError> {
    match ServerName::try_from(node.to_string()) {
        Ok(n @ ServerName::DnsName(_)) => Ok(n),
        _ => Err(TlsConfigError::BadName {
            node: node.to_string(),
        }),
    }
}

fn read(node: &str, what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Read {
        node: node.to_string(),
        what,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn certs(
    node: &str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let parse = |message: String| TlsConfigError::Parse {
        node: node.to_string(),
        what,
        path: path.to_path_buf(),
        message,
    };
    let bytes = read(node, what, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| parse(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(parse("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Load and check `node`'s files: readable PEM, a key that fits the certificate, a
    /// certificate that chains to the CA and names `node`. Peers must then present a certificate
    /// from the same CA, naming the node they claim in the handshake.
    ///
    /// # Errors
    /// A [`TlsConfigError`] naming the node and the file at fault.
    pub fn load(node: &str, files: &TlsFiles) -> Result<TlsConfig, TlsConfigError> {
        server_name(node)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certs(node, "CA", &files.ca)? {
            roots.add(ca).map_err(|e| TlsConfigError::Parse {
                node: node.to_string(),
                what: "CA",
                path: files.ca.clone(),
                message: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certs(node, "certificate", &files.cert)?;
        let key_bytes = read(node, "key", &files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsConfigError::Parse {
            node: node.to_string(),
            what: "key",
            path: files.key.clone(),
            message: format!("no private key in it ({e})"),
        })?;
        let algs = provider.signature_verification_algorithms;
        let end_entity =
            ParsedCertificate::try_from(&chain[0]).map_err(|reason| TlsConfigError::NotFromCa {
                node: node.to_string(),
                cert: files.cert.clone(),
                ca: files.ca.clone(),
                reason,
            })?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &end_entity,
            &roots,
            &chain[1..],
            UnixTime::now(),
            algs.all,
        )
        .map_err(|reason| TlsConfigError::NotFromCa {
            node: node.to_string(),
            cert: files.cert.clone(),
            ca: files.ca.clone(),
            reason,
        })?;
        if !certificate_names(&chain[0], node) {
            return Err(TlsConfigError::WrongName {
                node: node.to_string(),
                cert: files.cert.clone(),
            });
        }
        let pair_err = |reason: rustls::Error| TlsConfigError::KeyPair {
            node: node.to_string(),
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason,
        };
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| pair_err(rustls::Error::General(e.to_string())))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(pair_err)?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(pair_err)?;
        // No resumption: connections are few and long-lived, and a ticket would be one more
        // thing on the wire after the handshake.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(pair_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaVerifier::new(roots, algs)))
            .with_client_auth_cert(chain, key)
            .map_err(pair_err)?;
        client.resumption = Resumption::disabled();
        client.enable_sni = false;
        Ok(TlsConfig {
            node: node.to_string(),
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// The node this setup authenticates.
    pub fn node(&self) -> &str {
        &self.node
    }
}
