//! A test-only fault switch, off unless the environment sets it: `LOCKSTEP_FAULT` makes one
//! worker stall for good inside a round while its heartbeats and control thread keep going
//! (an alive-but-stuck node, for the hang diagnosis tests):
//!
//! `LOCKSTEP_FAULT=stall:node=worker-1:round=5`: `Compute` on `worker-1` never returns from
//! forward/backward of round 5.
//!
//! `LOCKSTEP_FAULT=stall_save:node=worker-0`: `Compute` on `worker-0` never returns from the
//! final model save (the coordinator's end-of-job wait must name it).
//!
//! `LOCKSTEP_FAULT=fail:node=worker-1:round=5`: `Compute` on `worker-1` fails in round 5 with an
//! error (the worker aborts while its peers wait for it in the allreduce).
//!
//! `LOCKSTEP_FAULT=slow_checkpoint:node=worker-0:round=49`: `Compute` on `worker-0` spends 3 s
//! inside the checkpoint write after round 49, logging it first (to kill the coordinator while
//! a checkpoint is being written).
//!
//! Compiled only with the crate's `fault-injection` feature (off by default; the root crate's
//! tests turn it on): without it no build reads `LOCKSTEP_FAULT`, and the round loop has no
//! fault check at all. Documented in `docs/security.md` (a switch that hangs a job must never be
//! set in production; it is read only from the process's own environment).

use crate::error::{FaultSyntax, RuntimeError, SetupError};

/// The environment variable.
pub(crate) const VAR: &str = "LOCKSTEP_FAULT";

/// A parsed fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `stall:node=N:round=R`.
    Stall {
        /// The node that stalls.
        node: String,
        /// The round it stalls in.
        round: u64,
    },
    /// `stall_save:node=N`.
    StallSave {
        /// The node that stalls in its final model save.
        node: String,
    },
    /// `slow_checkpoint:node=N:round=R`.
    SlowCheckpoint {
        /// The node whose checkpoint write is slow.
        node: String,
        /// The round after which it writes.
        round: u64,
    },
    /// `fail:node=N:round=R`.
    Fail {
        /// The node that fails.
        node: String,
        /// The round it fails in.
        round: u64,
    },
}

impl Fault {
    /// Parse a `LOCKSTEP_FAULT` value.
    ///
    /// # Errors
    /// [`SetupError::Fault`] naming the variable and what is wrong.
    pub(crate) fn parse(v: &str) -> Result<Fault, RuntimeError> {
        let bad = |why: FaultSyntax| SetupError::Fault {
            var: VAR,
            value: v.to_string(),
            why,
        };
        let mut parts = v.split(':');
        let kind = parts.next();
        if !matches!(
            kind,
            Some("stall" | "stall_save" | "fail" | "slow_checkpoint")
        ) {
            return Err(bad(FaultSyntax::Kind).into());
        }
        let (mut node, mut round) = (None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("node", n)) if !n.is_empty() => node = Some(n.to_string()),
                Some(("round", r)) if kind != Some("stall_save") => {
                    round = Some(r.parse().map_err(|_| bad(FaultSyntax::Round))?)
                }
                _ => {
                    return Err(bad(FaultSyntax::Part {
                        part: p.to_string(),
                    })
                    .into())
                }
            }
        }
        match (kind, node, round) {
            (Some("stall"), Some(node), Some(round)) => Ok(Fault::Stall { node, round }),
            (Some("fail"), Some(node), Some(round)) => Ok(Fault::Fail { node, round }),
            (Some("slow_checkpoint"), Some(node), Some(round)) => {
                Ok(Fault::SlowCheckpoint { node, round })
            }
            (Some("stall_save"), Some(node), None) => Ok(Fault::StallSave { node }),
            (Some("stall" | "fail" | "slow_checkpoint"), _, _) => {
                Err(bad(FaultSyntax::NodeAndRound).into())
            }
            _ => Err(bad(FaultSyntax::Node).into()),
        }
    }

    /// The node the fault is for.
    pub(crate) fn node(&self) -> &str {
        match self {
            Fault::Stall { node, .. }
            | Fault::StallSave { node }
            | Fault::Fail { node, .. }
            | Fault::SlowCheckpoint { node, .. } => node,
        }
    }

    /// The fault set in the environment for `node` (`None` when unset or for another node).
    ///
    /// # Errors
    /// A malformed value.
    pub(crate) fn for_node(node: &str) -> Result<Option<Fault>, RuntimeError> {
        let Ok(v) = std::env::var(VAR) else {
            return Ok(None);
        };
        let f = Fault::parse(&v)?;
        Ok((f.node() == node).then_some(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_parses_and_bad_values_are_named() {
        assert_eq!(
            Fault::parse("stall:node=w1:round=5").unwrap(),
            Fault::Stall {
                node: "w1".into(),
                round: 5
            }
        );
        let e = Fault::parse("stall:node=w1:round=x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LOCKSTEP_FAULT") && e.contains("round"), "{e}");
        assert!(Fault::parse("crash:node=w1").is_err());
        assert!(Fault::parse("stall:node=w1").is_err());
        assert_eq!(
            Fault::parse("stall_save:node=w0").unwrap(),
            Fault::StallSave { node: "w0".into() }
        );
        assert!(Fault::parse("stall_save:node=w0:round=3").is_err());
        assert!(Fault::parse("stall_save").is_err());
        assert_eq!(
            Fault::parse("fail:node=w1:round=3").unwrap(),
            Fault::Fail {
                node: "w1".into(),
                round: 3
            }
        );
        assert!(Fault::parse("fail:node=w1").is_err());
        assert_eq!(
            Fault::parse("slow_checkpoint:node=w0:round=49").unwrap(),
            Fault::SlowCheckpoint {
                node: "w0".into(),
                round: 49
            }
        );
        assert!(Fault::parse("slow_checkpoint:node=w0").is_err());
    }
}
