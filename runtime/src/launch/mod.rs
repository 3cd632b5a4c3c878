//! `lockstep launch`: start every node of a manifest on this machine as a separate OS process of
//! the same binary, prefix their logs with the node name, turn Ctrl-C / SIGTERM into a graceful
//! stop of the coordinator (a second one stops everything at once), and when any node fails
//! stop the others and return an error naming it. No orphans: children die with the launcher
//! (`PR_SET_PDEATHSIG`) and are killed, not abandoned, on every exit path.
//!
//! Port 0 works because the coordinator starts first and announces its bound control address in
//! a file under the run directory; the other nodes get it on their command line.

use crate::error::{LaunchError, RuntimeError};
use crate::manifest::{Manifest, Role};
use crate::observe::report::Report;
use interrupts::{install_signal_handlers, interrupted, Interrupts};
use process::{spawn, stop_all, Node};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `lockstep launch` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// The manifest.
    pub manifest: PathBuf,
    /// Replace the manifest's workers by this many loopback workers.
    pub workers: Option<usize>,
    /// `--set KEY=VALUE` overrides (transport/aggregation flags are turned into these).
    pub sets: Vec<String>,
    /// Run directory (checkpoints, logs, report); default `runs/<cluster name>`.
    pub run_dir: Option<PathBuf>,
    /// Where the report goes; default `<run dir>/report.json`.
    pub report: Option<PathBuf>,
    /// The `lockstep` executable to start nodes with.
    pub exe: PathBuf,
    /// Extra arguments for every node.
    pub node_args: Vec<String>,
    /// Continue from the newest complete checkpoint.
    pub resume: bool,
    /// On a node failure, restart every node from the newest checkpoint at most this many times.
    pub max_restarts: u32,
}

mod command;
mod interrupts;
mod process;
pub use command::{run_command, RunOptions};

/// Load and check the manifest the way every node will see it.
///
/// # Errors
/// Manifest errors naming the key and line.
pub(crate) fn effective_manifest(opts: &LaunchOptions) -> Result<Manifest, RuntimeError> {
    let mut m = Manifest::load(&opts.manifest, &opts.sets)?;
    if let Some(n) = opts.workers {
        m.set_workers(n);
        m.validate()?;
    }
    Ok(m)
}

/// Run the whole cluster and return the coordinator's report. With `max_restarts > 0` a failed
/// run is stopped and restarted from the newest checkpoint (each restart logged with the node and
/// the cause); the report counts the restarts.
///
/// # Errors
/// Manifest and data errors before anything starts; otherwise a [`LaunchError`] that names the
/// node that failed first and how.
pub fn launch(opts: &LaunchOptions) -> Result<Report, RuntimeError> {
    let manifest = effective_manifest(opts)?;
    crate::job::preflight(&manifest)?;
    let mut restarts = 0u32;
    loop {
        match run_once(opts, &manifest, opts.resume || restarts > 0, restarts) {
            Ok(mut report) => {
                if restarts > 0 {
                    report.restarts = restarts;
                    let path = report_path(opts, &manifest);
                    report.write(&path)?;
                }
                return Ok(report);
            }
            Err(e) if restarts < opts.max_restarts && !interrupted() => {
                restarts += 1;
                tracing::warn!("restart {restarts} of {}: {e}", opts.max_restarts);
            }
            Err(e) => return Err(e),
        }
    }
}

fn run_dir(opts: &LaunchOptions, manifest: &Manifest) -> PathBuf {
    opts.run_dir
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&manifest.cluster.name))
}

fn report_path(opts: &LaunchOptions, manifest: &Manifest) -> PathBuf {
    opts.report
        .clone()
        .unwrap_or_else(|| run_dir(opts, manifest).join("report.json"))
}

/// Where one run's files go: the run directory, its logs, the report, the coordinator's
/// announced address.
struct RunPaths {
    run_dir: PathBuf,
    logs: PathBuf,
    report: PathBuf,
    announce: PathBuf,
}

impl RunPaths {
    /// The paths of `manifest`'s run, the log folder created and the last run's report and
    /// announcement removed.
    fn prepare(opts: &LaunchOptions, manifest: &Manifest) -> Result<RunPaths, RuntimeError> {
        let run_dir = run_dir(opts, manifest);
        let logs = run_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| RuntimeError::io("create", &logs, e))?;
        let report = report_path(opts, manifest);
        let _ = std::fs::remove_file(&report);
        let announce = run_dir.join("coordinator.addr");
        let _ = std::fs::remove_file(&announce);
        Ok(RunPaths {
            run_dir,
            logs,
            report,
            announce,
        })
    }
}

