//! The pace of files and datasets: a window of [`GRANT_WINDOW`] rounds granted ahead and topped
//! up when half of it is used, progress lines once per epoch, and elastic membership: a lost
//! round suspends the survivors and continues with the next mesh, a waiting replacement joins
//! at the end of the granted rounds. The changes go to the report with their pauses.

use super::{check_loss, finish, Ctx, Run, Turn};
use crate::control::plane::{ChangeMembership, Changed, Lost};
use crate::control::protocol::{CheckpointPlan, GRANT_WINDOW};
use crate::control::takeover::Takeover;
use crate::error::RuntimeError;
use crate::observe::report::{MembershipChange, Report};
use std::time::Instant;

/// Epochs, membership changes and the world size of a batch job.
pub(crate) struct BatchPace {
    /// Sum and count of the round losses of the current epoch.
    epoch_loss: (f64, u64),
    /// When the epoch started, and the samples trained by then.
    epoch_started: (Instant, u64),
    changes: Vec<MembershipChange>,
    /// Changes whose first round after them has not completed yet: since when it paused, and a
    /// replacement's process start.
    open: Vec<(usize, Instant, Option<Instant>)>,
    /// A replacement waits (since when) for the granted rounds to drain.
    joining: Option<Instant>,
    world: usize,
    /// Elastic: where the membership changes are kept for a coordinator that takes over.
    history: Option<std::path::PathBuf>,
}

impl BatchPace {
    /// The pace of a job of `world` workers; after a `takeover` its pause is the first
    /// membership change.
    pub(crate) fn new(
        world: usize,
        takeover: Option<&Takeover>,
        history: Option<std::path::PathBuf>,
    ) -> Self {
        let mut pace = BatchPace {
            epoch_loss: (0.0, 0),
            epoch_started: (Instant::now(), 0),
            changes: Vec::new(),
            open: Vec::new(),
            joining: None,
            world,
            history,
        };
        if let Some(t) = takeover {
            pace.changes = t.earlier.clone();
            pace.changes.push(MembershipChange {
                kind: "coordinator".into(),
                nodes: vec![t.coordinator.clone()],
                reason: format!(
                    "coordinator lost ({}); taken over in term {}",
                    t.reason, t.term
                ),
                round: t.round,
                world_size: t.world,
                ..Default::default()
            });
            pace.open.push((pace.changes.len() - 1, t.lost, None));
        }
        pace.keep_history();
        pace
    }

