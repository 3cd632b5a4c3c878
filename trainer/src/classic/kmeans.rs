//! k-means (`[job.model] kind = "kmeans"`): k-means++ initialisation from the training rows and
//! a fixed seed, then one Lloyd iteration per round over the whole training split.
//!
//! The round's "gradient" buffer carries the Lloyd statistics instead of a gradient: for every
//! cluster `c` the sum of its rows' features and its row count, each divided by the global batch
//! (the runtime's scaling), so the allreduce sums them over the workers (and over the
//! micro-batches in a fixed tree: the same bits for any worker count). The update is closed-form
//! ([`Model::closed_form_update`]): `centre_c = sum_c / count_c`; a cluster that lost every row
//! keeps its centre (as scikit-learn's Lloyd does not, it relocates it; on data like mnist5k
//! no cluster empties).
//!
//! Parameters (in `model.safetensors`): `kmeans.centres` `[k, d]`, `kmeans.sizes` `[k]` (each
//! cluster's share of the training rows at the last assignment) and `kmeans.init` `[k, d]` (the
//! k-means++ centres the job started from, never updated, so another tool can start from the
//! same centres). Prediction: the index of the nearest centre (ties: the lowest index). The loss
//! of a row is its squared distance to the nearest centre, so the training loss is the inertia
//! per row, and the held-out `loss` is the held-out inertia per row.

use crate::batch::Batch;
use crate::model::{Model, ModelError, ParamInfo, SpecError, StepOutput, Task};
use rand::Rng;
use std::ops::Range;

/// The k-means model.
#[derive(Debug, Clone)]
pub struct KMeans {
    k: usize,
    d: usize,
    params: Vec<f32>,
    layout: Vec<ParamInfo>,
    buckets: Vec<Range<usize>>,
}

fn info(name: &str, shape: Vec<usize>, offset: usize) -> ParamInfo {
    let len = shape.iter().product();
    ParamInfo {
        name: name.to_string(),
        shape,
        offset,
        len,
    }
}

/// Squared Euclidean distance, summed in f64 in index order.
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let t = f64::from(x) - f64::from(y);
            t * t
        })
        .sum()
}

/// k-means++ (Arthur and Vassilvitskii): the first centre a uniformly drawn row, each next one a
/// row drawn with probability proportional to its squared distance to the nearest centre so far
/// (one draw per centre, as scikit-learn's `n_local_trials = 1`). `x` is `rows x d`; the draws
/// come from `rng`, so a seed fixes the centres.
///
/// # Errors
/// [`ModelError::Spec`] when there are fewer rows than `k`.
pub fn kmeans_plus_plus<R: Rng>(
    x: &[f32],
    d: usize,
    k: usize,
    rng: &mut R,
) -> Result<Vec<f32>, ModelError> {
    let rows = x.len().checked_div(d).unwrap_or(0);
    if rows < k {
        return Err(SpecError::KmeansRows { clusters: k, rows }.into());
    }
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut centres = Vec::with_capacity(k * d);
    centres.extend_from_slice(row(rng.gen_range(0..rows)));
    let mut near: Vec<f64> = (0..rows).map(|i| dist2(row(i), &centres[..d])).collect();
    while centres.len() < k * d {
        let total: f64 = near.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.gen::<f64>() * total;
            near.iter()
                .position(|&w| {
                    u -= w;
                    u < 0.0
                })
                .unwrap_or(rows - 1)
        } else {
            rng.gen_range(0..rows) // every row already is a centre
        };
        let start = centres.len();
        centres.extend_from_slice(row(pick));
        for (i, n) in near.iter_mut().enumerate() {
            *n = n.min(dist2(row(i), &centres[start..start + d]));
        }
    }
    Ok(centres)
}

impl KMeans {
    /// `k` clusters of `d` features starting from `centres` (`k x d`, e.g. from
    /// [`kmeans_plus_plus`]).
    ///
    /// # Errors
    /// [`ModelError::Spec`] for `k = 0`, `d = 0` or centres of the wrong length.
    pub fn new(k: usize, d: usize, centres: &[f32]) -> Result<KMeans, ModelError> {
        if k == 0 || d == 0 || centres.len() != k * d {
            return Err(SpecError::KmeansShape {
                clusters: k,
                features: d,
                centres: centres.len(),
            }
            .into());
        }
        let layout = vec![
            info("kmeans.centres", vec![k, d], 0),
            info("kmeans.sizes", vec![k], k * d),
            info("kmeans.init", vec![k, d], k * d + k),
        ];
        let mut params = vec![0.0; 2 * k * d + k];
        params[..k * d].copy_from_slice(centres);
        params[k * d + k..].copy_from_slice(centres);
        let n = params.len();
        Ok(KMeans {
            k,
            d,
            params,
            layout,
            buckets: std::iter::once(0..n).collect(),
        })
    }

    /// The nearest centre of `row` and its squared distance.
    fn nearest(&self, row: &[f32]) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for c in 0..self.k {
            let dd = dist2(row, &self.params[c * self.d..(c + 1) * self.d]);
            if dd < best.1 {
                best = (c, dd);
            }
        }
        best
    }

    fn check(&self, x: &[f32], rows: usize) -> Result<(), ModelError> {
        if x.len() != rows * self.d {
            return Err(ModelError::InputWidth {
                model: "kmeans".into(),
                expected: self.d,
                actual: x.len().checked_div(rows).unwrap_or(0),
            });
        }
        Ok(())
    }
}

