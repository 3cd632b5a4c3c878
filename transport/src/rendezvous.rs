//! Building the full mesh: from a list of (node name, address), or through a coordinator that
//! hands out the list once every node has registered.
//!
//! In a pair, the lower rank connects and the higher rank accepts. Connects retry with backoff
//! (each retry logged) until `connect_timeout_ms`; a handshake refusal (wrong token, cluster,
//! version, name) is final and not retried. The result is a [`Group`] over tcp, shm or rdma
//! links (shm and rdma links are bootstrapped over the authenticated TCP connection, which stays
//! open for liveness).
//!
//! With [`TransportKind::Auto`], a pair on two hosts agrees on RDMA or TCP right after the
//! handshake: each side writes whether it can run RDMA (built with the `rdma` feature, a device
//! with an active port, no TLS) and reads the other's answer; RDMA only when both can. The
//! choice and, for TCP, the reason are logged per link (`rdma/select.rs`).

use crate::config::LinkConfig;
use crate::error::{ConfigError, Error, Result};
use crate::handshake::Identity;
use crate::link::{AnyLink, Group};
use crate::rdma::select::{choose_remote, LocalRdma};
use crate::tcp::{self, Conn, Listener, TcpLink};
use crate::tls::TlsConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which backend the mesh's links use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP sockets.
    Tcp,
    /// Shared-memory rings (all nodes on one machine), bootstrapped over TCP.
    Shm,
    /// Per peer: shared memory to peers on this node's host (the same IP in their addresses);
    /// to the others RDMA when both ends can run it, TCP otherwise (logged with the reason).
    Auto,
    /// RDMA queue pairs to every peer (the `rdma` feature and an active device on every node;
    /// without them, building the mesh fails naming what is missing), bootstrapped over TCP.
    Rdma,
}

impl TransportKind {
    /// The kind of the link from `me` to `peer` (addresses as in the peer table).
    pub fn for_peer(self, me: &str, peer: &str) -> TransportKind {
        match self {
            TransportKind::Auto => {
                if same_host(me, peer) {
                    TransportKind::Shm
                } else {
                    TransportKind::Tcp
                }
            }
            other => other,
        }
    }
}

/// True when two `host:port` addresses name the same IP (unparsable ones never do).
pub fn same_host(a: &str, b: &str) -> bool {
    let ip = |s: &str| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    matches!((ip(a), ip(b)), (Some(x), Some(y)) if x == y)
}

impl std::str::FromStr for TransportKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(TransportKind::Tcp),
            "shm" => Ok(TransportKind::Shm),
            "auto" => Ok(TransportKind::Auto),
            "rdma" => Ok(TransportKind::Rdma),
            other => Err(ConfigError::UnknownTransport {
                name: other.to_string(),
            }
            .into()),
        }
    }
}

/// One member of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// Node name (unique in the cluster).
    pub name: String,
    /// `host:port` where its listener is bound.
    pub addr: String,
}

/// Everything needed to join a mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Cluster name (checked in the handshake).
    pub cluster: String,
    /// Cluster token (shared secret; never sent).
    pub token: Vec<u8>,
    /// This node's name; must equal `peers[rank].name`.
    pub node: String,
    /// This node's rank.
    pub rank: usize,
    /// Every member, indexed by rank (this node included).
    pub peers: Vec<PeerAddr>,
    /// Backend of the links.
    pub transport: TransportKind,
    /// Heartbeat interval on idle links.
    pub heartbeat_ms: u64,
    /// Silence after which a peer is declared dead.
    pub peer_timeout_ms: u64,
    /// Largest accepted payload.
    pub max_frame_len: u64,
    /// Overall deadline for building the mesh.
    pub connect_timeout_ms: u64,
    /// Bytes per shared-memory ring.
    pub shm_ring_bytes: usize,
    /// TLS setup for every TCP connection (`None`: plain TCP).
    pub tls: Option<Arc<TlsConfig>>,
}

impl MeshConfig {
    /// Defaults: tcp, 500 ms heartbeats, 3 s peer timeout, 2 GiB frames, 30 s to connect.
    pub fn new(
        cluster: &str,
        token: &[u8],
        node: &str,
        rank: usize,
        peers: Vec<PeerAddr>,
    ) -> MeshConfig {
        let d = LinkConfig::default();
        MeshConfig {
            cluster: cluster.to_string(),
            token: token.to_vec(),
            node: node.to_string(),
            rank,
            peers,
            transport: TransportKind::Tcp,
            heartbeat_ms: d.heartbeat.as_millis() as u64,
            peer_timeout_ms: d.peer_timeout.as_millis() as u64,
            max_frame_len: d.max_frame_len,
            connect_timeout_ms: 30_000,
            shm_ring_bytes: d.shm_ring_bytes,
            tls: None,
        }
    }

