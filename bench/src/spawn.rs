//! Starting the `lockstep bench-worker` processes of a bench or a test (`--kind allreduce` or
//! `link`): a rendezvous [`Coordinator`] on loopback (or in network namespaces), `world` children
//! of the `lockstep` binary, and waits that end every child (killed after a deadline), so none is left
//! running.

use super::link::with_repeat;
use crate::{BenchError, Result};
use lockstep_transport::Coordinator;
use serde::Serialize;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the spawner needs of a bench worker's configuration.
pub trait Rendezvous: Serialize {
    /// The workers' `bench-worker --kind`.
    const KIND: &'static str;
    /// Cluster name.
    fn cluster(&self) -> &str;
    /// Folder of the certificates `--tls` made; `None`: plain links.
    fn tls_dir(&self) -> &Option<String>;
    /// Fill in the coordinator's address.
    fn set_coordinator(&mut self, addr: String);
    /// The IP the coordinator binds (loopback when `None`).
    fn bind(&self) -> Option<&str> {
        None
    }
    /// The namespace prefix the workers run in and the workers per namespace, when set.
    fn netns(&self) -> Option<(&str, usize)> {
        None
    }
}

/// Run a coordinator and `world` workers of `exe` (this binary) with `cfg`; their stdout, by
/// rank. Every worker is waited for (and killed after a deadline), so none is left running.
///
/// # Errors
/// When a worker cannot start, fails, or the mesh does not form.
pub fn spawn_workers<C: Rendezvous>(exe: &Path, cfg: C, world: usize) -> Result<Vec<String>> {
    spawn_repeat(exe, cfg, world, 1, None)
}

/// [`spawn_workers`] with `repeat` repetitions for the bench mode, and rank `i` pinned to
/// `cpus[i % len]` when `cpus` is set ([`super::placement`]).
pub(super) fn spawn_repeat<C: Rendezvous>(
    exe: &Path,
    mut cfg: C,
    world: usize,
    repeat: usize,
    cpus: Option<&[usize]>,
) -> Result<Vec<String>> {
    let mut kids = start_repeat(exe, &mut cfg, world, repeat, cpus)?;
    let (coord, kids_ref) = (kids.0.take(), &mut kids.1);
    let served = coord.map(|c| {
        c.serve(world, Duration::from_secs(30))
            .map_err(BenchError::from)
    });
    let mut outs = Vec::new();
    let mut failed = None;
    for (rank, k) in kids_ref.drain(..).enumerate() {
        let (status, out) = wait_output(k, Duration::from_secs(300))?;
        if !status.success() {
            failed.get_or_insert(BenchError::WorkerFailed { rank, status });
        }
        outs.push(out);
    }
    if let Some(Err(e)) = served {
        return Err(e);
    }
    failed.map_or(Ok(outs), Err)
}

impl Rendezvous for super::allreduce::WorkerConfig {
    const KIND: &'static str = "allreduce";
    fn cluster(&self) -> &str {
        &self.cluster
    }
    fn tls_dir(&self) -> &Option<String> {
        &self.tls_dir
    }
    fn set_coordinator(&mut self, addr: String) {
        self.coordinator = addr;
    }
    fn bind(&self) -> Option<&str> {
        self.bind.as_deref()
    }
    fn netns(&self) -> Option<(&str, usize)> {
        self.netns.as_deref().map(|p| (p, self.ranks_per_host))
    }
}

impl Rendezvous for super::link::WorkerConfig {
    const KIND: &'static str = "link";
    fn cluster(&self) -> &str {
        &self.cluster
    }
    fn tls_dir(&self) -> &Option<String> {
        &self.tls_dir
    }
    fn set_coordinator(&mut self, addr: String) {
        self.coordinator = addr;
    }
}

/// Bound coordinator (to be served) and the started children.
pub type Started = (Option<Coordinator>, Vec<Child>);

/// Bind a coordinator and start `world` workers; the caller serves the coordinator.
///
/// # Errors
/// When the coordinator cannot bind or a worker cannot start (started ones are killed).
pub fn start_workers<C: Rendezvous>(exe: &Path, cfg: &mut C, world: usize) -> Result<Started> {
    start_repeat(exe, cfg, world, 1, None)
}

fn start_repeat<C: Rendezvous>(
    exe: &Path,
    cfg: &mut C,
    world: usize,
    repeat: usize,
    cpus: Option<&[usize]>,
) -> Result<Started> {
    let bind = format!("{}:0", cfg.bind().unwrap_or("127.0.0.1"));
    let coord = Coordinator::bind(&bind, cfg.cluster(), super::token().as_bytes())?
        .with_tls(super::tls::load(cfg.tls_dir(), "coordinator")?);
    cfg.set_coordinator(coord.local_addr()?.to_string());
    let json = with_repeat(&cfg, repeat, cpus)?;
    let mut kids: Vec<Child> = Vec::new();
    for rank in 0..world {
        let mut cmd = match cfg.netns() {
            Some((prefix, per_host)) => {
                let mut c = Command::new("ip");
                let ns = format!("{prefix}{}", rank / per_host.max(1));
                c.args(["netns", "exec", &ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let child = cmd
            .args([
                "bench-worker",
                "--kind",
                C::KIND,
                "--rank",
                &rank.to_string(),
                "--config",
                &json,
            ])
            .env("LOCKSTEP_TOKEN", super::token())
            .stdout(Stdio::piped())
            .spawn();
        match child {
            Ok(c) => kids.push(c),
            Err(e) => {
                for mut k in kids {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                return Err(BenchError::SpawnWorker { rank, source: e });
            }
        }
    }
    Ok((Some(coord), kids))
}

/// Wait for `child` at most `limit` (then kill it); its status and stdout.
///
/// # Errors
/// When waiting fails.
pub fn wait_output(
    mut child: Child,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(BenchError::io("waiting for a worker"))?
        {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child
                .wait()
                .map_err(BenchError::io("waiting for a worker"))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok((status, reader.join().unwrap_or_default()))
}
