//! The PyFlink pipeline of `examples/flink/` end to end. Opt-in (`LOCKSTEP_FLINK=1`): it installs
//! apache-flink 2.3 (about 500 MB) into a virtual environment under the target directory, unless
//! `LOCKSTEP_FLINK_PYTHON` names an interpreter that has it; needs Java 17.

mod common;
use common::*;
use std::process::Command;

fn flink_python() -> String {
    if let Ok(p) = std::env::var("LOCKSTEP_FLINK_PYTHON") {
        return p;
    }
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("flink-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap()])
            .status()
            .expect("python3 -m venv")
            .success();
        assert!(ok, "could not create {}", venv.display());
    }
    let ok = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "apache-flink==2.3.0",
            "./python",
        ])
        .current_dir(root())
        .status()
        .expect("pip install")
        .success();
    assert!(ok, "pip install apache-flink==2.3.0 ./python failed");
    py.display().to_string()
}

#[test]
fn pyflink_feeds_a_stream_job_end_to_end() {
    if std::env::var("LOCKSTEP_FLINK").as_deref() != Ok("1") {
        eprintln!("skipped: set LOCKSTEP_FLINK=1 to run the PyFlink pipeline (downloads ~500 MB)");
        return;
    }
    let python = flink_python();
    let dir = run_dir("flink");
    let out = Command::new("bash")
        .arg("examples/flink/run.sh")
        .current_dir(root())
        .env("PYTHON", &python)
        .env("LOCKSTEP", exe())
        .env("RUN_DIR", dir.path())
        .output()
        .expect("run examples/flink/run.sh");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "the Flink pipeline failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(num(&report, &["stream", "rows_trained"]) as u64, 4448);
    let auc = num(&report, &["stream", "prequential", "auc"]);
    assert!(auc >= 0.8, "prequential AUC {auc}");
}