    /// The per-link settings.
    pub fn link_config(&self) -> LinkConfig {
        LinkConfig {
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(1)),
            peer_timeout: Duration::from_millis(self.peer_timeout_ms.max(1)),
            max_frame_len: self.max_frame_len,
            shm_ring_bytes: self.shm_ring_bytes,
            ..LinkConfig::default()
        }
    }

    /// This node's handshake identity.
    pub fn identity(&self) -> Identity {
        Identity::new(&self.cluster, &self.node, &self.token).with_tls(self.tls.clone())
    }

    fn validate(&self) -> Result<()> {
        match self.peers.get(self.rank) {
            Some(p) if p.name == self.node => {}
            _ => {
                return Err(ConfigError::NotInMesh {
                    node: self.node.clone(),
                    rank: self.rank,
                    size: self.peers.len(),
                }
                .into())
            }
        }
        let mut names: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateNode {
                node: twice[0].to_string(),
            }
            .into());
        }
        Ok(())
    }
}

/// Join the mesh described by `cfg`, accepting lower ranks on `listener`.
///
/// # Errors
/// [`Error::Handshake`] when a peer refuses us, [`Error::PeerTimeout`] naming the missing peers
/// when the mesh is not complete by `connect_timeout_ms`, [`Error::Config`] for a bad config.
pub fn connect_mesh(cfg: &MeshConfig, listener: Listener) -> Result<Group> {
    cfg.validate()?;
    let deadline = Instant::now() + Duration::from_millis(cfg.connect_timeout_ms);
    let me = cfg.identity();
    let hs_timeout = Duration::from_millis(cfg.connect_timeout_ms.min(10_000));
    let lower: Vec<String> = cfg.peers[..cfg.rank]
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let acceptor = listener.start(me.clone(), Some(lower.clone()), hs_timeout)?;
    let mut streams: Vec<Option<Conn>> = (0..cfg.peers.len()).map(|_| None).collect();
    for (j, p) in cfg.peers.iter().enumerate().skip(cfg.rank + 1) {
        streams[j] = Some(connect_with_retry(p, &me, deadline)?);
    }
    let mut missing = lower.len();
    while missing > 0 {
        let Some((name, s)) = acceptor.next(deadline) else {
            let absent: Vec<&str> = (0..cfg.rank)
                .filter(|&i| streams[i].is_none())
                .map(|i| cfg.peers[i].name.as_str())
                .collect();
            return Err(Error::PeerTimeout {
                ctx: crate::Context {
                    peer: absent.join(", "),
                    round: None,
                    op: None,
                },
                waited_ms: cfg.connect_timeout_ms,
            });
        };
        if let Some(i) = lower.iter().position(|n| *n == name) {
            if streams[i].is_none() {
                streams[i] = Some(s);
                missing -= 1;
                continue;
            }
        }
        tracing::warn!(node = %cfg.node, peer = %name, "duplicate connection dropped");
    }
    drop(acceptor);
    build_group(cfg, streams)
}

fn build_group(cfg: &MeshConfig, streams: Vec<Option<Conn>>) -> Result<Group> {
    let lc = cfg.link_config();
    let names: Vec<String> = cfg.peers.iter().map(|p| p.name.clone()).collect();
    let mut links: Vec<Option<AnyLink>> = Vec::with_capacity(names.len());
    let mut rdma = LocalRdma::default();
    if cfg.transport == TransportKind::Rdma {
        rdma.require(cfg)?;
    }
    for (i, s) in streams.into_iter().enumerate() {
        let Some(mut s) = s else {
            links.push(None);
            continue;
        };
        let mut kind = cfg
            .transport
            .for_peer(&cfg.peers[cfg.rank].addr, &cfg.peers[i].addr);
        // `auto` to another host: RDMA when both ends can run it.
        if cfg.transport == TransportKind::Auto && kind == TransportKind::Tcp {
            kind = choose_remote(&mut s, &mut rdma, cfg, &names[i])?;
        }
        let link = match kind {
            TransportKind::Tcp | TransportKind::Auto => {
                AnyLink::Tcp(TcpLink::new(s, &cfg.node, &names[i], lc)?)
            }
            TransportKind::Rdma => rdma.link(s, cfg, &names[i])?,
            TransportKind::Shm => AnyLink::Shm(crate::shm::ShmLink::establish(
                s,
                &cfg.cluster,
                &cfg.node,
                &names[i],
                cfg.rank < i,
                lc,
            )?),
        };
        links.push(Some(link));
    }
    Group::new(cfg.rank, names, links)
}

/// Connect to `p`, retrying with backoff until `deadline`; refusals are final.
pub(crate) fn connect_with_retry(p: &PeerAddr, me: &Identity, deadline: Instant) -> Result<Conn> {
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match tcp::resolve(&p.addr) {
            Ok(sa) => match tcp::connect_once(
                sa,
                me,
                &p.name,
                left.clamp(Duration::from_millis(1), Duration::from_secs(5)),
            ) {
                Ok(s) => return Ok(s),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if err.is_refusal() {
            return Err(err);
        }
        if Instant::now() + backoff >= deadline {
            tracing::warn!(node = %me.node, peer = %p.name, addr = %p.addr, attempt, error = %err, "giving up connecting");
            return Err(err);
        }
        tracing::debug!(node = %me.node, peer = %p.name, addr = %p.addr, attempt, error = %err, "connect failed; retrying");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
