//! A stuck round on the control plane: ask every member what it is doing (`Probe`, bounded by
//! [`PROBE_WAIT`]), print the hang table, and stop the job naming the culprit, or, with
//! elastic membership, hand the culprit to the membership change as lost (see `crate::control::hang`).

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
            .iter_mut()
            .map(|m| send_msg(&mut m.link, round, "probing", &ControlMsg::Probe).is_ok())
            .collect();
        let deadline = Instant::now() + PROBE_WAIT;
        let mut nodes = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter_mut().enumerate() {
            let mut owes = i >= self.collecting
                && !m.early.iter().any(
                    |msg| matches!(msg, ControlMsg::RoundDone { round: r, .. } if *r == round),
                );
            let mut threads = None;
            while asked[i] && threads.is_none() {
                let doing = "waiting for the answer to Probe";
                match recv_msg_before(&mut m.link, round, doing, deadline) {
                    Ok(Some(ControlMsg::Doing { threads: t })) => {
                        threads = Some(t);
                        break;
                    }
                    Ok(Some(ControlMsg::RoundDone { round: r, .. })) if r == round => owes = false,
                    Ok(Some(_)) => {} // reports, traces, progress sent before the answer
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(node = %m.name, error = %e, "no answer to Probe");
                        break;
                    }
                }
            }
            nodes.push(NodeAnswer {
                node: m.name.clone(),
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
