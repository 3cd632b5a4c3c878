//! [`OptimError`]: what goes wrong creating, stepping or restoring an optimizer, and
//! [`OptimSpecError`]: why a `[job.optimizer]` table does not validate. Each variant names the
//! field or buffer and the values that disagree.

use super::{OptimizerKind, ScheduleKind};

/// Optimizer errors, naming the field or buffer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// Invalid `[job.optimizer]` table.
    #[error("[job.optimizer] {0}")]
    Spec(#[from] OptimSpecError),
    /// Parameter or gradient slice of the wrong length.
    #[error("optimizer step: {what} has {actual} values, the optimizer covers {expected}")]
    Len {
        /// `params` or `grads`.
        what: &'static str,
        /// Values the optimizer covers.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// Saved state whose buffers are not the ones this optimizer keeps.
    #[error("optimizer state: buffers {got:?}, this {kind:?} optimizer needs {expected:?}")]
    StateBuffers {
        /// The saved buffers' names.
        got: Vec<String>,
        /// This optimizer's kind.
        kind: OptimizerKind,
        /// The buffers it keeps.
        expected: &'static [&'static str],
    },
    /// A saved buffer of another length than the parameters.
    #[error("optimizer state: buffer `{buffer}` has {actual} values, expected {expected}")]
    StateBufferLen {
        /// The buffer's name.
        buffer: String,
        /// Its length.
        actual: usize,
        /// The optimizer's length.
        expected: usize,
    },
}

/// A `[job.optimizer]` field (or combination of fields) that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimSpecError {
    /// A field of another kind or schedule.
    #[error("`{field}` does not apply to kind = {kind:?}, schedule = {schedule:?}")]
    StrayField {
        /// The field.
        field: &'static str,
        /// The optimizer's kind.
        kind: OptimizerKind,
        /// Its schedule.
        schedule: ScheduleKind,
    },
    /// A value that must be positive and finite.
    #[error("{field} = {value} must be positive")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f32,
    },
    /// A value that must be finite and not negative.
    #[error("{field} = {value} must be >= 0")]
    Negative {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f32,
    },
    /// A value that must be in `[0, 1)`.
    #[error("{field} = {value} must be in [0, 1)")]
    NotUnit {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f32,
    },
    /// `weight_decay` with L-BFGS.
    #[error("weight_decay does not apply to kind = \"lbfgs\" (use l2)")]
    LbfgsWeightDecay,
    /// A schedule or warm-up with L-BFGS.
    #[error("kind = \"lbfgs\" takes no schedule or warm-up (its line search sets the steps)")]
    LbfgsSchedule,
    /// L-BFGS cut into parameter-server shards.
    #[error("kind = \"lbfgs\" cannot be cut into parameter-server shards (use aggregation = \"allreduce\")")]
    LbfgsShards,
    /// `history = 0`.
    #[error("history = 0 must be at least 1")]
    ZeroHistory,
    /// `l1` with an optimizer other than SGD.
    #[error(
        "l1 = {l1} needs kind = \"sgd\" (a proximal step after each update; with {kind:?} use l2)"
    )]
    L1NeedsSgd {
        /// The `l1` penalty.
        l1: f32,
        /// The optimizer's kind.
        kind: OptimizerKind,
    },
    /// Nesterov momentum without momentum.
    #[error("nesterov = true needs momentum > 0")]
    NesterovWithoutMomentum,
    /// A step schedule without a step size.
    #[error("schedule = \"step\" needs step_size >= 1")]
    NoStepSize,
    /// A cosine schedule that ends before its warm-up does.
    #[error("schedule = \"cosine\" needs total_steps > warmup_steps ({warmup_steps})")]
    CosineTotalSteps {
        /// The warm-up steps.
        warmup_steps: u64,
    },
}
