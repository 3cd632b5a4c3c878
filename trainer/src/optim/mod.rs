//! Optimizers over flat parameter slices: SGD (momentum, Nesterov), Adam and AdamW, with weight
//! decay and learning-rate schedules from [`OptimizerSpec`].
//!
//! Every update is elementwise, so an optimizer over a contiguous range of the parameters (a
//! parameter-server shard) computes bit-for-bit what an optimizer over the whole vector
//! computes on that range: create one per shard with [`Optimizer::new`]`(spec, shard_len)`, or
//! cut one from a full optimizer (e.g. restored from a checkpoint) with [`Optimizer::shard`].
//! State ([`Optimizer::state`]) is the step count plus named buffers and restores exactly.

mod error;
pub mod lbfgs;
mod spec;

pub use error::{OptimError, OptimSpecError};
pub use lbfgs::LbfgsProgress;
pub use spec::{OptimizerKind, OptimizerSpec, ScheduleKind};

use std::ops::Range;

/// Saved optimizer state: completed steps and named per-parameter buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Steps completed.
    pub step: u64,
    /// Buffers (`momentum`; `exp_avg`, `exp_avg_sq`), each as long as the parameters.
    pub buffers: Vec<(String, Vec<f32>)>,
}

/// An optimizer over `len` parameters.
#[derive(Debug, Clone)]
pub struct Optimizer {
    spec: OptimizerSpec,
    len: usize,
    step: u64,
    /// Buffer names, in state order.
    names: &'static [&'static str],
    /// Momentum (SGD) or first moment (Adam).
    m: Vec<f32>,
    /// Second moment (Adam).
    v: Vec<f32>,
    /// The parameter ranges `l2` and `l1` apply to (the weights; biases are left out), sorted.
    penalized: Vec<Range<usize>>,
    /// `kind = "lbfgs"`: its state (not elementwise: it covers the whole parameter vector).
    lbfgs: Option<Box<lbfgs::Lbfgs>>,
}

