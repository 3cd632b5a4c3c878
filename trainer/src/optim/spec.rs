//! `OptimizerSpec`, the manifest's `[job.optimizer]` table, and its learning-rate schedule.
//!
//! ```toml
//! [job.optimizer]
//! kind = "adamw"        # sgd | adam | adamw | lbfgs (full batch, convex models)
//! lr = 0.001
//! weight_decay = 0.01   # sgd/adam: L2 added to the gradient; adamw: decoupled (every parameter)
//! l2 = 0.001            # penalty (l2/2)|w|^2 on weights, never on biases (docs/models.md)
//! l1 = 0.0001           # sgd only: penalty l1|w|_1 on weights, by a proximal step
//! # sgd: momentum = 0.9, nesterov = true;  adam/adamw: beta1, beta2, eps
//! schedule = "cosine"   # constant (default) | step | cosine
//! warmup_steps = 100    # linear warm-up from lr/warmup_steps to lr (any schedule)
//! total_steps = 5000    # cosine: the step at which lr reaches min_lr
//! min_lr = 0.0          # cosine
//! # step: step_size = 1000, gamma = 0.1
//! ```

use super::{OptimError, OptimSpecError};
use serde::{Deserialize, Serialize};

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// Update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd,
    /// Adam with L2 weight decay added to the gradient.
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    /// L-BFGS over the full batch, for convex models (linear, logistic): every round evaluates
    /// the gradient at one point; see [`super::lbfgs`].
    Lbfgs,
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// `lr` throughout.
    #[default]
    Constant,
    /// `lr * gamma^(floor(step / step_size))`.
    Step,
    /// Cosine from `lr` to `min_lr` between `warmup_steps` and `total_steps`.
    Cosine,
}

/// The `[job.optimizer]` table. Fields for another kind or schedule are an error when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f32,
    /// Weight decay (default 0), on every parameter.
    #[serde(default)]
    pub weight_decay: f32,
    /// L2 penalty `(l2 / 2) * sum w^2` over the weights, never the biases (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l2: f32,
    /// L1 penalty `l1 * sum |w|` over the weights, never the biases, applied as a proximal step
    /// after each SGD update (default 0; `kind = "sgd"` only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l1: f32,
    /// SGD momentum (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    /// SGD Nesterov momentum (default false; needs momentum > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// Adam first-moment decay (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f32>,
    /// Adam second-moment decay (default 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f32>,
    /// Adam denominator epsilon (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f32>,
    /// Schedule (default constant).
    #[serde(default)]
    pub schedule: ScheduleKind,
    /// Linear warm-up steps (default 0).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Step schedule: steps between decays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<u64>,
    /// Step schedule: decay factor (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f32>,
    /// Cosine schedule: last step of the decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// Cosine schedule: final learning rate (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f32>,
    /// L-BFGS: correction pairs kept (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,
    /// L-BFGS: converged when no gradient component exceeds this times the first gradient's
    /// largest component (at least 1) (default 1e-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f32>,
}

impl OptimizerSpec {
    /// A spec of `kind` at learning rate `lr` with every other field at its default.
    pub fn new(kind: OptimizerKind, lr: f32) -> Self {
        OptimizerSpec {
            kind,
            lr,
            weight_decay: 0.0,
            l2: 0.0,
            l1: 0.0,
            momentum: None,
            nesterov: None,
            beta1: None,
            beta2: None,
            eps: None,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            step_size: None,
            gamma: None,
            total_steps: None,
            min_lr: None,
            history: None,
            tolerance: None,
        }
    }

