//! The coordinator's registration phase: accept one authenticated control connection from every
//! expected member within a deadline, read its `Register`, and check that every model has the
//! coordinator's parameter layout (a mismatch names both nodes and both shapes).

use crate::control::protocol::term;
use crate::control::protocol::{
    recv_msg, send_msg, ControlMessage, ModelSignature, Rejoin, ToCoordinator, ToWorker,
};
use crate::error::{MismatchError, ProtocolError, RuntimeError};
use crate::node::{NodeContext, REGISTRATION_TIMEOUT};
use lockstep_transport::registrar::{gather, Admit, Expected, GatherError};
use lockstep_transport::tcp::listener::Acceptor;
use lockstep_transport::tcp::TcpLink;
use lockstep_transport::AnyLink;
use std::time::{Duration, Instant};

/// A registered member.
pub(crate) struct Registration {
    /// Node name.
    pub name: String,
    /// Its data-plane address.
    pub data_addr: String,
    /// Its ingest endpoint for producers (streams).
    pub ingest_addr: Option<String>,
    /// Its control link.
    pub link: AnyLink,
    /// When its process started, on this clock (from the uptime it registered with).
    pub started: Option<Instant>,
    /// A survivor of a dead coordinator: where it stands (see [`crate::control::takeover`]),
    /// and when it lost the old one, on this clock.
    pub rejoin: Option<(Rejoin, Instant)>,
}

/// Accept and register every node in `names`; the result is in the order of `names`.
///
/// # Errors
/// [`RuntimeError::Timeout`] naming the nodes that never came; [`crate::error::MismatchError`]
/// naming both shapes when a model differs.
pub(crate) fn accept_members(
    ctx: &NodeContext,
    acceptor: &Acceptor,
    names: &[String],
    signature: &ModelSignature,
) -> Result<Vec<Registration>, RuntimeError> {
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let cfg = lockstep_transport::LinkConfig {
        heartbeat: Duration::from_millis(ctx.manifest.cluster.heartbeat_ms),
        peer_timeout: Duration::from_millis(ctx.manifest.cluster.peer_timeout_ms),
        ..lockstep_transport::LinkConfig::control()
    };
    let admit = |peer: &str, stream| {
        register_one(&ctx.name, peer, stream, cfg, signature).map(Admit::Member)
    };
    match gather(acceptor, Expected::Names(names), deadline, admit) {
        Ok(members) => Ok(members.into_iter().map(|(_, r)| r).collect()),
        Err(GatherError::Missing {
            missing,
            mut gathered,
        }) => {
            abort_all(&mut gathered, "registration timed out");
            Err(RuntimeError::Timeout {
                doing: format!("waiting for {missing} to register"),
                ms: REGISTRATION_TIMEOUT.as_millis() as u64,
            })
        }
        Err(GatherError::Fatal {
            error,
            mut gathered,
        }) => {
            abort_all(&mut gathered, &error.to_string());
            Err(error)
        }
    }
}

/// How a member's model (first) or data differ from the coordinator's, if they do.
fn differs(
    me: &str,
    mine: &ModelSignature,
    peer: &str,
    theirs: &ModelSignature,
) -> Option<MismatchError> {
    if theirs.params != mine.params {
        return Some(MismatchError::ModelShapes {
            node_a: me.to_string(),
            shapes_a: Box::new(mine.clone()),
            node_b: peer.to_string(),
            shapes_b: Box::new(theirs.clone()),
        });
    }
    match (&mine.data, &theirs.data) {
        (Some(a), Some(b)) if a != b => Some(MismatchError::Data {
            node_a: me.to_string(),
            data_a: a.clone(),
            node_b: peer.to_string(),
            data_b: b.clone(),
        }),
        _ => None,
    }
}