impl Model for KMeans {
    fn layout(&self) -> &[ParamInfo] {
        &self.layout
    }
    fn buckets(&self) -> &[Range<usize>] {
        &self.buckets
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The Lloyd statistics of `batch` (see the module docs), each divided by `divisor`.
    fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        divisor: f32,
        grads: &mut [f32],
        on_bucket: &mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Result<StepOutput, ModelError> {
        self.check(&batch.x, batch.rows)?;
        ModelError::check_len("gradient", self.params.len(), grads.len())?;
        let (k, d) = (self.k, self.d);
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0u64; k];
        let mut loss_sum = 0.0f64;
        for row in batch.x.chunks_exact(d) {
            let (c, dd) = self.nearest(row);
            loss_sum += dd;
            counts[c] += 1;
            for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let div = f64::from(divisor);
        for (g, s) in grads[..k * d].iter_mut().zip(&sums) {
            *g = (s / div) as f32;
        }
        for (g, &n) in grads[k * d..k * d + k].iter_mut().zip(&counts) {
            *g = (n as f64 / div) as f32;
        }
        grads[k * d + k..].fill(0.0);
        on_bucket(0..grads.len(), grads);
        Ok(StepOutput {
            loss: loss_sum / batch.rows.max(1) as f64,
            loss_sum,
            rows: batch.rows,
        })
    }

    fn closed_form_update(&mut self, stats: &[f32]) -> Result<bool, ModelError> {
        ModelError::check_len("k-means statistics", self.params.len(), stats.len())?;
        let (k, d) = (self.k, self.d);
        for c in 0..k {
            let n = stats[k * d + c];
            self.params[k * d + c] = n;
            if n > 0.0 {
                for j in 0..d {
                    self.params[c * d + j] = stats[c * d + j] / n;
                }
            }
        }
        Ok(true)
    }

    /// k-means++ from the training rows, the draws from `(seed, STREAM_INIT)`.
    fn init_from_data(&mut self, x: &[f32], seed: u64) -> Result<(), ModelError> {
        let mut rng = crate::init::rng(seed, crate::init::STREAM_INIT);
        let centres = kmeans_plus_plus(x, self.d, self.k, &mut rng)?;
        *self = KMeans::new(self.k, self.d, &centres)?;
        Ok(())
    }

    fn unsupervised(&self) -> bool {
        true
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError> {
        self.check(&batch.x, batch.rows)?;
        let loss_sum: f64 = batch
            .x
            .chunks_exact(self.d)
            .map(|r| self.nearest(r).1)
            .sum();
        Ok(StepOutput {
            loss: loss_sum / batch.rows.max(1) as f64,
            loss_sum,
            rows: batch.rows,
        })
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        self.check(x, rows)?;
        Ok(x.chunks_exact(self.d)
            .map(|r| self.nearest(r).0 as f32)
            .collect())
    }

    fn in_dim(&self) -> usize {
        self.d
    }
    fn out_dim(&self) -> usize {
        1
    }
    fn task(&self) -> Task {
        Task::Regression { outputs: 1 }
    }
    fn name(&self) -> &str {
        "kmeans"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Targets;

    #[test]
    fn lloyd_finds_two_separated_blobs_and_predicts_their_ids() {
        // Two blobs around (0, 0) and (10, 10).
        let pts: Vec<f32> = (0..40)
            .flat_map(|i| {
                let o = if i % 2 == 0 { 0.0 } else { 10.0 };
                [o + (i % 5) as f32 * 0.1, o - (i % 3) as f32 * 0.1]
            })
            .collect();
        let mut rng = crate::init::rng(7, crate::init::STREAM_INIT);
        let init = kmeans_plus_plus(&pts, 2, 2, &mut rng).unwrap();
        let mut m = KMeans::new(2, 2, &init).unwrap();
        let batch = Batch {
            x: pts.clone(),
            rows: 40,
            cols: 2,
            y: Targets::Real(vec![0.0; 40]),
        };
        let mut g = vec![0.0; m.params().len()];
        for _ in 0..5 {
            m.forward_backward_scaled(&batch, 40.0, &mut g, &mut |_, _| {})
                .unwrap();
            assert!(m.closed_form_update(&g).unwrap());
        }
        let ids = m.predict(&pts, 40).unwrap();
        assert!(ids.iter().step_by(2).all(|&c| c == ids[0]));
        assert!(ids.iter().skip(1).step_by(2).all(|&c| c == ids[1]));
        assert_ne!(ids[0], ids[1]);
        let sizes = &m.params()[4..6];
        assert_eq!(sizes, &[0.5, 0.5]);
        assert_eq!(&m.params()[6..], &init[..], "kmeans.init is kept");
        let e = m.evaluate(&batch).unwrap();
        assert!(e.loss < 0.1, "{e:?}");
        assert!(kmeans_plus_plus(&pts[..2], 2, 2, &mut rng).is_err());
    }
}