    /// Check values and that no field of another kind or schedule is set.
    ///
    /// # Errors
    /// [`OptimError::Spec`] naming the field.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |e: OptimSpecError| Err(OptimError::Spec(e));
        let sgd = self.kind == OptimizerKind::Sgd;
        let lbfgs = self.kind == OptimizerKind::Lbfgs;
        let adam = !sgd && !lbfgs;
        let stray = [
            ("momentum", self.momentum.is_some(), sgd),
            ("nesterov", self.nesterov.is_some(), sgd),
            ("beta1", self.beta1.is_some(), adam),
            ("beta2", self.beta2.is_some(), adam),
            ("eps", self.eps.is_some(), adam),
            ("history", self.history.is_some(), lbfgs),
            ("tolerance", self.tolerance.is_some(), lbfgs),
            (
                "step_size",
                self.step_size.is_some(),
                self.schedule == ScheduleKind::Step,
            ),
            (
                "gamma",
                self.gamma.is_some(),
                self.schedule == ScheduleKind::Step,
            ),
            (
                "total_steps",
                self.total_steps.is_some(),
                self.schedule == ScheduleKind::Cosine,
            ),
            (
                "min_lr",
                self.min_lr.is_some(),
                self.schedule == ScheduleKind::Cosine,
            ),
        ];
        if let Some(&(name, ..)) = stray.iter().find(|(_, set, ok)| *set && !*ok) {
            return bad(OptimSpecError::StrayField {
                field: name,
                kind: self.kind,
                schedule: self.schedule,
            });
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(OptimSpecError::NotPositive {
                field: "lr",
                value: self.lr,
            });
        }
        for (name, v) in [
            ("weight_decay", self.weight_decay),
            ("l2", self.l2),
            ("l1", self.l1),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(OptimSpecError::Negative {
                    field: name,
                    value: v,
                });
            }
        }
        if lbfgs {
            if self.weight_decay != 0.0 {
                return bad(OptimSpecError::LbfgsWeightDecay);
            }
            if self.schedule != ScheduleKind::Constant || self.warmup_steps > 0 {
                return bad(OptimSpecError::LbfgsSchedule);
            }
            if self.history() == 0 {
                return bad(OptimSpecError::ZeroHistory);
            }
            if !(self.tolerance() > 0.0 && self.tolerance().is_finite()) {
                return bad(OptimSpecError::NotPositive {
                    field: "tolerance",
                    value: self.tolerance(),
                });
            }
        }
        if self.l1 > 0.0 && !sgd {
            return bad(OptimSpecError::L1NeedsSgd {
                l1: self.l1,
                kind: self.kind,
            });
        }
        let unit = |name: &'static str, v: f32| match (0.0..1.0).contains(&v) {
            true => Ok(()),
            false => bad(OptimSpecError::NotUnit {
                field: name,
                value: v,
            }),
        };
        unit("momentum", self.momentum())?;
        unit("beta1", self.beta1())?;
        unit("beta2", self.beta2())?;
        if self.nesterov() && self.momentum() == 0.0 {
            return bad(OptimSpecError::NesterovWithoutMomentum);
        }
        if !(self.eps() > 0.0 && self.eps().is_finite()) {
            return bad(OptimSpecError::NotPositive {
                field: "eps",
                value: self.eps(),
            });
        }
        match self.schedule {
            ScheduleKind::Step if self.step_size.unwrap_or(0) == 0 => {
                bad(OptimSpecError::NoStepSize)
            }
            ScheduleKind::Cosine if self.total_steps.is_none_or(|t| t <= self.warmup_steps) => {
                bad(OptimSpecError::CosineTotalSteps {
                    warmup_steps: self.warmup_steps,
                })
            }
            _ => Ok(()),
        }
    }

    /// SGD momentum (0 when unset).
    pub fn momentum(&self) -> f32 {
        self.momentum.unwrap_or(0.0)
    }
    /// Nesterov flag.
    pub fn nesterov(&self) -> bool {
        self.nesterov.unwrap_or(false)
    }
    /// Adam beta1.
    pub fn beta1(&self) -> f32 {
        self.beta1.unwrap_or(0.9)
    }
    /// Adam beta2.
    pub fn beta2(&self) -> f32 {
        self.beta2.unwrap_or(0.999)
    }
    /// Adam epsilon.
    pub fn eps(&self) -> f32 {
        self.eps.unwrap_or(1e-8)
    }
    /// L-BFGS correction pairs.
    pub fn history(&self) -> usize {
        self.history.unwrap_or(10)
    }
    /// L-BFGS convergence tolerance on the largest gradient component.
    pub fn tolerance(&self) -> f32 {
        self.tolerance.unwrap_or(1e-5)
    }

    /// Learning rate for the step after `step` completed steps (0-based), warm-up included.
    pub fn lr_at(&self, step: u64) -> f32 {
        let base = f64::from(self.lr);
        let lr = match self.schedule {
            ScheduleKind::Constant => base,
            ScheduleKind::Step => {
                let k = step / self.step_size.unwrap_or(1).max(1);
                base * f64::from(self.gamma.unwrap_or(0.1)).powi(k.min(i32::MAX as u64) as i32)
            }
            ScheduleKind::Cosine => {
                let (w, total) = (
                    self.warmup_steps,
                    self.total_steps.unwrap_or(1).max(self.warmup_steps + 1),
                );
                let progress = step.saturating_sub(w).min(total - w) as f64 / (total - w) as f64;
                let min = f64::from(self.min_lr.unwrap_or(0.0));
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        let warm = match step < self.warmup_steps {
            true => (step + 1) as f64 / self.warmup_steps as f64,
            false => 1.0,
        };
        (lr * warm) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut s = OptimizerSpec::new(OptimizerKind::Sgd, 1.0);
        s.schedule = ScheduleKind::Step;
        s.step_size = Some(10);
        s.gamma = Some(0.5);
        assert_eq!(
            [s.lr_at(0), s.lr_at(9), s.lr_at(10), s.lr_at(25)],
            [1.0, 1.0, 0.5, 0.25]
        );
        let mut c = OptimizerSpec::new(OptimizerKind::Adam, 1.0);
        c.schedule = ScheduleKind::Cosine;
        c.warmup_steps = 4;
        c.total_steps = Some(14);
        c.validate().unwrap();
        assert_eq!(
            [c.lr_at(0), c.lr_at(1), c.lr_at(3), c.lr_at(4)],
            [0.25, 0.5, 1.0, 1.0]
        );
        assert!((c.lr_at(9) - 0.5).abs() < 1e-6);
        assert_eq!([c.lr_at(14), c.lr_at(100)], [0.0, 0.0]);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = OptimizerSpec::new(OptimizerKind::Adam, 0.1);
        s.momentum = Some(0.9);
        assert!(s.validate().unwrap_err().to_string().contains("`momentum`"));
        let mut s = OptimizerSpec::new(OptimizerKind::Sgd, 0.1);
        s.nesterov = Some(true);
        assert!(s.validate().unwrap_err().to_string().contains("nesterov"));
        s.schedule = ScheduleKind::Cosine;
        s.momentum = Some(0.9);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("total_steps"));
        let e = serde_json::from_str::<OptimizerSpec>(r#"{"kind":"sgd","lr":0.1,"lr_decay":1}"#);
        assert!(e.unwrap_err().to_string().contains("lr_decay"));
    }
}
