//! `lockstep run` of a Python script with the package built from this checkout (the Python
//! binding's tests).
#![allow(dead_code)]

use super::{exe, run_dir, Proc, SpawnOwned};
use std::path::Path;
use std::process::Command;
use std::process::Stdio;

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

/// Start `world` ranks of `tests/python/SCRIPT ARGS` with torchrun's variables, the package
/// built from this checkout and the token `python-binding-test` (`extra` variables override).
pub fn ranks(
    py: &Path,
    script: &str,
    args: &[&str],
    world: usize,
    extra: &[(&str, &str)],
) -> Vec<Proc> {
    let port = super::free_port();
    let pkg = super::python::lockstep_package();
    (0..world)
        .map(|r| {
            let mut c = Command::new(py);
            c.arg(super::root().join("tests/python").join(script))
                .args(args)
                .env("PYTHONPATH", &pkg)
                .env("RANK", r.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("LOCKSTEP_TOKEN", "python-binding-test")
                .env("LOCKSTEP_CONNECT_TIMEOUT_MS", "60000")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in extra {
                c.env(k, v);
            }
            c.spawn_owned().expect("start python")
        })
        .collect()
}
