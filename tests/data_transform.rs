//! The fitted data transform is stored with the run: `--resume` takes it from the checkpoint
//! instead of refitting (also when the dataset grew in between, with a warning), and
//! `lockstep predict` takes it from the model's safetensors metadata, so its predictions do not
//! move when the training data changes afterwards.
//!
//! The changed datasets are written in Rust (`common::parquet_fixtures`); no Python is needed.

mod common;
use common::parquet_fixtures::{parquet_csv, shifted};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

fn manifest(dir: &Path, tag: &str, path: &Path, extra_data: &str) -> PathBuf {
    let text = format!(
        r#"[cluster]
name = "transform-{tag}"

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
path = "{}"
label = "Status"
task = "binary"
positive = "bad"
scaling = "standard"
{extra_data}

[job.model]
kind = "logistic"

[job.optimizer]
kind = "adam"
lr = 0.01
"#,
        path.display()
    );
    let p = dir.join(format!("{tag}.toml"));
    std::fs::write(&p, text).expect("write manifest");
    p
}

fn launch_in(dir: &Path, manifest: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(exe());
    cmd.arg("launch")
        .arg(manifest)
        .arg("--run-dir")
        .arg(dir)
        .arg("--report")
        .arg(dir.join("report.json"))
        .args(extra)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_with_deadline(cmd.spawn_owned().expect("start lockstep"), LIMIT)
}

/// The transform in the `__metadata__` of a safetensors file (its `fitted` part).
fn model_transform(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let json = header["__metadata__"]["lockstep.transform"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no lockstep.transform metadata", path.display()));
    let stored: serde_json::Value = serde_json::from_str(json).expect("transform json");
    stored["fitted"].clone()
}

/// The transform in the newest checkpoint's `meta.json` under `run`.
fn checkpoint_transform(run: &Path) -> serde_json::Value {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .expect("checkpoints")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let meta = dirs.last().expect("a checkpoint").join("meta.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("meta.json")).expect("parse");
    meta["transform"]["fitted"].clone()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn resume_takes_the_stored_transform_even_when_the_dataset_grew() {
    let data = run_dir("transform-data");
    let parts = data.path().join("parts");
    std::fs::create_dir_all(&parts).expect("mkdir");
    let src = root().join("examples/data/credit_data.parquet");
    std::fs::copy(&src, parts.join("part-000.parquet")).expect("copy");
    let m = manifest(
        data.path(),
        "resume",
        &parts,
        "memory_mb = 1\nblock_rows = 256",
    );
    let run = run_dir("transform-resume");
    let first = [
        "--set",
        "job.rounds=75",
        "--set",
        "job.checkpoint.every_rounds=25",
    ];
    let out = launch_in(run.path(), &m, &first);
    assert_ok(&out);
    let fitted = checkpoint_transform(run.path());
    assert!(fitted.is_object(), "the checkpoint stores no transform");
    assert_eq!(
        model_transform(&run.path().join("model.safetensors")),
        fitted,
        "model.safetensors and the checkpoint store different transforms"
    );

    // The dataset grows between the stop and the resume; a refit would change the transform.
    shifted(&src, &parts.join("part-001.parquet"), true);
    let out = launch_in(
        run.path(),
        &m,
        &["--resume", "--set", "job.checkpoint.every_rounds=25"],
    );
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("resuming from"), "did not resume:\n{log}");
    assert!(
        log.contains("not refitted") && log.contains("4754 rows now, 4454 when the run started"),
        "no warning about the grown dataset:\n{log}"
    );
    assert_eq!(
        model_transform(&run.path().join("model.safetensors")),
        fitted,
        "the resumed run's model stores another transform"
    );
    assert_eq!(checkpoint_transform(run.path()), fitted);

    // The same grown dataset in a fresh run fits another transform: the check above can fail.
    let fresh = run_dir("transform-fresh");
    let out = launch_in(fresh.path(), &m, &["--set", "job.rounds=2"]);
    assert_ok(&out);
    assert_ne!(
        model_transform(&fresh.path().join("model.safetensors")),
        fitted,
        "a refit on the grown dataset gave the same transform"
    );
}

fn predict(manifest: &Path, model: &Path, input: &Path, output: &Path) -> Vec<u8> {
    let out = run(
        &[
            "predict",
            &manifest.display().to_string(),
            "--model",
            &model.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--output",
            &output.display().to_string(),
        ],
        LIMIT,
    );
    assert_ok(&out);
    parquet_csv(output)
}

#[test]
fn predict_applies_the_model_s_stored_transform_after_the_data_changed() {
    let data = run_dir("transform-predict");
    let train = data.path().join("train.parquet");
    let src = root().join("examples/data/credit_data.parquet");
    std::fs::copy(&src, &train).expect("copy");
    let m = manifest(data.path(), "predict", &train, "");
    let run = run_dir("transform-predict-run");
    let out = launch_in(run.path(), &m, &["--set", "job.rounds=40"]);
    assert_ok(&out);
    let model = run.path().join("model.safetensors");
    let before = predict(&m, &model, &src, &data.path().join("before.parquet"));

    // Only the model's metadata can give the transform now: no file beside it, other data.
    std::fs::remove_file(run.path().join("model.transform.json")).expect("transform file");
    shifted(&src, &train, false);
    let after = predict(&m, &model, &src, &data.path().join("after.parquet"));
    assert!(before.len() > 4454 * 4, "too few predictions");
    assert_eq!(before, after, "predictions moved with the training data");

    // Without the metadata a refit on the changed data gives other predictions: the check can fail.
    let bare = data.path().join("bare.safetensors");
    strip_metadata(&model, &bare);
    let refit = predict(&m, &bare, &src, &data.path().join("refit.parquet"));
    assert_ne!(before, refit, "a refit gave the same predictions");
}

/// A copy of the safetensors file `src` without its `__metadata__`.
fn strip_metadata(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).expect("model");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    header
        .as_object_mut()
        .expect("object")
        .remove("__metadata__");
    let mut h = serde_json::to_vec(&header).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dst, out).expect("write");
}
