//! Coordinator failover with real processes: the coordinator of an elastic MNIST job killed
//! (SIGKILL) at round 50, killed while a checkpoint is written, and frozen (SIGSTOP); `launch`
//! starts it again and it takes over from the surviving workers. Each run must end with the
//! uninterrupted run's weights, no worker restarted and no process left.

mod common;
use common::elastic::*;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Wait until `dir/logs/<node>.log` contains `needle`.
fn wait_for_log(dir: &Path, node: &str, needle: &str) {
    let path = dir.join("logs").join(format!("{node}.log"));
    let start = Instant::now();
    while !std::fs::read_to_string(&path).is_ok_and(|l| l.contains(needle)) {
        assert!(start.elapsed() < LIMIT, "{node} never logged {needle:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill the coordinator (SIGKILL) once `at` is reached; `launch --max-restarts` starts it again,
/// the workers (the same processes) register with it and it takes over. The job must end with
/// the uninterrupted weights and the pause in `membership_changes`.
fn coordinator_failover(
    tag: &str,
    want: &str,
    env: &[(&str, &str)],
    at: impl FnOnce(&Path),
    sig: i32,
) -> (tempfile::TempDir, String) {
    let d = run_dir(tag);
    let extra = args(MNIST_RUN, &["--elastic", "2", "--max-restarts", "1"]);
    let child = spawn_launch_env(MNIST, d.path(), &extra, env);
    at(d.path());
    let workers = ["worker-0", "worker-1", "worker-2", "worker-3"];
    let before: Vec<i32> = workers.iter().map(|n| pid_of(d.path(), n)).collect();
    let old = pid_of(d.path(), "coordinator");
    signal(old, sig);
    let out = wait_with_deadline(child, LIMIT);
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("taking over as coordinator (term 1)"),
        "no takeover logged:\n{log}"
    );
    for (name, pid) in workers.iter().zip(&before) {
        let rejoined = format!("[{name}]");
        assert!(
            log.lines().any(
                |l| l.starts_with(&rejoined) && l.contains("rejoined under coordinator term 1")
            ),
            "{name} (pid {pid}) did not rejoin in its own process:\n{log}"
        );
    }
    assert!(
        !log.contains("starting worker-"),
        "a worker was restarted:\n{log}"
    );
    let r = report(d.path());
    show_changes(tag, &r);
    assert_eq!(r["restarts"], 1);
    assert_eq!(r["world_size"], 4);
    let c = &r["membership_changes"][0];
    assert_eq!(c["kind"], "coordinator", "{c}");
    assert_eq!(c["nodes"][0], "coordinator");
    assert!(num(c, &["pause_ms"]) > 0.0, "{c}");
    assert!(c["reason"].as_str().unwrap().contains("term 1"), "{c}");
    assert_eq!(sha(&r), want, "weights differ from the uninterrupted run");
    no_leftovers(d.path());
    (d, log)
}

#[test]
fn a_killed_coordinator_is_replaced_and_the_weights_stay_identical() {
    let want = baseline(MNIST, MNIST_RUN, "el-base-c");
    coordinator_failover(
        "el-coord",
        &want,
        &[],
        |d| wait_for_round(d, 50),
        libc::SIGKILL,
    );
    // Killed while worker-0 writes the checkpoint after round 75 (the write is held for 3 s by
    // the test-only fault): the checkpoint is completed and the job ends with the same weights.
    let fault = [("LOCKSTEP_FAULT", "slow_checkpoint:node=worker-0:round=74")];
    let (d, _) = coordinator_failover(
        "el-coord-ckpt",
        &want,
        &fault,
        |d| wait_for_log(d, "worker-0", "writing the checkpoint slowly"),
        libc::SIGKILL,
    );
    let ckpt = d.path().join("checkpoints/round-000000075");
    assert!(
        ckpt.join("meta.json").is_file() && ckpt.join("state.safetensors").is_file(),
        "the checkpoint written while the coordinator died is incomplete: {}",
        ckpt.display()
    );
    // Frozen (SIGSTOP): the workers find it silent after the peer timeout; `launch` sees them
    // without a coordinator while its process still runs, kills it and starts it again.
    let (_, log) = coordinator_failover(
        "el-coord-stop",
        &want,
        &[],
        |d| wait_for_round(d, 50),
        libc::SIGSTOP,
    );
    assert!(
        log.contains("but its process still runs (frozen or cut off): killing it"),
        "the frozen coordinator was not killed by launch:\n{log}"
    );
}
