//! Streams on loopback: `lockstep launch` of a `source = "stream"` job, fed credit_data by
//! producers through the Python client (`python/`) and through the Rust producer, with the real
//! binary's coordinator and workers as separate processes.

mod common;
#[path = "common/stream.rs"]
mod stream;

use common::*;
use std::time::{Duration, Instant};
use stream::*;

/// Half of the rows to each producer.
const HALF: usize = ROWS / 2;

fn sha(report: &serde_json::Value) -> String {
    report["weights_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_bounded_stream_trains_and_is_deterministic_across_clients_batching_and_workers() {
    // Python producers, 2 workers, batches of 100 rows.
    let a = run_dir("stream-py");
    let job = spawn_launch(a.path(), &[]);
    let b = bootstrap(a.path());
    let b2 = b.clone();
    let p0 = std::thread::spawn(move || send_python(&b2, 0, &format!("0:{HALF}"), 100));
    send_python(&b, 1, &format!("{HALF}:{ROWS}"), 100);
    p0.join().unwrap();
    let (_, ra) = finish(job, a.path());
    let auc = num(&ra, &["stream", "prequential", "auc"]);
    println!(
        "prequential auc {auc:.4}, held-out auc {:.4}",
        num(&ra, &["eval", "auc"])
    );
    assert!(auc >= 0.82, "prequential ROC AUC {auc} < 0.82: {ra}");
    assert_eq!(num(&ra, &["stream", "rows_received"]) as usize, ROWS);
    // 2 x 2227 rows in rounds of 16 per producer: 139 rounds, 6 rows left over.
    assert_eq!(num(&ra, &["rounds"]) as u64, 139);
    assert_eq!(num(&ra, &["stream", "duplicates_dropped"]) as u64, 0);
    assert_eq!(ra["stream"]["ended"], "producers closed");
    // The 6 rows of the last partial round are reported as not trained, with the reason.
    assert_eq!(
        num(&ra, &["stream", "rows_not_trained"]) as usize,
        ROWS - 139 * 32
    );
    let why = ra["stream"]["not_trained_reason"].as_str().unwrap();
    assert!(
        why.contains("16 rows of every producer make a round"),
        "{why}"
    );
    assert!(a.path().join("model.safetensors").exists());
    assert!(a
        .path()
        .join("checkpoints/round-000000139/meta.json")
        .exists());

    // The same streams from the Rust producer, other batch sizes and timing, one worker.
    let c = run_dir("stream-rs");
    let job = spawn_launch(c.path(), &["--workers", "1"]);
    let b = bootstrap(c.path());
    let data = credit();
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, HALF..ROWS, 7));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(send_rust(&b, 0, &data, 0..HALF, 333), Ok((HALF as u64, 0)));
    assert_eq!(p1.join().unwrap(), Ok((HALF as u64, 0)));
    let (_, rc) = finish(job, c.path());
    assert_eq!(
        sha(&ra),
        sha(&rc),
        "same streams, other client, batching, timing and worker count: the weights differ"
    );
}

fn meta_exists(dir: &std::path::Path, round: u64) -> bool {
    dir.join(format!("checkpoints/round-{round:09}/meta.json"))
        .exists()
}

