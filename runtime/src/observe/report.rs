//! The run report (`--report PATH`, JSON): what ran, how fast, how well, and the hash of the
//! final parameters so two runs can be compared exactly. Field names are a user-facing contract
//! (see DESIGN.md and the README).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Mean round time split, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSplit {
    /// Forward/backward and optimizer step (mean over workers).
    pub compute_ms: f64,
    /// Time in collectives not hidden behind compute (mean over workers).
    pub communication_ms: f64,
    /// The rest of the round as the coordinator sees it: waiting for the slowest worker,
    /// control messages, data loading.
    pub waiting_ms: f64,
    /// Mean wall time of a round at the coordinator.
    pub total_ms: f64,
}

/// The report of one training run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Cluster name.
    pub cluster: String,
    /// Number of workers.
    pub world_size: usize,
    /// tcp or shm.
    pub transport: String,
    /// allreduce or parameter-server.
    pub aggregation: String,
    /// SGD rounds run in total (including rounds before a resume).
    pub rounds: u64,
    /// Epochs (fractional when `job.rounds` does not fill whole epochs).
    pub epochs: f64,
    /// Training rows processed (all workers).
    pub samples: u64,
    /// Wall time of the training loop at the coordinator.
    pub wall_s: f64,
    /// `samples / wall_s`.
    pub samples_per_s: f64,
    /// Mean training loss of the last round.
    pub final_train_loss: f64,
    /// Evaluation on the held-out split (accuracy / auc / r2 / loss as fits the task).
    pub eval: BTreeMap<String, f64>,
    /// SHA-256 of the final parameters (little-endian f32, layout order).
    pub weights_sha256: String,
    /// The final model (safetensors), if written.
    pub checkpoint: Option<String>,
    /// Mean round time split.
    pub round_time: RoundSplit,
    /// Restarts after failures (`--max-restarts`).
    pub restarts: u32,
    /// Elastic membership: every change (deaths, joins), in order.
    #[serde(default)]
    pub membership_changes: Vec<MembershipChange>,
    /// `completed` (the job ran to its end), or `stopped` (a graceful stop by SIGINT / SIGTERM:
    /// the final checkpoint continues it with `--resume`).
    #[serde(default = "completed")]
    pub status: String,
    /// The signal behind a graceful stop (`SIGINT`, `SIGTERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// `[job.model] class_weight` as applied: the weight of each class in the training loss
    /// (held-out metrics are unweighted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weight: Option<BTreeMap<String, f64>>,
    /// The full-batch solver's progress (`[job.optimizer] kind = "lbfgs"`), from rank 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<SolverReport>,
    /// Stream counters and prequential metrics (`source = "stream"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
}

/// Where a full-batch solver stopped (`report.json`'s `solver`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SolverReport {
    /// `lbfgs`.
    pub kind: String,
    /// Accepted steps.
    pub iterations: u64,
    /// Gradient evaluations (rounds that computed a gradient; after convergence none do).
    pub evaluations: u64,
    /// The largest component of the penalised gradient at the final weights.
    pub grad_max: f64,
    /// Whether `grad_max` fell to `tolerance` times the first gradient's largest component.
    pub converged: bool,
}

/// One change of an elastic job's membership.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// `lost` (a worker died or was evicted) or `joined` (a replacement).
    pub kind: String,
    /// The nodes that left or joined.
    pub nodes: Vec<String>,
    /// Why: the failure as reported, or "replacement".
    pub reason: String,
    /// The round the job continued at (the newest round every survivor could complete + 1).
    pub round: u64,
    /// Workers after the change.
    pub world_size: usize,
    /// From the detection (or the joiner's registration) to the new mesh's first completed
    /// round, in milliseconds: the time the job was paused.
    pub pause_ms: f64,
    /// From the last completed round before the change to the first one after (the round time
    /// the change added, as seen in the round timing).
    pub gap_ms: f64,
    /// A replacement: from its process start (the uptime it registered with) to the first
    /// completed round with it, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_ms: Option<f64>,
}

/// The stream part of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Producers expected.
    pub producers: u32,
    /// `deterministic` or `arrival`.
    pub order: String,
    /// New rows received from producers (this run).
    pub rows_received: u64,
    /// Rows trained on (this run).
    pub rows_trained: u64,
    /// Rows dropped because they were already received or trained (replays, resume).
    pub duplicates_dropped: u64,
    /// Rows received but not trained on (`rows_received - rows_trained`), and why: a bounded
    /// stream ends at the first round some producer cannot fill, so the rows of the last partial
    /// round stay untrained (a round needs its full global batch, `global_batch / producers` rows
    /// of every producer, for the order to be deterministic). 0 for a stream stopped early.
    #[serde(default)]
    pub rows_not_trained: u64,
    /// The reason for `rows_not_trained` (absent when it is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_trained_reason: Option<String>,
    /// Rows trained per second of the training loop.
    pub rows_per_s: f64,
    /// Rows in the prequential window.
    pub window: usize,
    /// Prequential metrics over the last `window` rows (each row scored before training on it).
    pub prequential: BTreeMap<String, f64>,
    /// Why training stopped: `producers closed`, `job.rounds` or `stopped` (SIGINT / SIGTERM).
    pub ended: String,
}

fn completed() -> String {
    "completed".into()
}

impl Report {
    /// Write as pretty JSON (atomically).
    ///
    /// # Errors
    /// A message naming the file.
    pub fn write(&self, path: &Path) -> Result<(), crate::RuntimeError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| crate::RuntimeError::io("serialise", path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| crate::RuntimeError::io("create", dir, e))?;
        }
        lockstep_tensor::safetensors_io::write_atomic(path, &json)
            .map_err(|e| crate::RuntimeError::io("write", path, e))
    }

    /// Read a report.
    ///
    /// # Errors
    /// A message naming the file.
    pub fn read(path: &Path) -> Result<Report, crate::RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| crate::RuntimeError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| crate::RuntimeError::io("parse", path, e))
    }

    /// One-paragraph human summary.
    pub fn summary(&self) -> String {
        let body = self.summary_body();
        match &self.stopped_by {
            Some(sig) if self.status == "stopped" => format!(
                "stopped by {sig} after round {} (final checkpoint written; continue with --resume): {body}",
                self.rounds
            ),
            _ => body,
        }
    }

    fn summary_body(&self) -> String {
        let weights = self.class_weight.as_ref().map(|w| {
            let v: Vec<String> = w.iter().map(|(c, x)| format!("{c} {x:.3}")).collect();
            format!("; class weights {} (training loss only)", v.join(", "))
        });
        format!("{}{}", self.summary_core(), weights.unwrap_or_default())
    }

    fn summary_core(&self) -> String {
        let eval: Vec<String> = self
            .eval
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        format!(
            "{} workers over {} ({}): {} rounds, {} samples in {:.1} s ({:.0} samples/s), final train loss {:.4}, eval: {}; round {:.1} ms = compute {:.1} + communication {:.1} + waiting {:.1}; weights sha256 {}",
            self.world_size,
            self.transport,
            self.aggregation,
            self.rounds,
            self.samples,
            self.wall_s,
            self.samples_per_s,
            self.final_train_loss,
            if eval.is_empty() { "none".to_string() } else { eval.join(", ") },
            self.round_time.total_ms,
            self.round_time.compute_ms,
            self.round_time.communication_ms,
            self.round_time.waiting_ms,
            self.weights_sha256
        )
    }
}
