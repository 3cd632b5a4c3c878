//! The `Compute` actor's state between rounds, read and written by the rest of the node:
//! parameters and optimizer state out (elastic hand-over), parameters in (a synchronised start),
//! held-out evaluation and the weights hash.

use super::Compute;
use crate::error::{MismatchError, RuntimeError};
use crate::job;
use crate::round::messages::*;
use actix::{Handler, SyncContext};
use std::collections::BTreeMap;

impl Handler<ExportState> for Compute {
    type Result = Result<WorkerState, RuntimeError>;
    fn handle(&mut self, _: ExportState, _: &mut SyncContext<Self>) -> Self::Result {
        self.stopped = true;
        self.running = None;
        Ok(WorkerState {
            params: self.model.params().to_vec(),
            optimizer: self.optimizer.state(),
            next_round: self.next_round,
        })
    }
}

impl Handler<SetParams> for Compute {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: SetParams, _: &mut SyncContext<Self>) -> Self::Result {
        let params = self.model.params_mut();
        if msg.params.len() != params.len() {
            return Err(MismatchError::Params {
                round: None,
                verb: "got",
                got: msg.params.len(),
                model: params.len(),
            }
            .into());
        }
        params.copy_from_slice(&msg.params);
        Ok(())
    }
}

impl Handler<GetParams> for Compute {
    type Result = Result<Vec<f32>, RuntimeError>;
    fn handle(&mut self, _: GetParams, _: &mut SyncContext<Self>) -> Self::Result {
        Ok(self.model.params().to_vec())
    }
}

impl Handler<Evaluate> for Compute {
    type Result = Result<BTreeMap<String, f64>, RuntimeError>;
    fn handle(&mut self, _: Evaluate, _: &mut SyncContext<Self>) -> Self::Result {
        job::evaluate(self.model.as_mut(), self.task, &self.test)
    }
}

impl Handler<ParamsHash> for Compute {
    type Result = Result<(String, Option<crate::observe::report::SolverReport>), RuntimeError>;
    fn handle(&mut self, _: ParamsHash, _: &mut SyncContext<Self>) -> Self::Result {
        let solver =
            self.optimizer
                .lbfgs_progress()
                .map(|p| crate::observe::report::SolverReport {
                    kind: "lbfgs".into(),
                    iterations: p.iterations,
                    evaluations: p.evaluations,
                    grad_max: p.grad_max,
                    converged: p.converged,
                });
        Ok((self.weights_hash()?, solver))
    }
}
