//! Helpers for stream tests: launch a stream job with a known token, find its bootstrap in
//! `endpoints.json`, and feed it from Rust producers (in threads) or the Python client.
#![allow(dead_code)]

use crate::common::*;
use arrow_array::RecordBatch;
use lockstep_runtime::stream::Producer;
use lockstep_trainer::data::{FileRecords, Format};
use std::path::Path;
use std::process::Output;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The token every stream test uses.
pub const TOKEN: &str = "stream-test-token";
/// The example manifest (2 producers, 2 workers, micro_batches = 2).
pub const MANIFEST: &str = "examples/stream/credit.toml";
/// Its cluster name.
pub const CLUSTER: &str = "credit-stream";
/// Rows of credit_data.parquet.
pub const ROWS: usize = 4454;

/// Start `lockstep launch MANIFEST --run-dir DIR --report DIR/report.json EXTRA...`.
pub fn spawn_launch(dir: &Path, extra: &[&str]) -> Proc {
    let report = dir.join("report.json");
    let mut args = vec![
        "launch".to_string(),
        MANIFEST.to_string(),
        "--run-dir".into(),
        dir.display().to_string(),
        "--report".into(),
        report.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(exe())
        .args(&args)
        .current_dir(root())
        .env("LOCKSTEP_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("start lockstep launch")
}

/// Wait for `<dir>/endpoints.json` and return its bootstrap address.
pub fn bootstrap(dir: &Path) -> String {
    let path = dir.join("endpoints.json");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(b) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["bootstrap"].as_str().map(str::to_string))
        {
            return b;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no bootstrap in {} after 60 s", path.display());
}

/// All rows of credit_data as one record batch.
pub fn credit() -> RecordBatch {
    let path = root().join("examples/data/credit_data.parquet");
    let (_, batches) = FileRecords::open(&path, Format::Auto, "Status")
        .expect("open credit_data")
        .read_all()
        .expect("read credit_data");
    assert_eq!(batches.len(), 1, "credit_data fits one record batch");
    batches.into_iter().next().unwrap()
}

/// Producer `id` sends rows `range` of `data` in batches of `batch_rows`, from offset 0.
/// Returns the endpoint's final reply as (new rows, duplicates).
pub fn send_rust(
    bootstrap: &str,
    id: u32,
    data: &RecordBatch,
    range: std::ops::Range<usize>,
    batch_rows: usize,
) -> Result<(u64, u64), String> {
    let mut p = Producer::connect(bootstrap, CLUSTER, TOKEN.as_bytes(), id, 0, &data.schema())
        .map_err(|e| e.to_string())?;
    let mut at = range.start;
    while at < range.end {
        let n = batch_rows.min(range.end - at);
        p.send(&data.slice(at, n)).map_err(|e| e.to_string())?;
        at += n;
    }
    let r = p.close().map_err(|e| e.to_string())?;
    Ok((r.rows.unwrap_or(0), r.duplicates.unwrap_or(0)))
}

/// `python3 -m lockstep_client send` for producer `id`, rows `start:end` (the client from this
/// repository's `python/` directory).
pub fn send_python(bootstrap: &str, id: u32, rows: &str, batch_rows: usize) -> Output {
    send_python_with(bootstrap, id, rows, batch_rows, &[])
}

/// [`send_python`] with extra arguments to `send` (e.g. `--tls-ca`).
pub fn send_python_with(
    bootstrap: &str,
    id: u32,
    rows: &str,
    batch_rows: usize,
    extra: &[&str],
) -> Output {
    let out = python_cmd()
        .args([
            "-m",
            "lockstep_client",
            "send",
            "--bootstrap",
            bootstrap,
            "--producer",
            &id.to_string(),
            "--rows",
            rows,
            "--batch-rows",
            &batch_rows.to_string(),
        ])
        .args(extra)
        .arg("examples/data/credit_data.parquet")
        .current_dir(root())
        .env("PYTHONPATH", root().join("python"))
        .env("LOCKSTEP_TOKEN", TOKEN)
        .output_owned()
        .expect("run python3 -m lockstep_client");
    assert!(
        out.status.success(),
        "python producer {id} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Wait for a launched job and return its output and report.
pub fn finish(child: Proc, dir: &Path) -> (Output, serde_json::Value) {
    let out = wait_with_deadline(child, Duration::from_secs(240));
    assert_ok(&out);
    let report = std::fs::read(dir.join("report.json")).expect("report.json");
    (out, serde_json::from_slice(&report).expect("report parses"))
}

/// Producer `id` sends rows `range` of `data` in batches of `batch_rows`, its first row having
/// offset `offset`. Returns the endpoint's final reply as (new rows, duplicates).
pub fn send_rust_at(
    bootstrap: &str,
    id: u32,
    data: &RecordBatch,
    range: std::ops::Range<usize>,
    batch_rows: usize,
    offset: u64,
) -> Result<(u64, u64), String> {
    let mut p = Producer::connect(
        bootstrap,
        CLUSTER,
        TOKEN.as_bytes(),
        id,
        offset,
        &data.schema(),
    )
    .map_err(|e| e.to_string())?;
    let mut at = range.start;
    while at < range.end {
        let n = batch_rows.min(range.end - at);
        p.send(&data.slice(at, n)).map_err(|e| e.to_string())?;
        at += n;
    }
    let r = p.close().map_err(|e| e.to_string())?;
    Ok((r.rows.unwrap_or(0), r.duplicates.unwrap_or(0)))
}

/// The row of `data` at offset `k` of producer `id`'s endless stream: its half of the rows,
/// over and over (so a replay from any offset sends the same rows again).
pub fn endless_row(id: u32, k: u64) -> usize {
    let half = ROWS / 2;
    id as usize * half + (k as usize % half)
}

/// Producer `id` sends its endless stream (see [`endless_row`]) from offset 0, in batches of at
/// most `batch_rows`, until `rows` rows are sent (then it closes: `Ok` with the reply) or
/// the connection fails (`Err`: the job stopped).
pub fn send_endless(
    bootstrap: &str,
    id: u32,
    data: &RecordBatch,
    rows: u64,
    batch_rows: usize,
) -> Result<(u64, u64), String> {
    let mut p = Producer::connect(bootstrap, CLUSTER, TOKEN.as_bytes(), id, 0, &data.schema())
        .map_err(|e| e.to_string())?;
    let half = (ROWS / 2) as u64;
    let mut k = 0u64;
    while k < rows {
        let n = (batch_rows as u64).min(half - k % half).min(rows - k);
        p.send(&data.slice(endless_row(id, k), n as usize))
            .map_err(|e| e.to_string())?;
        k += n;
    }
    let r = p.close().map_err(|e| e.to_string())?;
    Ok((r.rows.unwrap_or(0), r.duplicates.unwrap_or(0)))
}

/// Whether the checkpoint of `round` is complete in run directory `dir`.
pub fn meta_exists(dir: &Path, round: u64) -> bool {
    dir.join(format!("checkpoints/round-{round:09}/meta.json"))
        .exists()
}

/// The `meta.json` of the checkpoint of `round`.
pub fn meta(dir: &Path, round: u64) -> serde_json::Value {
    let path = dir.join(format!("checkpoints/round-{round:09}/meta.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("meta.json")).expect("meta.json parses")
}

/// Wait (at most `limit`) until a checkpoint of `round` or later is complete. Not `round`
/// exactly: a fast job prunes old checkpoints (`keep`) within milliseconds, and a test that
/// polls late would wait for one that is already gone while the job, its log pipe unread,
/// stalls.
pub fn wait_for_checkpoint(dir: &Path, round: u64, limit: Duration) {
    let t = Instant::now();
    let done = || {
        std::fs::read_dir(dir.join("checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_prefix("round-")?.parse::<u64>().ok()
            })
            .any(|r| r >= round && meta_exists(dir, r))
    };
    while !done() {
        assert!(
            t.elapsed() < limit,
            "no checkpoint of round {round} or later after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The weights hash of a report.
pub fn sha(report: &serde_json::Value) -> String {
    report["weights_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Send `sig` to process `pid` (a child of this test).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}
