//! `lockstep run` of a Python script with the package built from this checkout (the Python
//! binding's tests).
#![allow(dead_code)]

use super::{exe, run_dir, SpawnOwned};
use std::path::Path;
use std::process::Command;

/// `lockstep run ARGS --run-dir DIR -- PY SCRIPT SCRIPT_ARGS` with the package built from this
/// checkout on `PYTHONPATH` and one thread per process; its output, and every JSON object a rank
/// printed on a line of its own (`[rank-R] {...}`).
pub fn lockstep_run(
    py: &Path,
    args: &[&str],
    script: &Path,
    script_args: &[&str],
    limit: std::time::Duration,
) -> (std::process::Output, String, Vec<serde_json::Value>) {
    let d = run_dir("py-run");
    lockstep_run_in(d.path(), py, args, script, script_args, limit)
}

/// As [`lockstep_run`], with the run directory `dir` (logs in `dir/logs`).
pub fn lockstep_run_in(
    dir: &Path,
    py: &Path,
    args: &[&str],
    script: &Path,
    script_args: &[&str],
    limit: std::time::Duration,
) -> (std::process::Output, String, Vec<serde_json::Value>) {
    let out = Command::new(exe())
        .arg("run")
        .args(args)
        .arg("--run-dir")
        .arg(dir)
        .arg("--")
        .arg(py)
        .arg(script)
        .args(script_args)
        .env("PYTHONPATH", super::python::lockstep_package())
        .env("OMP_NUM_THREADS", "1")
        .env_remove("LOCKSTEP_TOKEN") // `lockstep run` makes a fresh one
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_owned()
        .expect("lockstep run")
        .wait_with_deadline(limit);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results = text
        .lines()
        .filter_map(|l| l.split_once("] {").map(|(_, j)| format!("{{{j}")))
        .filter_map(|j| serde_json::from_str(&j).ok())
        .collect();
    (out, text, results)
}
