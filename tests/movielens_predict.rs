//! A trained recommender leaves with its tables: the first worker writes every shard's rows to
//! `model.tables.safetensors` beside the model, and `lockstep predict` with that model scores the
//! held-out ratings exactly as the run's own held-out evaluation did. Real processes, real
//! MovieLens ratings.

mod common;
use common::movielens::*;
use common::parquet_fixtures::read_parquet;
use common::*;

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
    let p = predict_file(ms, &model, &test, &out);
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
    let p = predict_file(ms, &model, &test, &dir.path().join("pred2.parquet"));
    let text = output(&p);
    assert!(!p.status.success(), "{text}");
    assert!(text.contains("model.tables.safetensors"), "{text}");
}

/// Column `name` of `b` as f64 (any numeric type).
fn col(b: &arrow_array::RecordBatch, name: &str) -> Vec<f64> {
    let a = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = arrow_cast::cast(a, &arrow_schema::DataType::Float64).unwrap();
    let a = a
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    a.values().to_vec()
}

#[test]
fn top_k_ranks_unseen_items_by_the_models_own_scores() {
    let dir = run_dir("movielens-topk");
    let data = cut(dir.path(), Some(20_000));
    let job = "epochs = 2\nglobal_batch = 1024\nmicro_batches = 4";
    let opt = "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03";
    let m = manifest(dir.path(), &data, "mf", job, &tables(16, None, opt));
    launch_ok(&m, &dir.path().join("run"), &[]);
    let (ms, model) = (
        m.to_str().unwrap(),
        dir.path().join("run/model.safetensors"),
    );
    let split_dir = dir.path().join("split");
    assert_ok(&run(
        &["split", ms, "--out", split_dir.to_str().unwrap()],
        LIMIT,
    ));
    let train = read_parquet(&split_dir.join("train.parquet"));
    let (tu, ti) = (col(&train, "userId"), col(&train, "movieId"));
    let catalogue: std::collections::BTreeSet<u64> = ti.iter().map(|&i| i as u64).collect();
    let rated: std::collections::HashSet<(u64, u64)> = tu
        .iter()
        .zip(&ti)
        .map(|(&u, &i)| (u as u64, i as u64))
        .collect();

    let users = dir.path().join("users.csv");
    std::fs::write(&users, "userId\n7\n1\n7\n15\n").unwrap();
    let top = dir.path().join("top.parquet");
    let (k, model_s) = ("5", model.to_str().unwrap());
    let args = ["predict", ms, "--model", model_s, "--top-k", k, "--users"];
    let out = run(
        &[
            &args[..],
            &[users.to_str().unwrap(), "--output", top.to_str().unwrap()],
        ]
        .concat(),
        LIMIT,
    );
    assert_ok(&out);
    let b = read_parquet(&top);
    let (u, i, s, r) = (
        col(&b, "userId"),
        col(&b, "movieId"),
        col(&b, "score"),
        col(&b, "rank"),
    );
    assert_eq!(
        u,
        [7.0; 5]
            .iter()
            .chain(&[1.0; 5])
            .chain(&[15.0; 5])
            .copied()
            .collect::<Vec<_>>()
    );
    for user in 0..3 {
        let at = user * 5;
        assert_eq!(&r[at..at + 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(s[at..at + 5].windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    }
    for (&uu, &ii) in u.iter().zip(&i) {
        assert!(
            catalogue.contains(&(ii as u64)),
            "{ii} is not a training item"
        );
        assert!(
            !rated.contains(&(uu as u64, ii as u64)),
            "user {uu} rated {ii} already"
        );
    }

    // The scores are the model's predictions for those pairs (`predict --input` agrees).
    let pairs = dir.path().join("pairs.csv");
    let text: String = u
        .iter()
        .zip(&i)
        .map(|(uu, ii)| format!("{uu},{ii}\n"))
        .collect();
    std::fs::write(&pairs, format!("userId,movieId\n{text}")).unwrap();
    let scored = dir.path().join("scored.parquet");
    let p = predict_file(ms, &model, &pairs, &scored);
    assert_ok(&p);
    let again = col(&read_parquet(&scored), "prediction");
    for (a, b) in s.iter().zip(&again) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }

    // Bad input is named.
    std::fs::write(&users, "someone\n1\n").unwrap();
    let out = run(
        &[
            &args[..],
            &[users.to_str().unwrap(), "--output", top.to_str().unwrap()],
        ]
        .concat(),
        LIMIT,
    );
    let text = output(&out);
    assert!(
        !out.status.success() && text.contains("users.csv") && text.contains("userId"),
        "{text}"
    );
    let zero = ["predict", ms, "--model", model_s, "--top-k", "0", "--users"];
    let out = run(
        &[
            &zero[..],
            &[users.to_str().unwrap(), "--output", top.to_str().unwrap()],
        ]
        .concat(),
        LIMIT,
    );
    assert!(output(&out).contains("at least 1"), "{}", output(&out));
}
