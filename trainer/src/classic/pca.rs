//! PCA (`[job.model] kind = "pca"`): the leading `components` eigenvectors of the training
//! rows' covariance, from one allreduced pass.
//!
//! The round's "gradient" buffer carries the moments of the rows instead of a gradient: the
//! feature sums and the sums of products `x xᵀ`, each divided by the global batch `n` (the
//! runtime's scaling), so the allreduce gives `E[x]` and `E[x xᵀ]` over the whole training
//! split (summed in a fixed tree over the micro-batches: the same bits for any worker count).
//! Every worker accumulates its rows in f64 and rounds once. The update is closed-form
//! ([`Model::closed_form_update`]): the covariance `n / (n − 1) · (E[x xᵀ] − E[x] E[x]ᵀ)` (the
//! unbiased one, as scikit-learn's `explained_variance_`), its leading eigenpairs in f64
//! ([`super::eigen::top_eigen`]), each component's sign chosen so that its largest-magnitude
//! entry is positive. One round is enough; later rounds compute the same moments again.
//!
//! Parameters (in `model.safetensors`): `pca.mean` `[d]`, `pca.second_moment` `[d, d]` (the
//! moments of the last pass), `pca.components` `[k, d]`, `pca.explained_variance` `[k]` and
//! `pca.total_variance` `[1]` (the trace of the covariance: explained variance ratio =
//! explained_variance / total_variance). Prediction: the projections `(x − mean) · componentᵢ`,
//! `k` values per row. The loss of a row is its squared reconstruction error
//! `|x − mean − Σ_i z_i componentᵢ|²`.

use crate::batch::Batch;
use crate::model::{Model, ModelError, ParamInfo, SpecError, StepOutput, Task};
use std::ops::Range;

/// The PCA model.
#[derive(Debug, Clone)]
pub struct Pca {
    k: usize,
    d: usize,
    /// The global batch of the last pass (the `n` of the unbiased covariance).
    rows_seen: f64,
    params: Vec<f32>,
    layout: Vec<ParamInfo>,
    buckets: Vec<Range<usize>>,
}

impl Pca {
    /// `k` components of `d` features, not fitted yet (zeros).
    ///
    /// # Errors
    /// [`ModelError::Spec`] for `k = 0` or `k > d`.
    pub fn new(k: usize, d: usize) -> Result<Pca, ModelError> {
        if k == 0 || k > d {
            return Err(SpecError::PcaComponents {
                components: k,
                features: d,
            }
            .into());
        }
        let mut layout = Vec::new();
        let mut at = 0;
        for (name, shape) in [
            ("pca.mean", vec![d]),
            ("pca.second_moment", vec![d, d]),
            ("pca.components", vec![k, d]),
            ("pca.explained_variance", vec![k]),
            ("pca.total_variance", vec![1]),
        ] {
            let len = shape.iter().product();
            layout.push(ParamInfo {
                name: name.into(),
                shape,
                offset: at,
                len,
            });
            at += len;
        }
        Ok(Pca {
            k,
            d,
            rows_seen: 0.0,
            params: vec![0.0; at],
            layout,
            buckets: std::iter::once(0..at).collect(),
        })
    }

    fn range(&self, i: usize) -> Range<usize> {
        self.layout[i].range()
    }

    fn check(&self, x: &[f32], rows: usize) -> Result<(), ModelError> {
        if x.len() != rows * self.d {
            return Err(ModelError::InputWidth {
                model: "pca".into(),
                expected: self.d,
                actual: x.len().checked_div(rows).unwrap_or(0),
            });
        }
        Ok(())
    }

    /// The projections of one row, and its squared reconstruction error.
    fn project(&self, row: &[f32], z: &mut [f64]) -> f64 {
        let mean = &self.params[self.range(0)];
        let comps = &self.params[self.range(2)];
        let centred: Vec<f64> = row
            .iter()
            .zip(mean)
            .map(|(&x, &m)| f64::from(x) - f64::from(m))
            .collect();
        let mut resid = centred.clone();
        for (i, zi) in z.iter_mut().enumerate() {
            let c = &comps[i * self.d..(i + 1) * self.d];
            *zi = centred.iter().zip(c).map(|(a, &b)| a * f64::from(b)).sum();
            resid
                .iter_mut()
                .zip(c)
                .for_each(|(r, &b)| *r -= *zi * f64::from(b));
        }
        resid.iter().map(|r| r * r).sum()
    }
}

impl Model for Pca {
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

    /// The moments of `batch` (see the module docs), each divided by `divisor`.
    fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        divisor: f32,
        grads: &mut [f32],
        on_bucket: &mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Result<StepOutput, ModelError> {
        self.check(&batch.x, batch.rows)?;
        ModelError::check_len("gradient", self.params.len(), grads.len())?;
        let d = self.d;
        let mut sum = vec![0.0f64; d];
        let mut second = vec![0.0f64; d * d];
        let mut row64 = vec![0.0f64; d];
        for row in batch.x.chunks_exact(d) {
            row64
                .iter_mut()
                .zip(row)
                .for_each(|(a, &b)| *a = f64::from(b));
            for (i, &xi) in row64.iter().enumerate() {
                sum[i] += xi;
                if xi == 0.0 {
                    continue; // sparse rows (pixels) skip whole lines
                }
                let line = &mut second[i * d..(i + 1) * d];
                line.iter_mut()
                    .zip(&row64)
                    .for_each(|(s, &xj)| *s += xi * xj);
            }
        }
        let div = f64::from(divisor);
        self.rows_seen = div;
        grads.fill(0.0);
        for (g, s) in grads[self.range(0)].iter_mut().zip(&sum) {
            *g = (s / div) as f32;
        }
        for (g, s) in grads[self.range(1)].iter_mut().zip(&second) {
            *g = (s / div) as f32;
        }
        on_bucket(0..grads.len(), grads);
        // The training loss is the reconstruction error with the components so far.
        let mut z = vec![0.0; self.k];
        let loss_sum: f64 = batch
            .x
            .chunks_exact(d)
            .map(|r| self.project(r, &mut z))
            .sum();
        Ok(StepOutput {
            loss: loss_sum / batch.rows.max(1) as f64,
            loss_sum,
            rows: batch.rows,
        })
    }

