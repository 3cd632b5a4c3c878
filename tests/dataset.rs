//! Datasets of many Parquet files, streamed: the same rows cut into 1 file or 6 (uneven sizes and
//! row groups, written here in Rust by `common::parquet_fixtures`) give the same weights for 1 and
//! 2 workers, locally and from a local S3 server (moto, started and stopped here), resume
//! mid-epoch exactly, and every bad input is an error that names the path, the file or the column.
//!
//! The S3 test needs Python 3 with moto and boto3 (`.ci/run` installs them); without them it fails
//! with that message rather than pass. The other tests need no Python.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

/// Writes the credit rows as one file and as uneven parts (plus bad variants) into a temp dir.
fn fixture() -> tempfile::TempDir {
    let dir = run_dir("dataset-files");
    parquet_fixtures::split_dataset(
        &root().join("examples/data/credit_data.parquet"),
        dir.path(),
    );
    dir
}

/// A credit manifest whose data path is `path`; streaming settings force several windows.
fn manifest(dir: &Path, tag: &str, path: &str, extra_data: &str) -> PathBuf {
    let text = format!(
        r#"[cluster]
name = "dataset-{tag}"

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
seed = 5
rounds = 120
global_batch = 64
micro_batches = 2

[job.data]
path = "{path}"
label = "Status"
task = "binary"
positive = "bad"
scaling = "standard"
memory_mb = 1
block_rows = 256
{extra_data}

[job.model]
kind = "logistic"

[job.optimizer]
kind = "adam"
lr = 0.01
"#
    );
    let p = dir.join(format!("{tag}.toml"));
    std::fs::write(&p, text).expect("write manifest");
    p
}

