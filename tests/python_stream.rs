//! `lockstep.data.StreamDataset`: a producer stream into a Python training loop, in real
//! processes on loopback. Two ranks train a NumPy logistic regression on credit_data sent by two
//! `lockstep_client` producers; a run stopped at round 50 and restarted from its saved state
//! (the producers replaying from the first row) ends with the uninterrupted run's weights, every
//! row trained once and the replayed rows dropped as duplicates. A producer that never connects
//! is named within its connect timeout, on every rank, and a misspelt key is a ValueError.

mod common;
use common::python::{lockstep_package, python};
use common::python_run::ranks;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);
const DATA: &str = "examples/data/credit_data.parquet";
/// Rows of credit_data.parquet, sent as two halves.
const ROWS: usize = 4454;
const TOKEN: &str = "python-stream-test";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Producer `id` sending rows `rows` (`START:END`) of the data to the job in `dir`, once its
/// `endpoints.json` exists.
fn producer(dir: &Path, id: u32, rows: &str) -> Proc {
    let endpoints = dir.join("endpoints.json");
    let start = std::time::Instant::now();
    while !endpoints.exists() {
        assert!(start.elapsed() < LIMIT, "no {}", endpoints.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new(python())
        .args(["-m", "lockstep_client", "send", "--bootstrap"])
        .arg(dir)
        .args([
            "--producer",
            &id.to_string(),
            "--rows",
            rows,
            "--batch-rows",
            "100",
            DATA,
        ])
        .current_dir(root())
        .env("PYTHONPATH", root().join("python"))
        .env("LOCKSTEP_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("start a producer")
}

/// Two ranks of `stream_train.py` over the run directory `dir`, fed by two producers sending
/// the two halves of the data; rank 0's JSON line, and both ranks' output.
fn train(dir: &Path, extra: &[&str], producers_succeed: bool) -> (serde_json::Value, String) {
    train_with(&python(), dir, extra, producers_succeed)
}

/// [`train`] with the ranks' interpreter `py`.
fn train_with(
    py: &Path,
    dir: &Path,
    extra: &[&str],
    producers_succeed: bool,
) -> (serde_json::Value, String) {
    let _ = std::fs::remove_file(dir.join("endpoints.json"));
    let d = dir.display().to_string();
    let data = root().join(DATA).display().to_string();
    let mut args = vec![data.as_str(), d.as_str()];
    args.extend_from_slice(extra);
    let procs = ranks(
        py,
        "stream_train.py",
        &args,
        2,
        &[("LOCKSTEP_TOKEN", TOKEN)],
    );
    let half = ROWS / 2;
    let feeds = [
        producer(dir, 0, &format!("0:{half}")),
        producer(dir, 1, &format!("{half}:{ROWS}")),
    ];
    let outs: Vec<Output> = procs
        .into_iter()
        .map(|p| p.wait_with_deadline(LIMIT))
        .collect();
    let all: String = outs.iter().map(text).collect::<Vec<_>>().join("\n");
    for o in &outs {
        assert!(o.status.success(), "a rank failed:\n{all}");
    }
    for f in feeds {
        if producers_succeed {
            let o = f.wait_with_deadline(LIMIT);
            assert!(o.status.success(), "a producer failed:\n{}", text(&o));
        }
        // Otherwise the job stopped early: the producer is killed on drop.
    }
    let line = String::from_utf8_lossy(&outs[0].stdout)
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON line from rank 0:\n{all}"));
    (line, all)
}

#[test]
fn a_restart_from_the_saved_state_trains_every_row_once_and_gives_the_same_weights() {
    let whole = run_dir("py-stream-whole");
    let (uninterrupted, _) = train(whole.path(), &[], true);
    // 2 producers of 2,227 rows, 16 rows each per round of 32: 139 rounds.
    assert_eq!(uninterrupted["rounds"], 139, "{uninterrupted}");
    assert_eq!(uninterrupted["received"], ROWS as u64, "{uninterrupted}");
    assert_eq!(uninterrupted["duplicates"], 0, "{uninterrupted}");

    let d = run_dir("py-stream-restart");
    let state = d.path().join("state.json").display().to_string();
    let (first, _) = train(d.path(), &["--stop-at", "50", "--state", &state], false);
    assert_eq!(first["rounds"], 50, "{first}");
    assert_eq!(
        first["offsets"],
        serde_json::json!({"0": 800, "1": 800}),
        "{first}"
    );
    let (second, all) = train(d.path(), &["--state", &state, "--resume"], true);
    assert_eq!(second["rounds"], 139, "{second}\n{all}");
    assert_eq!(second["sha"], uninterrupted["sha"], "{second}\n{all}");
    // Each producer replayed its first 800 rows: dropped, never trained twice.
    assert_eq!(second["duplicates"], 1600, "{second}");
    assert_eq!(second["received"], (ROWS - 1600) as u64, "{second}");
}

/// Under PyTorch the dataset is an `IterableDataset` of tensors, read through a `DataLoader`
/// (`batch_size=None`), with the weights of iterating it directly. Needs PyTorch (`.ci/run` installs
/// Debian's and runs it with `--ignored`).
#[test]
#[ignore = "needs PyTorch: cargo test --test python_stream -- --ignored"]
fn under_pytorch_it_is_an_iterable_dataset_of_tensors_with_the_same_weights() {
    let torch = common::python::torch_python().unwrap_or_else(|why| panic!("{why}"));
    // The same interpreter iterating the dataset directly (its NumPy, not the tests' venv's,
    // does the arithmetic: different NumPy builds round differently).
    let a = run_dir("py-stream-numpy");
    let (numpy, _) = train_with(&torch, a.path(), &[], true);
    let b = run_dir("py-stream-torch");
    let (torch, all) = train_with(&torch, b.path(), &["--torch"], true);
    assert_eq!(torch["rounds"], 139, "{torch}\n{all}");
    assert_eq!(torch["sha"], numpy["sha"], "{torch}\n{all}");
}

#[test]
fn a_producer_that_never_connects_is_named_on_every_rank() {
    let d = run_dir("py-stream-silent");
    let dir = d.path().display().to_string();
    let data = root().join(DATA).display().to_string();
    let args = [data.as_str(), dir.as_str(), "--connect-timeout-ms", "3000"];
    let procs = ranks(
        &python(),
        "stream_train.py",
        &args,
        2,
        &[("LOCKSTEP_TOKEN", TOKEN)],
    );
    // Producer 0 comes (served by rank 0); producer 1 (rank 1's) never does.
    let feed = producer(d.path(), 0, "0:2227");
    let started = std::time::Instant::now();
    let outs: Vec<Output> = procs
        .into_iter()
        .map(|p| p.wait_with_deadline(LIMIT))
        .collect();
    drop(feed);
    let all: String = outs.iter().map(text).collect::<Vec<_>>().join("\n");
    assert!(started.elapsed() < Duration::from_secs(60), "{all}");
    for o in &outs {
        assert!(!o.status.success(), "{all}");
    }
    assert!(
        text(&outs[1]).contains("producer1") || text(&outs[1]).contains("producer 1"),
        "{all}"
    );
    assert!(text(&outs[1]).contains("never connected"), "{all}");
    assert!(text(&outs[0]).contains("rank 1's stream failed"), "{all}");
}

#[test]
fn a_misspelt_key_is_named() {
    let code = format!(
        "import lockstep, lockstep.data\n\
         lockstep.init(rank=0, world_size=1, master_addr='127.0.0.1', master_port={}, token='t')\n\
         lockstep.data.StreamDataset({:?}, label='Status', task='binary', positive='bad', \
         producers=1, global_batch=8, scalling='standard')\n",
        free_port(),
        root().join(DATA).display().to_string()
    );
    let out = Command::new(python())
        .args(["-c", &code])
        .env("PYTHONPATH", lockstep_package())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("python")
        .wait_with_deadline(LIMIT);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("ValueError") && t.contains("scalling"), "{t}");
}
