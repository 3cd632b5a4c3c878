//! `lockstep report RUN_DIR`: a readable summary of a finished or running run from its run
//! directory alone: what ran, how far it is, the final (or latest) metrics, the round split,
//! checkpoints, restarts and membership, and the endpoints to reach it.

use super::progress::{self, Progress};
use crate::error::RuntimeError;
use crate::observe::report::Report;
use std::fmt::Write as _;
use std::path::Path;

/// The summary of `run_dir` as text.
///
/// # Errors
/// [`RuntimeError::Io`] when the directory holds neither `report.json` nor `progress.json`.
pub fn summary(run_dir: &Path) -> Result<String, RuntimeError> {
    let report = Report::read(&run_dir.join("report.json")).ok();
    let progress: Option<Progress> = std::fs::read(run_dir.join(progress::FILE_NAME))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if report.is_none() && progress.is_none() {
        return Err(RuntimeError::io(
            "read",
            run_dir,
            "no report.json or progress.json: not a run directory, or the run has not started",
        ));
    }
    let mut s = String::new();
    let _ = writeln!(s, "run {}", run_dir.display());
    match (&report, &progress) {
        (Some(r), _) => finished(r, &mut s),
        (None, Some(p)) => running(p, &mut s),
        (None, None) => {}
    }
    checkpoints(run_dir, &mut s);
    files(run_dir, &mut s);
    Ok(s)
}

/// A finished run: what it did, its metrics, the round split, restarts, the model.
fn finished(r: &Report, s: &mut String) {
    match &r.stream {
        // A stream has no epochs: what it received and trained instead.
        Some(st) => {
            let _ = writeln!(
                s,
                "  finished: {} rounds, {} rows trained in {:.1} s ({:.0} rows/s); stream ended ({}): {} rows received from {} producers, {} duplicates dropped",
                r.rounds,
                st.rows_trained,
                r.wall_s,
                st.rows_per_s,
                st.ended,
                st.rows_received,
                st.producers,
                st.duplicates_dropped
            );
            if let Some(why) = &st.not_trained_reason {
                let _ = writeln!(s, "  not trained: {} rows: {why}", st.rows_not_trained);
            }
        }
        None => {
            let _ = writeln!(
                s,
                "  finished: {} rounds ({:.2} epochs), {} samples in {:.1} s ({:.0} samples/s)",
                r.rounds, r.epochs, r.samples, r.wall_s, r.samples_per_s
            );
        }
    }
    let _ = writeln!(
        s,
        "  cluster {}: {} workers over {}, {}",
        r.cluster, r.world_size, r.transport, r.aggregation
    );
    let eval: Vec<String> = r.eval.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
    let _ = writeln!(
        s,
        "  final train loss {:.4}; eval: {}",
        r.final_train_loss,
        eval.join(", ")
    );
    if let Some(st) = &r.stream {
        let preq: Vec<String> = (st.prequential.iter())
            .filter(|(k, _)| *k != "rows")
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let _ = writeln!(
            s,
            "  prequential over the last {} rows: {}",
            (st.prequential.get("rows").map(|n| *n as usize)).unwrap_or(st.window),
            preq.join(", ")
        );
    }
    let t = &r.round_time;
    let _ = writeln!(
        s,
        "  round {:.2} ms = compute {:.2} + communication {:.2} + waiting {:.2}",
        t.total_ms, t.compute_ms, t.communication_ms, t.waiting_ms
    );
    let _ = writeln!(
        s,
        "  restarts {}; weights sha256 {}",
        r.restarts, r.weights_sha256
    );
    if let Some(c) = &r.checkpoint {
        let _ = writeln!(s, "  model {c}");
    }
}

/// A running run: its round and progress line.
fn running(p: &Progress, s: &mut String) {
    let total = match p.total_rounds {
        0 => String::new(),
        n => format!("/{n}"),
    };
    let _ = writeln!(
        s,
        "  running: round {}{total}, {}",
        p.round,
        progress::message(p)
    );
}

/// The endpoints and the files a run wrote.
fn files(run_dir: &Path, s: &mut String) {
    if let Ok(e) = crate::observe::endpoints::read(run_dir) {
        for (k, v) in e {
            let _ = writeln!(s, "  endpoint {k}: {v}");
        }
    }
    for f in [
        "metrics.csv",
        "trace.json",
        "curves.svg",
        "model.transform.json",
    ] {
        if run_dir.join(f).exists() {
            let _ = writeln!(s, "  {}", run_dir.join(f).display());
        }
    }
}

fn checkpoints(run_dir: &Path, s: &mut String) {
    let dir = run_dir.join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("round-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if !names.is_empty() {
        let _ = writeln!(
            s,
            "  checkpoints in {}: {}",
            dir.display(),
            names.join(", ")
        );
    }
}
