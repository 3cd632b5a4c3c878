//! The launcher's child processes: start one with its output prefixed and logged, say how it
//! ended, stop them all. Shared by `lockstep launch` and `lockstep run`.

use crate::error::{ExitHow, LaunchError, NodeExit, RuntimeError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One started process: its node (or rank) name, arguments, the child, the last error line it
/// printed, and how it ended once it did.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) child: Child,
    pub(super) last_error: Arc<Mutex<Option<String>>>,
    pub(super) exited: Option<ExitStatus>,
    /// When it was started.
    pub(super) started: Instant,
    /// Since when it has been without a coordinator: it logged that it lost it and has not
    /// logged that it rejoined since (elastic workers).
    pub(super) lost_coordinator: Arc<Mutex<Option<Instant>>>,
}

impl Node {
    /// How this node ended with status `st`, with the last error line it printed.
    pub(super) fn exit(&self, st: ExitStatus) -> NodeExit {
        let how = match (st.code(), st.signal()) {
            (_, Some(sig)) => ExitHow::Signal(sig),
            (Some(c), _) => ExitHow::Status(c),
            _ => ExitHow::Exited,
        };
        NodeExit {
            node: self.name.clone(),
            how,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

pub(super) fn spawn(
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
    let mut child = cmd.spawn().map_err(|source| LaunchError::CannotStart {
        node: name.to_string(),
        source,
    })?;
    let seen = Seen::default();
    if let Some(out) = child.stdout.take() {
        pump(name, out, log.clone(), seen.clone(), false);
    }
    if let Some(err) = child.stderr.take() {
        pump(name, err, log, seen.clone(), true);
    }
    Ok(Node {
        name: name.to_string(),
        args: args.to_vec(),
        child,
        last_error: seen.last_error,
        exited: None,
        started: Instant::now(),
        lost_coordinator: seen.lost_coordinator,
    })
}

/// What the launcher notes from a node's output: its last error line, and when it last said
/// it lost its coordinator.
#[derive(Clone, Default)]
struct Seen {
    last_error: Arc<Mutex<Option<String>>>,
    lost_coordinator: Arc<Mutex<Option<Instant>>>,
}

/// Copy a child's output line by line, prefixed with its node name, to our stderr and its log.
fn pump(
    name: &str,
    src: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
    seen: Seen,
    is_stderr: bool,
) {
    let name = name.to_string();
    let _ = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            for line in BufReader::new(src).lines().map_while(Result::ok) {
                if is_stderr && line.contains("error") {
                    if let Ok(mut e) = seen.last_error.lock() {
                        *e = Some(line.clone());
                    }
                }
                if is_stderr {
                    use crate::node::worker_rejoin::{LOST_COORDINATOR, REJOINED};
                    let lost = line.contains(LOST_COORDINATOR);
                    if lost || line.contains(REJOINED) {
                        if let Ok(mut t) = seen.lost_coordinator.lock() {
                            *t = lost.then(Instant::now);
                        }
                    }
                }
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{line}");
                }
                crate::observe::progress::log_line(&format!("[{name}] {line}"));
            }
        });
}

/// Ask every running node to stop (SIGTERM), then kill what is left after a grace period.
pub(super) fn stop_all(nodes: &mut [Node]) {
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