fn run_once(
    opts: &LaunchOptions,
    manifest: &Manifest,
    resume: bool,
    restarts: u32,
) -> Result<Report, RuntimeError> {
    let paths = RunPaths::prepare(opts, manifest)?;
    let env = node_env(manifest, restarts)?;
    install_signal_handlers();
    let base = node_args(opts, &paths.run_dir, resume);
    let mut nodes = start_nodes(opts, manifest, &base, &env, &paths)?;
    let bar = crate::observe::progress::ProgressBar::for_terminal(&paths.run_dir);
    if manifest.elastic().is_some() {
        let respawn = Respawn {
            exe: &opts.exe,
            env: &env,
            logs: &paths.logs,
            left: opts.max_restarts,
            done: 0,
            takeover: Duration::from_millis(manifest.cluster.peer_timeout_ms + 2000),
        };
        let started = supervise_elastic(&mut nodes, respawn);
        drop(bar);
        let started = started?;
        let mut report = Report::read(&paths.report)?;
        if started > 0 {
            report.restarts = started;
            report.write(&paths.report)?;
        }
        return Ok(report);
    }
    let supervised = supervise(&mut nodes);
    drop(bar);
    supervised?;
    let report = Report::read(&paths.report)?;
    Ok(report)
}

/// The environment of every node: the restart count, and a fresh cluster token for a local run
/// whose `env:` token variable is not set.
///
/// # Errors
/// The manifest's token cannot be read (other than that variable not being set).
fn node_env(manifest: &Manifest, restarts: u32) -> Result<Vec<(String, String)>, RuntimeError> {
    let mut env = vec![(
        crate::observe::RESTARTS_ENV.to_string(),
        restarts.to_string(),
    )];
    if let Some(var) = manifest.cluster.token.strip_prefix("env:") {
        if std::env::var(var).is_err() {
            // A local cluster needs no shared secret from the user: make one for this run.
            let token: [u8; 16] = rand::random();
            env.push((var.to_string(), hex::encode(token)));
            tracing::info!("{var} not set: using a fresh random cluster token for this local run");
        }
    }
    manifest.token().or_else(|e| {
        if env.len() == 1 {
            Err(e)
        } else {
            Ok(String::new())
        }
    })?;
    Ok(env)
}

/// The `lockstep node` arguments every node gets (without `--node`).
fn node_args(opts: &LaunchOptions, run_dir: &Path, resume: bool) -> Vec<String> {
    let mut base = vec!["node".to_string(), opts.manifest.display().to_string()];
    for s in &opts.sets {
        base.extend(["--set".to_string(), s.clone()]);
    }
    if let Some(n) = opts.workers {
        base.extend(["--workers".to_string(), n.to_string()]);
    }
    base.extend(["--run-dir".to_string(), run_dir.display().to_string()]);
    base.extend(opts.node_args.iter().cloned());
    if resume {
        base.push("--resume".into());
    }
    base
}

