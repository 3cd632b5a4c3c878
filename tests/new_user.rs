//! What a new user meets following the docs literally: the stream quick start
//! (docs/streaming.md, examples/stream/credit.toml) leaves `metrics.csv` and `curves.svg` like
//! every run, with its prequential metrics over rounds and rows, and a summary without epochs;
//! `lockstep plot` on a directory without metrics says so in words; `lockstep predict` on the
//! credit model names the negative class by the label's own value (`good`), not `not bad`.

mod common;
#[path = "common/stream.rs"]
mod stream;

use common::*;
use std::time::Duration;
use stream::*;

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn a_stream_run_writes_metrics_and_curves_of_its_prequential_metrics() {
    let dir = run_dir("new-user-stream");
    let job = spawn_launch(dir.path(), &[]);
    let b = bootstrap(dir.path());
    let data = credit();
    let half = ROWS / 2;
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, half..ROWS, 256));
    assert_eq!(send_rust(&b, 0, &data, 0..half, 256), Ok((half as u64, 0)));
    assert_eq!(p1.join().unwrap(), Ok((half as u64, 0)));
    let (_, report) = finish(job, dir.path());
    // 2 x 2227 rows in rounds of 16 per producer: 139 rounds of 32 rows.
    let rounds = num(&report, &["rounds"]) as u64;
    assert_eq!(rounds, 139, "{report}");
    // report.json keeps its fields (epochs stays, 0 for a stream).
    assert!(report.get("epochs").is_some(), "{report}");

    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).expect("metrics.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(
        header[..5],
        ["round", "rows", "elapsed_s", "train_loss", "samples_per_s"],
        "{csv}"
    );
    for col in ["preq_accuracy", "preq_auc", "preq_loss", "eval_auc"] {
        assert!(header.contains(&col), "no {col} in {csv}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // Held-out evaluations every 50 rounds, then the last round with its prequential metrics.
    let at: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(at, ["50", "100", "139"], "{csv}");
    assert_eq!(rows[2][1], "4448", "rows trained after round 139: {csv}");
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let last_auc: f64 = rows[2][col("preq_auc")].parse().expect("a number");
    let reported = num(&report, &["stream", "prequential", "auc"]);
    assert!(
        (last_auc - reported).abs() < 1e-9,
        "the last row's prequential auc {last_auc} is the report's {reported}"
    );
    assert_eq!(
        rows[2][col("eval_auc")],
        "",
        "round 139 did not evaluate: {csv}"
    );

    let svg = std::fs::read_to_string(dir.path().join("curves.svg")).expect("curves.svg");
    for text in ["preq_auc", "eval_auc", "train_loss", "rows trained"] {
        assert!(svg.contains(text), "curves.svg has no {text}");
    }
    // `lockstep plot` renders it again, as the README says.
    std::fs::remove_file(dir.path().join("curves.svg")).unwrap();
    let out = run(&["plot", dir.path().to_str().unwrap()], LIMIT);
    assert_ok(&out);
    assert!(dir.path().join("curves.svg").exists());

    // The summary speaks of rows, not of `0.00 epochs`.
    let out = run(&["report", dir.path().to_str().unwrap()], LIMIT);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("epochs"), "{text}");
    assert!(
        text.contains("finished: 139 rounds, 4448 rows trained")
            && text.contains("4454 rows received from 2 producers")
            && text.contains("prequential over the last 1000 rows: accuracy "),
        "{text}"
    );
    assert!(
        text.contains("metrics.csv") && text.contains("curves.svg"),
        "{text}"
    );
}

#[test]
fn plot_without_metrics_says_so_in_words() {
    let dir = run_dir("new-user-plot");
    let out = run(&["plot", dir.path().to_str().unwrap()], LIMIT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("metrics.csv");
    assert!(
        err.contains(&format!(
            "{}: not found: this run wrote no metrics",
            file.display()
        )),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");

    let missing = dir.path().join("no-such-run");
    let out = run(&["plot", missing.to_str().unwrap()], LIMIT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: no such directory", missing.display())),
        "{err}"
    );
}

#[test]
fn predict_names_the_negative_class_by_the_labels_own_value() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::Array;
    let dir = run_dir("new-user-predict");
    let (out, report) = launch(
        "examples/credit/cluster.toml",
        dir.path(),
        &["--set", "job.epochs=1"],
        LIMIT,
    );
    assert_ok(&out);
    assert!(report.is_some());
    // The classes stored with the model: the label's own values, negative first.
    let transform: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("model.transform.json")).expect("model.transform.json"),
    )
    .expect("model.transform.json parses");
    assert_eq!(
        transform["label"]["classes"],
        serde_json::json!(["good", "bad"]),
        "{transform}"
    );

    let model = dir.path().join("model.safetensors");
    let scored = dir.path().join("scored.parquet");
    let data = root().join("examples/data/credit_data.parquet");
    let out = run(
        &[
            "predict",
            "examples/credit/cluster.toml",
            "--model",
            model.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--output",
            scored.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_ok(&out);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&scored).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let (mut good, mut bad, mut rows) = (0, 0, 0);
    for b in reader {
        let b = b.unwrap();
        let p = b
            .column_by_name("probability")
            .unwrap()
            .as_primitive::<Float32Type>();
        let c = b.column_by_name("predicted").unwrap().as_string::<i32>();
        for i in 0..c.len() {
            let expect = if p.value(i) >= 0.5 { "bad" } else { "good" };
            assert_eq!(c.value(i), expect, "row {}", rows + i);
            match c.value(i) {
                "good" => good += 1,
                _ => bad += 1,
            }
        }
        rows += c.len();
    }
    assert_eq!(rows, ROWS);
    assert!(good > 0 && bad > 0, "{good} good, {bad} bad");
}

#[test]
fn node_help_names_every_cluster_manager_environment() {
    let out = run(&["node", "--help"], LIMIT);
    assert_ok(&out);
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "JOB_COMPLETION_INDEX",
    ] {
        assert!(
            help.contains(var),
            "`lockstep node --help` has no {var}:\n{help}"
        );
    }
}
