//! `lockstep run -n N -- PROGRAM ARGS...`: start N processes of any program (a PyTorch script
//! using the `lockstep` Python package, an `EmbeddedNode` program) on this machine with the
//! variables torchrun sets (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`) plus `LOCKSTEP_TOKEN` (a fresh random one unless set) and
//! `LOCKSTEP_TRANSPORT` / `LOCKSTEP_PEER_TIMEOUT_MS` when given. Output is prefixed with
//! `[rank-R]` and kept in `<run dir>/logs/rank-R.log`; the first failure stops the others, and every
//! rank that failed is named with how; Ctrl-C stops them all. The same supervision as `lockstep launch`.

use super::{install_signal_handlers, interrupted, spawn, stop_all, supervise, Node};
use crate::error::{LaunchError, RunOptionsError, RuntimeError};
use lockstep_transport::elastic::{ElasticPolicy, ElasticRendezvous};
use std::path::PathBuf;
use std::time::Duration;

/// What `lockstep run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Number of processes.
    pub workers: usize,
    /// The program and its arguments.
    pub program: Vec<String>,
    /// Logs go to `<run_dir>/logs`.
    pub run_dir: PathBuf,
    /// `LOCKSTEP_TRANSPORT` for every process (`auto`, `tcp`, `shm`).
    pub transport: Option<String>,
    /// `LOCKSTEP_PEER_TIMEOUT_MS` for every process.
    pub peer_timeout_ms: Option<u64>,
    /// Elastic (`--elastic MIN`): host the generation rendezvous here (it outlives any rank),
    /// let the others go on when a rank dies, and restart dead ranks `max_restarts` times in all.
    pub elastic: Option<usize>,
    /// Restarts of dead ranks (elastic only).
    pub max_restarts: u32,
}

/// The cluster name the processes of `lockstep run` use in their handshakes.
const CLUSTER: &str = "lockstep-run";

/// Run the processes to the end.
///
/// # Errors
/// [`LaunchError`] naming each rank that failed (and how), or what could not be
/// started.
pub fn run_command(o: &RunOptions) -> Result<(), RuntimeError> {
    if o.workers == 0 {
        return Err(LaunchError::RunOptions(RunOptionsError::NoWorkers).into());
    }
    let (exe, args) = o
        .program
        .split_first()
        .ok_or(LaunchError::RunOptions(RunOptionsError::NoProgram))?;
    let logs = o.run_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| RuntimeError::io("create", &logs, e))?;
    let token = std::env::var("LOCKSTEP_TOKEN").unwrap_or_else(|_| {
        let t: [u8; 16] = rand::random();
        hex::encode(t)
    });
    let rendezvous = match o.elastic {
        Some(min) if min == 0 || min > o.workers => {
            let workers = o.workers;
            let e = RunOptionsError::ElasticRange { min, workers };
            return Err(LaunchError::RunOptions(e).into());
        }
        Some(min) => {
            let policy = ElasticPolicy {
                min,
                max: o.workers,
                settle: Duration::from_millis(1000),
                first_wait: Duration::from_secs(120),
            };
            Some(
                ElasticRendezvous::start("127.0.0.1:0", CLUSTER, token.as_bytes(), policy)
                    .map_err(|e| LaunchError::Rendezvous(Box::new(e)))?,
            )
        }
        None => None,
    };
    let port = match &rendezvous {
        Some(r) => r.local_addr().port(),
        // A free port for rank 0's rendezvous (released here, bound again by rank 0 at once).
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(LaunchError::NoPort)?
            .port(),
    };
    let mut common = vec![
        ("WORLD_SIZE".to_string(), o.workers.to_string()),
        ("LOCAL_WORLD_SIZE".to_string(), o.workers.to_string()),
        ("MASTER_ADDR".to_string(), "127.0.0.1".to_string()),
        ("MASTER_PORT".to_string(), port.to_string()),
        ("LOCKSTEP_TOKEN".to_string(), token.clone()),
        ("LOCKSTEP_CLUSTER".to_string(), CLUSTER.to_string()),
    ];
    if o.elastic.is_some() {
        common.push(("LOCKSTEP_ELASTIC".into(), "1".into()));
    }
    if let Some(t) = &o.transport {
        common.push(("LOCKSTEP_TRANSPORT".into(), t.clone()));
    }
    if let Some(ms) = o.peer_timeout_ms {
        common.push(("LOCKSTEP_PEER_TIMEOUT_MS".into(), ms.to_string()));
    }
    install_signal_handlers();
    let mut nodes: Vec<Node> = Vec::new();
    for r in 0..o.workers {
        let mut env = common.clone();
        env.push(("RANK".into(), r.to_string()));
        env.push(("LOCAL_RANK".into(), r.to_string()));
        let name = format!("rank-{r}");
        match spawn(exe.as_ref(), &name, args, &env, &logs, None) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    match o.elastic {
        Some(min) => supervise_elastic(nodes, &common, o, min),
        None => supervise(&mut nodes),
    }
}

