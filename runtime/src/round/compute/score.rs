//! Prequential scoring: with streams, `Compute` scores each shard under the current parameters
//! before training on it, and the pairs go to the coordinator with `RoundDone`.

use super::Compute;
use crate::error::{RuntimeError, TrainingError};
use lockstep_trainer::Batch;

impl Compute {
    /// `(prediction, label)` of every row of `batch` under the current parameters.
    pub(super) fn score(
        &mut self,
        round: u64,
        batch: &Batch,
    ) -> Result<Vec<[f32; 2]>, RuntimeError> {
        if !self.prequential || batch.rows == 0 {
            return Ok(Vec::new());
        }
        let pred = self
            .model
            .predict(&batch.x, batch.rows)
            .map_err(TrainingError::step(round, Some("scoring")))?;
        Ok(match &batch.y {
            lockstep_trainer::Targets::Real(y) => {
                pred.iter().zip(y).map(|(p, y)| [*p, *y]).collect()
            }
            lockstep_trainer::Targets::Class(y) => {
                let cols = self.model.out_dim();
                let top = lockstep_trainer::metrics::argmax_rows(&pred, cols);
                top.iter()
                    .zip(y)
                    .map(|(p, y)| [*p as f32, *y as f32])
                    .collect()
            }
        })
    }
}
