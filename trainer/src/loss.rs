//! Losses over a batch of model outputs: mean squared error, binary cross-entropy with logits
//! and softmax cross-entropy, each numerically stable and batched.
//!
//! [`Loss::eval`] returns the *sum* of per-row losses (in f64) and writes the gradient of
//! `sum / divisor` with respect to the outputs. The model passes `divisor = rows` for the usual
//! mean; a worker holding an unequal shard passes the global batch size so that *summing*
//! shards gives the full-batch mean gradient.

use crate::batch::Targets;
use crate::model::ModelError;

/// A loss function over `rows x out` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error, averaged over outputs per row; targets are `Real`, `rows * out`.
    Mse,
    /// Binary cross-entropy on one logit per row; targets `Real` in [0, 1] or `Class` 0/1.
    BceWithLogits,
    /// Softmax cross-entropy over `out` classes; targets `Class` (or integral `Real`) < out.
    SoftmaxCrossEntropy,
}

impl Loss {
    /// Short name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::BceWithLogits => "binary cross-entropy",
            Loss::SoftmaxCrossEntropy => "softmax cross-entropy",
        }
    }

    /// Sum of per-row losses of `out` (`rows x cols`) against `y`; writes
    /// `d(sum / divisor) / d out` into `dout`.
    ///
    /// # Errors
    /// [`ModelError::Targets`] when the targets have the wrong kind or count, are not finite, or
    /// name a class out of range.
    pub fn eval(
        self,
        out: &[f32],
        rows: usize,
        cols: usize,
        y: &Targets,
        divisor: f32,
        dout: &mut [f32],
    ) -> Result<f64, ModelError> {
        self.eval_weighted(out, rows, cols, y, divisor, dout, None)
    }

    /// As [`Loss::eval`], each row's loss and gradient multiplied by its class's weight
    /// (`class_w[class]`; binary: `[negative, positive]`) when given. Mean squared error has no
    /// classes and ignores it.
    ///
    /// # Errors
    /// As [`Loss::eval`], plus a `class_w` shorter than the classes.
    #[allow(clippy::too_many_arguments)]
    pub fn eval_weighted(
        self,
        out: &[f32],
        rows: usize,
        cols: usize,
        y: &Targets,
        divisor: f32,
        dout: &mut [f32],
        class_w: Option<&[f32]>,
    ) -> Result<f64, ModelError> {
        debug_assert_eq!(out.len(), rows * cols);
        if let Some(w) = class_w {
            let need = if self == Loss::BceWithLogits { 2 } else { cols };
            if self != Loss::Mse && w.len() < need {
                return Err(self.bad(format!("{} class weights for {need} classes", w.len())));
            }
        }
        debug_assert_eq!(dout.len(), rows * cols);
        let inv = 1.0 / divisor;
        match self {
            Loss::Mse => mse(out, cols, &self.reals(y, rows * cols)?, inv, dout),
            Loss::BceWithLogits => {
                let t = self.reals(y, rows)?;
                if let Some(r) = t.iter().position(|v| !(0.0..=1.0).contains(v)) {
                    return Err(self.bad(format!("row {r}: target {} is not in [0, 1]", t[r])));
                }
                Ok(bce(out, &t, inv, dout, class_w))
            }
            Loss::SoftmaxCrossEntropy => {
                let labels = self.classes(y, rows, cols)?;
                Ok(softmax_ce(out, cols, &labels, inv, dout, class_w))
            }
        }
    }

    fn bad(self, what: String) -> ModelError {
        ModelError::Targets {
            loss: self.name(),
            what,
        }
    }

    /// Targets as reals, `want` of them, all finite.
    fn reals<'a>(
        self,
        y: &'a Targets,
        want: usize,
    ) -> Result<std::borrow::Cow<'a, [f32]>, ModelError> {
        let v: std::borrow::Cow<'a, [f32]> = match y {
            Targets::Real(v) => v.as_slice().into(),
            Targets::Class(c) if self == Loss::BceWithLogits => {
                c.iter().map(|&c| c as f32).collect::<Vec<_>>().into()
            }
            Targets::Class(_) => {
                return Err(self.bad("class labels given, real values needed".into()))
            }
        };
        if v.len() != want {
            return Err(self.bad(format!("{} target values, expected {want}", v.len())));
        }
        if let Some(r) = v.iter().position(|t| !t.is_finite()) {
            return Err(self.bad(format!("value {r} is {}", v[r])));
        }
        Ok(v)
    }

    /// Targets as class indices below `classes`.
    fn classes(self, y: &Targets, rows: usize, classes: usize) -> Result<Vec<u32>, ModelError> {
        let labels: Vec<u32> = match y {
            Targets::Class(c) => c.clone(),
            Targets::Real(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (r, &t) in v.iter().enumerate() {
                    if !(t >= 0.0 && t.fract() == 0.0 && t < u32::MAX as f32) {
                        return Err(self.bad(format!("row {r}: target {t} is not a class index")));
                    }
                    out.push(t as u32);
                }
                out
            }
        };
        if labels.len() != rows {
            return Err(self.bad(format!("{} labels for {rows} rows", labels.len())));
        }
        if let Some(r) = labels.iter().position(|&c| c as usize >= classes) {
            return Err(self.bad(format!(
                "row {r}: class {} but the model has {classes} classes",
                labels[r]
            )));
        }
        Ok(labels)
    }
}