/// `lockstep launch` with extra environment; returns output and report.
fn launch_env(
    manifest: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (std::process::Output, Option<serde_json::Value>) {
    let dir = run_dir("dataset-run");
    launch_in(dir.path(), manifest, extra, env)
}

fn launch_in(
    dir: &Path,
    manifest: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (std::process::Output, Option<serde_json::Value>) {
    let report = dir.join("report.json");
    let mut cmd = Command::new(exe());
    cmd.arg("launch")
        .arg(manifest)
        .arg("--run-dir")
        .arg(dir)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = wait_with_deadline(cmd.spawn_owned().expect("start lockstep"), LIMIT);
    let parsed = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (out, parsed)
}

fn sha(out: &std::process::Output, report: Option<serde_json::Value>) -> String {
    assert_ok(out);
    report.expect("report")["weights_sha256"]
        .as_str()
        .expect("weights_sha256")
        .to_string()
}

fn failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn one_file_and_many_files_give_the_same_weights_for_one_and_two_workers() {
    let files = fixture();
    let d = files.path();
    let mut hashes = Vec::new();
    for (tag, path) in [
        ("one", format!("{}/one/all.parquet", d.display())),
        ("parts", format!("{}/parts", d.display())),
        ("glob", format!("{}/parts/part-*.parquet", d.display())),
    ] {
        let m = manifest(d, tag, &path, "");
        for workers in ["1", "2"] {
            let (out, report) = launch_env(&m, &["--workers", workers], &[]);
            hashes.push((format!("{tag} x{workers}"), sha(&out, report)));
        }
    }
    for (name, h) in &hashes[1..] {
        assert_eq!(h, &hashes[0].1, "{name} differs from {}", hashes[0].0);
    }
}

#[test]
fn files_with_and_without_column_statistics_give_the_same_weights() {
    let files = fixture();
    let d = files.path();
    let stats = manifest(d, "stats", &format!("{}/parts", d.display()), "");
    let bare = manifest(d, "nostats", &format!("{}/nostats", d.display()), "");
    let (out, report) = launch_env(&stats, &[], &[]);
    let with = sha(&out, report);
    let (out, report) = launch_env(&bare, &[], &[]);
    assert_eq!(sha(&out, report), with, "statistics changed the weights");
}

#[test]
fn resume_mid_epoch_gives_the_uninterrupted_weights() {
    let files = fixture();
    let d = files.path();
    let m = manifest(d, "resume", &format!("{}/parts", d.display()), "");
    let (out, report) = launch_env(&m, &[], &[]);
    let straight = sha(&out, report);
    // 75 rounds (an epoch is ~56), checkpoints every 25; then on to 120 from the newest one.
    let run = run_dir("dataset-resume");
    let first = [
        "--set",
        "job.rounds=75",
        "--set",
        "job.checkpoint.every_rounds=25",
    ];
    let (out, _) = launch_in(run.path(), &m, &first, &[]);
    assert_ok(&out);
    let (out, report) = launch_in(
        run.path(),
        &m,
        &["--resume", "--set", "job.checkpoint.every_rounds=25"],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming from"),
        "the second run did not resume:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha(&out, report), straight, "resumed run differs");
}

/// The moto S3 server of `tests/data/moto_s3.py`, stopped (by PID) when dropped.
struct Moto {
    child: Proc,
    port: u16,
    key: String,
    secret: String,
}

impl Moto {
    fn start(bucket: &str, dirs: &[PathBuf], auth: bool) -> Moto {
        let mut child = python_cmd()
            .arg(root().join("tests/data/moto_s3.py"))
            .args(auth.then_some("--auth"))
            .arg(bucket)
            .args(dirs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn_owned()
            .expect("start moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the moto port");
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "moto_s3.py printed {line:?}");
        Moto {
            port: parts[0].parse().expect("port"),
            key: parts[1].into(),
            secret: parts[2].into(),
            child,
        }
    }

    fn env(&self, key: &str, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", key.into()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the server this test started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn s3_serves_the_same_weights_and_names_bad_buckets_and_credentials() {
    let files = fixture();
    let d = files.path();
    let local = manifest(d, "local", &format!("{}/parts", d.display()), "");
    let (out, report) = launch_env(&local, &["--workers", "2"], &[]);
    let expected = sha(&out, report);

    let moto = Moto::start(
        "lockstep-data",
        &[d.join("parts"), d.join("bad-file")],
        false,
    );
    let good = moto.env(&moto.key, &moto.secret);
    let s3 = manifest(d, "s3", "s3://lockstep-data/parts/", "");
    let (out, report) = launch_env(&s3, &["--workers", "2"], &good);
    assert_eq!(sha(&out, report), expected, "S3 differs from local files");

    let glob = manifest(d, "s3glob", "s3://lockstep-data/parts/part-*.parquet", "");
    let (out, report) = launch_env(&glob, &["--workers", "1"], &good);
    assert_eq!(
        sha(&out, report),
        expected,
        "S3 glob differs from local files"
    );

    let nobucket = manifest(d, "nobucket", "s3://no-such-bucket/parts/", "");
    let err = failure(&launch_env(&nobucket, &[], &good).0);
    assert!(
        err.contains("s3://no-such-bucket/parts") && err.contains("NoSuchBucket"),
        "missing bucket not named:\n{err}"
    );

    // A server that checks access keys refuses an unknown one.
    let checking = Moto::start("lockstep-data", &[d.join("parts")], true);
    let bad = checking.env("AKIAWRONGWRONGWRONG0", "nope");
    let err = failure(&launch_env(&s3, &[], &bad).0);
    assert!(
        err.contains("s3://lockstep-data/parts")
            && (err.contains("InvalidAccessKeyId") || err.contains("403 Forbidden")),
        "bad credentials not reported:\n{err}"
    );

    let trunc = manifest(d, "s3trunc", "s3://lockstep-data/bad-file/", "");
    let err = failure(&launch_env(&trunc, &[], &good).0);
    assert!(
        err.contains("s3://lockstep-data/bad-file/part-001.parquet"),
        "truncated object not named:\n{err}"
    );
}

#[test]
fn bad_inputs_are_named() {
    let files = fixture();
    let d = files.path();

    let none = manifest(
        d,
        "none",
        &format!("{}/parts/nothing-*.parquet", d.display()),
        "",
    );
    let err = failure(&launch_env(&none, &[], &[]).0);
    assert!(
        err.contains("nothing-*.parquet") && err.contains("matches no Parquet file"),
        "empty glob:\n{err}"
    );

    let schema = manifest(d, "schema", &format!("{}/bad-schema", d.display()), "");
    let err = failure(&launch_env(&schema, &[], &[]).0);
    assert!(
        err.contains("bad-schema/part-001.parquet") && err.contains("'Age'"),
        "schema mismatch not named:\n{err}"
    );

    let trunc = manifest(d, "trunc", &format!("{}/bad-file", d.display()), "");
    let err = failure(&launch_env(&trunc, &[], &[]).0);
    assert!(
        err.contains("bad-file/part-001.parquet"),
        "truncated file not named:\n{err}"
    );
    let skip = manifest(
        d,
        "skip",
        &format!("{}/bad-file", d.display()),
        "on_bad_file = \"skip\"",
    );
    let (out, report) = launch_env(&skip, &["--workers", "1"], &[]);
    assert_ok(&out);
    assert!(report.is_some());

    // An endpoint that accepts connections and never answers: bounded retries, then the object.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(16).flatten() {
            conns.push(c);
        }
    });
    let slow = manifest(
        d,
        "slow",
        "s3://slow-bucket/data.parquet",
        "request_timeout_ms = 300\nmax_retries = 2",
    );
    let env = vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE".into()),
        ("AWS_SECRET_ACCESS_KEY", "secret".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let err = failure(&launch_env(&slow, &[], &env).0);
    assert!(
        err.contains("s3://slow-bucket/data.parquet") && err.to_lowercase().contains("timed out")
            || err.contains("timeout"),
        "timeout not reported with the object:\n{err}"
    );
    drop(held);
}

/// Checkpoints on object storage (the moto S3 server): a run stopped after 75 rounds uploads its
/// checkpoints; a run resumed in an empty run directory (a rescheduled pod) fetches the newest
/// one and ends with the uninterrupted weights. Only `keep` checkpoints stay in the bucket.
#[test]
fn checkpoints_on_s3_resume_on_an_empty_disk() {
    let files = fixture();
    let d = files.path();
    let m = manifest(d, "ckpt-s3", &format!("{}/parts", d.display()), "");
    let (out, report) = launch_env(&m, &[], &[]);
    let straight = sha(&out, report);

    let moto = Moto::start("lockstep-ckpt", &[], false);
    let env = moto.env(&moto.key, &moto.secret);
    let ckpt = [
        "--set",
        "job.checkpoint.dir=\"s3://lockstep-ckpt/job-1\"",
        "--set",
        "job.checkpoint.every_rounds=25",
        "--set",
        "job.checkpoint.keep=1",
    ];
    let first = run_dir("ckpt-s3-first");
    let args = [&ckpt[..], &["--set", "job.rounds=75"]].concat();
    let (out, _) = launch_in(first.path(), &m, &args, &env);
    assert_ok(&out);
    assert!(
        first
            .path()
            .join("checkpoints/round-000000050/meta.json")
            .exists(),
        "the checkpoint is written locally first"
    );

    let second = run_dir("ckpt-s3-second");
    let args = [&["--resume"][..], &ckpt[..]].concat();
    let (out, report) = launch_in(second.path(), &m, &args, &env);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("fetched checkpoint s3://lockstep-ckpt/job-1/round-000000050")
            && err.contains("resuming from"),
        "the second run did not resume from the bucket:\n{err}"
    );
    assert_eq!(sha(&out, report), straight, "resumed run differs");
    // keep = 1: only the newest checkpoint stays in the bucket (listed with boto3).
    let list = python_cmd()
        .args([
            "-c",
            "import boto3, os; s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']); print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='lockstep-ckpt').get('Contents', [])))",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("boto3");
    let keys = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        keys.contains("job-1/round-000000100/meta.json")
            && !keys.contains("round-000000050")
            && !keys.contains("round-000000025"),
        "the bucket holds {keys} ({})",
        String::from_utf8_lossy(&list.stderr)
    );
}