/// Elastic: a dead rank does not stop the others; with restarts left it is started again (it
/// joins the next generation). Done when every rank's newest process has exited; success when
/// at least `min` of them exited cleanly.
fn supervise_elastic(
    mut nodes: Vec<Node>,
    common: &[(String, String)],
    o: &RunOptions,
    min: usize,
) -> Result<(), RuntimeError> {
    let (exe, args) = o.program.split_first().expect("checked by run_command");
    let logs = o.run_dir.join("logs");
    let mut current: Vec<usize> = (0..nodes.len()).collect();
    let mut restarts = 0u32;
    let mut dead = Vec::new();
    loop {
        if interrupted() {
            stop_all(&mut nodes);
            return Err(LaunchError::RanksInterrupted.into());
        }
        for (slot, idx) in current.iter_mut().enumerate() {
            let n = &mut nodes[*idx];
            if n.exited.is_some() {
                continue;
            }
            let Ok(Some(st)) = n.child.try_wait() else {
                continue;
            };
            n.exited = Some(st);
            if st.success() {
                continue;
            }
            let why = n.exit(st);
            if restarts >= o.max_restarts {
                tracing::warn!("{why}; the others go on without it (elastic)");
                dead.push(why);
                continue;
            }
            restarts += 1;
            tracing::warn!("{why}; starting rank-{slot} again (restart {restarts})");
            let mut env = common.to_vec();
            env.push(("RANK".into(), slot.to_string()));
            env.push(("LOCAL_RANK".into(), slot.to_string()));
            env.push(("LOCKSTEP_RESTARTS".into(), restarts.to_string()));
            let name = format!("rank-{slot}");
            let log = format!("{name}.restart-{restarts}");
            let node = spawn(exe.as_ref(), &name, args, &env, &logs, Some(&log))?;
            nodes.push(node);
            *idx = nodes.len() - 1;
        }
        if current.iter().all(|&i| nodes[i].exited.is_some()) {
            break;
        }
        // Fewer than MIN can still finish and no restart is left: the survivors would wait at
        // the rendezvous for a generation that cannot form.
        let can_finish = current
            .iter()
            .filter(|&&i| nodes[i].exited.is_none_or(|s| s.success()))
            .count();
        if can_finish < min {
            stop_all(&mut nodes);
            return Err(LaunchError::ElasticRunStopped {
                left: can_finish,
                min,
                dead,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = current
        .iter()
        .filter(|&&i| nodes[i].exited.is_some_and(|s| s.success()))
        .count();
    if ok >= min {
        if restarts > 0 || !dead.is_empty() {
            tracing::info!("elastic run finished: {ok} rank(s) clean, {restarts} restart(s)");
        }
        return Ok(());
    }
    let failed = current
        .iter()
        .filter(|&&i| !nodes[i].exited.is_some_and(|s| s.success()))
        .map(|&i| nodes[i].exit(nodes[i].exited.unwrap_or_default()))
        .collect();
    Err(LaunchError::ElasticRunFailed { ok, min, failed }.into())
}
