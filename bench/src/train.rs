//! `lockstep bench train`: training throughput of a manifest (default
//! `examples/mnist-mlp/cluster.toml`) at a fixed number of rows per worker per round, run with
//! 1 worker, with N workers, and as a direct loop with no runtime around it.
//!
//! Each launch is this binary's `lockstep launch` with `--workers N`, `--transport`,
//! `--set job.global_batch=<rows x N>`, a fresh run directory and `--report`; its
//! `samples_per_s` (measured by the coordinator over the training rounds, so process start-up
//! and data loading are not counted) and `round_time` split come from the report. Evaluation
//! runs once at the end only (`job.eval_every` is set past the last round). The direct loop
//! builds the same model, optimizer and training split from the manifest in this process and
//! runs forward/backward and the optimizer step on batches of `rows` rows for as many rounds
//! as the 1-worker launch.
//!
//! Per repetition the order is: 1 worker, each N > 1, direct loop. Rows: N workers against 1
//! worker (scaling), and 1 worker against the direct loop (the runtime's overhead).

use super::repeat::{interleave, print_table, write_json, Chunk, Load, Paired, Spread};
use crate::cli::TrainBenchArgs;
use crate::{BenchError, Result};
use lockstep_runtime::{job, Manifest};
use lockstep_trainer::data::{epoch_permutation, Split};
use serde_json::{Map, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `round_time` keys of a launch report, in table order.
const SPLIT: [&str; 4] = ["total_ms", "compute_ms", "communication_ms", "waiting_ms"];

/// What one launch reported.
#[derive(Debug, Clone, Default)]
struct Launched {
    samples_per_s: f64,
    round_time: [f64; 4],
}

/// Parent side.
///
/// # Errors
/// What failed (with the tail of a failed launch's output).
pub fn run(args: &TrainBenchArgs) -> Result<()> {
    let counts = worker_counts(args)?;
    let exe = std::env::current_exe().map_err(BenchError::io("finding the lockstep binary"))?;
    let tmp = std::env::temp_dir().join(format!("lockstep-bench-train-{}", std::process::id()));
    create_dir(&tmp)?;
    let mut direct = Direct::new(args)?;
    let mut launched: Vec<Vec<Launched>> = vec![Vec::new(); counts.len()];
    let mut load = Load::start();
    let samples = interleave(args.repeat.max(1), counts.len() + 1, 1, |step, rep| {
        let per_s = |work: f64| Chunk { work, secs: 1.0 };
        if step == counts.len() {
            return direct.sample().map(per_s);
        }
        let dir = tmp.join(format!("r{rep}-w{}", counts[step]));
        let l = launch(&exe, args, counts[step], &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let l = l?;
        launched[step].push(l.clone());
        Ok::<Chunk, BenchError>(per_s(l.samples_per_s))
    });
    load.finish();
    let _ = std::fs::remove_dir_all(&tmp);
    let samples = samples?;
    let one = &samples[0];
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    let split_of = |i: usize| {
        let mut m = Map::new();
        for (k, key) in SPLIT.iter().enumerate() {
            let v: Vec<f64> = launched[i].iter().map(|l| l.round_time[k]).collect();
            m.insert((*key).into(), Value::from(Spread::of(&v).median));
        }
        m
    };
    let mut add = |subject: String, reference: &str, p: Paired, extra: Map<String, Value>| {
        let mut row = Map::new();
        row.insert("subject".into(), Value::from(subject.clone()));
        row.insert("reference".into(), Value::from(reference));
        row.extend(p.json("samples_per_s", "reference_samples_per_s"));
        row.extend(extra);
        rows.push(Value::Object(row));
        cells.push(vec![
            subject,
            reference.to_string(),
            p.subject.cell(0),
            p.reference.cell(0),
            p.ratio.cell(3),
            p.flag().to_string(),
        ]);
    };
    for (i, &n) in counts.iter().enumerate().skip(1) {
        let mut extra = Map::new();
        extra.insert("workers".into(), Value::from(n));
        extra.insert("round_time".into(), Value::Object(split_of(i)));
        extra.insert("reference_round_time".into(), Value::Object(split_of(0)));
        let p = Paired::new(&samples[i], one);
        add(format!("{n} workers"), "1 worker", p, extra);
    }
    let mut extra = Map::new();
    extra.insert("workers".into(), Value::from(1));
    extra.insert("round_time".into(), Value::Object(split_of(0)));
    let p = Paired::new(one, &samples[counts.len()]);
    add("1 worker".into(), "direct loop", p, extra);
    println!(
        "train: {}, transport {}, {} rows per worker per round, {} rounds at 1 worker, repeat {}",
        args.manifest.display(),
        args.transport,
        args.rows_per_worker,
        direct.rounds,
        args.repeat.max(1)
    );
    let header = [
        "subject",
        "reference",
        "samples/s",
        "reference samples/s",
        "ratio",
        "",
    ];
    print_table(&header, &cells);
    print_split(&counts, split_of);
    println!("{}", load.line());
    if let Some(p) = &args.json {
        let mut report = Map::new();
        report.insert(
            "manifest".into(),
            Value::from(args.manifest.display().to_string()),
        );
        report.insert("transport".into(), Value::from(args.transport.clone()));
        report.insert("rows_per_worker".into(), Value::from(args.rows_per_worker));
        report.insert("rounds_1_worker".into(), Value::from(direct.rounds));
        report.insert("repeat".into(), Value::from(args.repeat.max(1)));
        load.add_json(&mut report);
        report.insert("rows".into(), Value::Array(rows));
        write_json(p, &Value::Object(report))?;
    }
    Ok(())
}

/// `--workers` as counts: 1 first, then each N > 1 once, ascending (after checking the other
/// arguments).
fn worker_counts(args: &TrainBenchArgs) -> Result<Vec<usize>> {
    let mut counts: Vec<usize> = args
        .workers
        .split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .map_err(|_| BenchError::BadWorkers { entry: w.into() })
        })
        .collect::<Result<_, _>>()?;
    counts.retain(|&n| n > 1);
    counts.sort_unstable();
    counts.dedup();
    counts.insert(0, 1);
    if !["shm", "tcp"].contains(&args.transport.as_str()) || args.rows_per_worker == 0 {
        return Err(BenchError::TrainArgs);
    }
    Ok(counts)
}

