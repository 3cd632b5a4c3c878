//! Parameter-server optimizer state in checkpoints.
//!
//! Each server shard owns the optimizer state (step count, momentum or Adam moments) of its
//! contiguous range of the parameters; no worker has it. At a round whose plan checkpoints,
//! every server sends its state to the first worker right after the round's step
//! ([`lockstep_collective::ParameterServer::gather_state`], over the data links); that worker
//! loads the whole state into its (otherwise idle) optimizer and writes the checkpoint as in
//! allreduce mode: the parameters it just pulled, the servers' optimizer buffers at full length
//! in layout order, and the cursor of the same round. A checkpoint of either aggregation
//! therefore has one format, and `--resume` cuts each server's shard out of it again
//! ([`restore_shard`]).

use crate::error::{RuntimeError, TrainingError};
use lockstep_collective::{Communicator, ParameterServer};
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::{Optimizer, OptimizerState};
use std::ops::Range;
use std::path::Path;

/// The rank that gathers the servers' state and writes the checkpoint: the first worker.
pub(crate) const ROOT: usize = 0;

/// Server side: send this server's optimizer state (its shard) to [`ROOT`].
///
/// # Errors
/// The collective's error (the root or a link failed).
pub(crate) fn contribute(
    ps: &mut ParameterServer,
    comm: &mut Communicator,
    optimizer: &Optimizer,
) -> Result<(), RuntimeError> {
    let state = optimizer.state();
    let mine: Vec<&[f32]> = state.buffers.iter().map(|(_, b)| b.as_slice()).collect();
    ps.gather_state(comm, ROOT, state.step, &mine, &mut [])?;
    Ok(())
}

/// Worker side: take part in the gather; at [`ROOT`] the servers' whole state, with the buffer
/// names of `like` (an optimizer of the same spec over all parameters).
///
/// # Errors
/// The collective's error, naming a server whose state does not fit.
pub(crate) fn gather(
    ps: &mut ParameterServer,
    comm: &mut Communicator,
    like: &[String],
    num_params: usize,
) -> Result<Option<OptimizerState>, RuntimeError> {
    let root = comm.rank() == ROOT;
    let mut full = if root {
        vec![vec![0.0f32; num_params]; like.len()]
    } else {
        Vec::new()
    };
    let step = ps.gather_state(comm, ROOT, 0, &[], &mut full)?;
    Ok(root.then(|| OptimizerState {
        step,
        buffers: like.iter().cloned().zip(full).collect(),
    }))
}

/// A server's parameters and optimizer for `shard`, from the checkpoint in `dir` (written by
/// either aggregation: the optimizer buffers are stored at full length).
///
/// # Errors
/// The checkpoint does not verify, lacks a tensor, or its optimizer state does not fit.
pub(crate) fn restore_shard(
    dir: &Path,
    model: &dyn Model,
    full: &Optimizer,
    shard: Range<usize>,
) -> Result<(Vec<f32>, Optimizer), RuntimeError> {
    let restored = crate::checkpoint::read(dir, model, full)?;
    let mut whole = full.clone();
    whole
        .load_state(&restored.optimizer)
        .map_err(|source| TrainingError::CheckpointState {
            checkpoint: dir.display().to_string(),
            source,
        })?;
    let optimizer = whole
        .shard(shard)
        .map_err(TrainingError::optimizer(None, "job.optimizer"))?;
    Ok((restored.params, optimizer))
}
