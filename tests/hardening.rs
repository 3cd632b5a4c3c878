//! Hardening over real processes: a node that cannot write where it must stops at once.

mod common;
use common::SpawnOwned;

use std::process::{Command, Stdio};
use std::time::Duration;

/// A bare `lockstep node` whose run directory cannot be written says so before it joins the
/// cluster (it used to find out at its first checkpoint, after training for a while).
#[test]
fn a_bare_node_with_an_unwritable_run_dir_stops_before_training() {
    let tmp = common::run_dir("readonly");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let run_dir = file.join("run"); // nothing can be created under a file, not even by root
    let child = Command::new(common::exe())
        .args(["node", "examples/credit/cluster.toml", "--node", "worker-0"])
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--coordinator", "127.0.0.1:9"])
        .current_dir(common::root())
        .env("LOCKSTEP_TOKEN", "test-token")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .unwrap();
    let out = common::wait_with_deadline(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not writable") && err.contains("not-a-dir/run"),
        "stderr:\n{err}"
    );
}

/// Whoever reads `lockstep launch`'s output may go away (a closed terminal, `| head`, a test
/// that stopped reading): the job still finishes and writes its report. The launcher used to
/// panic in the threads that copy the nodes' log lines to its stderr, and the job failed.
#[test]
fn a_launch_whose_output_pipes_are_closed_still_finishes_its_job() {
    let tmp = common::run_dir("closed-pipes");
    let report = tmp.path().join("report.json");
    let mut child = Command::new(common::exe())
        .args(["launch", "examples/credit/cluster.toml", "--run-dir"])
        .arg(tmp.path())
        .arg("--report")
        .arg(&report)
        .current_dir(common::root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("start lockstep launch");
    // Close our ends at once: every line the launcher writes now meets a broken pipe.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let out = common::wait_with_deadline(child, Duration::from_secs(120));
    assert!(out.status.success(), "launch failed: {:?}", out.status);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["weights_sha256"].as_str().map(str::len), Some(64));
}
