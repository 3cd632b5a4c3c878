//! Every `lockstep bench` subcommand through the real binary, tiny and once (`--repeat 1`):
//! the JSON has its keys and its figures are finite and positive. No timing assertions.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Run `lockstep bench <args> --json <tmp>` and return the parsed JSON.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lockstep bench {args:?} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("load average"), "no load average in:\n{text}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// `keys` are present in `row`, and every number among them is finite and positive.
fn positive(row: &Value, keys: &[&str]) {
    for k in keys {
        let v = row
            .get(*k)
            .unwrap_or_else(|| panic!("no key {k} in {row:#}"));
        if let Some(x) = v.as_f64() {
            assert!(x.is_finite() && x > 0.0, "{k} = {x} in {row:#}");
        }
    }
}

/// The spread keys every row carries, for a subject and reference named so.
fn spread(row: &Value, subject: &str, reference: &str) {
    let (s, r) = (subject.to_string(), reference.to_string());
    let keys = [
        s.clone(),
        format!("{s}_min"),
        format!("{s}_max"),
        r.clone(),
        format!("{r}_min"),
        format!("{r}_max"),
        "ratio".into(),
        "ratio_min".into(),
        "ratio_max".into(),
        "repeat".into(),
    ];
    positive(row, &keys.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(row["noisy"].is_boolean(), "noisy in {row:#}");
    assert_eq!(row["repeat"], 1);
}

fn load(report: &Value) {
    for k in ["loadavg_start", "loadavg_end"] {
        let l = report[k].as_array().unwrap_or_else(|| panic!("no {k}"));
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)));
    }
}

#[test]
fn bench_link_tcp_and_shm() {
    for t in ["tcp", "shm"] {
        let r = bench(&[
            "link",
            "--transport",
            t,
            "--size",
            "64KiB",
            "--iters",
            "5",
            "--repeat",
            "1",
        ]);
        spread(&r, "gbps", "reference_gbps");
        positive(&r, &["bytes", "p50_us", "p99_us", "mean_us", "messages"]);
        assert_eq!(r["transport"], t);
        load(&r);
    }
}

#[test]
fn bench_allreduce_tcp_and_shm() {
    for t in ["tcp", "shm"] {
        let r = bench(&[
            "allreduce",
            "--world",
            "2",
            "--transport",
            t,
            "--sizes",
            "4KiB,256KiB",
            "--iters",
            "5",
            "--repeat",
            "1",
        ]);
        load(&r);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            spread(row, "busbw_gbps", "reference_gbps");
            positive(row, &["bytes", "p50_us", "p99_us", "algbw_gbps", "iters"]);
            // busbw = algbw x 2(n-1)/n, which is algbw itself for two processes.
            let (a, b) = (row["algbw_gbps"].as_f64(), row["busbw_gbps"].as_f64());
            assert!((a.unwrap() - b.unwrap()).abs() <= 1e-9 * a.unwrap());
        }
    }
}

#[test]
fn bench_train_one_and_two_workers() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist-mlp/cluster.toml");
    let r = bench(&[
        "train",
        "--manifest",
        manifest.to_str().unwrap(),
        "--workers",
        "1,2",
        "--transport",
        "shm",
        "--set",
        "job.rounds=20",
        "--repeat",
        "1",
    ]);
    load(&r);
    positive(&r, &["rows_per_worker", "rounds_1_worker"]);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r:#}");
    assert_eq!(rows[0]["subject"], "2 workers");
    assert_eq!(rows[1]["reference"], "direct loop");
    for row in rows {
        spread(row, "samples_per_s", "reference_samples_per_s");
        positive(&row["round_time"], &["total_ms", "compute_ms"]);
        for k in ["communication_ms", "waiting_ms"] {
            let v = row["round_time"][k].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
        }
    }
}