    /// Write the membership changes so far to the history file (a coordinator that takes over
    /// reads them, so the report of the one that finishes has them all).
    fn keep_history(&self) {
        let Some(path) = &self.history else { return };
        let written = serde_json::to_vec_pretty(&self.changes)
            .map_err(|e| e.to_string())
            .and_then(|body| {
                lockstep_tensor::safetensors_io::write_atomic(path, &body)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!("membership history not written to {}: {e}", path.display());
        }
    }

    pub(super) async fn start(&mut self, cx: &Ctx<'_>, run: &mut Run) -> Result<(), RuntimeError> {
        run.granted = (cx.s.first_round + GRANT_WINDOW).min(cx.s.total_rounds);
        cx.grant(cx.s.first_round, run.granted).await
    }

    /// Round `run.round` was lost: change the membership and grant again from where the
    /// survivors continue.
    pub(super) async fn lost(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
        lost: Lost,
    ) -> Result<(), RuntimeError> {
        let detected = Instant::now();
        tracing::warn!(
            "round {}: lost {}: {}; suspending the survivors",
            run.round,
            if lost.dead.is_empty() {
                "a peer".to_string()
            } else {
                lost.dead.join(", ")
            },
            lost.reason
        );
        let msg = ChangeMembership {
            dead: lost.dead,
            reason: lost.reason.clone(),
        };
        self.change(cx, run, msg, &lost.reason, detected).await
    }

    async fn change(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
        msg: ChangeMembership,
        reason: &str,
        since: Instant,
    ) -> Result<(), RuntimeError> {
        let changed = cx.control.send(msg).await.map_err(super::actor_err)??;
        record_change(&mut self.changes, &mut self.open, &changed, reason, since);
        self.keep_history();
        self.world = changed.world;
        cx.s.observer.membership(self.world);
        run.round = changed.round;
        run.granted = (run.round + GRANT_WINDOW).min(cx.s.total_rounds);
        cx.grant(run.round, run.granted).await?;
        run.clock.restart();
        Ok(())
    }

    pub(super) async fn after(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
        turn: Turn<'_>,
    ) -> Result<(), RuntimeError> {
        let (s, round) = (cx.s, run.round);
        // Keep the window full: top it up when half of it has been used; hold it while a
        // replacement waits for the round boundary.
        if turn.collected.joiner_waiting && self.joining.is_none() {
            tracing::info!("round {round}: a replacement is waiting; draining the granted rounds");
            self.joining = Some(Instant::now());
        }
        if self.joining.is_none() && run.stop_at.is_none() {
            if let Some(upto) = super::grants::top_up(run.granted, round, s.total_rounds) {
                cx.grant(run.granted, upto).await?;
                run.granted = upto;
            }
        }
        self.close_changes(turn.round_ms);
        s.observer
            .round(round, turn.plan.epoch, turn.collected, turn.round_ms);
        check_loss(round, turn.loss)?;
        self.epoch_loss = (self.epoch_loss.0 + turn.loss, self.epoch_loss.1 + 1);
        if let Some(path) = &turn.collected.checkpoint {
            tracing::info!("checkpoint for round {} written to {path}", round + 1);
        }
        if let Some(metrics) = &turn.collected.metrics {
            run.eval = metrics.clone();
            self.log_epoch(cx, run, turn.plan.epoch);
        }
        Ok(())
    }

    /// The first round after open membership changes is done: their pauses are known.
    fn close_changes(&mut self, gap_ms: f64) {
        if self.open.is_empty() {
            return;
        }
        for (i, since, started) in std::mem::take(&mut self.open) {
            let c = &mut self.changes[i];
            c.pause_ms = since.elapsed().as_secs_f64() * 1e3;
            c.gap_ms = gap_ms;
            c.join_ms = started.map(|s| s.elapsed().as_secs_f64() * 1e3);
            tracing::info!(
                "membership change {} ({} {}): first round after it done, paused {:.0} ms, round gap {gap_ms:.0} ms{}",
                i + 1,
                c.kind,
                c.nodes.join(", "),
                c.pause_ms,
                c.join_ms
                    .map(|j| format!(", {j:.0} ms from its process start"))
                    .unwrap_or_default()
            );
        }
        self.keep_history();
    }

    /// The progress line of an evaluated round.
    fn log_epoch(&mut self, cx: &Ctx<'_>, run: &Run, epoch: u64) {
        let s = cx.s;
        let secs = self.epoch_started.0.elapsed().as_secs_f64();
        let rate = (run.totals.samples - self.epoch_started.1) as f64 / secs.max(1e-9);
        let metric = run
            .eval
            .get(s.headline)
            .map(|v| format!("{} {v:.4}", s.headline))
            .unwrap_or_default();
        tracing::info!(
            "epoch {}/{} round {}/{}: train loss {:.4}, {metric}, {rate:.0} samples/s",
            epoch + 1,
            s.total_rounds.div_ceil(s.rounds_per_epoch.max(1)),
            run.round + 1,
            s.total_rounds,
            self.epoch_loss.0 / self.epoch_loss.1.max(1) as f64
        );
        self.epoch_loss = (0.0, 0);
        self.epoch_started = (Instant::now(), run.totals.samples);
    }

    /// After a round: a waiting replacement joins once the granted rounds are done.
    pub(super) async fn between(
        &mut self,
        cx: &Ctx<'_>,
        run: &mut Run,
    ) -> Result<(), RuntimeError> {
        let go_on =
            run.round == run.granted && run.round < cx.s.total_rounds && run.stop_at.is_none();
        if let (Some(since), true) = (self.joining, go_on) {
            self.joining = None;
            let msg = ChangeMembership {
                dead: Vec::new(),
                reason: "a replacement joins".into(),
            };
            self.change(cx, run, msg, "replacement", since).await?;
        }
        Ok(())
    }

    pub(super) async fn finish(self, cx: &Ctx<'_>, run: Run) -> Result<Report, RuntimeError> {
        let s = cx.s;
        // A stopped job leaves a checkpoint that `--resume` continues from.
        let checkpoint = run.stop_at.map(|_| CheckpointPlan {
            cursor: s.plan.cursor_at(run.round),
            root: s.checkpoints.0.display().to_string(),
            keep: s.checkpoints.2,
            seed: s.seed,
            stream_offsets: None,
            remote: s.checkpoint_remote.clone(),
        });
        let (mut report, weights, solver) = finish(cx, &run, checkpoint, || {}).await?;
        report.epochs = run.round as f64 / s.rounds_per_epoch.max(1) as f64;
        (report.weights_sha256, report.solver) = (weights, solver);
        report.world_size = self.world;
        report.membership_changes = self.changes;
        s.observer.finish(&report);
        Ok(report)
    }
}

/// Log a membership change and add its events (a loss and a join can come in one change).
fn record_change(
    changes: &mut Vec<MembershipChange>,
    open: &mut Vec<(usize, Instant, Option<Instant>)>,
    c: &Changed,
    reason: &str,
    since: Instant,
) {
    if !c.dead.is_empty() {
        tracing::warn!(
            "membership: lost {} ({reason}); continuing at round {} with {} workers, state from {}",
            c.dead.join(", "),
            c.round,
            c.world,
            c.source
        );
        changes.push(MembershipChange {
            kind: "lost".into(),
            nodes: c.dead.clone(),
            reason: reason.to_string(),
            round: c.round,
            world_size: c.world,
            ..Default::default()
        });
        open.push((changes.len() - 1, since, None));
    }
    for (name, registered, started) in &c.joined {
        tracing::info!(
            "membership: {name} joined at round {} ({} workers), state from {}",
            c.round,
            c.world,
            c.source
        );
        changes.push(MembershipChange {
            kind: "joined".into(),
            nodes: vec![name.clone()],
            reason: "replacement".into(),
            round: c.round,
            world_size: c.world,
            ..Default::default()
        });
        open.push((changes.len() - 1, *registered, *started));
    }
    if c.dead.is_empty() && c.joined.is_empty() {
        tracing::info!(
            "membership: unchanged after a lost mesh; continuing at round {}",
            c.round
        );
    }
}
