//! `lockstep bench sparse`: a recommender whose embedding tables are too large to allreduce every
//! round, trained through parameter-server nodes that hold the tables (sparse pulls and pushes),
//! next to the same job with tables 100x smaller, and the dense alternative measured in the same
//! run: an allreduce of the small tables' size among the workers (a lower bound on a dense round:
//! a dense model would also update every row every round).
//!
//! The data is synthetic and skewed (ids `floor(R * u^2)` for `u` uniform, so a few ids are hot,
//! as in real logs), two id columns hashed into `R` rows each (`buckets = R`), `dim` wide, SGD.
//! Each launch is this binary's `lockstep launch` of a generated manifest (a coordinator, the
//! workers, the server nodes; `aggregation = "parameter-server"`); rounds per second come from the
//! report, bytes per round from each worker's end-of-run line (`sparse_bytes_per_round`), rows
//! and bytes held from each server's.

use crate::cli::SparseBenchArgs;
use crate::repeat::{print_table, write_json, Load};
use crate::train::{create_dir, launch_manifest};
use crate::{BenchError, Result};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one launch measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    table_rows: u64,
    rounds: f64,
    rounds_per_s: f64,
    bytes_per_round: f64,
    rows_held: u64,
    bytes_held: u64,
}

/// Parent side.
///
/// # Errors
/// Bad arguments, a failed launch (with the tail of its log), or an unreadable report.
pub fn run(args: &SparseBenchArgs) -> Result<()> {
    if args.workers == 0 || args.servers == 0 || args.dim == 0 || args.rows < 100 {
        return Err(BenchError::SparseArgs);
    }
    let exe = std::env::current_exe().map_err(BenchError::io("finding the lockstep binary"))?;
    let tmp = std::env::temp_dir().join(format!("lockstep-bench-sparse-{}", std::process::id()));
    create_dir(&tmp)?;
    let data = tmp.join("ratings.csv");
    write_data(&data, args)?;
    let mut load = Load::start();
    let sizes = [args.rows, args.rows / 100];
    let mut runs = Vec::new();
    for (i, &rows) in sizes.iter().enumerate() {
        let dir = tmp.join(format!("run{i}"));
        let m = write_manifest(&tmp, &data, args, rows, i)?;
        let (report, log) = launch_manifest(&exe, &m, &[], args.workers, &dir)?;
        runs.push(measured(rows, &report, &log, args));
    }
    let dense_bytes = 2 * (args.rows / 100) * (args.dim as u64 + 1) * 4;
    let dense_us = dense_allreduce(&exe, args, dense_bytes, &tmp)?;
    load.finish();
    let _ = std::fs::remove_dir_all(&tmp);
    report(args, &runs, dense_bytes, dense_us, &load)
}

/// `global_batch x rounds` training rows and 1% held out: `userId,itemId,rating`.
fn write_data(path: &Path, args: &SparseBenchArgs) -> Result<()> {
    let n = (args.global_batch * args.rounds) as f64 / 0.99;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut text = String::with_capacity(n as usize * 24);
    text.push_str("userId,itemId,rating\n");
    let id = |rng: &mut rand::rngs::StdRng| {
        let u: f64 = rng.gen();
        (u * u * args.rows as f64) as u64
    };
    for _ in 0..n.ceil() as usize {
        let (u, i) = (id(&mut rng), id(&mut rng));
        let r = 1 + (u + i) % 5;
        let _ = writeln!(text, "{u},{i},{r}");
    }
    std::fs::write(path, text).map_err(BenchError::io("writing the synthetic ratings"))
}

/// The manifest of launch `i`: tables of `rows` rows each.
fn write_manifest(
    dir: &Path,
    data: &Path,
    args: &SparseBenchArgs,
    rows: u64,
    i: usize,
) -> Result<std::path::PathBuf> {
    let mut nodes =
        String::from("[[nodes]]\nname = \"coordinator\"\nroles = [\"coordinator\"]\n\n");
    for w in 0..args.workers {
        let _ = write!(
            nodes,
            "[[nodes]]\nname = \"worker-{w}\"\nroles = [\"worker\"]\n\n"
        );
    }
    for s in 0..args.servers {
        let _ = write!(
            nodes,
            "[[nodes]]\nname = \"server-{s}\"\nroles = [\"server\"]\n\n"
        );
    }
    let (dim, batch, transport) = (args.dim, args.global_batch, &args.transport);
    let table = |c: &str| {
        format!("[[job.model.embeddings]]\ncolumn = \"{c}\"\ndim = {dim}\nbuckets = {rows}\n\n")
    };
    let body = format!(
        "[cluster]\nname = \"bench-sparse\"\ntoken = \"env:LOCKSTEP_TOKEN\"\ntransport = \"{transport}\"\n\n\
         {nodes}[job]\nseed = 3\nepochs = 1\nglobal_batch = {batch}\naggregation = \"parameter-server\"\n\n\
         [job.data]\npath = {data:?}\nlabel = \"rating\"\ntask = \"regression\"\n\
         features = [\"userId\", \"itemId\"]\nmissing = \"error\"\ntest_fraction = 0.01\n\n\
         [job.model]\nkind = \"mf\"\n{}{}\
         [job.model.table_optimizer]\nkind = \"sgd\"\nlr = 0.05\n\n\
         [job.optimizer]\nkind = \"sgd\"\nlr = 0.1\n",
        table("userId"),
        table("itemId")
    );
    let path = dir.join(format!("sparse{i}.toml"));
    std::fs::write(&path, body).map_err(BenchError::io("writing a bench manifest"))?;
    Ok(path)
}

