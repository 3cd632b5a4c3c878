//! `[cluster.tls]` and its environment spelling: which PEM files a node uses, and loading them at
//! start-up, before the node connects anywhere (so a missing, unreadable or mismatched file is
//! reported at once, naming the file and the node, rather than at the first connection).
//!
//! One manifest serves every node, so the paths may contain `{node}`, replaced by the node's name
//! (`cert = "tls/{node}.pem"`). Relative paths resolve against the manifest's folder. In
//! environment mode (or to override the manifest), `LOCKSTEP_TLS_CA`, `LOCKSTEP_TLS_CERT` and
//! `LOCKSTEP_TLS_KEY` give the three paths (the same `{node}` rule; relative to the working
//! directory); all three or none.

use crate::error::{RuntimeError, SetupError};
use crate::manifest::Manifest;
use lockstep_transport::{TlsConfig, TlsFiles};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[cluster.tls]`: TLS on every TCP link (control, data, ingest). See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file with the CA certificate every node's certificate must chain to.
    pub ca: String,
    /// PEM file with this node's certificate (`{node}` is replaced by the node name).
    pub cert: String,
    /// PEM file with this node's private key (`{node}` is replaced by the node name).
    pub key: String,
}

/// The environment variables of the environment spelling.
pub(crate) const ENV_VARS: [&str; 3] = ["LOCKSTEP_TLS_CA", "LOCKSTEP_TLS_CERT", "LOCKSTEP_TLS_KEY"];

impl TlsSpec {
    /// The files of `node`, relative paths resolved against `base`.
    pub fn files(&self, base: &Path, node: &str) -> TlsFiles {
        let path = |p: &str| -> PathBuf {
            let p = PathBuf::from(p.replace("{node}", node));
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        TlsFiles {
            ca: path(&self.ca),
            cert: path(&self.cert),
            key: path(&self.key),
        }
    }

    /// The spec from `LOCKSTEP_TLS_CA` / `_CERT` / `_KEY`, if set.
    ///
    /// # Errors
    /// [`SetupError::TlsEnvPartial`] naming the missing variables when only some are set.
    pub fn from_env() -> Result<Option<TlsSpec>, RuntimeError> {
        let vals: Vec<Option<String>> = ENV_VARS
            .iter()
            .map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .collect();
        match (&vals[0], &vals[1], &vals[2]) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsSpec {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => {
                let missing: Vec<&str> = ENV_VARS
                    .iter()
                    .zip(&vals)
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                Err(SetupError::TlsEnvPartial {
                    all: &ENV_VARS,
                    missing,
                }
                .into())
            }
        }
    }
}

/// The TLS setup of `node`: from the environment if set there (paths relative to the working
/// directory), else from `[cluster.tls]` (relative to the manifest's folder), else none.
///
/// # Errors
/// [`RuntimeError::Tls`] naming the node and the file that is missing, unreadable or does not
/// fit (key and certificate, certificate and CA, certificate and node name).
pub(crate) fn load(m: &Manifest, node: &str) -> Result<Option<Arc<TlsConfig>>, RuntimeError> {
    let (spec, base) = match TlsSpec::from_env()? {
        Some(s) => (s, PathBuf::from(".")),
        None => match &m.cluster.tls {
            Some(s) => (s.clone(), m.base_dir.clone()),
            None => return Ok(None),
        },
    };
    let cfg = TlsConfig::load(node, &spec.files(&base, node))?;
    tracing::info!(node, "TLS on every TCP link (certificates checked)");
    Ok(Some(Arc::new(cfg)))
}
