//! `lockstep launch`: start every node of a manifest on this machine as a separate OS process of
//! the same binary, prefix their logs with the node name, turn Ctrl-C / SIGTERM into a graceful
//! stop of the coordinator (a second one stops everything at once), and when any node fails
//! stop the others and return an error naming it. No orphans: children die with the launcher
//! (`PR_SET_PDEATHSIG`) and are killed, not abandoned, on every exit path.
//!
//! Port 0 works because the coordinator starts first and announces its bound control address in
//! a file under the run directory; the other nodes get it on their command line.

use crate::error::RuntimeError;
use crate::manifest::{Manifest, Role};
use crate::observe::report::Report;
use interrupts::{install_signal_handlers, interrupted, Interrupts};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
pub use command::{run_command, RunOptions};

struct Node {
    name: String,
    args: Vec<String>,
    child: Child,
    last_error: Arc<Mutex<Option<String>>>,
    exited: Option<ExitStatus>,
}

/// Load and check the manifest the way every node will see it.
///
/// # Errors
/// Manifest errors naming the key and line.
pub fn effective_manifest(opts: &LaunchOptions) -> Result<Manifest, RuntimeError> {
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
/// Manifest and data errors before anything starts; otherwise a [`RuntimeError::Launch`] that
/// names the node that failed first and why.
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

fn run_once(
    opts: &LaunchOptions,
    manifest: &Manifest,
    resume: bool,
    restarts: u32,
) -> Result<Report, RuntimeError> {
    let run_dir = run_dir(opts, manifest);
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| RuntimeError::io("create", &logs, e))?;
    let report_path = report_path(opts, manifest);
    let _ = std::fs::remove_file(&report_path);
    let announce = run_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&announce);

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

    install_signal_handlers();
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

    let coordinator = manifest.nodes_with(Role::Coordinator)[0].name.clone();
    let mut nodes: Vec<Node> = Vec::new();
    let mut args = base.clone();
    args.extend([
        "--node".into(),
        coordinator.clone(),
        "--announce".into(),
        announce.display().to_string(),
    ]);
    args.extend(["--report".into(), report_path.display().to_string()]);
    nodes.push(spawn(&opts.exe, &coordinator, &args, &env, &logs, None)?);

    let addr = match wait_for_announce(&announce, &mut nodes[0], Duration::from_secs(60)) {
        Ok(a) => a,
        Err(e) => {
            stop_all(&mut nodes);
            return Err(e);
        }
    };
    for n in manifest.nodes.iter().filter(|n| n.name != coordinator) {
        let mut args = base.clone();
        args.extend([
            "--node".into(),
            n.name.clone(),
            "--coordinator".into(),
            addr.clone(),
        ]);
        match spawn(&opts.exe, &n.name, &args, &env, &logs, None) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    let bar = crate::observe::progress::ProgressBar::for_terminal(&run_dir);
    if manifest.elastic().is_some() {
        let respawn = Respawn {
            exe: &opts.exe,
            env: &env,
            logs: &logs,
            left: opts.max_restarts,
            done: 0,
        };
        let started = supervise_elastic(&mut nodes, respawn);
        drop(bar);
        let started = started?;
        let mut report = Report::read(&report_path)?;
        if started > 0 {
            report.restarts = started;
            report.write(&report_path)?;
        }
        return Ok(report);
    }
    let supervised = supervise(&mut nodes);
    drop(bar);
    supervised?;
    let report = Report::read(&report_path)?;
    Ok(report)
}