impl Optimizer {
    /// A fresh optimizer for `len` parameters.
    ///
    /// # Errors
    /// [`OptimError::Spec`] when the spec does not validate.
    pub fn new(spec: &OptimizerSpec, len: usize) -> Result<Self, OptimError> {
        spec.validate()?;
        let names: &'static [&'static str] = match spec.kind {
            OptimizerKind::Sgd if spec.momentum() > 0.0 => &["momentum"],
            OptimizerKind::Sgd => &[],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Lbfgs => &[],
        };
        let buf = |i: usize| {
            if names.len() > i {
                vec![0.0; len]
            } else {
                Vec::new()
            }
        };
        Ok(Optimizer {
            spec: spec.clone(),
            len,
            step: 0,
            names,
            m: buf(0),
            v: buf(1),
            penalized: std::iter::once(0..len).collect(),
            lbfgs: (spec.kind == OptimizerKind::Lbfgs)
                .then(|| Box::new(lbfgs::Lbfgs::new(spec.history(), spec.tolerance()))),
        })
    }

    /// L-BFGS: iterations, evaluations, the largest gradient component and whether it
    /// converged (`None` for other kinds).
    pub fn lbfgs_progress(&self) -> Option<LbfgsProgress> {
        self.lbfgs.as_ref().map(|l| l.progress())
    }

    /// Apply `l2` / `l1` to `ranges` only (the model's weights; by default every parameter).
    /// Ranges are clipped to the optimizer's length.
    pub fn with_penalized(mut self, ranges: impl IntoIterator<Item = Range<usize>>) -> Self {
        let mut r: Vec<Range<usize>> = ranges
            .into_iter()
            .map(|r| r.start.min(self.len)..r.end.min(self.len))
            .filter(|r| !r.is_empty())
            .collect();
        r.sort_by_key(|r| r.start);
        self.penalized = r;
        self
    }

    /// The ranges `l2` and `l1` apply to.
    pub fn penalized(&self) -> &[Range<usize>] {
        &self.penalized
    }

    /// The spec.
    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }
    /// Parameters covered.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when it covers no parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Steps completed.
    pub fn steps(&self) -> u64 {
        self.step
    }
    /// Learning rate the next [`Optimizer::step`] will use.
    pub fn next_lr(&self) -> f32 {
        self.spec.lr_at(self.step)
    }

    /// One update at the schedule's learning rate; returns the rate used.
    ///
    /// # Errors
    /// [`OptimError::Len`] when a slice length differs from [`Optimizer::len`].
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<f32, OptimError> {
        let lr = self.next_lr();
        self.step_with_lr(lr, params, grads)?;
        Ok(lr)
    }

    /// One update at learning rate `lr` (e.g. the coordinator's `BeginRound { lr }`).
    ///
    /// # Errors
    /// [`OptimError::Len`] when a slice length differs from [`Optimizer::len`].
    pub fn step_with_lr(
        &mut self,
        lr: f32,
        params: &mut [f32],
        grads: &[f32],
    ) -> Result<(), OptimError> {
        for (what, n) in [("params", params.len()), ("grads", grads.len())] {
            if n != self.len {
                return Err(OptimError::Len {
                    what,
                    expected: self.len,
                    actual: n,
                });
            }
        }
        self.step += 1;
        if let Some(l) = &mut self.lbfgs {
            l.step(params, grads, &self.penalized, self.spec.l2);
            return Ok(());
        }
        let wd = self.spec.weight_decay;
        // Update the parameters segment by segment: the penalised ranges (the weights) with the
        // L2 penalty's gradient `l2 * w` added in the update loop, the gaps (the biases) without;
        // the gradient itself is never copied.
        let penalized = std::mem::take(&mut self.penalized);
        let mut at = 0;
        for r in penalized
            .iter()
            .chain(std::iter::once(&(self.len..self.len)))
        {
            if at < r.start {
                self.update(lr, wd, 0.0, at..r.start, params, grads);
            }
            if !r.is_empty() {
                self.update(lr, wd, self.spec.l2, r.clone(), params, grads);
            }
            at = r.end;
        }
        if self.spec.l1 > 0.0 {
            // Proximal step of l1 * |w|: soft-threshold each weight by lr * l1.
            let t = lr * self.spec.l1;
            for r in &penalized {
                for p in &mut params[r.clone()] {
                    *p = p.signum() * (p.abs() - t).max(0.0);
                }
            }
        }
        self.penalized = penalized;
        Ok(())
    }

    /// One step on parameters `at` with weights-only L2 `pen` (0 for biases).
    fn update(
        &mut self,
        lr: f32,
        wd: f32,
        pen: f32,
        at: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
    ) {
        let (p, g) = (&mut params[at.clone()], &grads[at.clone()]);
        match self.spec.kind {
            OptimizerKind::Sgd => self.sgd(lr, wd, pen, at, p, g),
            OptimizerKind::Adam => self.adam(lr, wd, 0.0, pen, at, p, g),
            OptimizerKind::Adamw => self.adam(lr, 0.0, wd, pen, at, p, g),
            OptimizerKind::Lbfgs => unreachable!("L-BFGS steps the whole vector in step_with_lr"),
        }
    }

    /// `g + pen * p`: the data gradient with the weights-only L2 penalty (none when 0).
    fn penalised(g: f32, pen: f32, p: f32) -> f32 {
        if pen != 0.0 {
            g + pen * p
        } else {
            g
        }
    }

    fn sgd(
        &mut self,
        lr: f32,
        wd: f32,
        pen: f32,
        at: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
    ) {
        let mu = self.spec.momentum();
        if self.m.is_empty() {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p -= lr * (Self::penalised(g, pen, *p) + wd * *p);
            }
            return;
        }
        let nesterov = self.spec.nesterov();
        for ((p, &g), b) in params.iter_mut().zip(grads).zip(&mut self.m[at]) {
            let g = Self::penalised(g, pen, *p) + wd * *p;
            *b = mu * *b + g;
            let d = if nesterov { g + mu * *b } else { *b };
            *p -= lr * d;
        }
    }

    /// Adam with L2 decay `l2` (added to the gradient), the weights-only penalty `pen` (added
    /// before it) and decoupled decay `dw` (AdamW), on parameters `at`.
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &mut self,
        lr: f32,
        l2: f32,
        dw: f32,
        pen: f32,
        at: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
    ) {
        let (b1, b2, eps) = (self.spec.beta1(), self.spec.beta2(), self.spec.eps());
        let t = self.step.min(i32::MAX as u64) as i32;
        let bc1 = (1.0 - f64::from(b1).powi(t)) as f32;
        let bc2_sqrt = (1.0 - f64::from(b2).powi(t)).sqrt() as f32;
        let step_size = lr / bc1;
        let shrink = 1.0 - lr * dw;
        let it = params
            .iter_mut()
            .zip(grads)
            .zip(self.m[at.clone()].iter_mut().zip(&mut self.v[at]));
        for ((p, &g), (m, v)) in it {
            let g = Self::penalised(g, pen, *p) + l2 * *p;
            *p *= shrink;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> OptimizerState {
        let bufs = [&self.m, &self.v];
        let buffers = self
            .names
            .iter()
            .zip(bufs)
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect();
        OptimizerState {
            step: self.step,
            buffers,
        }
    }

    /// Restore a state saved by [`Optimizer::state`] from an optimizer of the same kind and
    /// length; continuing then gives bit-identical updates.
    ///
    /// # Errors
    /// [`OptimError::StateBuffers`] or [`OptimError::StateBufferLen`] naming the missing,
    /// unexpected or wrong-length buffer.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let got: Vec<&str> = state.buffers.iter().map(|(n, _)| n.as_str()).collect();
        if got != self.names {
            return Err(OptimError::StateBuffers {
                got: got.iter().map(|n| n.to_string()).collect(),
                kind: self.spec.kind,
                expected: self.names,
            });
        }
        if let Some((n, b)) = state.buffers.iter().find(|(_, b)| b.len() != self.len) {
            return Err(OptimError::StateBufferLen {
                buffer: n.clone(),
                actual: b.len(),
                expected: self.len,
            });
        }
        let mut it = state.buffers.iter().map(|(_, b)| b.clone());
        self.m = it.next().unwrap_or_default();
        self.v = it.next().unwrap_or_default();
        self.step = state.step;
        Ok(())
    }

    /// An optimizer for `range` of this one's parameters, with the same spec, step count and
    /// the matching slices of its buffers (a parameter-server shard).
    ///
    /// # Errors
    /// [`OptimError::Len`] when `range` is out of bounds.
    pub fn shard(&self, range: Range<usize>) -> Result<Optimizer, OptimError> {
        if self.lbfgs.is_some() {
            return Err(OptimSpecError::LbfgsShards.into());
        }
        if range.start > range.end || range.end > self.len {
            return Err(OptimError::Len {
                what: "shard range end",
                expected: self.len,
                actual: range.end,
            });
        }
        let cut = |b: &Vec<f32>| {
            if b.is_empty() {
                Vec::new()
            } else {
                b[range.clone()].to_vec()
            }
        };
        let penalized = self
            .penalized
            .iter()
            .map(|r| r.start.max(range.start)..r.end.min(range.end))
            .filter(|r| r.start < r.end)
            .map(|r| r.start - range.start..r.end - range.start)
            .collect();
        Ok(Optimizer {
            len: range.len(),
            m: cut(&self.m),
            v: cut(&self.v),
            spec: self.spec.clone(),
            penalized,
            lbfgs: None,
            ..*self
        })
    }
}

#[cfg(test)]
mod tests;