/// Start the coordinator, wait for its address, then start every other node with it. Nothing
/// is left running when this fails.
fn start_nodes(
    opts: &LaunchOptions,
    manifest: &Manifest,
    base: &[String],
    env: &[(String, String)],
    paths: &RunPaths,
) -> Result<Vec<Node>, RuntimeError> {
    let coordinator = manifest.nodes_with(Role::Coordinator)[0].name.clone();
    let mut args = base.to_vec();
    args.extend([
        "--node".into(),
        coordinator.clone(),
        "--announce".into(),
        paths.announce.display().to_string(),
    ]);
    args.extend(["--report".into(), paths.report.display().to_string()]);
    let mut nodes = vec![spawn(
        &opts.exe,
        &coordinator,
        &args,
        env,
        &paths.logs,
        None,
    )?];
    let addr = match wait_for_announce(&paths.announce, &mut nodes[0], Duration::from_secs(60)) {
        Ok(a) => a,
        Err(e) => {
            stop_all(&mut nodes);
            return Err(e);
        }
    };
    for n in manifest.nodes.iter().filter(|n| n.name != coordinator) {
        let mut args = base.to_vec();
        args.extend([
            "--node".into(),
            n.name.clone(),
            "--coordinator".into(),
            addr.clone(),
        ]);
        match spawn(&opts.exe, &n.name, &args, env, &paths.logs, None) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

/// What an elastic launch needs to start a dead worker's process again.
struct Respawn<'a> {
    exe: &'a Path,
    env: &'a [(String, String)],
    logs: &'a Path,
    left: u32,
    done: u32,
    /// Longer than a takeover takes: the peer timeout (its wait for the survivors) and 2 s.
    takeover: Duration,
}

/// Elastic supervision: the coordinator owns the membership, so a worker's death does not stop
/// the others; with restarts left, only that worker's process is started again (it joins as a
/// replacement). The coordinator's exit decides the outcome; workers still running when it
/// finished (a frozen one, a replacement that came too late) are stopped. Returns the number
/// of processes started again.
fn supervise_elastic(nodes: &mut Vec<Node>, mut r: Respawn<'_>) -> Result<u32, RuntimeError> {
    let mut interrupts = Interrupts::new();
    loop {
        interrupts.check(nodes)?;
        if let Ok(Some(st)) = nodes[0].child.try_wait() {
            nodes[0].exited = Some(st);
            if st.signal().is_some() && r.left > 0 && !interrupted() {
                // Killed or crashed, not failed: a new coordinator takes over from the
                // survivors, who register with it (docs/elastic.md).
                restart_coordinator(nodes, &mut r, st)?;
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && nodes
                    .iter_mut()
                    .any(|n| n.exited.is_none() && n.child.try_wait().ok().flatten().is_none())
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop_all(nodes);
            if st.success() {
                return Ok(r.done);
            }
            return Err(LaunchError::NodeFailed(nodes[0].exit(st)).into());
        }
        if r.left > 0 {
            kill_a_lost_coordinator(nodes, r.takeover);
        }
        let mut again = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate().skip(1) {
            if n.exited.is_some() {
                continue;
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                n.exited = Some(st);
                if !st.success() {
                    tracing::warn!("{}; the job continues without it (elastic)", n.exit(st));
                    again.push(i);
                }
            }
        }
        for i in again {
            if r.left == 0 {
                continue;
            }
            r.left -= 1;
            r.done += 1;
            let name = nodes[i].name.clone();
            tracing::warn!(
                "starting {name} again as a replacement (restart {})",
                r.done
            );
            let log = format!("{name}.restart-{}", r.done);
            let node = spawn(r.exe, &name, &nodes[i].args, r.env, r.logs, Some(&log))?;
            nodes.push(node);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker has been without a coordinator for longer than a takeover takes (`takeover`)
/// although the coordinator's process (`nodes[0]`), started before the loss, still runs: it is
/// frozen or cut off. Kill it (SIGKILL), so that it is started again and takes over; a replaced
/// coordinator never comes back as a second one.
fn kill_a_lost_coordinator(nodes: &mut [Node], takeover: Duration) {
    let coordinator = &nodes[0];
    let lost = nodes[1..]
        .iter()
        .filter(|n| n.exited.is_none())
        .filter_map(|n| {
            let at = n.lost_coordinator.lock().ok().and_then(|t| *t)?;
            (at > coordinator.started).then(|| (n.name.clone(), at))
        })
        .min_by_key(|(_, at)| *at);
    let Some((worker, at)) = lost else {
        return;
    };
    if at.elapsed() < takeover || coordinator.exited.is_some() {
        return;
    }
    tracing::warn!(
        "{worker} lost the coordinator {} ms ago but its process still runs (frozen or cut off): killing it so that a new one takes over",
        at.elapsed().as_millis()
    );
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(coordinator.child.id() as libc::pid_t, libc::SIGKILL) };
}

/// Start the coordinator (`nodes[0]`, which died by a signal) again with its own command line;
/// the old entry stays in `nodes`, exited.
fn restart_coordinator(
    nodes: &mut Vec<Node>,
    r: &mut Respawn<'_>,
    st: std::process::ExitStatus,
) -> Result<(), RuntimeError> {
    r.left -= 1;
    r.done += 1;
    let name = nodes[0].name.clone();
    tracing::warn!(
        "{}; starting it again: the workers register with it and it takes over (restart {})",
        nodes[0].exit(st),
        r.done
    );
    let log = format!("{name}.restart-{}", r.done);
    let node = spawn(r.exe, &name, &nodes[0].args, r.env, r.logs, Some(&log))?;
    let old = std::mem::replace(&mut nodes[0], node);
    nodes.push(old);
    Ok(())
}

fn wait_for_announce(
    path: &Path,
    coord: &mut Node,
    limit: Duration,
) -> Result<String, RuntimeError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return Ok(s.trim().to_string());
            }
        }
        if let Ok(Some(st)) = coord.child.try_wait() {
            coord.exited = Some(st);
            return Err(LaunchError::NodeFailed(coord.exit(st)).into());
        }
        if interrupted() {
            return Err(LaunchError::Interrupted.into());
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Timeout {
                doing: format!(
                    "waiting for coordinator {} to announce its address",
                    coord.name
                ),
                ms: limit.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for every node; on the first failure stop the rest. Signals: see [`Interrupts`].
fn supervise(nodes: &mut [Node]) -> Result<(), RuntimeError> {
    let mut interrupts = Interrupts::new();
    loop {
        interrupts.check(nodes)?;
        let mut failed = false;
        for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
            if let Ok(Some(st)) = n.child.try_wait() {
                n.exited = Some(st);
                failed |= !st.success();
            }
        }
        if failed {
            // Let near-simultaneous exits land so the root cause (a killed node) is named first.
            std::thread::sleep(Duration::from_millis(150));
            for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
                if let Ok(Some(st)) = n.child.try_wait() {
                    n.exited = Some(st);
                }
            }
            let mut bad: Vec<&Node> = nodes
                .iter()
                .filter(|n| n.exited.is_some_and(|s| !s.success()))
                .collect();
            bad.sort_by_key(|n| n.exited.and_then(|s| s.signal()).is_none());
            let failed = bad
                .iter()
                .map(|n| n.exit(n.exited.unwrap_or_default()))
                .collect();
            stop_all(nodes);
            return Err(LaunchError::NodesFailed {
                failed,
                interrupted: interrupted(),
            }
            .into());
        }
        if nodes.iter().all(|n| n.exited.is_some()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
