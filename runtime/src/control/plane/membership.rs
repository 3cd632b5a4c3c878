//! Elastic membership on the control plane: suspend the survivors, drop the dead, admit
//! waiting replacements and hand out the next mesh (see `docs/elastic.md`).

use super::inbox::Attached;
use super::*;
use crate::error::LaunchError;
/// Elastic: suspend the survivors, drop the dead, admit waiting replacements (up to
/// `max_workers`) and hand out the next mesh. Every survivor reports the round it would run
/// next; the newest is where the job continues, with the state of the first survivor there.
#[derive(Message)]
#[rtype(result = "Result<Changed, RuntimeError>")]
pub(crate) struct ChangeMembership {
    /// Members found or named dead.
    pub dead: Vec<String>,
    /// Why.
    pub reason: String,
}

/// The new membership.
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    /// The round the job continues at.
    pub round: u64,
    /// Workers now.
    pub world: usize,
    /// Members that left in this change.
    pub dead: Vec<String>,
    /// Replacements that joined, with when they registered and when their process started.
    pub joined: Vec<(String, Instant, Option<Instant>)>,
    /// The node whose state everyone took.
    pub source: String,
}

impl ControlPlane {
    fn change(&mut self, msg: ChangeMembership) -> Result<Changed, RuntimeError> {
        let (min, max) = match &self.elastic {
            Some(e) => (e.min_workers, e.max_workers),
            None => return Err(ProtocolError::NotElastic.into()),
        };
        let mut dead: Vec<String> = msg
            .dead
            .iter()
            .filter(|d| self.members.iter().any(|m| &m.name == *d))
            .cloned()
            .collect();
        let answers = self.suspend(&mut dead, &msg.reason)?;
        for d in &dead {
            if !self.dead.contains(d) {
                self.dead.push(d.clone());
            }
        }
        let fresh = self.joiners_ready(&dead);
        let old: Vec<Attached> = std::mem::take(&mut self.members);
        let mut survivors: Vec<(Attached, u64, String)> = Vec::new();
        let mut answers = answers.into_iter().peekable();
        for (i, m) in old.into_iter().enumerate() {
            if let Some((_, next, addr)) = answers.next_if(|a| a.0 == i) {
                survivors.push((m, next, addr));
            }
        }
        let left = survivors.len();
        if left < min {
            let names: Vec<String> = survivors.iter().map(|s| s.0.name.clone()).collect();
            for (m, _, _) in &survivors {
                let reason = format!("fewer than min_workers = {min} workers are left");
                let _ = m.send(0, "aborting", &ToWorker::Abort { reason });
            }
            return Err(LaunchError::TooFewWorkers {
                left,
                workers: names,
                min,
                dead: self.dead.clone(),
            }
            .into());
        }
        let newest = survivors.iter().map(|s| s.1).max().unwrap_or(0);
        let source = survivors.iter().position(|s| s.1 == newest).unwrap_or(0);
        let back = self.rollback_point();
        let round = back.as_ref().map_or(newest, |(r, _)| *r);
        let mut joined = Vec::new();
        let mut peers: Vec<(String, String)> = survivors
            .iter()
            .map(|(m, _, a)| (m.name.clone(), a.clone()))
            .collect();
        let mut members: Vec<Attached> = survivors.into_iter().map(|s| s.0).collect();
        if fresh {
            let live: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            while members.len() < max {
                let Some(k) = self
                    .pending
                    .iter()
                    .position(|(r, _)| !live.contains(&r.name))
                else {
                    break;
                };
                let (r, at) = self.pending.remove(k);
                peers.push((r.name.clone(), r.data_addr.clone()));
                joined.push((r.name.clone(), at, r.started));
                members.push(self.inbox.attach(Member::new(r.name, r.link)));
            }
        }
        let mesh: u64 = rand::random();
        let remesh = ToWorker::Remesh {
            peers: peers.clone(),
            mesh,
            round,
            source,
            checkpoint: back.as_ref().and_then(|(_, d)| d.clone()),
            rollback: back.is_some(),
        };
        for m in &members {
            // A member lost now makes the new mesh fail; its survivors report and we go again.
            let _ = m.send(round, "sending the new membership", &remesh);
        }
        let source_name = match &back {
            Some((_, Some(dir))) => format!("the checkpoint {dir}"),
            Some((_, None)) => "the initial state (no checkpoint yet)".to_string(),
            None => peers[source].0.clone(),
        };
        self.members = members;
        self.workers = self.members.len();
        if let Some(e) = &mut self.elastic {
            e.mesh = mesh;
        }
        Ok(Changed {
            round,
            world: self.workers,
            dead,
            joined,
            source: source_name,
        })
    }

    /// With a rollback root (embedding tables): the newest complete checkpoint's round and
    /// directory, or round 0 and none.
    fn rollback_point(&self) -> Option<(u64, Option<String>)> {
        let root = self.elastic.as_ref()?.rollback.as_ref()?;
        Some(rollback_point(root))
    }