fn mse(out: &[f32], cols: usize, t: &[f32], inv: f32, dout: &mut [f32]) -> Result<f64, ModelError> {
    let per = 1.0 / cols.max(1) as f32;
    let mut sum = 0.0f64;
    for ((d, &o), &t) in dout.iter_mut().zip(out).zip(t) {
        let e = o - t;
        sum += f64::from(e) * f64::from(e);
        *d = 2.0 * e * per * inv;
    }
    Ok(sum / cols.max(1) as f64)
}

/// `max(z, 0) - z t + ln(1 + e^-|z|)`, gradient `sigmoid(z) - t`.
/// With `w`, a row weighs `w[1]` when its target is at least 0.5, else `w[0]`.
fn bce(z: &[f32], t: &[f32], inv: f32, dz: &mut [f32], w: Option<&[f32]>) -> f64 {
    let mut sum = 0.0f64;
    for ((d, &z), &t) in dz.iter_mut().zip(z).zip(t) {
        let wi = w.map_or(1.0, |w| w[usize::from(t >= 0.5)]);
        let l = z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
        sum += f64::from(wi * l);
        *d = (sigmoid(z) - t) * inv * wi;
    }
    sum
}

/// Numerically stable logistic function.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Per row: `logsumexp(z) - z[y]`, gradient `softmax(z) - onehot(y)`.
fn softmax_ce(
    z: &[f32],
    cols: usize,
    labels: &[u32],
    inv: f32,
    dz: &mut [f32],
    w: Option<&[f32]>,
) -> f64 {
    let mut sum = 0.0f64;
    for ((zr, dr), &y) in z
        .chunks_exact(cols)
        .zip(dz.chunks_exact_mut(cols))
        .zip(labels)
    {
        let m = zr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for (d, &v) in dr.iter_mut().zip(zr) {
            *d = (v - m).exp();
            s += *d;
        }
        let wi = w.map_or(1.0, |w| w[y as usize]);
        let lse = m + s.ln();
        sum += f64::from(wi * (lse - zr[y as usize]));
        let inv = inv * wi;
        let k = inv / s;
        for d in dr.iter_mut() {
            *d *= k;
        }
        dr[y as usize] -= inv;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_scale_each_rows_loss_and_gradient() {
        // Binary: rows of class 0 and 1, weights 1 and 3.
        let (mut d, mut dw) = ([0.0f32; 2], [0.0f32; 2]);
        let y = Targets::Real(vec![0.0, 1.0]);
        let l = Loss::BceWithLogits
            .eval(&[0.2, -0.4], 2, 1, &y, 2.0, &mut d)
            .unwrap();
        let lw = Loss::BceWithLogits
            .eval_weighted(&[0.2, -0.4], 2, 1, &y, 2.0, &mut dw, Some(&[1.0, 3.0]))
            .unwrap();
        assert_eq!(dw, [d[0], 3.0 * d[1]]);
        let (mut d0, mut d1) = ([0.0f32; 1], [0.0f32; 1]);
        let l0 = Loss::BceWithLogits.eval(&[0.2], 1, 1, &Targets::Real(vec![0.0]), 1.0, &mut d0);
        let l1 = Loss::BceWithLogits.eval(&[-0.4], 1, 1, &Targets::Real(vec![1.0]), 1.0, &mut d1);
        assert!((lw - (l0.unwrap() + 3.0 * l1.unwrap())).abs() < 1e-6 && lw > l);
        // Softmax: the row of class 2 weighs 0.5.
        let (mut d, mut dw) = ([0.0f32; 3], [0.0f32; 3]);
        let y = Targets::Class(vec![2]);
        let z = [0.1, 0.7, -0.3];
        let l = Loss::SoftmaxCrossEntropy
            .eval(&z, 1, 3, &y, 1.0, &mut d)
            .unwrap();
        let lw = Loss::SoftmaxCrossEntropy
            .eval_weighted(&z, 1, 3, &y, 1.0, &mut dw, Some(&[1.0, 1.0, 0.5]))
            .unwrap();
        assert!((lw - 0.5 * l).abs() < 1e-7);
        for (a, b) in dw.iter().zip(d) {
            assert!((a - 0.5 * b).abs() < 1e-7);
        }
        let e = Loss::SoftmaxCrossEntropy
            .eval_weighted(&z, 1, 3, &y, 1.0, &mut dw, Some(&[1.0]))
            .unwrap_err();
        assert!(
            e.to_string().contains("1 class weights for 3 classes"),
            "{e}"
        );
    }

    #[test]
    fn known_values() {
        let mut d = [0.0; 2];
        let l = Loss::SoftmaxCrossEntropy
            .eval(&[0.0, 0.0], 1, 2, &Targets::Class(vec![1]), 1.0, &mut d)
            .unwrap();
        assert!((l - std::f64::consts::LN_2).abs() < 1e-6);
        assert_eq!(d, [0.5, -0.5]);
        let l = Loss::BceWithLogits
            .eval(&[0.0], 1, 1, &Targets::Real(vec![1.0]), 1.0, &mut d[..1])
            .unwrap();
        assert!((l - std::f64::consts::LN_2).abs() < 1e-6);
        let l = Loss::Mse
            .eval(
                &[3.0, 1.0],
                2,
                1,
                &Targets::Real(vec![1.0, 1.0]),
                2.0,
                &mut d,
            )
            .unwrap();
        assert_eq!((l, d), (4.0, [2.0, 0.0]));
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let mut d = [0.0; 2];
        let l = Loss::SoftmaxCrossEntropy
            .eval(&[1e4, -1e4], 1, 2, &Targets::Class(vec![1]), 1.0, &mut d)
            .unwrap();
        assert!((l - 2e4).abs() < 1.0 && d.iter().all(|v| v.is_finite()));
        let l = Loss::BceWithLogits
            .eval(&[-500.0], 1, 1, &Targets::Real(vec![1.0]), 1.0, &mut d[..1])
            .unwrap();
        assert!((l - 500.0).abs() < 1e-3 && (d[0] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_targets_are_named() {
        let mut d = [0.0; 2];
        let e =
            Loss::SoftmaxCrossEntropy.eval(&[0.0; 2], 1, 2, &Targets::Class(vec![2]), 1.0, &mut d);
        assert!(e.unwrap_err().to_string().contains("row 0: class 2"));
        let e = Loss::Mse.eval(
            &[0.0],
            1,
            1,
            &Targets::Real(vec![f32::NAN]),
            1.0,
            &mut d[..1],
        );
        assert!(e.unwrap_err().to_string().contains("NaN"));
        let e = Loss::BceWithLogits.eval(&[0.0], 1, 1, &Targets::Real(vec![2.0]), 1.0, &mut d[..1]);
        assert!(e.unwrap_err().to_string().contains("not in [0, 1]"));
    }
}
