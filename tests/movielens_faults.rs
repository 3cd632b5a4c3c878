//! Embedding models' failures with real processes: bad ids and specs and a killed shard (a
//! worker, or a server node holding tables), each stopping the run with a named error (resuming
//! and restarting with tables: tests/movielens_resume.rs).

mod common;
use common::movielens::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cut of 2,000 ratings with two extra columns: `frac` (1.0, but 2.5 in every 50th row) and `name`
/// (strings); and the same with row 5's userId missing.
fn bad_data(dir: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(ratings()).unwrap();
    let mut lines: Vec<String> = text.lines().take(2001).map(String::from).collect();
    lines[0].push_str(",frac,name");
    for (i, l) in lines.iter_mut().enumerate().skip(1) {
        let frac = if i % 50 == 7 { 2.5 } else { 1.0 };
        l.push_str(&format!(",{frac},u{}", i % 10));
    }
    let data = dir.join("bad.csv");
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let comma = lines[5].find(',').unwrap();
    lines[5] = lines[5][comma..].to_string();
    let nulls = dir.join("nulls.csv");
    std::fs::write(&nulls, lines.join("\n") + "\n").unwrap();
    (data, nulls)
}

/// The column of the second table of `model`.
fn second(model: &str) -> &str {
    let at = model.rfind("column = \"").unwrap() + "column = \"".len();
    &model[at..at + model[at..].find('"').unwrap()]
}

#[test]
fn bad_input_stops_the_run_with_a_named_error() {
    let dir = run_dir("movielens-bad");
    let (data, nulls) = bad_data(dir.path());
    let job = "epochs = 1\nglobal_batch = 64";
    let two = |col: &str, dim: usize, extra: &str| {
        format!(
            "[[job.model.embeddings]]\ncolumn = \"userId\"\ndim = 4\n{extra}\n\
             [[job.model.embeddings]]\ncolumn = \"{col}\"\ndim = {dim}\n"
        )
    };
    let cases: Vec<(&str, &Path, String, &[&str], &str)> = vec![
        (
            "dim = 0",
            &data,
            two("movieId", 0, ""),
            &[],
            "embeddings[1].dim",
        ),
        (
            "a fraction as an id",
            &data,
            two("frac", 4, ""),
            &[],
            "embedding column \"frac\", row",
        ),
        (
            "pooling on a numeric id column",
            &data,
            two("movieId", 4, "") + "pooling = \"sum\"\n",
            &[],
            "id column 'movieId': pooling and separator apply to a text column",
        ),
        (
            "more shards than rows",
            &data,
            two("movieId", 4, "buckets = 1"),
            &[],
            "embeddings[0].buckets",
        ),
        ("a null id", &nulls, two("movieId", 4, ""), &[], "userId"),
        (
            "parameter-server aggregation",
            &data,
            two("movieId", 4, ""),
            &["--aggregation", "parameter-server"],
            "job.aggregation",
        ),
    ];
    for (what, path, model, extra, needle) in cases {
        let m = manifest(dir.path(), path, "mf", job, &model);
        let text = std::fs::read_to_string(&m).unwrap();
        // Only the columns of the tables are features (a raw movieId as a dense feature would
        // make the loss diverge before the point of the case is reached).
        let cols = format!("features = [\"userId\", \"{}\"]", second(&model));
        let text = text.replace("features = [\"userId\", \"movieId\"]", &cols);
        std::fs::write(&m, text).unwrap();
        let (out, _) = launch(m.to_str().unwrap(), &dir.path().join("run"), extra, LIMIT);
        let text = output(&out);
        assert!(!out.status.success(), "{what}: the run succeeded:\n{text}");
        assert!(text.contains(needle), "{what}: no {needle:?} in:\n{text}");
    }
}

/// Kill `victim` of a long run of `m` after two epochs; the run must stop and name it.
fn kill_mid_run(m: &Path, run: &Path, victim: &str) {
    let r = run.to_str().unwrap();
    let child = spawn_launch(m, run, &[]);
    // Wait (bounded) until two epochs are done: every worker is pulling and pushing rows.
    let metrics = run.join("metrics.csv");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            start.elapsed() < LIMIT,
            "no progress in {}",
            metrics.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_node(run, victim);
    let killed = std::time::Instant::now();
    let out = child.wait_with_deadline(Duration::from_secs(60));
    let text = output(&out);
    assert!(
        !out.status.success(),
        "the run survived a killed {victim}:\n{text}"
    );
    assert!(
        text.contains(victim),
        "the dead {victim} is not named:\n{text}"
    );
    eprintln!("stopped {:?} after {victim} was killed", killed.elapsed());
    let left = processes_mentioning(r);
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn a_killed_shard_stops_the_run_and_is_named() {
    let dir = run_dir("movielens-kill");
    let data = cut(dir.path(), Some(20_000));
    let job = "epochs = 1000\nglobal_batch = 512";
    let model = tables(16, None, "kind = \"sgd\"");
    let m = manifest(dir.path(), &data, "mf", job, &model);
    kill_mid_run(&m, &dir.path().join("run"), "worker-1");
    // Tables on server nodes: kill one of the two servers.
    let job = format!("{job}\naggregation = \"parameter-server\"");
    let m = manifest(dir.path(), &data, "mf", &job, &model);
    let nodes = "[[nodes]]\nname = \"server-0\"\nroles = [\"server\"]\n\n\
                 [[nodes]]\nname = \"server-1\"\nroles = [\"server\"]\n\n[job]\n";
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replacen("[job]\n", nodes, 1);
    std::fs::write(&m, text).unwrap();
    kill_mid_run(&m, &dir.path().join("run-ps"), "server-1");
}
