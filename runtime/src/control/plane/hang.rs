//! A stuck round on the control plane: ask every member what it is doing (`Probe`, bounded by
//! [`PROBE_WAIT`]), print the hang table, and stop the job naming the culprit, or, with
//! elastic membership, hand the culprit to the membership change as lost (see `crate::control::hang`).

use super::inbox::Inbound;
use super::*;
use crate::control::hang::{diagnose, NodeAnswer, PROBE_WAIT};

impl ControlPlane {
    /// Round `round` made no progress for `waited`: diagnose it.
    pub(super) fn stuck(
        &mut self,
        round: u64,
        waited: Duration,
    ) -> Result<Collected, RuntimeError> {
        let waited_ms = waited.as_millis() as u64;
        tracing::warn!(
            round,
            waited_ms,
            "round made no progress; asking every node what it is doing"
        );
        let asked: Vec<bool> = self
            .members
            .iter()
            .map(|m| m.send(round, "probing", &ToWorker::Probe).is_ok())
            .collect();
        let deadline = Instant::now() + PROBE_WAIT;
        let mut nodes = Vec::with_capacity(self.members.len());
        for (i, &was_asked) in asked.iter().enumerate() {
            let mut owes = i >= self.collecting
                && !self.members[i].queue.iter().any(|q| {
                    matches!(q, Inbound::Msg(ToCoordinator::RoundDone { round: r, .. }) if *r == round)
                });
            let mut threads = None;
            while was_asked && threads.is_none() {
                let doing = "waiting for the answer to Probe";
                match self.next_of(i, round, doing, Some(deadline), false) {
                    Ok(ToCoordinator::Doing { threads: t }) => {
                        threads = Some(t);
                        break;
                    }
                    Ok(ToCoordinator::RoundDone { round: r, .. }) if r == round => owes = false,
                    Ok(_) => {} // reports sent before the answer
                    Err(RuntimeError::Timeout { .. }) => break,
                    Err(e) => {
                        let node = &self.members[i].name;
                        tracing::warn!(node = %node, error = %e, "no answer to Probe");
                        break;
                    }
                }
            }
            nodes.push(NodeAnswer {
                node: self.members[i].name.clone(),
                owes,
                threads,
            });
        }
        let d = diagnose(round, waited_ms, &nodes);
        tracing::error!("{}", d.table);
        if self.elastic.is_some() && !d.culprit.is_empty() {
            tracing::warn!(node = %d.culprit, "removing the stuck node");
            return Ok(Collected {
                lost: Some(Lost {
                    dead: vec![d.culprit.clone()],
                    reason: format!(
                        "{} stuck in round {round} ({}) for {waited_ms} ms",
                        d.culprit, d.operation
                    ),
                }),
                ..Default::default()
            });
        }
        Err(RuntimeError::Stuck {
            node: d.culprit,
            round,
            operation: d.operation,
            waited_ms,
            table: d.table,
        })
    }
}
