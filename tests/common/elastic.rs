//! Helpers for the elastic tests (tests/elastic.rs, tests/coordinator_failover.rs): launch a
//! job, find and signal its node processes, wait for its checkpoints, read its report.

use super::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(300);
pub const MNIST: &str = "examples/mnist/cluster.toml";
pub const CREDIT: &str = "examples/credit/cluster.toml";
/// Long enough to kill workers mid-run; a checkpoint every 25 rounds marks progress.
pub const MNIST_RUN: &[&str] = &[
    "--set",
    "job.epochs=4",
    "--set",
    "job.checkpoint.every_rounds=25",
    "--set",
    "job.checkpoint.keep=50",
];
/// Three times as long: a replacement must start, load its data and register before the job
/// ends, also on a loaded machine (the whole test suite in parallel on 2 cores).
pub const MNIST_LONG_RUN: &[&str] = &[
    "--set",
    "job.epochs=12",
    "--set",
    "job.checkpoint.every_rounds=25",
    "--set",
    "job.checkpoint.keep=50",
];
pub const CREDIT_RUN: &[&str] = &[
    "--transport",
    "tcp",
    "--set",
    "job.epochs=150",
    "--set",
    "job.micro_batches=2",
    "--set",
    "job.checkpoint.every_rounds=200",
    "--set",
    "job.checkpoint.keep=50",
];

pub fn spawn_launch(manifest: &str, dir: &Path, extra: &[&str]) -> Proc {
    spawn_launch_env(manifest, dir, extra, &[])
}

pub fn spawn_launch_env(manifest: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
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
    Command::new(exe())
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("spawn lockstep")
}

/// PID of the process of node `name` in run directory `dir`.
pub fn pid_of(dir: &Path, name: &str) -> i32 {
    let needle = format!("--node {name} ");
    let found: Vec<i32> = processes_mentioning(dir.to_str().unwrap())
        .into_iter()
        .filter(|p| p.contains(&needle) && p.contains(" node "))
        .filter_map(|p| p.split(':').next().and_then(|s| s.parse().ok()))
        .collect();
    assert_eq!(found.len(), 1, "expected one process of {name}: {found:?}");
    found[0]
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) of a process this test started (through the launcher).
    unsafe { libc::kill(pid, sig) };
}

/// The newest checkpoint's round under `dir` (0 when none yet).
pub fn progress(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("round-")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

pub fn wait_for_round(dir: &Path, round: u64) {
    let start = Instant::now();
    while progress(dir) < round {
        assert!(start.elapsed() < LIMIT, "no checkpoint of round {round}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report")).expect("json")
}

pub fn sha(r: &serde_json::Value) -> String {
    r["weights_sha256"].as_str().expect("sha").to_string()
}

pub fn baseline(manifest: &str, extra: &[&str], tag: &str) -> String {
    let d = run_dir(tag);
    let (out, r) = launch(manifest, d.path(), extra, LIMIT);
    assert_ok(&out);
    sha(&r.expect("report"))
}

pub fn no_leftovers(dir: &Path) {
    let left = processes_mentioning(dir.to_str().unwrap());
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// Print the measured pauses (detection + re-mesh, replacement start to first round).
pub fn show_changes(tag: &str, r: &serde_json::Value) {
    for c in r["membership_changes"]
        .as_array()
        .expect("membership_changes")
    {
        let join = c["join_ms"]
            .as_f64()
            .map(|j| format!(", {j:.0} ms from its process start to its first round"))
            .unwrap_or_default();
        eprintln!(
            "{tag}: {} {} at round {} -> {} workers, paused {:.0} ms (round gap {:.0} ms){join}: {}",
            c["kind"],
            c["nodes"],
            c["round"],
            c["world_size"],
            num(c, &["pause_ms"]),
            num(c, &["gap_ms"]),
            c["reason"]
        );
    }
}

pub fn args<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}
