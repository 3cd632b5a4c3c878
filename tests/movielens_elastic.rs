//! Elastic membership with embedding tables: a dead worker's table rows exist nowhere else, so a
//! membership change rolls every member back to the newest checkpoint (dense state and every
//! shard's table part, re-sharded over the new membership) and continues from there. With
//! `micro_batches` and worker counts that split them evenly (here 2 -> 1 -> 2) the job ends with
//! the uninterrupted run's weights, tables included. Real processes, real MovieLens ratings.

mod common;
use common::movielens::*;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const JOB: &str = "epochs = 300\nglobal_batch = 512\nmicro_batches = 4\n\
                   [job.checkpoint]\nevery_rounds = 150\nkeep = 50";
const OPT: &str = "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03\ndecay = 0.0001";

/// A manifest with `workers` workers.
fn manifest_with(dir: &Path, workers: usize) -> std::path::PathBuf {
    let data = cut(dir, Some(5_000));
    let m = manifest(dir, &data, "mf", JOB, &tables(8, None, OPT));
    let extra: String = (2..workers)
        .map(|w| format!("[[nodes]]\nname = \"worker-{w}\"\nroles = [\"worker\"]\n\n"))
        .collect();
    let text =
        std::fs::read_to_string(&m)
            .unwrap()
            .replacen("[job]\n", &format!("{extra}[job]\n"), 1);
    std::fs::write(&m, text).unwrap();
    m
}

fn checkpointed(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.path().join("tables-0-of-1.safetensors").exists()
                    || e.path().join("meta.json").exists()
            })
            .count()
    })
}

/// Launch `m` elastic with `extra`, SIGKILL `victim` after the first checkpoint, and return
/// the report.
fn kill_after_a_checkpoint(
    m: &Path,
    run: &Path,
    victim: &str,
    extra: &[&str],
) -> serde_json::Value {
    let (r, rs) = (run.to_str().unwrap(), run.join("report.json"));
    let child = spawn_launch(m, run, extra);
    let start = Instant::now();
    while checkpointed(run) < 1 {
        assert!(start.elapsed() < LIMIT, "no checkpoint in {r}");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_node(run, victim);
    let out = child.wait_with_deadline(LIMIT);
    assert_ok(&out);
    let left = processes_mentioning(r);
    assert!(left.is_empty(), "processes left: {left:?}");
    serde_json::from_slice(&std::fs::read(&rs).unwrap()).expect("a report")
}

fn sha(r: &serde_json::Value) -> String {
    r["weights_sha256"].as_str().expect("a hash").to_string()
}

#[test]
fn a_lost_worker_rolls_the_tables_back_to_the_checkpoint_and_the_weights_stay_identical() {
    let dir = run_dir("movielens-elastic");
    let m = manifest_with(dir.path(), 2);
    let whole = launch_ok(&m, &dir.path().join("whole"), &[]);
    let r = kill_after_a_checkpoint(
        &m,
        &dir.path().join("kill"),
        "worker-1",
        &["--elastic", "1"],
    );
    let change = &r["membership_changes"][0];
    eprintln!("lost: {change}");
    assert_eq!(r["world_size"], 1, "{r}");
    assert_eq!(change["kind"], "lost");
    assert_eq!(change["nodes"][0], "worker-1");
    let round = change["round"].as_u64().unwrap();
    assert_eq!(
        round % 150,
        0,
        "not rolled back to a checkpoint round: {change}"
    );
    assert_eq!(
        sha(&whole),
        sha(&r),
        "weights differ from the uninterrupted run"
    );

    // Killed and restarted by the launcher: the replacement joins, everyone rolls back again.
    let extra = ["--elastic", "1", "--max-restarts", "1"];
    let r = kill_after_a_checkpoint(&m, &dir.path().join("rejoin"), "worker-1", &extra);
    let kinds: Vec<&str> = r["membership_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    eprintln!("rejoin: {kinds:?}");
    assert_eq!(r["world_size"], 2, "{r}");
    assert_eq!(kinds, ["lost", "joined"]);
    assert_eq!(
        sha(&whole),
        sha(&r),
        "weights differ from the uninterrupted run"
    );
}