#[test]
fn a_killed_stream_resumes_exactly_once_when_producers_replay_from_the_start() {
    let data = credit();
    // Uninterrupted.
    let full = run_dir("stream-full");
    let job = spawn_launch(full.path(), &[]);
    let b = bootstrap(full.path());
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, HALF..ROWS, 256));
    send_rust(&b, 0, &data, 0..HALF, 256).expect("producer 0");
    p1.join().unwrap().expect("producer 1");
    let (_, uninterrupted) = finish(job, full.path());

    // Killed after the checkpoint of round 60: producers stop after 1200 rows each, so
    // training stalls at round 75 (checkpoints at 20, 40, 60).
    let dir = run_dir("stream-kill");
    let mut job = spawn_launch(dir.path(), &[]);
    let b = bootstrap(dir.path());
    let mut held = Vec::new();
    for id in 0..2u32 {
        let start = id as usize * HALF;
        let mut p = lockstep_runtime::stream::Producer::connect(
            &b,
            CLUSTER,
            TOKEN.as_bytes(),
            id,
            0,
            &data.schema(),
        )
        .expect("connect");
        p.send(&data.slice(start, 1200)).expect("send");
        held.push(p);
    }
    let t = Instant::now();
    while !meta_exists(dir.path(), 60) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint of round 60"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    job.kill().expect("kill the launcher");
    let _ = job.wait();
    drop(held);
    let t = Instant::now();
    while !processes_mentioning(&dir.path().display().to_string()).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "nodes outlived the launcher"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let newest = (1..=75u64)
        .rev()
        .find(|r| meta_exists(dir.path(), *r))
        .unwrap();
    assert_eq!(newest, 60, "the newest checkpoint is round 60");
    let _ = std::fs::remove_file(dir.path().join("endpoints.json"));

    // Resume; both producers replay their whole stream from the start.
    let job = spawn_launch(dir.path(), &["--resume"]);
    let b = bootstrap(dir.path());
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, HALF..ROWS, 100));
    let r0 = send_rust(&b, 0, &data, 0..HALF, 100).expect("producer 0");
    let r1 = p1.join().unwrap().expect("producer 1");
    // 60 rounds x 16 rows of each producer were trained before the checkpoint.
    assert_eq!(r0, ((HALF - 960) as u64, 960));
    assert_eq!(r1, ((HALF - 960) as u64, 960));
    let (_, resumed) = finish(job, dir.path());
    assert_eq!(
        num(&resumed, &["stream", "duplicates_dropped"]) as u64,
        1920
    );
    assert_eq!(num(&resumed, &["rounds"]) as u64, 139);
    assert_eq!(
        sha(&resumed),
        sha(&uninterrupted),
        "resumed run's weights differ from the uninterrupted run's"
    );
}

#[test]
fn bad_producers_are_refused_with_their_reason_and_training_goes_on() {
    let dir = run_dir("stream-bad");
    let job = spawn_launch(dir.path(), &[]);
    let b = bootstrap(dir.path());
    let out = python_cmd()
        .args([
            "tests/stream/bad_inputs.py",
            &b,
            CLUSTER,
            "examples/data/credit_data.parquet",
        ])
        .current_dir(root())
        .env("PYTHONPATH", root().join("python"))
        .env("LOCKSTEP_TOKEN", TOKEN)
        .output_owned()
        .expect("run bad_inputs.py");
    assert!(
        out.status.success(),
        "bad_inputs.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let expect = [
        ("wrong token", "token does not match"),
        ("wrong cluster", "wrong cluster"),
        ("garbage bytes", "not an Arrow IPC stream"),
        ("truncated IPC message", "bad Arrow IPC message"),
        ("missing column", "Income"),
        ("wrong type", "Amount"),
        ("producer id out of range", "outside 0..2"),
        ("live producer id", "already connected"),
    ];
    for (case, needle) in expect {
        let got = cases[case].as_str().unwrap_or_default();
        println!("{case}: {got}");
        assert!(
            got.contains(needle),
            "{case}: expected {needle:?} in {got:?}"
        );
    }
    // The good streams still train (producer 1's first 8 rows came from the live connection
    // that was cut: they are dropped as duplicates when the stream replays them).
    let b2 = b.clone();
    let p0 = std::thread::spawn(move || send_python(&b2, 0, &format!("0:{HALF}"), 500));
    send_python(&b, 1, &format!("{HALF}:{ROWS}"), 500);
    p0.join().unwrap();
    let (out, report) = finish(job, dir.path());
    assert_eq!(num(&report, &["rounds"]) as u64, 139);
    assert_eq!(num(&report, &["stream", "duplicates_dropped"]) as u64, 8);
    let log = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "handshake refused",
        "not an Arrow IPC stream",
        "bad Arrow IPC message",
        "schema refused",
        "outside 0..2",
        "already connected",
    ] {
        assert!(log.contains(needle), "the log does not mention {needle:?}");
    }
}

#[test]
fn bench_ingest_reports_stream_and_parquet_rates() {
    let dir = run_dir("bench-ingest");
    let json = dir.path().join("ingest.json");
    let out = run(
        &[
            "bench",
            "ingest",
            "--producers",
            "2",
            "--repeat",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(240),
    );
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for path in [
        &["stream", "rows_per_s"][..],
        &["stream", "mb_per_s"],
        &["parquet", "rows_per_s"],
        &["parquet", "mb_per_s"],
        &["ratio"],
        &["training_rows_per_s"],
    ] {
        assert!(num(&v, path) > 0.0, "{path:?} in {v}");
    }
    assert_eq!(num(&v, &["rows"]) as usize, 4 * ROWS);
}
