//! Stream behaviours over real processes beyond the main path: arrival order to the end with the
//! model republished during training, a silent producer under `on_silent = "fail"` and under the
//! waiting default, a reconnect refused while the producer is live and resumed after it closed,
//! and a bad value in a later batch (through the Python client).

mod common;
#[path = "common/stream.rs"]
mod stream;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::*;

const HALF: usize = ROWS / 2;

/// The peer timeout (the default; silence is measured against it).
const PEER_TIMEOUT_MS: u64 = 3000;

/// The `round` in a safetensors file's metadata, after checking the file is complete (its
/// length is the header's plus every tensor's data).
fn published_round(path: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(bytes.get(..8).ok_or("short")?.try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8 + n).ok_or("short header")?)
            .map_err(|e| e.to_string())?;
    let end = header
        .as_object()
        .ok_or("header")?
        .values()
        .filter_map(|t| t["data_offsets"][1].as_u64())
        .max()
        .ok_or("no tensors")?;
    if bytes.len() != 8 + n + end as usize {
        return Err(format!(
            "{} bytes, header says {}",
            bytes.len(),
            8 + n + end as usize
        ));
    }
    header["__metadata__"]["round"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| "no round".into())
}

#[test]
fn arrival_order_trains_to_the_end_and_republishes_the_model_while_training() {
    let dir = run_dir("stream-arrival");
    let job = spawn_launch(
        dir.path(),
        &[
            "--set",
            "job.data.stream.order=\"arrival\"",
            "--set",
            "job.data.stream.publish_every=10",
        ],
    );
    let b = bootstrap(dir.path());
    let model = dir.path().join("model.safetensors");
    let stop = Arc::new(AtomicBool::new(false));
    let watching = stop.clone();
    let watcher = std::thread::spawn(move || {
        let (mut seen, mut bad) = (BTreeSet::new(), Vec::new());
        while !watching.load(Ordering::SeqCst) {
            if model.exists() {
                match published_round(&model) {
                    Ok(r) => {
                        seen.insert(r);
                    }
                    Err(e) => bad.push(e),
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        (seen, bad)
    });
    // Paced producers: 64 rows every 40 ms each, so training runs for about 1.5 s.
    let data = credit();
    let paced = |id: u32, b: String, data: arrow_array::RecordBatch| {
        std::thread::spawn(move || {
            let mut p = lockstep_runtime::stream::Producer::connect(
                &b,
                CLUSTER,
                TOKEN.as_bytes(),
                id,
                0,
                &data.schema(),
            )
            .expect("connect");
            let mut at = id as usize * HALF;
            let end = at + HALF;
            while at < end {
                let n = 64.min(end - at);
                p.send(&data.slice(at, n)).expect("send");
                at += n;
                std::thread::sleep(Duration::from_millis(40));
            }
            p.close().expect("close")
        })
    };
    let p0 = paced(0, b.clone(), data.clone());
    let p1 = paced(1, b, data);
    assert_eq!(p0.join().unwrap().rows, Some(HALF as u64));
    assert_eq!(p1.join().unwrap().rows, Some(HALF as u64));
    let (_, report) = finish(job, dir.path());
    stop.store(true, Ordering::SeqCst);
    let (seen, bad) = watcher.join().unwrap();
    println!("published rounds seen: {seen:?}");
    assert!(
        bad.is_empty(),
        "a read of the published model failed: {bad:?}"
    );
    // Rounds 9, 19, ... are published during training; the final save is round 138.
    let during: Vec<u64> = seen.iter().copied().filter(|r| *r < 138).collect();
    assert!(
        during.len() >= 2,
        "fewer than two versions seen during training: {seen:?}"
    );
    assert!(during.iter().all(|r| (r + 1) % 10 == 0), "{seen:?}");
    assert_eq!(
        published_round(&dir.path().join("model.safetensors")),
        Ok(138)
    );
    // Each worker serves one producer: 2227 / 16 = 139 rounds (3 rows left over each).
    assert_eq!(report["stream"]["order"], "arrival");
    assert_eq!(report["stream"]["ended"], "producers closed");
    assert_eq!(num(&report, &["rounds"]) as u64, 139);
    let auc = num(&report, &["stream", "prequential", "auc"]);
    assert!(auc >= 0.8, "prequential ROC AUC {auc} in arrival order");
}

#[test]
fn a_silent_producer_fails_the_job_with_on_silent_fail() {
    let dir = run_dir("stream-silent-fail");
    let job = spawn_launch(dir.path(), &["--set", "job.data.stream.on_silent=\"fail\""]);
    let b = bootstrap(dir.path());
    let data = credit();
    let mut p0 = lockstep_runtime::stream::Producer::connect(
        &b,
        CLUSTER,
        TOKEN.as_bytes(),
        0,
        0,
        &data.schema(),
    )
    .expect("connect");
    p0.send(&data.slice(0, 160)).expect("send");
    let t = Instant::now();
    send_rust(&b, 1, &data, HALF..ROWS, 500).expect("producer 1");
    // Producer 0 stays connected and sends nothing more.
    let out = wait_with_deadline(job, Duration::from_secs(60));
    let secs = t.elapsed().as_secs_f64();
    drop(p0);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job did not fail");
    assert!(
        secs < 30.0,
        "the silent producer failed the job only after {secs:.1} s"
    );
    assert!(
        log.contains("producer 0 has sent nothing") && log.contains("on_silent = \"fail\""),
        "the failure does not name the silent producer:\n{log}"
    );
    assert!(!log.contains("producer 1 has sent nothing"));
    println!("failed {secs:.1} s after producer 0 went silent");
}

#[test]
fn producers_that_never_connect_fail_the_job_after_connect_timeout_naming_them() {
    let dir = run_dir("stream-never");
    let t = Instant::now();
    // Producer 1 comes and goes silent (on_silent = "wait": that alone would wait); producer 0
    // never comes.
    let job = spawn_launch(
        dir.path(),
        &["--set", "job.data.stream.connect_timeout_ms=4000"],
    );
    let b = bootstrap(dir.path());
    let data = credit();
    let mut p1 = lockstep_runtime::stream::Producer::connect(
        &b,
        CLUSTER,
        TOKEN.as_bytes(),
        1,
        0,
        &data.schema(),
    )
    .expect("connect producer 1");
    p1.send(&data.slice(HALF, 160)).expect("send");
    let out = job.wait_with_deadline(Duration::from_secs(90));
    let secs = t.elapsed().as_secs_f64();
    drop(p1);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job did not fail:\n{log}");
    assert!(
        log.contains("producer 0 never connected")
            && log.contains("connect_timeout_ms = 4000")
            && !log.contains("producer 1 never connected"),
        "the failure does not name the missing producer and the key:\n{log}"
    );
    assert!(
        secs < 60.0,
        "the job failed only {secs:.1} s after it started"
    );
    assert!(
        processes_mentioning(&dir.path().display().to_string()).is_empty(),
        "processes of the failed job are left: {:?}",
        processes_mentioning(&dir.path().display().to_string())
    );
    println!("failed {secs:.1} s after the start");
}

#[test]
fn a_live_producer_id_is_refused_and_a_reconnect_after_close_resumes_at_its_offset() {
    let dir = run_dir("stream-takeover");
    let job = spawn_launch(dir.path(), &[]);
    let b = bootstrap(dir.path());
    let data = credit();
    let connect = |offset: u64| {
        lockstep_runtime::stream::Producer::connect(
            &b,
            CLUSTER,
            TOKEN.as_bytes(),
            0,
            offset,
            &data.schema(),
        )
    };
    let mut first = connect(0).expect("connect");
    first.send(&data.slice(0, 320)).expect("send");
    let refused = connect(0)
        .err()
        .expect("a second connection as producer 0 was taken");
    assert!(
        refused.to_string().contains("already connected"),
        "{refused}"
    );
    // The first connection ends without end-of-stream (a crash); the producer stays away
    // longer than the peer timeout: named in the log, and the job waits (on_silent = "wait").
    drop(first);
    std::thread::sleep(Duration::from_millis(PEER_TIMEOUT_MS + 1000));
    let mut again = connect(0).expect("reconnect");
    assert_eq!(
        again.resume_offset, 320,
        "the reconnect is told where its rows continue"
    );
    // It replays from its start: the 320 rows the job has are dropped.
    for at in (0..HALF).step_by(500) {
        again
            .send(&data.slice(at, 500.min(HALF - at)))
            .expect("send");
    }
    let done = again.close().expect("close");
    assert_eq!(
        (done.rows, done.duplicates),
        (Some(HALF as u64 - 320), Some(320))
    );
    send_rust(&b, 1, &data, HALF..ROWS, 500).expect("producer 1");
    let (out, report) = finish(job, dir.path());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("producer 0 has sent nothing"),
        "silence not named:\n{log}"
    );
    assert_eq!(num(&report, &["rounds"]) as u64, 139);
    assert_eq!(num(&report, &["stream", "rows_received"]) as usize, ROWS);
    assert_eq!(num(&report, &["stream", "duplicates_dropped"]) as u64, 320);
}

#[test]
fn a_bad_value_in_a_later_batch_closes_that_producer_only_and_it_resumes_at_the_batch() {
    let dir = run_dir("stream-bad-value");
    let job = spawn_launch(dir.path(), &[]);
    let b = bootstrap(dir.path());
    let data = credit();
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, HALF..ROWS, 256));
    let out = python_cmd()
        .args([
            "tests/stream/bad_value.py",
            &b,
            "examples/data/credit_data.parquet",
            "0",
            &HALF.to_string(),
        ])
        .current_dir(root())
        .env("PYTHONPATH", root().join("python"))
        .env("LOCKSTEP_TOKEN", TOKEN)
        .output_owned()
        .expect("run bad_value.py");
    assert!(
        out.status.success(),
        "bad_value.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    println!("{got}");
    let error = got["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("batch of rows 128..192 refused") && error.contains("label"),
        "the client's error does not give the reason: {error}"
    );
    assert_eq!(got["resume_offset"], 128);
    assert_eq!(got["result"]["rows"], HALF as u64 - 128);
    assert_eq!(got["result"]["duplicates"], 0);
    assert_eq!(p1.join().unwrap(), Ok((HALF as u64, 0)));
    let (out, report) = finish(job, dir.path());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("batch of rows 128..192 refused"),
        "the log does not name the bad batch"
    );
    assert_eq!(num(&report, &["rounds"]) as u64, 139);
    assert_eq!(num(&report, &["stream", "rows_received"]) as usize, ROWS);
    assert_eq!(num(&report, &["stream", "duplicates_dropped"]) as u64, 0);
}
