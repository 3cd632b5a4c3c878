//! Embedding tables are part of the checkpoint: every shard writes its rows and their optimizer
//! state (`tables-K-of-N.safetensors`) at each checkpoint, and a restarted or resumed run takes
//! them back. A shard killed mid-run (a worker holding rows, or a server node) and restarted by
//! `--max-restarts` ends with the weights of the uninterrupted run, tables included. Real
//! processes, real MovieLens ratings.

mod common;
use common::movielens::*;
use common::*;
use std::path::Path;
use std::time::Duration;

const JOB: &str = "epochs = 300\nglobal_batch = 512";
const OPT: &str = "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03\ndecay = 0.0001";

fn sha(report: &serde_json::Value) -> String {
    report["weights_sha256"]
        .as_str()
        .expect("a hash")
        .to_string()
}

/// Checkpoints under `run` with all their table parts.
fn complete_checkpoints(run: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(run.join("checkpoints")) else {
        return 0;
    };
    dirs.filter_map(Result::ok)
        .filter(|d| d.path().join("meta.json").exists())
        .filter(|d| {
            std::fs::read_dir(d.path()).is_ok_and(|f| {
                f.filter_map(Result::ok)
                    .any(|f| f.file_name().to_string_lossy().starts_with("tables-"))
            })
        })
        .count()
}

/// Launch `m` with `--max-restarts 1`, SIGKILL `victim` once a checkpoint with tables exists,
/// and return the report of the restarted run.
fn killed_and_restarted(m: &Path, run: &Path, victim: &str) -> serde_json::Value {
    let (r, rs) = (run.to_str().unwrap(), run.join("report.json"));
    let child = spawn_launch(m, run, &["--max-restarts", "1"]);
    let start = std::time::Instant::now();
    while complete_checkpoints(run) < 1 {
        assert!(start.elapsed() < LIMIT, "no checkpoint in {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_node(run, victim);
    let out = child.wait_with_deadline(LIMIT);
    let text = output(&out);
    assert_ok(&out);
    assert!(
        text.contains("restart 1 of 1") && text.contains(victim),
        "no restart naming {victim}:\n{text}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rs).unwrap()).expect("a report");
    assert_eq!(report["restarts"], 1, "{report}");
    let left = processes_mentioning(r);
    assert!(left.is_empty(), "processes left: {left:?}");
    report
}

#[test]
fn a_killed_worker_holding_rows_restarts_from_the_checkpoint_with_the_same_weights() {
    let dir = run_dir("movielens-restart");
    let data = cut(dir.path(), Some(5_000));
    let job = format!("{JOB}\nmicro_batches = 4\n[job.checkpoint]\nevery_rounds = 200");
    let m = manifest(dir.path(), &data, "mf", &job, &tables(8, None, OPT));
    let whole = launch_ok(&m, &dir.path().join("whole"), &[]);
    let restarted = killed_and_restarted(&m, &dir.path().join("killed"), "worker-1");
    assert_eq!(sha(&whole), sha(&restarted), "the restarted run differs");
    // --resume of the finished run: from its last checkpoint, the same end again.
    let (out, resumed) = launch(
        m.to_str().unwrap(),
        &dir.path().join("whole"),
        &["--resume"],
        LIMIT,
    );
    assert_ok(&out);
    assert!(
        output(&out).contains("embedding rows taken from"),
        "{}",
        output(&out)
    );
    assert_eq!(sha(&whole), sha(&resumed.expect("a report")));
}

#[test]
fn a_killed_server_node_restarts_from_its_part_with_the_same_weights() {
    let dir = run_dir("movielens-restart-ps");
    let data = cut(dir.path(), Some(5_000));
    let job =
        format!("{JOB}\naggregation = \"parameter-server\"\n[job.checkpoint]\nevery_rounds = 200");
    let m = manifest(dir.path(), &data, "mf", &job, &tables(8, None, OPT));
    let nodes = "[[nodes]]\nname = \"server-0\"\nroles = [\"server\"]\n\n\
                 [[nodes]]\nname = \"server-1\"\nroles = [\"server\"]\n\n[job]\n";
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replacen("[job]\n", nodes, 1);
    std::fs::write(&m, text).unwrap();
    let whole = launch_ok(&m, &dir.path().join("whole"), &[]);
    let restarted = killed_and_restarted(&m, &dir.path().join("killed"), "server-1");
    assert_eq!(sha(&whole), sha(&restarted), "the restarted run differs");
}

#[test]
fn a_checkpoint_missing_a_table_part_is_skipped_and_named() {
    let dir = run_dir("movielens-parts");
    let data = cut(dir.path(), Some(2_000));
    let job = "epochs = 2\nglobal_batch = 512\n[job.checkpoint]\nevery_rounds = 2";
    let m = manifest(dir.path(), &data, "mf", job, &tables(8, None, OPT));
    let run = dir.path().join("run");
    let first = launch_ok(&m, &run, &[]);
    // The newest checkpoint loses worker-1's part: it is skipped (named) for the one before.
    let mut dirs: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    dirs.sort();
    let newest = dirs.last().unwrap().clone();
    std::fs::remove_file(newest.join("tables-1-of-2.safetensors")).unwrap();
    let (out, again) = launch(m.to_str().unwrap(), &run, &["--resume"], LIMIT);
    let text = output(&out);
    assert_ok(&out);
    let older = dirs[dirs.len() - 2]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        text.contains("tables-1-of-2") && text.contains("resuming from") && text.contains(&older),
        "{text}"
    );
    assert_eq!(sha(&first), sha(&again.expect("a report")));
}
