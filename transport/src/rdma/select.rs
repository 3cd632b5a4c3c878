//! Choosing RDMA for the links of a mesh (compiled with and without the `rdma` feature):
//! whether this node can run it at all ([`LocalRdma`]), the `auto` agreement between two hosts
//! ([`choose_remote`], [`decide_remote`]), and turning an agreed link into an RDMA link.
//!
//! - `transport = "rdma"`: [`LocalRdma::require`] fails the mesh at start with
//!   [`Error::RdmaUnavailable`], naming the node and the one missing piece.
//! - `transport = "auto"` to a peer on another host: right after the authenticated handshake
//!   each side writes `RDM?` and 1 (it can run RDMA) or 0, reads the peer's, and the link is
//!   RDMA only when both wrote 1. Both sides compute the same answer from the same two bits,
//!   so a pair never disagrees; in a cluster where every member has an active device every
//!   link between hosts is RDMA, and a member without one talks TCP to everyone. Each side
//!   logs its choice, and for TCP the reason (this node's [`RdmaUnavailable`], or "the peer
//!   cannot run RDMA").

use super::{RdmaDevice, RdmaUnavailable};
#[cfg(feature = "rdma")]
use crate::error::Unsupported;
use crate::error::{Error, Result};
use crate::link::AnyLink;
use crate::rendezvous::{MeshConfig, TransportKind};
use crate::tcp::Conn;
use std::time::Duration;

/// This node's RDMA device, opened once per mesh when a link may use it.
#[derive(Default)]
pub(crate) struct LocalRdma {
    dev: Option<std::result::Result<RdmaDevice, RdmaUnavailable>>,
}

impl LocalRdma {
    /// The device when this node can run RDMA links under `cfg`; otherwise why not.
    pub(crate) fn ready(
        &mut self,
        cfg: &MeshConfig,
    ) -> std::result::Result<&RdmaDevice, RdmaUnavailable> {
        if cfg.tls.is_some() {
            return Err(RdmaUnavailable::Tls);
        }
        let dev = self.dev.get_or_insert_with(super::open_device);
        dev.as_ref().map_err(Clone::clone)
    }

    /// [`Self::ready`] for `transport = "rdma"`: the reason becomes the mesh's error.
    pub(crate) fn require(&mut self, cfg: &MeshConfig) -> Result<()> {
        self.ready(cfg)
            .map(|_| ())
            .map_err(|reason| Error::RdmaUnavailable {
                node: cfg.node.clone(),
                reason,
            })
    }

    /// The link to `peer` over `s` once the pair has agreed on RDMA.
    #[cfg(feature = "rdma")]
    pub(crate) fn link(&self, s: Conn, cfg: &MeshConfig, peer: &str) -> Result<AnyLink> {
        let Some(Ok(dev)) = self.dev.as_ref() else {
            return Err(unsupported(cfg, peer, Unsupported::NoDevice));
        };
        let Conn::Plain(sock) = s else {
            return Err(unsupported(cfg, peer, Unsupported::TlsBootstrap));
        };
        Ok(AnyLink::Rdma(Box::new(super::RdmaLink::establish(
            sock,
            dev,
            &cfg.node,
            peer,
            cfg.link_config(),
        )?)))
    }

    /// Without the feature no link is ever agreed to be RDMA ([`Self::ready`] fails first).
    #[cfg(not(feature = "rdma"))]
    pub(crate) fn link(&self, _s: Conn, cfg: &MeshConfig, _peer: &str) -> Result<AnyLink> {
        Err(Error::RdmaUnavailable {
            node: cfg.node.clone(),
            reason: RdmaUnavailable::NotBuilt,
        })
    }
}

/// [`Error::Unsupported`] for the link from this node to `peer`.
#[cfg(feature = "rdma")]
fn unsupported(cfg: &MeshConfig, peer: &str, reason: Unsupported) -> Error {
    Error::Unsupported {
        node: cfg.node.clone(),
        peer: peer.to_string(),
        reason,
    }
}

/// The bytes each side of an `auto` pair on two hosts writes: `RDM?` and 1 (can run RDMA) or 0.
const AUTO_MSG: [u8; 4] = *b"RDM?";

/// `auto` between two hosts: tell the peer whether this side can run RDMA, read its answer,
/// and choose RDMA when both can; the choice is logged, with the reason for TCP.
pub(crate) fn choose_remote(
    s: &mut Conn,
    rdma: &mut LocalRdma,
    cfg: &MeshConfig,
    peer: &str,
) -> Result<TransportKind> {
    use std::io::{Read, Write};
    let ctx = || crate::Context {
        peer: peer.to_string(),
        round: None,
        op: None,
    };
    let mine = rdma.ready(cfg).map(|d| d.name.clone());
    let mut msg = [0u8; 5];
    msg[..4].copy_from_slice(&AUTO_MSG);
    msg[4] = u8::from(mine.is_ok());
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(&msg)
        .map_err(|e| Error::io(ctx(), "write(transport choice)", &e))?;
    let mut theirs = [0u8; 5];
    s.read_exact(&mut theirs)
        .map_err(|e| Error::io(ctx(), "read(transport choice)", &e))?;
    let _ = s.set_read_timeout(None);
    if theirs[..4] != AUTO_MSG || theirs[4] > 1 {
        return Err(Error::Protocol {
            ctx: ctx(),
            reason: "malformed transport choice (is the peer on another transport setting?)".into(),
        });
    }
    let (kind, why) = decide_remote(mine.as_deref(), theirs[4] == 1);
    match kind {
        TransportKind::Rdma => {
            tracing::info!(node = %cfg.node, peer, transport = "rdma", reason = %why, "auto: link between hosts uses rdma");
        }
        _ => {
            tracing::info!(node = %cfg.node, peer, transport = "tcp", reason = %why, "auto: link between hosts uses tcp");
        }
    }
    Ok(kind)
}

/// The transport of an `auto` link between hosts, from this side's RDMA readiness (the device
/// name, or why not) and the peer's; with the reason for the log.
pub(crate) fn decide_remote(
    mine: std::result::Result<&str, &RdmaUnavailable>,
    theirs: bool,
) -> (TransportKind, String) {
    match (mine, theirs) {
        (Ok(dev), true) => (
            TransportKind::Rdma,
            format!("both ends have RDMA ({dev} here)"),
        ),
        (Err(why), _) => (
            TransportKind::Tcp,
            format!("this node cannot run RDMA: {why}"),
        ),
        (Ok(_), false) => (
            TransportKind::Tcp,
            "the peer cannot run RDMA (its log says why)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_agrees_on_rdma_only_when_both_ends_can() {
        let no = RdmaUnavailable::NoDevice;
        assert_eq!(decide_remote(Ok("mlx5_0"), true).0, TransportKind::Rdma);
        let (k, why) = decide_remote(Ok("mlx5_0"), false);
        assert_eq!(k, TransportKind::Tcp);
        assert!(why.contains("the peer cannot run RDMA"), "{why}");
        let (k, why) = decide_remote(Err(&no), true);
        assert_eq!(k, TransportKind::Tcp);
        assert!(
            why.contains("this node cannot run RDMA: no RDMA device"),
            "{why}"
        );
        assert_eq!(decide_remote(Err(&no), false).0, TransportKind::Tcp);
    }
}
