//! `lockstep bench ingest`: how fast producers get rows into a stream job. N producer processes
//! (the `lockstep` binary, `--produce ID`) each send the manifest's warm-up sample `--repeat` times over
//! loopback to a `lockstep launch` of the stream manifest; in the same run the same rows are read
//! from the local Parquet file (decoded into Arrow record batches, as a file job does). Reported:
//! rows/s and MB/s (Arrow IPC bytes) of each, their ratio, and the job's own training rows/s.
//! The job's buffers are sized to hold every row, so producers are measured, not training.

use crate::cli::IngestBenchArgs;
use crate::repeat::write_json;
use crate::{BenchError, Result};
use arrow_array::RecordBatch;
use lockstep_runtime::stream::Producer;
use lockstep_runtime::{Manifest, Report};
use lockstep_trainer::data::FileRecords;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the producers wait for the stream job's bootstrap address.
const BOOTSTRAP_WAIT_S: u64 = 60;

fn sample(m: &Manifest) -> Result<Vec<RecordBatch>> {
    let spec = m.job.data.resolved(&m.base_dir);
    let (_, batches) =
        FileRecords::open(&spec.path, spec.format, &spec.label).and_then(|f| f.read_all())?;
    Ok(batches)
}

fn ipc_bytes(batches: &[RecordBatch]) -> Result<usize> {
    let arrow = |source| BenchError::Arrow { source };
    let schema = batches.first().ok_or(BenchError::EmptySample)?.schema();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(arrow)?;
    for b in batches {
        w.write(b).map_err(arrow)?;
    }
    w.into_inner().map(|v| v.len()).map_err(arrow)
}

