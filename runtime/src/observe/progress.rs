//! Live progress of a run: the coordinator keeps `<run dir>/progress.json` current (replaced
//! atomically, at most a few times a second and after every evaluation), and `lockstep launch`
//! draws it as a progress bar when its output is a terminal (indicatif), with the nodes' log
//! lines printed above the bar rather than through it. When the output is not a terminal
//! nothing is drawn: the log lines are all there is, as before.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name inside the run directory.
pub(crate) const FILE_NAME: &str = "progress.json";

/// A snapshot of a run's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Rounds completed.
    pub round: u64,
    /// Rounds in the job (0: not known, a stream that runs until its producers close).
    pub total_rounds: u64,
    /// Current epoch (1-based) and the number of epochs (`(0, 0)` for a stream).
    pub epoch: (u64, u64),
    /// A stream: rows trained so far (shown in place of the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Recent throughput.
    pub samples_per_s: f64,
    /// Mean training loss of the last round.
    pub train_loss: f64,
    /// The headline metric of the last evaluation, if any.
    pub metric: Option<(String, f64)>,
    /// True once training is over.
    pub done: bool,
}

/// Writes `progress.json`, throttled.
pub(crate) struct ProgressFile {
    path: PathBuf,
    last: Option<Instant>,
}

impl ProgressFile {
    /// A writer for `<run_dir>/progress.json`.
    pub(crate) fn new(run_dir: &Path) -> Self {
        ProgressFile {
            path: run_dir.join(FILE_NAME),
            last: None,
        }
    }

    /// Write `p` unless the last write was under 200 ms ago (`force` writes anyway).
    pub(crate) fn update(&mut self, p: &Progress, force: bool) {
        if !force
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        if let Ok(bytes) = serde_json::to_vec(p) {
            let _ = lockstep_tensor::safetensors_io::write_atomic(&self.path, &bytes);
        }
    }
}

/// The bar on screen, if any: log lines go above it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// The launcher's bar: polls `progress.json` on its own thread while the run goes on, and is
/// cleared when dropped.
pub(crate) struct ProgressBar {
    bar: indicatif::ProgressBar,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ProgressBar {
    /// A bar for the run in `run_dir` when stderr (where logs and the bar go) is a terminal,
    /// else `None`: plain log lines only.
    pub(crate) fn for_terminal(run_dir: &Path) -> Option<Self> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} rounds, ETA {eta}, {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, s, path) = (bar.clone(), stop.clone(), run_dir.join(FILE_NAME));
        let _ = std::fs::remove_file(&path);
        std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || poll(&b, &s, &path))
            .ok()?;
        if let Ok(mut g) = BAR.lock() {
            *g = Some(bar.clone());
        }
        Some(ProgressBar { bar, stop })
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut g) = BAR.lock() {
            *g = None;
        }
        self.bar.finish_and_clear();
    }
}

/// Print a log line to stderr: above the bar when one is drawn, else plainly. A failed write
/// (a closed pipe: whoever read `lockstep launch`'s output went away) is ignored, never a
/// panic: the launcher's log pumps must keep draining the nodes' output, or the nodes would
/// block on their own logging.
pub(crate) fn log_line(line: &str) {
    use std::io::Write;
    let print = || {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let bar = BAR.lock().ok().and_then(|g| g.clone());
    match bar {
        Some(b) => b.suspend(print),
        None => print(),
    }
}

fn poll(bar: &indicatif::ProgressBar, stop: &std::sync::atomic::AtomicBool, path: &Path) {
    let mut open_ended = false;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let p: Option<Progress> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(p) = p {
            if p.total_rounds == 0 && !open_ended {
                // A stream that runs until its producers close: no total, no ETA.
                open_ended = true;
                let style = indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {pos} rounds, {msg}",
                );
                if let Ok(style) = style {
                    bar.set_style(style);
                }
            }
            bar.set_length(p.total_rounds);
            bar.set_position(p.round);
            bar.set_message(message(&p));
        }
        bar.tick();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bar's text: epoch (a stream: rows trained), throughput, loss and the headline metric.
pub(crate) fn message(p: &Progress) -> String {
    let metric = p
        .metric
        .as_ref()
        .map(|(k, v)| format!(", {k} {v:.4}"))
        .unwrap_or_default();
    if let Some(rows) = p.rows {
        return format!(
            "{rows} rows trained, {:.0} rows/s, loss {:.4}{metric}",
            p.samples_per_s, p.train_loss
        );
    }
    format!(
        "epoch {}/{}, {:.0} samples/s, loss {:.4}{metric}",
        p.epoch.0, p.epoch.1, p.samples_per_s, p.train_loss
    )
}
