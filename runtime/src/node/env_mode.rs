//! Environment mode for cluster managers: with `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`
//! (as torchrun sets them), Slurm's `SLURM_PROCID` / `SLURM_NTASKS` or a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX` (with `WORLD_SIZE`), plus `MASTER_ADDR` / `MASTER_PORT`,
//! `lockstep node MANIFEST` needs no per-node entry. `MASTER_ADDR` may be a DNS name that does
//! not resolve yet (a headless Service's record appears once the pod is scheduled): it is
//! retried for up to [`RESOLVE_TIMEOUT`]. The manifest's nodes are
//! replaced by `rank-0 .. rank-(W-1)`: rank 0 is the coordinator (on `MASTER_ADDR:MASTER_PORT`)
//! and a worker, every rank is a worker. Workers register with the coordinator, which hands out
//! the peer table. `LOCKSTEP_PROGRESS_TIMEOUT_MS`, when set, overrides
//! `cluster.progress_timeout_ms` (cluster managers set timeouts per job, not per manifest).

use crate::error::{RuntimeError, SetupError};
use crate::manifest::{Manifest, NodeSpec, Role};

/// How long `MASTER_ADDR` is retried while it does not resolve.
pub(crate) const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn var(names: &[&str]) -> Option<(String, String)> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
}

/// `name=value` parsed as a number.
fn parse<T: std::str::FromStr>(name: String, value: String) -> Result<T, SetupError> {
    value
        .trim()
        .parse()
        .map_err(|_| SetupError::EnvNumber { name, value })
}

fn number(names: &[&'static str]) -> Result<usize, RuntimeError> {
    let (name, v) = var(names).ok_or_else(|| SetupError::EnvUnset {
        names: names.to_vec(),
    })?;
    Ok(parse(name, v)?)
}

/// Rewrite the manifest's nodes from the environment and return this process's node name.
///
/// # Errors
/// [`SetupError`] naming the missing or malformed variable.
pub(crate) fn apply(m: &mut Manifest) -> Result<String, RuntimeError> {
    let rank = number(&["RANK", "SLURM_PROCID", "JOB_COMPLETION_INDEX"])?;
    let world = number(&["WORLD_SIZE", "SLURM_NTASKS"])?;
    let (_, host) = var(&["MASTER_ADDR"]).ok_or(SetupError::NoMasterAddr)?;
    let port = number(&["MASTER_PORT"])?;
    if world == 0 || rank >= world {
        return Err(SetupError::RankOutOfRange { rank, world }.into());
    }
    let ip = resolve_with_retry(&format!("{host}:{port}"))?.ip();
    m.nodes = (0..world)
        .map(|r| NodeSpec {
            name: format!("rank-{r}"),
            addr: if r == 0 {
                format!("{ip}:{port}")
            } else {
                "0.0.0.0:0".into()
            },
            roles: if r == 0 {
                vec![Role::Coordinator, Role::Worker]
            } else {
                vec![Role::Worker]
            },
        })
        .collect();
    if let Some((name, v)) = var(&["LOCKSTEP_PROGRESS_TIMEOUT_MS"]) {
        m.cluster.progress_timeout_ms = Some(parse(name, v)?);
    }
    m.validate()?;
    Ok(format!("rank-{rank}"))
}

fn resolve_with_retry(addr: &str) -> Result<std::net::SocketAddr, RuntimeError> {
    let deadline = std::time::Instant::now() + RESOLVE_TIMEOUT;
    loop {
        match lockstep_transport::tcp::resolve(addr) {
            Ok(a) => return Ok(a),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(e) => {
                tracing::info!(%e, "MASTER_ADDR {addr} does not resolve yet; retrying");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}