    fn closed_form_update(&mut self, stats: &[f32]) -> Result<bool, ModelError> {
        ModelError::check_len("PCA moments", self.params.len(), stats.len())?;
        let (d, k) = (self.d, self.k);
        let (rm, rs) = (self.range(0), self.range(1));
        let mean: Vec<f64> = stats[rm.clone()].iter().map(|&v| f64::from(v)).collect();
        let n = self.rows_seen;
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let mut cov = vec![0.0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                // Symmetrised: the f32 moments are the same bits both ways, but be exact.
                let s = 0.5
                    * (f64::from(stats[rs.start + i * d + j])
                        + f64::from(stats[rs.start + j * d + i]));
                cov[i * d + j] = unbiased * (s - mean[i] * mean[j]);
            }
        }
        let total: f64 = (0..d).map(|i| cov[i * d + i]).sum();
        let (vals, mut vecs) = super::eigen::top_eigen(&cov, d, k);
        for v in vecs.chunks_exact_mut(d) {
            let big = v
                .iter()
                .fold(0.0f64, |m, x| if x.abs() > m.abs() { *x } else { m });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
        }
        self.params[rm.clone()].copy_from_slice(&stats[rm]);
        self.params[rs.clone()].copy_from_slice(&stats[rs]);
        let (rc, re, rt) = (self.range(2), self.range(3), self.range(4));
        for (p, v) in self.params[rc].iter_mut().zip(&vecs) {
            *p = *v as f32;
        }
        for (p, v) in self.params[re].iter_mut().zip(&vals) {
            *p = *v as f32;
        }
        self.params[rt][0] = total as f32;
        Ok(true)
    }

    fn unsupervised(&self) -> bool {
        true
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError> {
        self.check(&batch.x, batch.rows)?;
        let mut z = vec![0.0; self.k];
        let loss_sum: f64 = batch
            .x
            .chunks_exact(self.d)
            .map(|r| self.project(r, &mut z))
            .sum();
        Ok(StepOutput {
            loss: loss_sum / batch.rows.max(1) as f64,
            loss_sum,
            rows: batch.rows,
        })
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        self.check(x, rows)?;
        let mut z = vec![0.0; self.k];
        let mut out = Vec::with_capacity(rows * self.k);
        for r in x.chunks_exact(self.d) {
            self.project(r, &mut z);
            out.extend(z.iter().map(|&v| v as f32));
        }
        Ok(out)
    }

    fn in_dim(&self) -> usize {
        self.d
    }
    fn out_dim(&self) -> usize {
        self.k
    }
    fn task(&self) -> Task {
        Task::Regression { outputs: self.k }
    }
    fn name(&self) -> &str {
        "pca"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Targets;

    #[test]
    fn recovers_the_direction_and_variance_of_a_stretched_cloud() {
        // Points along (3, 4)/5 with spread 2, plus a small orthogonal wobble.
        let rows = 200;
        let x: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let t = (i as f32 / rows as f32 - 0.5) * 4.0;
                let w = if i % 2 == 0 { 0.05 } else { -0.05 };
                [1.0 + 0.6 * t - 0.8 * w, -2.0 + 0.8 * t + 0.6 * w]
            })
            .collect();
        let batch = Batch {
            x: x.clone(),
            rows,
            cols: 2,
            y: Targets::Real(vec![0.0; rows]),
        };
        let mut m = Pca::new(1, 2).unwrap();
        let mut g = vec![0.0; m.params().len()];
        m.forward_backward_scaled(&batch, rows as f32, &mut g, &mut |_, _| {})
            .unwrap();
        assert!(m.closed_form_update(&g).unwrap());
        let comp = &m.params()[m.range(2)];
        assert!(
            (comp[0] - 0.6).abs() < 1e-3 && (comp[1] - 0.8).abs() < 1e-3,
            "{comp:?}"
        );
        // The variance of t (unbiased), against the explained variance.
        let ts: Vec<f64> = (0..rows)
            .map(|i| (i as f64 / rows as f64 - 0.5) * 4.0)
            .collect();
        let mt = ts.iter().sum::<f64>() / rows as f64;
        let vt = ts.iter().map(|t| (t - mt).powi(2)).sum::<f64>() / (rows - 1) as f64;
        let ev = f64::from(m.params()[m.range(3)][0]);
        assert!((ev - vt).abs() < 1e-4 * vt, "{ev} vs {vt}");
        let e = m.evaluate(&batch).unwrap();
        assert!((e.loss - 0.0025).abs() < 1e-4, "{e:?}");
        assert_eq!(m.predict(&x, rows).unwrap().len(), rows);
    }
}
