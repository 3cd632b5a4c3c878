//! `Aggregator`: averages gradient buckets across the data mesh, on its own `SyncArbiter` thread
//! (collectives block on links). With allreduce each bucket is reduced as soon as it arrives, so
//! communication overlaps the backprop of the next bucket; with a parameter server the round's
//! gradients are pushed and the new parameters pulled at `FinishRound`.

use super::messages::*;
use crate::error::RuntimeError;
use actix::{Actor, Handler, SyncContext};
use lockstep_collective::{Algo, AllReduce, Communicator, ParameterServer};
use std::time::{Duration, Instant};

/// How the aggregator averages.
pub enum Mode {
    /// Allreduce (mean) of each bucket among the workers.
    Allreduce,
    /// Allreduce (sum) by recursive doubling: with micro-batch gradients pre-scaled by the global
    /// batch, the order of additions is a fixed binary tree whatever the world size.
    AllreduceTreeSum,
    /// Push/pull through parameter server ranks; `params` is this replica's copy.
    ParameterServer {
        /// The shard layout.
        ps: ParameterServer,
        /// Parameters as last pulled.
        params: Vec<f32>,
    },
}

/// The aggregator actor.
pub struct Aggregator {
    comm: Communicator,
    mode: Mode,
    grads: Vec<f32>,
    comm_time: Duration,
    error: Option<lockstep_collective::CollectiveError>,
}

impl Aggregator {
    /// An aggregator over `comm` for `num_params` parameters.
    pub fn new(comm: Communicator, mode: Mode, num_params: usize) -> Self {
        Aggregator {
            comm,
            mode,
            grads: vec![0.0; num_params],
            comm_time: Duration::ZERO,
            error: None,
        }
    }
}

impl Actor for Aggregator {
    type Context = SyncContext<Self>;
}

impl Handler<GradBucket> for Aggregator {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, mut msg: GradBucket, _: &mut SyncContext<Self>) -> Self::Result {
        if let Some(e) = &self.error {
            return Err(e.clone().into());
        }
        if msg.range.end > self.grads.len() || msg.range.len() != msg.data.len() {
            let e = format!(
                "round {}: bucket {:?} does not fit {} gradients",
                msg.round,
                msg.range,
                self.grads.len()
            );
            return Err(RuntimeError::Inconsistent(e));
        }
        if matches!(self.mode, Mode::Allreduce | Mode::AllreduceTreeSum) {
            let started = Instant::now();
            self.comm.set_round(msg.round);
            let len = msg.data.len();
            let how = match self.mode {
                Mode::AllreduceTreeSum => AllReduce::sum().algo(Algo::Tree),
                _ => AllReduce::mean(),
            };
            let res = self.comm.allreduce(&mut msg.data, how.shape(&[len]));
            self.comm_time += started.elapsed();
            if let Err(e) = res {
                self.error = Some(e.clone());
                return Err(e.into());
            }
        }
        self.grads[msg.range].copy_from_slice(&msg.data);
        Ok(())
    }
}

impl Handler<FinishRound> for Aggregator {
    type Result = Result<AggregateOutcome, RuntimeError>;
    fn handle(&mut self, msg: FinishRound, _: &mut SyncContext<Self>) -> Self::Result {
        if let Some(e) = self.error.take() {
            return Err(e.into());
        }
        let value = match &mut self.mode {
            Mode::Allreduce | Mode::AllreduceTreeSum => {
                Aggregated::MeanGradients(self.grads.clone())
            }
            Mode::ParameterServer { ps, params } => {
                let started = Instant::now();
                self.comm.set_round(msg.round);
                ps.step(&mut self.comm, &self.grads, params, |_, _, _| {})?;
                self.comm_time += started.elapsed();
                Aggregated::Parameters(params.clone())
            }
        };
        let comm = std::mem::take(&mut self.comm_time);
        Ok(AggregateOutcome { value, comm })
    }
}

impl Handler<SyncParams> for Aggregator {
    type Result = Result<Vec<f32>, RuntimeError>;
    fn handle(&mut self, mut msg: SyncParams, _: &mut SyncContext<Self>) -> Self::Result {
        match &mut self.mode {
            Mode::Allreduce | Mode::AllreduceTreeSum => {
                self.comm.set_round(0);
                self.comm.broadcast(&mut msg.params, 0)?;
            }
            // Servers hold the authoritative copy; every replica was initialised from the same
            // seed, which the coordinator checked at registration (same layout).
            Mode::ParameterServer { params, .. } => params.clone_from(&msg.params),
        }
        Ok(msg.params)
    }
}