    /// Evict `dead`, suspend everyone else and take each survivor's answer: (member index, the
    /// round it would run next, its fresh data address). A member lost meanwhile joins `dead`.
    fn suspend(
        &mut self,
        dead: &mut Vec<String>,
        reason: &str,
    ) -> Result<Vec<(usize, u64, String)>, RuntimeError> {
        let suspend = ToWorker::Suspend {
            reason: reason.to_string(),
        };
        for m in &self.members {
            if dead.contains(&m.name) {
                let reason = format!("evicted from the job: {reason}");
                let _ = m.send(0, "evicting", &ToWorker::Abort { reason });
            } else if m.send(0, "suspending", &suspend).is_err() {
                dead.push(m.name.clone());
            }
        }
        // Each survivor's answer: the round it would run next and its fresh data address.
        let mut answers: Vec<(usize, u64, String)> = Vec::new();
        for i in 0..self.members.len() {
            if dead.contains(&self.members[i].name) {
                continue;
            }
            loop {
                match self.next_of(i, 0, "waiting for the suspension", None, false) {
                    Ok(ToCoordinator::Suspended {
                        next_round,
                        data_addr,
                    }) => {
                        answers.push((i, next_round, data_addr));
                        break;
                    }
                    Ok(_) => continue, // reports of the abandoned rounds
                    Err(e @ RuntimeError::Aborted { .. }) => return Err(e),
                    Err(e) => {
                        let name = self.members[i].name.clone();
                        tracing::warn!(node = %name, error = %e, "lost while suspending");
                        dead.push(name);
                        break;
                    }
                }
            }
        }
        Ok(answers)
    }
}

/// The newest complete checkpoint under `root`: its round and directory, or round 0 and none.
pub(crate) fn rollback_point(root: &std::path::Path) -> (u64, Option<String>) {
    match crate::checkpoint::find_latest(root) {
        Some((dir, meta)) => (meta.round, Some(dir.display().to_string())),
        None => (0, None),
    }
}

impl Handler<ChangeMembership> for ControlPlane {
    type Result = Result<Changed, RuntimeError>;
    fn handle(&mut self, msg: ChangeMembership, _: &mut SyncContext<Self>) -> Self::Result {
        self.change(msg)
    }
}

impl ControlPlane {
    /// Elastic: the next message from member `i` about `round`, or why the round is lost: the
    /// member's link failed (it is dead) or it reported a lost peer on the current mesh.
    pub(super) fn expect_elastic(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<Result<ToCoordinator, Lost>, RuntimeError> {
        let mesh = self.elastic.as_ref().map_or(0, |e| e.mesh);
        loop {
            let got = self.recv_watching(i, round, doing);
            let m = &self.members[i];
            match got {
                Err(e @ RuntimeError::Peer { .. }) => {
                    return Ok(Err(Lost {
                        dead: vec![m.name.clone()],
                        reason: e.to_string(),
                    }))
                }
                Err(e) => return Err(e),
                Ok(ToCoordinator::PeerLost {
                    mesh: at,
                    node,
                    reason,
                    ..
                }) => {
                    if at != mesh {
                        continue; // a report about an earlier mesh
                    }
                    let dead = if node.is_empty() { vec![] } else { vec![node] };
                    return Ok(Err(Lost {
                        dead,
                        reason: format!("{} reported: {reason}", m.name),
                    }));
                }
                Ok(msg) => return super::in_turn(&m.name, msg, round, doing).map(Ok),
            }
        }
    }

    /// The next message from member `i` about `round`; elastic: or why the round is lost.
    pub(super) fn next(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<Result<ToCoordinator, Lost>, RuntimeError> {
        if self.elastic.is_some() {
            self.expect_elastic(i, round, doing)
        } else {
            self.expect(i, round, doing).map(Ok)
        }
    }

    /// Take registered replacements into `pending`; true when one can join now. A replacement
    /// named like a live member (not in `leaving`) waits: its predecessor's death may not be
    /// detected yet. It is refused as a duplicate once it has waited `duplicate_grace`.
    pub(super) fn joiners_ready(&mut self, leaving: &[String]) -> bool {
        let Some(e) = &self.elastic else {
            return false;
        };
        while let Ok(j) = e.joiners.try_recv() {
            self.pending.push(j);
        }
        let live: Vec<String> = self
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| !leaving.contains(n))
            .collect();
        let grace = e.duplicate_grace;
        self.pending.retain_mut(|(r, at)| {
            if live.contains(&r.name) && at.elapsed() >= grace {
                let reason = format!(
                    "node {} is already a member of the running job (still alive {} ms after the second one registered)",
                    r.name,
                    grace.as_millis()
                );
                tracing::warn!("{reason}; refused the second one");
                let _ = send_msg(&mut r.link, 0, "refusing", &ToWorker::Abort { reason });
                false
            } else {
                true
            }
        });
        live.len() < e.max_workers && self.pending.iter().any(|(r, _)| !live.contains(&r.name))
    }
}