/// What an elastic launch needs to start a dead worker's process again.
struct Respawn<'a> {
    exe: &'a Path,
    env: &'a [(String, String)],
    logs: &'a Path,
    left: u32,
    done: u32,
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
            return Err(RuntimeError::Launch(describe_failure(&nodes[0], st)));
        }
        let mut again = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate().skip(1) {
            if n.exited.is_some() {
                continue;
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                n.exited = Some(st);
                if !st.success() {
                    tracing::warn!(
                        "{}; the job continues without it (elastic)",
                        describe_failure(n, st)
                    );
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

fn spawn(
    exe: &Path,
    name: &str,
    args: &[String],
    env: &[(String, String)],
    logs: &Path,
    log_name: Option<&str>,
) -> Result<Node, RuntimeError> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Own process group: the terminal's Ctrl-C reaches the launcher, which forwards it.
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; it makes the child die with the launcher.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // The log first: a node must not be started when its output has nowhere to go.
    let log_path = logs.join(format!("{}.log", log_name.unwrap_or(name)));
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&log_path).map_err(|e| RuntimeError::io("create", &log_path, e))?,
    ));
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Launch(format!("cannot start node {name}: {e}")))?;
    let last_error = Arc::new(Mutex::new(None));
    if let Some(out) = child.stdout.take() {
        pump(name, out, log.clone(), last_error.clone(), false);
    }
    if let Some(err) = child.stderr.take() {
        pump(name, err, log, last_error.clone(), true);
    }
    Ok(Node {
        name: name.to_string(),
        args: args.to_vec(),
        child,
        last_error,
        exited: None,
    })
}

/// Copy a child's output line by line, prefixed with its node name, to our stderr and its log.
fn pump(
    name: &str,
    src: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
    last_error: Arc<Mutex<Option<String>>>,
    is_stderr: bool,
) {
    let name = name.to_string();
    let _ = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            for line in BufReader::new(src).lines().map_while(Result::ok) {
                if is_stderr && line.contains("error") {
                    if let Ok(mut e) = last_error.lock() {
                        *e = Some(line.clone());
                    }
                }
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{line}");
                }
                crate::observe::progress::log_line(&format!("[{name}] {line}"));
            }
        });
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
            return Err(RuntimeError::Launch(describe_failure(coord, st)));
        }
        if interrupted() {
            return Err(RuntimeError::Launch("interrupted".into()));
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

fn describe_failure(n: &Node, st: ExitStatus) -> String {
    let how = match (st.code(), st.signal()) {
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        (Some(c), _) => format!("exited with status {c}"),
        _ => "exited".to_string(),
    };
    let last = n.last_error.lock().ok().and_then(|e| e.clone());
    match last {
        Some(l) => format!("node {} {how}: {l}", n.name),
        None => format!("node {} {how}", n.name),
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
            let msg: Vec<String> = bad
                .iter()
                .map(|n| describe_failure(n, n.exited.unwrap_or_default()))
                .collect();
            stop_all(nodes);
            let mut msg = msg.join("\n");
            if interrupted() {
                msg = format!("interrupted (before training started, or the stop failed): {msg}");
            }
            return Err(RuntimeError::Launch(msg));
        }
        if nodes.iter().all(|n| n.exited.is_some()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ask every running node to stop (SIGTERM), then kill what is left after a grace period.
fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(n.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline
        && nodes
            .iter_mut()
            .any(|n| n.exited.is_none() && n.child.try_wait().ok().flatten().is_none())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in nodes.iter_mut() {
        if n.child.try_wait().ok().flatten().is_none() {
            let _ = n.child.kill();
        }
        let _ = n.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose log file cannot be created is not started at all (it used to be started
    /// and then abandoned, running, when the error returned).
    #[test]
    fn no_node_is_started_when_its_log_cannot_be_created() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("started");
        let script = format!("touch {}", marker.display());
        let args = ["-c".to_string(), script];
        let missing_logs = tmp.path().join("no-such-dir");
        let err = spawn(Path::new("/bin/sh"), "n0", &args, &[], &missing_logs, None)
            .err()
            .expect("spawn succeeded without a log file");
        assert!(err.to_string().contains("n0.log"), "{err}");
        // Had the child been started, it would have created the marker by now.
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            !marker.exists(),
            "the node was started although its log failed"
        );
    }
}
