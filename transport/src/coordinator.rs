//! Rendezvous through a coordinator address (the `MASTER_ADDR:MASTER_PORT` shape): every node
//! binds its listener (port 0 is fine), registers `(rank, name, listen address)` over an
//! authenticated connection, and once all `world` nodes are in, the coordinator answers each with
//! the full peer table; then [`crate::connect_mesh`] builds the mesh.
//!
//! Messages are Control frames (the same checksummed header) with a small length-prefixed body.

use crate::error::{ConfigError, Context, Error, Result};
use crate::frame::{FrameHeader, FrameKind, Op, HEADER_LEN};
use crate::handshake::Identity;
use crate::registrar::{gather, Admit, Expected, GatherError};
use crate::rendezvous::{connect_mesh, connect_with_retry, MeshConfig, PeerAddr};
use crate::tcp::{Conn, Listener};
use crate::tls::TlsConfig;
use crate::Group;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Node name the coordinator uses in handshakes.
pub const COORDINATOR_NAME: &str = "coordinator";
/// Rank value meaning "assign me one".
pub const ANY_RANK: u32 = u32::MAX;
const MAX_MSG: u64 = 1 << 20;

/// A coordinator bound to an address.
pub struct Coordinator {
    listener: Listener,
    me: Identity,
}

impl Coordinator {
    /// Bind the coordinator.
    ///
    /// # Errors
    /// As [`Listener::bind`].
    pub fn bind(addr: &str, cluster: &str, token: &[u8]) -> Result<Coordinator> {
        Ok(Coordinator {
            listener: Listener::bind(addr)?,
            me: Identity::new(cluster, COORDINATOR_NAME, token),
        })
    }

    /// Run every connection over TLS with `tls` (`None`: plain TCP).
    pub fn with_tls(mut self, tls: Option<Arc<TlsConfig>>) -> Coordinator {
        self.me = self.me.with_tls(tls);
        self
    }

    /// The bound address.
    ///
    /// # Errors
    /// As [`Listener::local_addr`].
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Wait for `world` registrations (bad connections are logged and dropped), assign ranks
    /// (requested ones first, the rest by name), answer everyone with the table, return it.
    ///
    /// # Errors
    /// [`Error::PeerTimeout`] when not everyone registered by `timeout`; [`Error::Config`] on
    /// duplicate names or ranks.
    pub fn serve(self, world: usize, timeout: Duration) -> Result<Vec<PeerAddr>> {
        let deadline = Instant::now() + timeout;
        let acc =
            self.listener
                .start(self.me.clone(), None, timeout.min(Duration::from_secs(10)))?;
        let gathered = gather(&acc, Expected::Count(world), deadline, |name, mut s| {
            let _ = s.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ));
            Ok::<_, Error>(
                match read_msg(&mut s, name).and_then(|b| decode_reg(&b, name)) {
                    Ok((rank, addr)) if addr.name == name => Admit::Member((rank, addr, s)),
                    Ok((_, addr)) => Admit::Refuse(format!("registers as {}", addr.name)),
                    Err(e) => Admit::Refuse(e.to_string()),
                },
            )
        });
        let mut regs: Vec<(u32, PeerAddr, Conn)> = gather_result(gathered, timeout)?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let table = assign(&mut regs)?;
        let body = encode_table(&table);
        for (_, p, s) in regs.iter_mut() {
            if let Err(e) = write_msg(s, &body, &p.name) {
                tracing::warn!(peer = %p.name, error = %e, "could not send the peer table");
            }
        }
        Ok(table)
    }
}

fn gather_result<T>(
    r: std::result::Result<Vec<(String, T)>, GatherError<T, Error>>,
    timeout: Duration,
) -> Result<Vec<(String, T)>> {
    match r {
        Ok(g) => Ok(g),
        Err(GatherError::Missing { missing, .. }) => Err(Error::PeerTimeout {
            ctx: Context {
                peer: missing,
                round: None,
                op: None,
            },
            waited_ms: timeout.as_millis() as u64,
        }),
        Err(GatherError::Fatal { error, .. }) => Err(error),
    }
}

fn assign(regs: &mut [(u32, PeerAddr, Conn)]) -> Result<Vec<PeerAddr>> {
    let n = regs.len();
    let mut table: Vec<Option<PeerAddr>> = vec![None; n];
    regs.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    for (r, p, _) in regs.iter().filter(|r| r.0 != ANY_RANK) {
        match table.get_mut(*r as usize) {
            Some(slot @ None) => *slot = Some(p.clone()),
            _ => {
                return Err(ConfigError::RankTaken {
                    node: p.name.clone(),
                    rank: *r,
                    size: n,
                }
                .into())
            }
        }
    }
    for (_, p, _) in regs.iter().filter(|r| r.0 == ANY_RANK) {
        if let Some(slot) = table.iter_mut().find(|s| s.is_none()) {
            *slot = Some(p.clone());
        }
    }
    Ok(table.into_iter().flatten().collect())
}

