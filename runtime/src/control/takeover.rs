//! Coordinator failover, the new coordinator's side. In an elastic job a worker whose
//! coordinator died keeps its state, binds a fresh data listener and registers again (with the
//! round it would run next and the term it served, [`Rejoin`]) with whichever coordinator comes
//! up at the coordinator's address (`endpoints.json` or `--coordinator`). A coordinator that
//! receives such a registration takes over: it waits a short grace for the other survivors,
//! leads the next term (fencing the dead one, see [`crate::control::protocol::term`]) and sends
//! them a new membership (`Remesh`) at the newest round any of them reached, with that one's
//! state, exactly like a membership change after a worker's death. Everything else it needs
//! (learning rate, evaluations, checkpoints) follows from the round. See `docs/elastic.md`.

use crate::control::protocol::{term, ModelSignature, Rejoin, ToWorker};
use crate::control::registration::{register_one, Registration};
use crate::error::{LaunchError, RuntimeError};
use crate::node::{NodeContext, REGISTRATION_TIMEOUT};
use lockstep_transport::tcp::listener::Acceptor;
use std::path::Path;
use std::time::{Duration, Instant};

/// A takeover: where the job continues and why.
#[derive(Debug, Clone)]
pub(crate) struct Takeover {
    /// The term this coordinator leads.
    pub term: u64,
    /// The round the job continues at.
    pub round: u64,
    /// The rank (in registration order) whose state everyone takes.
    pub source: usize,
    /// Embedding tables: the checkpoint everyone rolls back to (`Some(None)`: the initial
    /// state), as after any membership change with tables.
    pub rollback: Option<Option<String>>,
    /// When the first survivor found the old coordinator lost (on this clock).
    pub lost: Instant,
    /// How it was found lost.
    pub reason: String,
    /// The workers now.
    pub world: usize,
    /// This coordinator's node name.
    pub coordinator: String,
    /// The membership changes before this takeover (from the history file the coordinators
    /// keep in the run directory, when it is there).
    pub earlier: Vec<crate::observe::report::MembershipChange>,
}

impl Takeover {
    /// The new membership every registered worker gets.
    pub(crate) fn remesh(&self, peers: Vec<(String, String)>, mesh: u64) -> ToWorker {
        ToWorker::Remesh {
            peers,
            mesh,
            round: self.round,
            source: self.source,
            checkpoint: self.rollback.clone().flatten(),
            rollback: self.rollback.is_some(),
        }
    }
}

/// Register the members of an elastic job: every one of `names` within the registration
/// timeout, or, once a survivor of a dead coordinator registered, whoever comes within `grace`
/// of it (at least `min_workers`). In `names` order.
///
/// # Errors
/// A timeout naming who never came; fewer than `min_workers` survivors; a registration that
/// does not fit (as in [`crate::control::registration::accept_members`]).
pub(crate) fn accept_elastic(
    ctx: &NodeContext,
    acceptor: &Acceptor,
    names: &[String],
    signature: &ModelSignature,
    min_workers: usize,
) -> Result<Vec<Registration>, RuntimeError> {
    let m = &ctx.manifest;
    let grace = Duration::from_millis(m.cluster.peer_timeout_ms);
    let cfg = lockstep_transport::LinkConfig {
        heartbeat: Duration::from_millis(m.cluster.heartbeat_ms),
        peer_timeout: Duration::from_millis(m.cluster.peer_timeout_ms),
        ..lockstep_transport::LinkConfig::control()
    };
    let mut deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let mut got: Vec<Registration> = Vec::new();
    let mut taking_over = false;
    while got.len() < names.len() {
        let Some((peer, stream)) = acceptor.next(deadline) else {
            break;
        };
        if !names.contains(&peer) || got.iter().any(|r| r.name == peer) {
            tracing::warn!(node = %peer, "refused {peer}: not a worker of this job, or registered twice");
            continue;
        }
        let reg = register_one(&ctx.name, &peer, stream, cfg, signature)?;
        if reg.rejoin.is_some() && !taking_over {
            taking_over = true;
            deadline = deadline.min(Instant::now() + grace);
            tracing::warn!(node = %peer, "{peer} lost its coordinator: taking over; waiting up to {} ms for the other survivors", grace.as_millis());
        }
        got.push(reg);
    }
    got.sort_by_key(|r| names.iter().position(|n| *n == r.name));
    if got.len() == names.len() || (taking_over && got.len() >= min_workers) {
        return Ok(got);
    }
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !got.iter().any(|r| &r.name == *n))
        .map(String::as_str)
        .collect();
    if taking_over {
        return Err(LaunchError::TooFewWorkers {
            left: got.len(),
            workers: got.iter().map(|r| r.name.clone()).collect(),
            min: min_workers,
            dead: missing.iter().map(|s| s.to_string()).collect(),
        }
        .into());
    }
    Err(RuntimeError::Timeout {
        doing: format!("waiting for {} to register", missing.join(", ")),
        ms: REGISTRATION_TIMEOUT.as_millis() as u64,
    })
}

