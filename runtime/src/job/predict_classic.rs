//! `lockstep predict`'s output columns for the models that ignore the label (see
//! `lockstep_trainer::classic`): k-means writes `cluster` (Int64, the nearest centre's index),
//! PCA writes `pc0`, `pc1`, ... (Float32, the projections on each component).

use arrow_array::{ArrayRef, Float32Array, Int64Array};
use arrow_schema::{DataType, Field};
use lockstep_trainer::model::Model;
use std::sync::Arc;

/// The prediction columns of an unsupervised `model`; `None` for the others.
pub(super) fn fields(model: &dyn Model) -> Option<Vec<Field>> {
    if !model.unsupervised() {
        return None;
    }
    Some(match model.name() {
        "kmeans" => vec![Field::new("cluster", DataType::Int64, false)],
        _ => (0..model.out_dim())
            .map(|i| Field::new(format!("pc{i}"), DataType::Float32, false))
            .collect(),
    })
}

/// The arrays of [`fields`] for `n` rows of predictions `pred` (`n x out_dim`).
pub(super) fn arrays(model: &dyn Model, pred: &[f32], n: usize) -> Vec<ArrayRef> {
    if model.name() == "kmeans" {
        let ids = Int64Array::from_iter_values(pred.iter().map(|&c| c as i64));
        return vec![Arc::new(ids)];
    }
    let k = model.out_dim();
    (0..k)
        .map(|j| {
            let col: Vec<f32> = (0..n).map(|i| pred[i * k + j]).collect();
            Arc::new(Float32Array::from(col)) as ArrayRef
        })
        .collect()
}
