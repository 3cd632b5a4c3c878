//! `lockstep.torch.DistributedOptimizer` under a plain PyTorch training loop
//! (`examples/pytorch/train_mlp.py`) in real processes: the micro-batch rule gives the same
//! weights (a hash of every parameter) for 1, 2 and 4 processes, and the bucketed, overlapped
//! mode gives the same weights twice and on every rank.
//!
//! Needs PyTorch (Debian: `apt install python3-torch`; or `LOCKSTEP_TORCH_PYTHON`), so it is
//! ignored in `cargo test --workspace`; `.ci/run` installs PyTorch and runs it with `--ignored`.

mod common;
use common::python::{lockstep_package, torch_python};
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);

/// Train on `world` processes; every rank's `weights_sha256`.
fn train(world: usize, args: &[&str]) -> Vec<String> {
    let py = torch_python().unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let procs: Vec<Proc> = (0..world)
        .map(|r| {
            Command::new(&py)
                .arg(root().join("examples/pytorch/train_mlp.py"))
                .args(["--mode", "lockstep", "--warmup", "0"])
                .args(args)
                .env("PYTHONPATH", lockstep_package())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("LOCKSTEP_TOKEN", "torch-test")
                .env("OMP_NUM_THREADS", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn_owned()
                .expect("start python")
        })
        .collect();
    procs
        .into_iter()
        .map(|p| {
            let out = p.wait_with_deadline(LIMIT);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = text.lines().last().expect("a result line");
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            v["weights_sha256"].as_str().expect("sha").to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it with --ignored"]
fn the_micro_batch_rule_gives_the_same_weights_for_1_to_4_processes() {
    let args = [
        "--micro-batches",
        "4",
        "--global-batch",
        "64",
        "--steps",
        "25",
    ];
    let one = train(1, &args);
    // 3 does not divide 4: shares of 1, 1 and 2 micro-batches, gathered and summed in the tree.
    for world in [2, 4, 3, 2] {
        let got = train(world, &args);
        assert!(
            got.iter().all(|h| h == &one[0]),
            "{world} processes: {got:?}, 1 process: {}",
            one[0]
        );
    }
}

#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it with --ignored"]
fn bucketed_reduction_gives_the_same_weights_twice_and_on_every_rank() {
    let args = ["--steps", "25"];
    let a = train(2, &args);
    let b = train(2, &args);
    assert_eq!(a[0], a[1], "ranks differ");
    assert_eq!(a, b, "two runs differ");
}

/// `lockstep run` with the torch interpreter and the package; every JSON line of the output.
fn lockstep_run(args: &[&str], script_args: &[&str]) -> (bool, String, Vec<serde_json::Value>) {
    let py = torch_python().unwrap_or_else(|e| panic!("{e}"));
    let script = root().join("tests/python/elastic_train.py");
    let (out, text, results) =
        common::python_run::lockstep_run(&py, args, &script, script_args, LIMIT);
    (out.status.success(), text, results)
}

fn shas(results: &[serde_json::Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["weights_sha256"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A process killed mid-run: the survivor rolls back to its last commit, goes on alone, and ends
/// with the weights of the uninterrupted run; with a restart the replacement joins (at once, or
/// later while the survivor trains) and both end with those weights.
#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it with --ignored"]
fn a_killed_process_leaves_the_weights_of_the_uninterrupted_run() {
    let (ok, text, want) = lockstep_run(&["-n", "2"], &["--steps", "120"]);
    assert!(ok && want.len() == 2, "{text}");
    let want = shas(&want)[0].clone();

    let die = ["--steps", "120", "--die-rank", "1", "--die-at", "23"];
    let (ok, text, got) = lockstep_run(&["-n", "2", "--elastic", "1"], &die);
    assert!(ok, "{text}");
    assert!(text.contains("rank-1 was killed by signal 9"), "{text}");
    assert!(
        text.contains("lost a peer") && text.contains("rolling back to step 20"),
        "{text}"
    );
    assert_eq!(
        shas(&got),
        std::slice::from_ref(&want),
        "survivor alone:\n{text}"
    );

    let (ok, text, got) = lockstep_run(&["-n", "2", "--elastic", "1", "--max-restarts", "1"], &die);
    assert!(ok, "{text}");
    assert!(text.contains("starting rank-1 again (restart 1)"), "{text}");
    assert_eq!(
        shas(&got),
        [want.clone(), want.clone()],
        "with a replacement:\n{text}"
    );

    // The replacement starts late: the survivor forms a generation alone, sees the replacement
    // at a commit and lets it in.
    let gen = run_dir("py-gen");
    let gen_file = gen.path().join("generation");
    let late = [&die[..], &["--gen-file", gen_file.to_str().unwrap()]].concat();
    let (ok, text, got) =
        lockstep_run(&["-n", "2", "--elastic", "1", "--max-restarts", "1"], &late);
    assert!(ok, "{text}");
    assert!(text.contains("a replacement waits"), "{text}");
    assert!(
        got.iter().all(|r| r["generation"] == 3),
        "expected 3 generations:\n{text}"
    );
    assert_eq!(
        shas(&got),
        [want.clone(), want],
        "with a late replacement:\n{text}"
    );
}

/// Four processes, one killed: three survivors (shares of 1, 1 and 2 micro-batches) end with the
/// weights of the uninterrupted run.
#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it with --ignored"]
fn four_processes_lose_one_and_keep_the_weights() {
    let (ok, text, want) = lockstep_run(&["-n", "1"], &["--steps", "60"]);
    assert!(ok && want.len() == 1, "{text}");
    let want = shas(&want)[0].clone();
    let die = ["--steps", "60", "--die-rank", "2", "--die-at", "17"];
    let (ok, text, got) = lockstep_run(&["-n", "4", "--elastic", "2"], &die);
    assert!(ok, "{text}");
    assert!(text.contains("rank 0 of 3"), "no generation of 3:\n{text}");
    assert_eq!(shas(&got), vec![want; 3], "{text}");
}

/// Below `--elastic MIN` the run fails and names the dead rank.
#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it with --ignored"]
fn below_min_the_elastic_run_fails_naming_the_dead() {
    let die = ["--steps", "60", "--die-rank", "1", "--die-at", "23"];
    let (ok, text, _) = lockstep_run(&["-n", "2", "--elastic", "2"], &die);
    assert!(!ok, "{text}");
    assert!(text.contains("rank-1 was killed by signal 9"), "{text}");
}
