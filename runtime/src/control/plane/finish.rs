//! The end of a job on the control plane: the first worker writes the model ([`RunSave`]), then
//! every member reports its final parameters' hash ([`RunFinish`]). Both waits are bounded by
//! their own `timeout` (the coordinator passes [`crate::control::hang::ProgressClock::end_timeout`]): a
//! member that is alive but does not answer in time is named, with the operation, in
//! [`RuntimeError::EndTimeout`], and the job stops, instead of waiting for the workers' own
//! command timeout.

use super::*;
use crate::control::protocol::ControlMessage;
use crate::error::MismatchError;
use crate::observe::report::SolverReport;

/// How long a member after the first silent one still gets to show an answer that already
/// arrived (the shared deadline has passed by then).
const GRACE: Duration = Duration::from_millis(200);

/// Ask the first worker to write the model.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub(crate) struct RunSave {
    /// After which round.
    pub round: u64,
    /// Destination.
    pub path: String,
    /// Also write this checkpoint (the end of a stream).
    pub checkpoint: Option<CheckpointPlan>,
    /// How long the worker may take to answer.
    pub timeout: Duration,
}

impl Handler<RunSave> for ControlPlane {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: RunSave, _: &mut SyncContext<Self>) -> Self::Result {
        let operation = if msg.path.is_empty() {
            "the checkpoint save"
        } else {
            "the final model save"
        };
        let started = Instant::now();
        let deadline = started + msg.timeout;
        let cmd = ToWorker::Save {
            round: msg.round,
            path: msg.path,
            checkpoint: msg.checkpoint,
        };
        self.members[0].send(msg.round, "requesting a model save", &cmd)?;
        let doing = "waiting for the model save";
        let got = self.next_of(0, msg.round, doing, Some(deadline), false);
        let name = self.members[0].name.clone();
        match got {
            Ok(ToCoordinator::Saved { path }) => Ok(path),
            Ok(other) => Err(ProtocolError::Answered {
                node: name,
                got: other.name(),
                command: "Save",
            }
            .into()),
            Err(RuntimeError::Timeout { .. }) => Err(RuntimeError::EndTimeout {
                operation,
                round: msg.round,
                nodes: vec![name],
                waited_ms: started.elapsed().as_millis() as u64,
            }),
            Err(e) => Err(e),
        }
    }
}

/// End training: every worker reports its final parameters' hash; they must agree. The result
/// is the hash and rank 0's solver progress (L-BFGS).
#[derive(Message)]
#[rtype(result = "Result<(String, Option<SolverReport>), RuntimeError>")]
pub(crate) struct RunFinish {
    /// The last round.
    pub round: u64,
    /// How long the members may take to answer, all together.
    pub timeout: Duration,
}

impl Handler<RunFinish> for ControlPlane {
    type Result = Result<(String, Option<SolverReport>), RuntimeError>;
    fn handle(&mut self, msg: RunFinish, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        let deadline = started + msg.timeout;
        self.broadcast(msg.round, &ToWorker::Finish, "finishing")?;
        let mut hashes: Vec<(String, String)> = Vec::new();
        let mut solver: Option<SolverReport> = None;
        let mut silent: Vec<String> = Vec::new();
        for i in 0..self.members.len() {
            // Past the deadline, a member still gets a moment for an answer already on its way.
            let until = deadline.max(Instant::now() + GRACE * u32::from(!silent.is_empty()));
            let doing = "waiting for Finished";
            let got = self.next_of(i, msg.round, doing, Some(until), false);
            let m = &self.members[i];
            match got {
                Ok(ToCoordinator::Finished {
                    weights_sha256,
                    solver: s,
                }) => {
                    solver = solver.or(s);
                    hashes.push((m.name.clone(), weights_sha256))
                }
                Ok(other) => {
                    return Err(ProtocolError::Answered {
                        node: m.name.clone(),
                        got: other.name(),
                        command: "Finish",
                    }
                    .into())
                }
                Err(RuntimeError::Timeout { .. }) => silent.push(m.name.clone()),
                Err(e) => return Err(e),
            }
        }
        if !silent.is_empty() {
            return Err(RuntimeError::EndTimeout {
                operation: "the final hash exchange (Finish)",
                round: msg.round,
                nodes: silent,
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        let workers = &hashes[..self.workers.min(hashes.len())];
        let first = workers.first().map(|h| h.1.clone()).unwrap_or_default();
        if let Some((node, h)) = workers.iter().find(|(_, h)| *h != first) {
            return Err(MismatchError::Diverged {
                node_a: workers[0].0.clone(),
                hash_a: first.clone(),
                node_b: node.clone(),
                hash_b: h.clone(),
            }
            .into());
        }
        Ok((first, solver))
    }
}