/// The table of mean round times per worker count (`split_of(i)`: the `round_time` medians of
/// `counts[i]` workers).
fn print_split(counts: &[usize], split_of: impl Fn(usize) -> Map<String, Value>) {
    println!("mean round time in ms (median over repetitions):");
    let split_cells: Vec<Vec<String>> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let m = split_of(i);
            let mut c = vec![n.to_string()];
            c.extend(
                SPLIT
                    .iter()
                    .map(|k| format!("{:.3}", m[*k].as_f64().unwrap_or(0.0))),
            );
            c
        })
        .collect();
    print_table(
        &["workers", "round", "compute", "communication", "waiting"],
        &split_cells,
    );
}

/// The `--set` overrides of a run with `workers` workers (the bench's first, the user's last).
fn sets(args: &TrainBenchArgs, workers: usize) -> Vec<String> {
    let mut s = vec![
        format!("job.global_batch={}", args.rows_per_worker * workers),
        "job.eval_every=1000000000000".to_string(),
    ];
    s.extend(args.sets.iter().cloned());
    s
}

/// One `lockstep launch` with `workers` workers in run directory `dir`; what its report says.
fn launch(exe: &Path, args: &TrainBenchArgs, workers: usize, dir: &Path) -> Result<Launched> {
    let mut extra: Vec<String> = vec![
        "--workers".into(),
        workers.to_string(),
        "--transport".into(),
        args.transport.clone(),
    ];
    for s in sets(args, workers) {
        extra.extend(["--set".to_string(), s]);
    }
    let (v, _) = launch_manifest(exe, &args.manifest, &extra, workers, dir)?;
    let report = dir.join("report.json");
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let samples_per_s = f(&v, "samples_per_s").ok_or_else(|| BenchError::ReportField {
        path: report.clone(),
        key: "samples_per_s",
    })?;
    let rt = v.get("round_time").cloned().unwrap_or(Value::Null);
    Ok(Launched {
        samples_per_s,
        round_time: SPLIT.map(|k| f(&rt, k).unwrap_or(0.0)),
    })
}

