//! Coordinator failover, a worker's side (elastic jobs): the coordinator's link failed, so this
//! worker keeps the state of its newest applied round, binds a fresh data listener and
//! registers again, with where it stands ([`Rejoin`]), with whichever coordinator comes up:
//! at the address in the run directory's `endpoints.json` (a coordinator started again writes
//! its new address there) or else at the one it was given. It tries until
//! `job.elastic.coordinator_timeout_ms` after the loss, then fails naming the coordinator. The
//! coordinator's side is [`crate::control::takeover`].

use super::worker::{wait_remesh, Epoch, Worker};
use crate::control::protocol::{send_msg, term, Rejoin, ToCoordinator};
use crate::error::RuntimeError;
use crate::node::{bind_data, connect_control_until, coordinator_addr, NodeContext};
use crate::round::coordinator_lost;
use lockstep_transport::tcp::Listener;
use lockstep_transport::AnyLink;
use std::time::{Duration, Instant};

/// What a worker logs when it lost its coordinator (`launch` watches for it: a coordinator
/// whose workers lost it while its process still runs is frozen or unreachable).
pub(crate) const LOST_COORDINATOR: &str = "lost the coordinator";
/// What it logs once a new coordinator took it in.
pub(crate) const REJOINED: &str = "rejoined under coordinator term";

impl Worker<'_> {
    /// Register with the coordinator that takes over and wait for its membership; this
    /// worker's state is that of round `next_round - 1` applied. `why`: how the old one was
    /// found lost.
    pub(super) fn rejoin(
        &self,
        next_round: u64,
        why: String,
    ) -> Result<(AnyLink, Listener, Epoch), RuntimeError> {
        let ctx = self.ctx;
        let me = &ctx.name;
        let lost = Instant::now();
        let wait = ctx
            .manifest
            .job
            .elastic
            .map_or(Duration::from_secs(60), |e| e.coordinator_timeout());
        let deadline = lost + wait;
        tracing::warn!(node = %me, "{LOST_COORDINATOR} ({why}); registering again at round {next_round} with the one taking over (up to {} s)", wait.as_secs());
        loop {
            let candidates = || coordinator_candidates(ctx, true);
            let (mut link, local_ip) = connect_control_until(ctx, me, candidates, deadline)?;
            let (mut listener, data_addr) = bind_data(&self.node_addr, Some(local_ip))?;
            let register = ToCoordinator::Register {
                node: me.clone(),
                data_addr,
                signature: self.signature.clone(),
                ingest_addr: None,
                uptime_ms: Some(crate::node::uptime_ms()),
                rejoin: Some(Rejoin {
                    next_round,
                    term: term::current(),
                    lost_ms: lost.elapsed().as_secs_f64() * 1e3,
                    reason: why.clone(),
                }),
            };
            let answer =
                send_msg(&mut link, next_round, "registering again", &register).and_then(|()| {
                    let (node_addr, ip) = (&self.node_addr, self.local_ip);
                    wait_remesh(&mut link, node_addr, ip, next_round, &mut listener)
                });
            match answer {
                Ok(epoch) => {
                    tracing::info!(node = %me, "{REJOINED} {} at round {}", term::current(), epoch.round);
                    return Ok((link, listener, epoch));
                }
                // A coordinator that went away again (or a replaced one that refused us).
                Err(e) if coordinator_lost(&e) && Instant::now() < deadline => {
                    tracing::warn!(node = %me, error = %e, "registering again failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where the coordinator may be now: the address this node was given and the one in the run
/// directory's `endpoints.json` (rewritten by a coordinator that starts), `announced_first`
/// or not (a stale file of an earlier run must not hide a live coordinator at the given address).
pub(crate) fn coordinator_candidates(
    ctx: &NodeContext,
    announced_first: bool,
) -> Result<Vec<String>, RuntimeError> {
    let path = ctx.opts.run_dir.join("endpoints.json");
    let announced = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["coordinator"].as_str().map(str::to_string));
    let given = coordinator_addr(ctx);
    let mut out = Vec::new();
    if announced_first {
        out.extend(announced.clone());
    }
    match given {
        Ok(a) => out.push(a),
        // Port 0 in the manifest and no --coordinator: only the file can say.
        Err(e) if announced.is_none() => return Err(e),
        Err(_) => {}
    }
    if !announced_first {
        out.extend(announced);
    }
    out.dedup();
    Ok(out)
}