/// Register with the coordinator at `coordinator`, learn the peer table, find this node's rank
/// and build the mesh. `cfg.peers` and `cfg.rank` are filled in here (`cfg.rank` is the rank to
/// ask for, or `usize::MAX` for any).
///
/// # Errors
/// As [`connect_mesh`], plus [`Error::Protocol`] for a bad answer from the coordinator.
pub fn connect_mesh_via_coordinator(
    coordinator: &str,
    cfg: &MeshConfig,
    listener: Listener,
) -> Result<Group> {
    let deadline = Instant::now() + Duration::from_millis(cfg.connect_timeout_ms);
    let coord = PeerAddr {
        name: COORDINATOR_NAME.into(),
        addr: coordinator.into(),
    };
    let mut s = connect_with_retry(&coord, &cfg.identity(), deadline)?;
    let port = listener.local_addr()?.port();
    let ip = s
        .local_addr()
        .map_err(|e| Error::io(Context::default(), "getsockname", &e))?
        .ip();
    let rank = u32::try_from(cfg.rank).unwrap_or(ANY_RANK);
    let me = PeerAddr {
        name: cfg.node.clone(),
        addr: std::net::SocketAddr::new(ip, port).to_string(),
    };
    write_msg(&mut s, &encode_reg(rank, &me), COORDINATOR_NAME)?;
    let _ = s.set_read_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ));
    let table = decode_table(&read_msg(&mut s, COORDINATOR_NAME)?)?;
    let my_rank = table
        .iter()
        .position(|p| p.name == cfg.node)
        .ok_or_else(|| Error::Protocol {
            ctx: Context {
                peer: COORDINATOR_NAME.into(),
                round: None,
                op: None,
            },
            reason: format!("peer table lacks {}", cfg.node),
        })?;
    let mut full = cfg.clone();
    full.rank = my_rank;
    full.peers = table;
    let left = deadline.saturating_duration_since(Instant::now());
    full.connect_timeout_ms = (left.as_millis() as u64).max(1);
    connect_mesh(&full, listener)
}

pub(crate) fn write_msg(s: &mut Conn, body: &[u8], peer: &str) -> Result<()> {
    let h = FrameHeader {
        kind: FrameKind::Control,
        ..FrameHeader::data(Op::Control, 0, 0, 0, 0, body.len() as u64)
    };
    let ctx = || Context {
        peer: peer.into(),
        round: None,
        op: Some(Op::Control),
    };
    s.write_all(&h.encode())
        .and_then(|_| s.write_all(body))
        .map_err(|e| Error::io(ctx(), "write", &e))
}

pub(crate) fn read_msg(s: &mut Conn, peer: &str) -> Result<Vec<u8>> {
    let ctx = || Context {
        peer: peer.into(),
        round: None,
        op: Some(Op::Control),
    };
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb)
        .map_err(|e| crate::outbox::io_error(ctx(), &e, Duration::ZERO))?;
    let h = FrameHeader::try_read(&hb, MAX_MSG).map_err(|e| Error::Protocol {
        ctx: ctx(),
        reason: e.to_string(),
    })?;
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body)
        .map_err(|e| crate::outbox::io_error(ctx(), &e, Duration::ZERO))?;
    Ok(body)
}

pub(crate) fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
}

pub(crate) fn get_str(b: &mut &[u8]) -> Option<String> {
    let n = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
    let s = b.get(2..2 + n)?;
    let out = String::from_utf8(s.to_vec()).ok()?;
    *b = &b[2 + n..];
    Some(out)
}

fn encode_reg(rank: u32, me: &PeerAddr) -> Vec<u8> {
    let mut v = rank.to_le_bytes().to_vec();
    put_str(&mut v, &me.name);
    put_str(&mut v, &me.addr);
    v
}

fn decode_reg(b: &[u8], peer: &str) -> Result<(u32, PeerAddr)> {
    let bad = || Error::Protocol {
        ctx: Context {
            peer: peer.into(),
            round: None,
            op: Some(Op::Control),
        },
        reason: "malformed registration".into(),
    };
    let mut r = b.get(4..).ok_or_else(bad)?;
    let rank = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let name = get_str(&mut r).ok_or_else(bad)?;
    let addr = get_str(&mut r).ok_or_else(bad)?;
    Ok((rank, PeerAddr { name, addr }))
}

pub(crate) fn encode_table(t: &[PeerAddr]) -> Vec<u8> {
    let mut v = (t.len() as u32).to_le_bytes().to_vec();
    for p in t {
        put_str(&mut v, &p.name);
        put_str(&mut v, &p.addr);
    }
    v
}

pub(crate) fn decode_table(b: &[u8]) -> Result<Vec<PeerAddr>> {
    let bad = || Error::Protocol {
        ctx: Context {
            peer: COORDINATOR_NAME.into(),
            round: None,
            op: Some(Op::Control),
        },
        reason: "malformed peer table".into(),
    };
    let mut r = b.get(4..).ok_or_else(bad)?;
    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let mut t = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let name = get_str(&mut r).ok_or_else(bad)?;
        let addr = get_str(&mut r).ok_or_else(bad)?;
        t.push(PeerAddr { name, addr });
    }
    Ok(t)
}
