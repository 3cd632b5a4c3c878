//! The `Compute` actor's update after a round's aggregation: the optimizer step on the reduced
//! gradients, the parameters pulled from the parameter servers, or, for the closed-form models
//! (k-means, PCA), the model's own update from the reduced statistics; and L-BFGS's
//! convergence line.

use super::Compute;
use crate::error::{MismatchError, RuntimeError, TrainingError};
use crate::round::messages::Reduced;
use lockstep_tensor::cast_slice;

impl Compute {
    /// Move the parameters to round `round`'s result `msg` (learning rate `lr`).
    pub(super) fn apply_update(
        &mut self,
        round: u64,
        lr: f32,
        msg: &Reduced,
    ) -> Result<(), RuntimeError> {
        // k-means, PCA: the reduced statistics are the update (no optimizer step).
        let stats = cast_slice::<f32>(&msg.grads).unwrap_or(&[]);
        let closed = msg.params.is_none()
            && self
                .model
                .closed_form_update(stats)
                .map_err(TrainingError::step(round, Some("update")))?;
        let params = self.model.params_mut();
        match &msg.params {
            None if closed => {}
            None => {
                let g =
                    cast_slice::<f32>(&msg.grads).map_err(|source| MismatchError::Gradients {
                        round,
                        what: None,
                        source,
                    })?;
                self.optimizer
                    .step_with_lr(lr, params, g)
                    .map_err(TrainingError::optimizer(Some(round), "optimizer"))?
            }
            Some(p) if p.len() == params.len() => params.copy_from_slice(p),
            Some(p) => {
                return Err(MismatchError::Params {
                    round: Some(round),
                    verb: "pulled",
                    got: p.len(),
                    model: params.len(),
                }
                .into())
            }
        }
        if let Some(p) = self.optimizer.lbfgs_progress() {
            if self.rank0 && p.converged && p.evaluations == self.optimizer.steps() {
                tracing::info!(
                    "L-BFGS converged at round {round}: {} iterations, {} gradient evaluations, largest gradient component {:.3e}",
                    p.iterations,
                    p.evaluations,
                    p.grad_max
                );
            }
        }
        Ok(())
    }
}