/// The takeover the registrations call for (some came from survivors of a dead coordinator),
/// or `None` for a fresh start. Leads the next term from here on. With `rollback_root`
/// (embedding tables) everyone rolls back to its newest complete checkpoint.
pub(crate) fn plan(
    coordinator: &str,
    regs: &[Registration],
    rollback_root: Option<&Path>,
    history: &Path,
) -> Option<Takeover> {
    let rejoins: Vec<Option<(&Rejoin, Instant)>> = regs
        .iter()
        .map(|r| r.rejoin.as_ref().map(|(j, at)| (j, *at)))
        .collect();
    let c = choose(&rejoins)?;
    term::follow(c.term);
    let newest = c.round;
    let rollback = rollback_root.map(crate::control::plane::rollback_point);
    let round = match &rollback {
        Some((r, _)) => *r,
        None => newest,
    };
    Some(Takeover {
        term: c.term,
        round,
        source: c.source,
        rollback: rollback.map(|(_, d)| d),
        lost: c.lost,
        reason: c.reason,
        world: regs.len(),
        coordinator: coordinator.to_string(),
        earlier: std::fs::read(history)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
    })
}

/// What the survivors' registrations decide.
#[derive(Debug, PartialEq)]
struct Choice {
    /// The newest round any survivor would run next.
    round: u64,
    /// The first survivor there (registration index): everyone takes its state.
    source: usize,
    /// The term to lead: the newest one served, plus one.
    term: u64,
    /// The earliest loss, and how it was found.
    lost: Instant,
    reason: String,
}

/// The takeover's choice from each registration's rejoin (`None`: a fresh worker, never a
/// source), or `None` when no survivor registered.
fn choose(rejoins: &[Option<(&Rejoin, Instant)>]) -> Option<Choice> {
    let round = rejoins.iter().flatten().map(|(j, _)| j.next_round).max()?;
    let source = rejoins
        .iter()
        .position(|r| r.is_some_and(|(j, _)| j.next_round == round))?;
    let (first, lost) = rejoins.iter().flatten().min_by_key(|(_, at)| *at)?;
    let term = rejoins.iter().flatten().map(|(j, _)| j.term).max()? + 1;
    Some(Choice {
        round,
        source,
        term,
        lost: *lost,
        reason: first.reason.clone(),
    })
}

/// Where the coordinators of an elastic job keep its membership changes: `<run dir>/membership.json`.
pub(crate) fn history_file(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("membership.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejoin(next_round: u64, term: u64, reason: &str) -> Rejoin {
        Rejoin {
            next_round,
            term,
            lost_ms: 0.0,
            reason: reason.into(),
        }
    }

    #[test]
    fn the_newest_survivor_is_the_source_and_the_term_goes_up() {
        let t0 = Instant::now();
        let (a, b, c) = (rejoin(51, 1, "a"), rejoin(52, 2, "b"), rejoin(52, 1, "c"));
        let later = t0 + Duration::from_millis(5);
        // A fresh replacement (None) first: never the source.
        let regs = [None, Some((&a, later)), Some((&b, later)), Some((&c, t0))];
        let got = choose(&regs).unwrap();
        assert_eq!((got.round, got.source, got.term), (52, 2, 3));
        assert_eq!(
            (got.lost, got.reason.as_str()),
            (t0, "c"),
            "the earliest loss"
        );
        assert_eq!(choose(&[None, None]), None, "no survivor: a fresh start");
    }
}