/// The figures of one launch: the report's, each worker's bytes per round, the servers' rows.
fn measured(table_rows: u64, report: &Value, log: &str, args: &SparseBenchArgs) -> Measured {
    let f = |k: &str| report.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let rounds = f("rounds");
    let logged = |node: &str, key: &str| -> Option<u64> {
        let line = log
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("[{node}]")) && l.contains(&format!("{key}=")))?;
        let at = line.find(&format!("{key}="))? + key.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let per_worker: Vec<u64> = (0..args.workers)
        .filter_map(|w| logged(&format!("worker-{w}"), "sparse_bytes_per_round"))
        .collect();
    let servers = |key: &str| -> u64 {
        (0..args.servers)
            .filter_map(|s| logged(&format!("server-{s}"), key))
            .sum()
    };
    Measured {
        table_rows,
        rounds,
        rounds_per_s: f("samples_per_s") / args.global_batch as f64,
        bytes_per_round: per_worker.iter().sum::<u64>() as f64 / per_worker.len().max(1) as f64,
        rows_held: servers("rows_held"),
        bytes_held: servers("bytes_held"),
    }
}

/// p50 microseconds of one allreduce of `bytes` among the workers (`lockstep bench allreduce`).
fn dense_allreduce(exe: &Path, args: &SparseBenchArgs, bytes: u64, tmp: &Path) -> Result<f64> {
    let json = tmp.join("dense.json");
    let out = Command::new(exe)
        .args(["bench", "allreduce", "--world", &args.workers.to_string()])
        .args([
            "--transport",
            &args.transport,
            "--sizes",
            &bytes.to_string(),
        ])
        .args(["--repeat", "1", "--iters", "3", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Start {
            program: "lockstep bench allreduce".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::LaunchFailed {
            workers: args.workers,
            status: out.status,
            log_tail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = std::fs::read_to_string(&json).map_err(|source| BenchError::ReadFile {
        path: json.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(BenchError::json("bench allreduce"))?;
    v["rows"][0]["p50_us"]
        .as_f64()
        .ok_or_else(|| BenchError::ReportField {
            path: json,
            key: "rows[0].p50_us",
        })
}

fn report(
    args: &SparseBenchArgs,
    runs: &[Measured],
    dense_bytes: u64,
    dense_us: f64,
    load: &Load,
) -> Result<()> {
    println!(
        "sparse: {} workers, {} server nodes, transport {}, 2 tables x dim {}, global batch {}, {} rounds",
        args.workers, args.servers, args.transport, args.dim, args.global_batch, args.rounds
    );
    let table_bytes = |rows: u64| 2 * rows * (args.dim as u64 + 1) * 4;
    let cells: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                format!("{}", r.table_rows),
                format!("{:.1} MB", table_bytes(r.table_rows) as f64 / 1e6),
                format!("{:.0}", r.rounds),
                format!("{:.1}", r.rounds_per_s),
                format!("{:.0}", r.bytes_per_round),
                format!("{}", r.rows_held),
                format!("{:.1} MB", r.bytes_held as f64 / 1e6),
            ]
        })
        .collect();
    let header = [
        "rows per table",
        "tables (f32)",
        "rounds",
        "rounds/s",
        "bytes/round/worker",
        "rows held",
        "held by servers",
    ];
    print_table(&header, &cells);
    let (big, small) = (&runs[0], &runs[1]);
    println!(
        "bytes per round: {:.3}x for tables {}x larger (they follow the touched rows)",
        big.bytes_per_round / small.bytes_per_round.max(1.0),
        big.table_rows / small.table_rows.max(1)
    );
    println!(
        "dense reference: one allreduce of the small tables ({:.1} MB) among {} workers takes {:.1} ms (p50), \
         so a dense round could not beat {:.1} rounds/s (sparse, small tables: {:.1}); the large tables \
         would move {:.2} GB per worker per round",
        dense_bytes as f64 / 1e6,
        args.workers,
        dense_us / 1e3,
        1e6 / dense_us.max(1e-9),
        small.rounds_per_s,
        table_bytes(big.table_rows) as f64 * 2.0 * (args.workers - 1) as f64
            / args.workers as f64
            / 1e9
    );
    println!("{}", load.line());
    let Some(path) = &args.json else {
        return Ok(());
    };
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("table_rows".into(), Value::from(r.table_rows));
            m.insert("rounds".into(), Value::from(r.rounds));
            m.insert("rounds_per_s".into(), Value::from(r.rounds_per_s));
            m.insert(
                "bytes_per_round_per_worker".into(),
                Value::from(r.bytes_per_round),
            );
            m.insert("rows_held".into(), Value::from(r.rows_held));
            m.insert("bytes_held".into(), Value::from(r.bytes_held));
            Value::Object(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("workers".into(), Value::from(args.workers));
    out.insert("servers".into(), Value::from(args.servers));
    out.insert("dim".into(), Value::from(args.dim));
    out.insert("rows".into(), Value::Array(rows));
    out.insert("dense_allreduce_bytes".into(), Value::from(dense_bytes));
    out.insert("dense_allreduce_p50_us".into(), Value::from(dense_us));
    load.add_json(&mut out);
    write_json(path, &Value::Object(out))
}
