//! A trained recommender leaves with its tables: the first worker writes every shard's rows to
//! `model.tables.safetensors` beside the model, and `lockstep predict` with that model scores the
//! held-out ratings exactly as the run's own held-out evaluation did. Real processes, real
//! MovieLens ratings.

mod common;
use common::movielens::*;
use common::parquet_fixtures::read_parquet;
use common::*;

fn predict(
    m: &str,
    model: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Output {
    let args = [
        "predict",
        m,
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    run(&args, LIMIT)
}

/// The number after `mse ` in `predict`'s metrics line.
fn printed_mse(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("metrics against the label column"))
        .unwrap_or_else(|| panic!("no metrics line:\n{text}"));
    let at = line.find("mse ").expect("an mse") + 4;
    line[at..]
        .split([',', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn predict_with_the_stored_tables_scores_the_held_out_ratings_as_the_run_did() {
    let dir = run_dir("movielens-predict");
    let data = cut(dir.path(), Some(30_000));
    let job = "epochs = 3\nglobal_batch = 1024\nmicro_batches = 4";
    let opt = "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03";
    let m = manifest(dir.path(), &data, "mf", job, &tables(16, None, opt));
    let report = launch_ok(&m, &dir.path().join("run"), &[]);
    let run_mse = num(&report, &["eval", "mse"]);
    let model = dir.path().join("run/model.safetensors");
    let stored = dir.path().join("run/model.tables.safetensors");
    assert!(stored.exists(), "no tables beside the model");

    let split_dir = dir.path().join("split");
    let ms = m.to_str().unwrap();
    assert_ok(&run(
        &["split", ms, "--out", split_dir.to_str().unwrap()],
        LIMIT,
    ));
    let test = split_dir.join("test.parquet");
    let out = dir.path().join("pred.parquet");
    let p = predict(ms, &model, &test, &out);
    assert_ok(&p);
    let mse = printed_mse(&String::from_utf8_lossy(&p.stdout));
    eprintln!("held-out mse: the run {run_mse:.6}, lockstep predict {mse:.6}");
    assert!(
        (mse - run_mse).abs() <= 1e-4 * run_mse,
        "predict's mse {mse} differs from the run's held-out mse {run_mse}"
    );
    let rows = read_parquet(&out).num_rows();
    assert!(
        rows > 0 && rows == read_parquet(&test).num_rows(),
        "{rows} rows"
    );

    // Without its tables the model cannot predict: a clear error naming the file.
    std::fs::remove_file(&stored).unwrap();
    let p = predict(ms, &model, &test, &dir.path().join("pred2.parquet"));
    let text = output(&p);
    assert!(!p.status.success(), "{text}");
    assert!(text.contains("model.tables.safetensors"), "{text}");
}
