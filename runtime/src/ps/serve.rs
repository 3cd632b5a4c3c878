//! `PsServe`: the coordinator acting as the (only) parameter server, on its own `SyncArbiter`
//! thread. It serves the granted rounds as they are granted, in parallel with the control plane
//! collecting reports, so a parameter-server round has no control round trip either. At a round
//! whose plan checkpoints it sends its optimizer state to the first worker (see
//! [`crate::ps::state`]).
//!
//! On a failure it records the error (the coordinator prefers it over what the workers report)
//! and drops its communicator: the workers' links to it close, so they stop within the peer
//! timeout instead of waiting for a pull that never comes.

use crate::control::protocol::RoundPlan;
use crate::error::{RuntimeError, TrainingError};
use actix::{Actor, Handler, Message, SyncContext};
use lockstep_collective::{Communicator, ParameterServer};
use lockstep_trainer::optim::Optimizer;
use std::sync::{Arc, Mutex};

/// The parameter server's state.
pub(crate) struct PsServe {
    comm: Option<Communicator>,
    ps: ParameterServer,
    params: Vec<f32>,
    optimizer: Optimizer,
    failure: Arc<Mutex<Option<RuntimeError>>>,
}

impl PsServe {
    /// A server over `comm` with the shard layout `ps` (one shard: everything), the initial
    /// `params` and the optimizer; failures are recorded in `failure`.
    pub(crate) fn new(
        comm: Communicator,
        ps: ParameterServer,
        params: Vec<f32>,
        optimizer: Optimizer,
        failure: Arc<Mutex<Option<RuntimeError>>>,
    ) -> Self {
        PsServe {
            comm: Some(comm),
            ps,
            params,
            optimizer,
            failure,
        }
    }

    fn serve(&mut self, plan: &RoundPlan) -> Result<(), RuntimeError> {
        let Some(comm) = self.comm.as_mut() else {
            return Ok(()); // failed before; the error is recorded
        };
        let round = plan.round;
        comm.set_round(round);
        let (opt, lr) = (&mut self.optimizer, plan.lr);
        let mut failed = None;
        self.ps.step(comm, &[], &mut self.params, |_, p, g| {
            if let Err(e) = opt.step_with_lr(lr, p, g) {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            let op = "parameter server optimizer";
            return Err(TrainingError::optimizer(Some(round), op)(e).into());
        }
        if plan.checkpoint.is_some() {
            crate::ps::state::contribute(&mut self.ps, comm, &self.optimizer)?;
        }
        Ok(())
    }
}

impl Actor for PsServe {
    type Context = SyncContext<Self>;
}

/// Serve these granted rounds, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ServeRounds {
    /// The plans.
    pub rounds: Vec<RoundPlan>,
}

impl Handler<ServeRounds> for PsServe {
    type Result = ();
    fn handle(&mut self, msg: ServeRounds, _: &mut SyncContext<Self>) {
        for plan in &msg.rounds {
            if let Err(e) = self.serve(plan) {
                tracing::error!(round = plan.round, error = %e, "parameter server failed");
                self.comm = None;
                if let Ok(mut slot) = self.failure.lock() {
                    slot.get_or_insert(e);
                }
                return;
            }
        }
    }
}
