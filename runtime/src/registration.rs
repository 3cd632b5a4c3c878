//! The coordinator's registration phase: accept one authenticated control connection from every
//! expected member within a deadline, read its `Register`, and check that every model has the
//! coordinator's parameter layout (a mismatch names both nodes and both shapes).

use crate::error::RuntimeError;
use crate::node::{NodeContext, REGISTRATION_TIMEOUT};
use crate::protocol::{recv_msg, send_msg, ControlMsg, ModelSignature};
use lockstep_transport::tcp::listener::Acceptor;
use lockstep_transport::tcp::TcpLink;
use lockstep_transport::AnyLink;
use std::time::{Duration, Instant};

/// A registered member.
pub struct Registration {
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
}

/// Accept and register every node in `names`; the result is in the order of `names`.
///
/// # Errors
/// [`RuntimeError::Timeout`] naming the nodes that never came; [`RuntimeError::Inconsistent`]
/// naming both shapes when a model differs.
pub fn accept_members(
    ctx: &NodeContext,
    acceptor: &Acceptor,
    names: &[String],
    signature: &ModelSignature,
) -> Result<Vec<Registration>, RuntimeError> {
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let mut slots: Vec<Option<Registration>> = names.iter().map(|_| None).collect();
    let cfg = lockstep_transport::LinkConfig {
        heartbeat: Duration::from_millis(ctx.manifest.cluster.heartbeat_ms),
        peer_timeout: Duration::from_millis(ctx.manifest.cluster.peer_timeout_ms),
        ..lockstep_transport::LinkConfig::control()
    };
    while slots.iter().any(Option::is_none) {
        let Some((peer, stream)) = acceptor.next(deadline) else {
            let missing: Vec<&str> = names
                .iter()
                .zip(&slots)
                .filter(|(_, s)| s.is_none())
                .map(|(n, _)| n.as_str())
                .collect();
            abort_all(&mut slots, "registration timed out");
            return Err(RuntimeError::Timeout {
                doing: format!("waiting for {} to register", missing.join(", ")),
                ms: REGISTRATION_TIMEOUT.as_millis() as u64,
            });
        };
        let Some(i) = names.iter().position(|n| *n == peer) else {
            continue;
        };
        if slots[i].is_some() {
            tracing::warn!(node = %peer, "a second connection claims an already registered node; closed");
            continue;
        }
        let mut link = AnyLink::Tcp(TcpLink::new(stream, &ctx.name, &peer, cfg)?);
        let ((data_addr, ingest_addr), sig) =
            match recv_msg(&mut link, 0, "waiting for registration")? {
                ControlMsg::Register {
                    node,
                    data_addr,
                    signature,
                    ingest_addr,
                    ..
                } if node == peer => ((data_addr, ingest_addr), signature),
                other => {
                    return Err(RuntimeError::Protocol(format!(
                        "{peer} sent {} instead of Register",
                        other.name()
                    )))
                }
            };
        if sig != *signature {
            let msg = format!(
                "model shapes differ: {} has [{}], {peer} has [{}]",
                ctx.name, signature, sig
            );
            let _ = send_msg(
                &mut link,
                0,
                "aborting",
                &ControlMsg::Abort {
                    reason: msg.clone(),
                },
            );
            abort_all(&mut slots, &msg);
            return Err(RuntimeError::Inconsistent(msg));
        }
        tracing::info!(node = %peer, %data_addr, "registered");
        slots[i] = Some(Registration {
            name: peer,
            data_addr,
            ingest_addr,
            started: None,
            link,
        });
    }
    Ok(slots.into_iter().flatten().collect())
}

fn abort_all(slots: &mut [Option<Registration>], reason: &str) {
    for r in slots.iter_mut().flatten() {
        let _ = send_msg(
            &mut r.link,
            0,
            "aborting",
            &ControlMsg::Abort {
                reason: reason.to_string(),
            },
        );
    }
}

/// Keep the acceptor running for the rest of the job so that late or unexpected joiners are
/// refused (wrong tokens by the handshake, authenticated strangers here), never left hanging.
pub fn refuse_late_joiners(acceptor: Acceptor) -> std::thread::JoinHandle<()> {
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
pub fn accept_joiners(
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
        let Ok(link) = TcpLink::new(stream, &me, &peer, cfg) else {
            continue;
        };
        let mut link = AnyLink::Tcp(link);
        match recv_msg(&mut link, 0, "waiting for a replacement's registration") {
            Ok(ControlMsg::Register {
                node,
                data_addr,
                signature: sig,
                ingest_addr,
                uptime_ms,
            }) if node == peer => {
                if sig != signature {
                    let reason =
                        format!("model shapes differ: {me} has [{signature}], {peer} has [{sig}]");
                    tracing::warn!("refused replacement {peer}: {reason}");
                    let _ = send_msg(&mut link, 0, "refusing", &ControlMsg::Abort { reason });
                    continue;
                }
                tracing::info!(node = %peer, %data_addr, "replacement registered; it joins at the next round boundary");
                let started = uptime_ms
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .and_then(|ms| Instant::now().checked_sub(Duration::from_secs_f64(ms / 1e3)));
                let reg = Registration {
                    name: peer,
                    data_addr,
                    ingest_addr,
                    started,
                    link,
                };
                if tx.send((reg, Instant::now())).is_err() {
                    return;
                }
            }
            Ok(other) => {
                tracing::warn!(node = %peer, "refused {peer}: sent {} instead of Register", other.name())
            }
            Err(e) => {
                tracing::warn!(node = %peer, error = %e, "replacement lost while registering")
            }
        }
    });
    rx
}
