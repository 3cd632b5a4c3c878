//! `lockstep run -n N -- PROGRAM ARGS...`: start N processes of any program (a PyTorch script
//! using the `lockstep` Python package, an `EmbeddedNode` program) on this machine with the
//! variables torchrun sets (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`) plus `LOCKSTEP_TOKEN` (a fresh random one unless set) and
//! `LOCKSTEP_TRANSPORT` / `LOCKSTEP_PEER_TIMEOUT_MS` when given. Output is prefixed with
//! `[rank-R]` and kept in `<run dir>/logs/rank-R.log`; the first failure stops the others, and every
//! rank that failed is named with how; Ctrl-C stops them all. The same supervision as `lockstep launch`.

use super::{install_signal_handlers, spawn, supervise, Node};
use crate::error::RuntimeError;
use std::path::PathBuf;

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
}

/// Run the processes to the end.
///
/// # Errors
/// [`RuntimeError::Launch`] naming each rank that failed (and how), or what could not be
/// started.
pub fn run_command(o: &RunOptions) -> Result<(), RuntimeError> {
    if o.workers == 0 {
        return Err(RuntimeError::Launch("run: -n must be at least 1".into()));
    }
    let (exe, args) = o
        .program
        .split_first()
        .ok_or_else(|| RuntimeError::Launch("run: no program given after --".into()))?;
    let logs = o.run_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| RuntimeError::io("create", &logs, e))?;
    // A free port for rank 0's rendezvous (released here, bound again by rank 0 at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| RuntimeError::Launch(format!("run: no free port on 127.0.0.1: {e}")))?
        .port();
    let token = std::env::var("LOCKSTEP_TOKEN").unwrap_or_else(|_| {
        let t: [u8; 16] = rand::random();
        hex::encode(t)
    });
    let mut common = vec![
        ("WORLD_SIZE".to_string(), o.workers.to_string()),
        ("LOCAL_WORLD_SIZE".to_string(), o.workers.to_string()),
        ("MASTER_ADDR".to_string(), "127.0.0.1".to_string()),
        ("MASTER_PORT".to_string(), port.to_string()),
        ("LOCKSTEP_TOKEN".to_string(), token),
    ];
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
                super::stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    supervise(&mut nodes)
}
