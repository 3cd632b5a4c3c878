//! Making a CA and node certificates (`lockstep tls gen`), for tests and small clusters.
//!
//! Writes `ca.pem` (the CA certificate every node trusts), `ca.key` (the CA's key: keep it off
//! the nodes), and per node `NAME.pem` / `NAME.key`: an ECDSA P-256 key and a certificate whose
//! subject alternative name is the DNS name `NAME`, valid for both server and client
//! authentication (a node accepts and connects). Keys are written with mode 0600. When the folder
//! already holds a `ca.pem` and `ca.key` made by this module, new node certificates are signed by
//! that CA, so nodes (or producers) can be added later. The certificates do not expire; a real
//! deployment uses its own PKI (see `docs/security.md`).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Common name of the CA this module makes.
pub const CA_NAME: &str = "Lockstep cluster CA";

/// A failure to make or write certificates.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        message: String,
    },
    /// The node name cannot be a certificate's DNS name.
    #[error("node name {node:?} cannot be named in a certificate (use letters, digits, '-' and '_', not all digits)")]
    BadName {
        /// The node's name.
        node: String,
    },
    /// Key generation or signing failed.
    #[error("making the certificate of {what}: {reason}")]
    Rcgen {
        /// "the CA" or the node.
        what: String,
        /// rcgen's reason.
        reason: rcgen::Error,
    },
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The CA certificate.
    pub ca: PathBuf,
    /// Whether the CA was made now (false: an existing one was reused).
    pub new_ca: bool,
    /// Per node: `(name, certificate, key)`.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), GenError> {
    let io = |e: std::io::Error| GenError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Make (or reuse) the CA in `out` and a certificate and key for each of `nodes`.
///
/// # Errors
/// [`GenError`] naming the file or node.
pub fn generate(out: &Path, nodes: &[String]) -> Result<Generated, GenError> {
    for n in nodes {
        if super::config::server_name(n).is_err() {
            return Err(GenError::BadName { node: n.clone() });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| GenError::Io {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let rc = |what: &str| {
        let what = what.to_string();
        move |reason| GenError::Rcgen { what, reason }
    };
    let (ca_pem, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    let new_ca = !(ca_pem.exists() && ca_key_path.exists());
    let ca_key = if new_ca {
        let key = KeyPair::generate().map_err(rc("the CA"))?;
        let cert = ca_params().self_signed(&key).map_err(rc("the CA"))?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        write(&ca_pem, &cert.pem(), false)?;
        key
    } else {
        let text = std::fs::read_to_string(&ca_key_path).map_err(|e| GenError::Io {
            path: ca_key_path.clone(),
            message: e.to_string(),
        })?;
        KeyPair::from_pem(&text).map_err(rc("the CA"))?
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut written = Vec::new();
    for n in nodes {
        let key = KeyPair::generate().map_err(rc(n))?;
        let mut p = CertificateParams::new(vec![n.clone()]).map_err(rc(n))?;
        p.distinguished_name.push(DnType::CommonName, n.as_str());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).map_err(rc(n))?;
        let (c, k) = (out.join(format!("{n}.pem")), out.join(format!("{n}.key")));
        write(&k, &key.serialize_pem(), true)?;
        write(&c, &cert.pem(), false)?;
        written.push((n.clone(), c, k));
    }
    Ok(Generated {
        ca: ca_pem,
        new_ca,
        nodes: written,
    })
}