/// `lockstep launch MANIFEST EXTRA.. --run-dir DIR --report DIR/report.json` (this binary), bounded
/// at 15 minutes: its report and its log (every node's lines). `workers` names it in errors.
///
/// # Errors
/// It could not start, timed out or failed (with the tail of its log), or its report is
/// unreadable.
pub(crate) fn launch_manifest(
    exe: &Path,
    manifest: &Path,
    extra: &[String],
    workers: usize,
    dir: &Path,
) -> Result<(Value, String)> {
    create_dir(dir)?;
    let report = dir.join("report.json");
    let log_path = dir.join("launch.log");
    let log = std::fs::File::create(&log_path).map_err(BenchError::io("creating launch.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("launch").arg(manifest).args(extra);
    cmd.arg("--run-dir").arg(dir).arg("--report").arg(&report);
    let stderr = log
        .try_clone()
        .map_err(BenchError::io("opening launch.log"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|source| BenchError::Start {
            program: "lockstep launch".into(),
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(BenchError::io("waiting for lockstep launch"))?
        {
            break st;
        }
        if Instant::now() > deadline {
            // SIGINT first: launch forwards it to its nodes and stops them.
            let _ = interrupt(child.id());
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::LaunchTimedOut { workers });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(BenchError::LaunchFailed {
            workers,
            status,
            log_tail: tail.join("\n"),
        });
    }
    let body = std::fs::read_to_string(&report).map_err(|source| BenchError::ReadFile {
        path: report.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&body).map_err(|source| BenchError::BadReport {
        path: report.clone(),
        source,
    })?;
    Ok((v, text))
}

/// Make `dir` (and its parents).
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Ask process `pid` to stop (SIGINT).
fn interrupt(pid: u32) -> i32 {
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) }
}

/// The direct loop: the manifest's model, optimizer and training split in this process.
struct Direct {
    manifest: Manifest,
    split: std::sync::Arc<Split>,
    rounds: u64,
}

impl Direct {
    fn new(args: &TrainBenchArgs) -> Result<Direct> {
        let manifest = Manifest::load(&args.manifest, &sets(args, 1))?;
        let split = job::load_split(&manifest)?;
        let rounds = job::total_rounds(&manifest, split.train_rows())?;
        Ok(Direct {
            manifest,
            split,
            rounds,
        })
    }

    /// Train a fresh model for `rounds` rounds of `--rows-per-worker` rows; samples/s of the loop (model
    /// building not counted; batch gathering, forward/backward and the step are).
    fn sample(&mut self) -> Result<f64> {
        let m = &self.manifest;
        let train = &self.split.train;
        let mut model = job::build(m, &self.split)?;
        let mut opt = job::optimizer(&m.job.optimizer, model.as_ref())?;
        let mut grads = vec![0.0f32; model.params().len()];
        let plan = job::plan(m, train.rows);
        let (mut cursor, mut epoch) = (plan.cursor_at(0), u64::MAX);
        let mut perm = Vec::new();
        let mut samples = 0usize;
        let t = Instant::now();
        for _ in 0..self.rounds {
            if cursor.epoch != epoch {
                epoch = cursor.epoch;
                perm = epoch_permutation(train.rows, m.job.seed, epoch);
            }
            let batch = train.batch(plan.global_batch(&perm, cursor));
            let out = model.forward_backward(&batch, &mut grads, &mut |_, g| {
                std::hint::black_box(g);
            })?;
            opt.step(model.params_mut(), &grads)?;
            if !out.loss.is_finite() {
                return Err(BenchError::NonFiniteLoss { loss: out.loss });
            }
            samples += batch.rows;
            cursor = plan.advance(cursor);
        }
        Ok(samples as f64 / t.elapsed().as_secs_f64().max(1e-9))
    }
}
