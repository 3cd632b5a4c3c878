//! Helpers for tests that run the real `lockstep` binary: run a command with a deadline, read the
//! report, and check that no process of a run is left behind.
#![allow(dead_code)]

pub mod elastic;
pub mod movielens;
pub mod parquet_fixtures;
pub mod proc;
pub mod python;
pub mod python_run;

#[allow(unused_imports)]
pub use proc::{Proc, SpawnOwned};
#[allow(unused_imports)]
pub use python::{python, python_cmd};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_lockstep")
}

/// The repository root (examples live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `lockstep ARGS` with a deadline; kills it and panics when the deadline passes.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(exe())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("start lockstep");
    wait_with_deadline(child, limit)
}

/// Wait for a child, killing its process group at the deadline.
pub fn wait_with_deadline(child: Proc, limit: Duration) -> Output {
    child.wait_with_deadline(limit)
}

/// A fresh run directory.
pub fn run_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("lockstep-{tag}-"))
        .tempdir()
        .expect("tempdir")
}

/// Launch `manifest` with extra args into `dir`; returns the output and the parsed report.
pub fn launch(
    manifest: &str,
    dir: &Path,
    extra: &[&str],
    limit: Duration,
) -> (Output, Option<serde_json::Value>) {
    let report = dir.join("report.json");
    let mut args = vec![
        "launch",
        manifest,
        "--run-dir",
        dir.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(&args, limit);
    let parsed = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (out, parsed)
}

/// Panic with the logs unless the command succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "lockstep failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes whose command line mentions `needle` (other than this test).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == me || !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(needle) {
                    found.push(format!("{name}: {cmd}"));
                }
            }
        }
    }
    found
}

/// A number from the report.
pub fn num(report: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = report;
    for p in path {
        v = &v[p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("report has no number at {path:?}: {report}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a coordinator's `MASTER_PORT`).
pub fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

/// Wait (60 s at most) for `<dir>/endpoints.json` and return its stream bootstrap address.
pub fn stream_bootstrap(dir: &Path) -> String {
    let path = dir.join("endpoints.json");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(b) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["bootstrap"].as_str().map(str::to_string))
        {
            return b;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no bootstrap in {} after 60 s", path.display());
}