/// Run the benchmark (or, with `--produce`, one producer process of it).
///
/// # Errors
/// What failed, naming the producer, file or run directory.
pub fn run(args: &IngestBenchArgs) -> Result<()> {
    if let Some(id) = args.produce {
        return produce(args, id);
    }
    let base = Manifest::load(&args.manifest, &[])?;
    let batches = sample(&base)?;
    let rows_per_pass: usize = batches.iter().map(|b| b.num_rows()).sum();
    let passes = args.repeat * args.producers as usize;
    let total_rows = (rows_per_pass * passes) as f64;
    let total_mb = (ipc_bytes(&batches)? * passes) as f64 / 1e6;

    // Reference: the same rows decoded from the local Parquet file.
    let t = Instant::now();
    for _ in 0..passes {
        sample(&base)?;
    }
    let parquet_s = t.elapsed().as_secs_f64();

    // Subject: a stream job fed by N producer processes.
    let dir = tempfile_dir()?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let exe = std::env::current_exe().map_err(BenchError::io("finding the lockstep binary"))?;
    let per_producer = rows_per_pass * args.repeat;
    let sets = [
        format!("job.data.stream.producers={}", args.producers),
        format!("job.global_batch={}", args.global_batch),
        "job.micro_batches=0".to_string(),
        "job.checkpoint.every_rounds=0".to_string(),
        format!(
            "job.data.stream.buffer_rows={}",
            per_producer + args.batch_rows
        ),
    ];
    let mut cmd = Command::new(&exe);
    cmd.arg("launch")
        .arg(&args.manifest)
        .arg("--run-dir")
        .arg(&dir);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let mut job = cmd
        .env("LOCKSTEP_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BenchError::Start {
            program: exe.display().to_string(),
            source,
        })?;
    let result = feed(args, &exe, &dir, &token, &base.cluster.name);
    let status = match &result {
        Ok(_) => wait(&mut job, Duration::from_secs(600)),
        Err(_) => {
            let _ = job.kill();
            let _ = job.wait();
            None
        }
    };
    let (wall_s, producer_s) = result?;
    if !status.is_some_and(|s| s.success()) {
        return Err(BenchError::StreamJobFailed { dir });
    }
    let report = Report::read(&dir.join("report.json"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let ingest = (total_rows / producer_s, total_mb / producer_s);
    let parquet = (total_rows / parquet_s, total_mb / parquet_s);
    println!(
        "ingest: {} producers -> {} workers, {:.0} rows ({:.1} MB Arrow IPC)",
        args.producers, report.world_size, total_rows, total_mb
    );
    println!(
        "  stream ingest   {:>12.0} rows/s {:>8.1} MB/s  (producers' send time {producer_s:.2} s; {wall_s:.2} s with process start)",
        ingest.0, ingest.1
    );
    println!(
        "  local Parquet   {:>12.0} rows/s {:>8.1} MB/s  (decode to Arrow, same rows)",
        parquet.0, parquet.1
    );
    println!("  ratio stream / Parquet: {:.2}", ingest.0 / parquet.0);
    println!(
        "  the job trained {} rows at {:.0} rows/s (global batch {})",
        report.samples, report.samples_per_s, args.global_batch
    );
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "producers": args.producers,
            "workers": report.world_size,
            "rows": total_rows,
            "mb": total_mb,
            "stream": {"rows_per_s": ingest.0, "mb_per_s": ingest.1, "seconds": producer_s, "wall_s": wall_s},
            "parquet": {"rows_per_s": parquet.0, "mb_per_s": parquet.1, "seconds": parquet_s},
            "ratio": ingest.0 / parquet.0,
            "training_rows_per_s": report.samples_per_s,
            "global_batch": args.global_batch,
        });
        write_json(path, &v)?;
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "lockstep-bench-ingest-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Ok(dir),
        Err(source) => Err(BenchError::CreateDir { path: dir, source }),
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Start the producers, wait for them; returns (wall seconds, slowest producer's send seconds).
fn feed(
    args: &IngestBenchArgs,
    exe: &Path,
    dir: &Path,
    token: &str,
    cluster: &str,
) -> Result<(f64, f64)> {
    let endpoints = dir.join("endpoints.json");
    let t = Instant::now();
    let bootstrap = loop {
        let found = std::fs::read(&endpoints)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["bootstrap"].as_str().map(str::to_string));
        if let Some(b) = found {
            break b;
        }
        if t.elapsed() > Duration::from_secs(BOOTSTRAP_WAIT_S) {
            return Err(BenchError::NoBootstrap {
                path: endpoints,
                waited_s: BOOTSTRAP_WAIT_S,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let t = Instant::now();
    let mut children = Vec::new();
    for id in 0..args.producers {
        let child = Command::new(exe)
            .args(["bench", "ingest", "--produce", &id.to_string()])
            .args(["--bootstrap", &bootstrap, "--cluster", cluster])
            .arg("--manifest")
            .arg(&args.manifest)
            .args(["--repeat", &args.repeat.to_string()])
            .args(["--batch-rows", &args.batch_rows.to_string()])
            .env("LOCKSTEP_TOKEN", token)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(BenchError::io("starting a producer"))?;
        children.push(child);
    }
    let mut slowest = 0.0f64;
    for (id, c) in (0u32..).zip(children) {
        let out = c
            .wait_with_output()
            .map_err(BenchError::io("waiting for a producer"))?;
        if !out.status.success() {
            return Err(BenchError::ProducerFailed {
                id,
                status: out.status,
            });
        }
        let secs: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|source| BenchError::ProducerOutput { id, source })?;
        slowest = slowest.max(secs);
    }
    Ok((t.elapsed().as_secs_f64(), slowest))
}

/// One producer process: send the sample `repeat` times, print the seconds from connect to the
/// job's final answer.
fn produce(args: &IngestBenchArgs, id: u32) -> Result<()> {
    let m = Manifest::load(&args.manifest, &[])?;
    let batches = sample(&m)?;
    let token = std::env::var("LOCKSTEP_TOKEN").map_err(|_| BenchError::NoToken)?;
    let bootstrap = args.bootstrap.clone().unwrap_or_default();
    let cluster = args.cluster.clone().unwrap_or(m.cluster.name.clone());
    let schema = batches.first().ok_or(BenchError::EmptySample)?.schema();
    let t = Instant::now();
    let mut p = Producer::connect(&bootstrap, &cluster, token.as_bytes(), id, 0, &schema)?;
    for _ in 0..args.repeat {
        for b in &batches {
            let mut at = 0;
            while at < b.num_rows() {
                let n = args.batch_rows.min(b.num_rows() - at);
                p.send(&b.slice(at, n))?;
                at += n;
            }
        }
    }
    p.close()?;
    println!("{}", t.elapsed().as_secs_f64());
    Ok(())
}
