//! Bad manifests and bad data: `lockstep launch` exits non-zero with a message that names the
//! key (and line), file or column, and leaves no node running.

mod common;
use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn write_manifest(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("cluster.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn base(data: &str, extra_job: &str) -> String {
    format!(
        r#"[cluster]
name = "bad"

[[nodes]]
name = "coordinator"
roles = ["coordinator"]

[[nodes]]
name = "worker-0"
roles = ["worker"]

[[nodes]]
name = "worker-1"
roles = ["worker"]

[job]
rounds = 3
global_batch = 32
{extra_job}

[job.data]
path = "{data}"
label = "target"
task = "regression"

[job.model]
kind = "linear"

[job.optimizer]
kind = "sgd"
lr = 0.01
"#
    )
}

fn diabetes() -> String {
    root()
        .join("examples/data/diabetes.parquet")
        .display()
        .to_string()
}

fn fails_with(manifest_text: &str, extra: &[&str], needles: &[&str]) {
    let dir = run_dir("err");
    let m = write_manifest(dir.path(), manifest_text);
    let (out, report) = launch(&m, dir.path(), extra, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success:\n{err}"
    );
    assert!(report.is_none(), "a failed run wrote a report");
    for n in needles {
        assert!(err.contains(n), "message does not name {n:?}:\n{err}");
    }
    let left = processes_mentioning(dir.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let text = base(&diabetes(), "learning_speed = 3");
    fails_with(&text, &[], &["learning_speed", "line 19"]);
}

#[test]
fn missing_data_file_names_the_file() {
    fails_with(
        &base("/nonexistent/data.parquet", ""),
        &[],
        &["/nonexistent/data.parquet"],
    );
}

#[test]
fn missing_column_names_the_column() {
    let text = base(&diabetes(), "").replace("label = \"target\"", "label = \"progression\"");
    fails_with(&text, &[], &["progression", "diabetes.parquet"]);
}

#[test]
fn worker_count_that_does_not_divide_the_batch_is_refused() {
    fails_with(
        &base(&diabetes(), ""),
        &["--workers", "3"],
        &["job.global_batch", "3 workers"],
    );
}

#[test]
fn bad_override_names_it() {
    fails_with(
        &base(&diabetes(), ""),
        &["--set", "job.global_batch=\"many\""],
        &["--set", "job.global_batch"],
    );
}

#[test]
fn rdma_without_the_feature_or_a_device_stops_the_job_before_it_starts_and_says_why() {
    // `--transport rdma` (as `cluster.transport = "rdma"`): the default build has no RDMA
    // support and says how to get it; a build with the feature on a machine without RDMA names
    // the missing piece (this development machine: a kernel without RDMA). `launch` checks once
    // for all its nodes, before starting any, and none is left running.
    let why: &[&str] = if cfg!(feature = "rdma") {
        &["RDMA"]
    } else {
        &[
            "this lockstep was built without RDMA support; rebuild with",
            "--features rdma",
        ]
    };
    fails_with(
        &base(&diabetes(), ""),
        &["--transport", "rdma"],
        &[&["cluster.transport = \"rdma\": "], why].concat(),
    );
}
