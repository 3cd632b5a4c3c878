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
    let three = |l: &Value, k: &str| {
        let l = l
            .as_array()
            .unwrap_or_else(|| panic!("no {k} in {report:#}"));
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)));
    };
    for k in ["loadavg_start", "loadavg_end"] {
        three(&report[k], k);
    }
    for k in ["start", "end"] {
        three(&report["loadavg"][k], k);
    }
}

/// `placement`: the mode and one allowed CPU per rank (`--cpus auto`, the default: rank i on the
/// i-th allowed CPU), and the line that says so.
fn placement(report: &Value, world: usize) {
    let p = &report["placement"];
    assert_eq!(p["mode"], "auto", "{p:#}");
    let allowed: Vec<u64> = p["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(!allowed.is_empty(), "{p:#}");
    let cpus: Vec<u64> = p["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(cpus.len(), world, "{p:#}");
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(*c, allowed[i % allowed.len()], "{p:#}");
    }
}

/// `attempts` (1 to 3, the default `--attempts`) and one `discarded` entry, with the ratio set
/// aside, per extra attempt.
fn attempts(report: &Value) {
    let n = report["attempts"].as_u64().unwrap_or(0);
    assert!((1..=3).contains(&n), "{report:#}");
    let d = report["discarded"].as_array().expect("discarded");
    assert_eq!(d.len() as u64, n - 1, "{report:#}");
    for x in d {
        assert!(x["ratio"].is_number() || x["ratio"].is_array(), "{x:#}");
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
        placement(&r, 2);
        // TCP_INFO of the data connections (none above 1 MiB in so short a run, but a list).
        assert_eq!(r["tcp"].is_array(), t == "tcp", "{r:#}");
        attempts(&r);
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
        placement(&r, 2);
        attempts(&r);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            spread(row, "busbw_gbps", "reference_gbps");
            assert_eq!(row["tcp"].is_array(), t == "tcp", "{row:#}");
            positive(row, &["bytes", "p50_us", "p99_us", "algbw_gbps", "iters"]);
            // busbw = algbw x 2(n-1)/n, which is algbw itself for two processes.
            let (a, b) = (row["algbw_gbps"].as_f64(), row["busbw_gbps"].as_f64());
            assert!((a.unwrap() - b.unwrap()).abs() <= 1e-9 * a.unwrap());
        }
    }
}

/// `--cpus C,C` (both ranks and both reference endpoints on the first allowed CPU, C) and `--cpus
/// none` run too, and say so; a CPU outside the allowed set is refused.
#[test]
fn bench_cpus_list_and_none() {
    let c = lockstep::bench::placement::allowed_cpus()[0];
    let (same, one) = (format!("{c},{c}"), c.to_string());
    let small = ["--iters", "5", "--repeat", "1"];
    let link = [
        "link",
        "--transport",
        "tcp",
        "--size",
        "64KiB",
        "--cpus",
        &same,
    ];
    let r = bench(&[&link[..], &small].concat());
    assert_eq!(r["placement"]["mode"], "list");
    assert_eq!(r["placement"]["cpus"], serde_json::json!([c, c]));
    spread(&r, "gbps", "reference_gbps");
    let ar = [
        "allreduce",
        "--world",
        "2",
        "--transport",
        "tcp",
        "--sizes",
        "64KiB",
        "--cpus",
        &one,
    ];
    let r = bench(&[&ar[..], &small].concat());
    assert_eq!(r["placement"]["cpus"], serde_json::json!([c, c]));
    spread(&r["rows"][0], "busbw_gbps", "reference_gbps");
    let shm = [
        "link",
        "--transport",
        "shm",
        "--size",
        "64KiB",
        "--cpus",
        "none",
    ];
    let r = bench(&[&shm[..], &small].concat());
    assert_eq!(r["placement"]["mode"], "none");
    assert!(r["placement"]["cpus"].is_null());
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["bench", "link", "--cpus", "0,100000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CPU 100000"), "{err}");
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

#[test]
fn bench_sparse_two_table_sizes_and_the_dense_reference() {
    let r = bench(&[
        "sparse",
        "--rows",
        "20000",
        "--dim",
        "8",
        "--workers",
        "2",
        "--servers",
        "2",
        "--global-batch",
        "256",
        "--rounds",
        "10",
    ]);
    load(&r);
    positive(&r, &["dense_allreduce_bytes", "dense_allreduce_p50_us"]);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r:#}");
    assert_eq!(rows[0]["table_rows"], 20000);
    assert_eq!(rows[1]["table_rows"], 200);
    for row in rows {
        positive(
            row,
            &[
                "rounds",
                "rounds_per_s",
                "bytes_per_round_per_worker",
                "rows_held",
                "bytes_held",
            ],
        );
    }
}