/// Turn one authenticated connection into a member: read its `Register` and check its model
/// layout against `signature` (a mismatch is answered with `Abort` naming both shapes).
pub(crate) fn register_one(
    me: &str,
    peer: &str,
    stream: lockstep_transport::Conn,
    cfg: lockstep_transport::LinkConfig,
    signature: &ModelSignature,
) -> Result<Registration, RuntimeError> {
    let mut link = AnyLink::Tcp(TcpLink::new(stream, me, peer, cfg)?);
    let received = recv_msg(&mut link, 0, "waiting for registration")?;
    let (data_addr, ingest_addr, sig, uptime_ms, rejoin) = match received {
        ToCoordinator::Register {
            node,
            data_addr,
            signature,
            ingest_addr,
            uptime_ms,
            rejoin,
        } if node == peer => (data_addr, ingest_addr, signature, uptime_ms, rejoin),
        other => {
            return Err(ProtocolError::InsteadOf {
                node: peer.to_string(),
                got: other.name(),
                expected: "Register",
            }
            .into())
        }
    };
    if let Some(mismatch) = differs(me, signature, peer, &sig) {
        let abort = ToWorker::Abort {
            reason: mismatch.to_string(),
        };
        let _ = send_msg(&mut link, 0, "aborting", &abort);
        return Err(mismatch.into());
    }
    tracing::info!(node = %peer, %data_addr, "registered");
    let started = uptime_ms
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .and_then(|ms| Instant::now().checked_sub(Duration::from_secs_f64(ms / 1e3)));
    Ok(Registration {
        name: peer.to_string(),
        data_addr,
        ingest_addr,
        link,
        started,
        rejoin: rejoin.map(|r| {
            let ago = Duration::from_secs_f64(r.lost_ms.clamp(0.0, 1e9) / 1e3);
            let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
            (r, at)
        }),
    })
}

fn abort_all(members: &mut [(String, Registration)], reason: &str) {
    for (_, r) in members.iter_mut() {
        let _ = send_msg(
            &mut r.link,
            0,
            "aborting",
            &ToWorker::Abort {
                reason: reason.to_string(),
            },
        );
    }
}

/// Keep the acceptor running for the rest of the job so that late or unexpected joiners are
/// refused (wrong tokens by the handshake, authenticated strangers here), never left hanging.
pub(crate) fn refuse_late_joiners(acceptor: Acceptor) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let deadline = Instant::now() + Duration::from_secs(3600);
        match acceptor.next(deadline) {
            Some((peer, _stream)) => {
                tracing::warn!(node = %peer, "refused {peer}: the job is already running");
            }
            None => return,
        }
    })
}

/// Elastic: keep accepting for the rest of the job. An authenticated worker of the manifest
/// that registers with the coordinator's model layout becomes a replacement, passed on with the
/// time it registered; anyone else is refused (wrong tokens by the handshake, the rest here).
pub(crate) fn accept_joiners(
    ctx: &NodeContext,
    acceptor: Acceptor,
    names: Vec<String>,
    signature: ModelSignature,
) -> std::sync::mpsc::Receiver<(Registration, Instant)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let me = ctx.name.clone();
    let cfg = lockstep_transport::LinkConfig {
        heartbeat: Duration::from_millis(ctx.manifest.cluster.heartbeat_ms),
        peer_timeout: Duration::from_millis(ctx.manifest.cluster.peer_timeout_ms),
        ..Default::default()
    };
    std::thread::spawn(move || loop {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let Some((peer, stream)) = acceptor.next(deadline) else {
            return;
        };
        if !names.contains(&peer) {
            tracing::warn!(node = %peer, "refused {peer}: not a worker of this job");
            continue;
        }
        match register_one(&me, &peer, stream, cfg, &signature) {
            Ok(reg)
                if reg
                    .rejoin
                    .as_ref()
                    .is_some_and(|r| r.0.term > term::current()) =>
            {
                // It follows a coordinator newer than this one: this one was replaced.
                tracing::error!(node = %peer, "refused {peer}: it follows coordinator term {}, newer than this one's ({}); this coordinator was replaced", reg.rejoin.map_or(0, |r| r.0.term), term::current());
            }
            Ok(reg) => {
                tracing::info!(node = %peer, "replacement registered; it joins at the next round boundary");
                if tx.send((reg, Instant::now())).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(node = %peer, "refused replacement {peer}: {e}"),
        }
    });
    rx
}
