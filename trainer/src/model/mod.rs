//! Models: the [`Model`] trait the runtime trains through, the layers with hand-written
//! backprop, and [`build_model`] from the manifest's `[job.model]` table.
//!
//! # Parameters and gradients
//! A model's parameters are one flat `Vec<f32>`; [`Model::layout`] names each tensor
//! (`dense3.weight`, shape, offset, length) in offset order. Gradients use the same layout in a
//! caller-owned buffer. Blocks are stored output layer first, so backprop finishes the flat
//! gradient vector from offset 0 upwards: [`Model::buckets`] lists the per-layer ranges in the
//! order `on_bucket` receives them.
//!
//! # Gradient scaling
//! [`Model::forward_backward`] gives the *mean* gradient over the batch's rows, so averaging
//! equal shards across workers equals the full-batch gradient. For unequal shards call
//! [`Model::forward_backward_scaled`] with `divisor = global batch rows` on every worker and
//! *sum* the shards instead.

mod activation;
mod conv;
mod dense;
pub mod embedding;
mod error;
mod grads;
mod layer;
mod network;
mod pool;
mod spec;
mod spec_error;

pub use activation::{Activation, ActivationKind};
pub use conv::{col2im, im2col, Conv2d, ConvGeom};
pub use dense::Dense;
pub use error::ModelError;
pub use grads::{GradSink, SliceSink};
pub use layer::{Layer, ParamSpec};
pub use network::{Network, PREDICT_CHUNK};
pub use pool::{MaxPool2, Permute};
pub use spec::{build_model, ActivationName, ClassWeight, ModelKind, ModelSpec, Padding, TaskName};
pub use spec_error::{ClassWeightError, SpecError};

use crate::batch::Batch;
use crate::loss::Loss;
use std::ops::Range;

/// One named parameter tensor in the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Unique name, `{kind}{layer index}.{tensor}` (e.g. `conv0.weight`).
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat vector.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl ParamInfo {
    /// The element range in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// What a training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutput {
    /// Mean loss over the batch's rows (0 for an empty batch).
    pub loss: f64,
    /// Sum of per-row losses (for combining unequal shards).
    pub loss_sum: f64,
    /// Rows in the batch.
    pub rows: usize,
}

/// What a model predicts; fixes its output width, loss and output transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Real outputs, mean squared error; predictions are the values.
    Regression {
        /// Outputs per row.
        outputs: usize,
    },
    /// Two classes, one logit, binary cross-entropy; predictions are P(class 1).
    Binary,
    /// `classes >= 3` classes, softmax cross-entropy; predictions are class probabilities.
    Multiclass {
        /// Number of classes.
        classes: usize,
    },
}

impl Task {
    /// A classification task: `Binary` for 1 or 2 classes, else `Multiclass`.
    pub fn classification(classes: usize) -> Task {
        if classes <= 2 {
            Task::Binary
        } else {
            Task::Multiclass { classes }
        }
    }

    /// Output values per row.
    pub fn out_dim(&self) -> usize {
        match *self {
            Task::Regression { outputs } => outputs,
            Task::Binary => 1,
            Task::Multiclass { classes } => classes,
        }
    }

    /// Raw network outputs to predictions, in place: sigmoid for `Binary`, a softmax per row for
    /// `Multiclass`, unchanged for regression.
    pub fn to_predictions(&self, out: &mut [f32]) {
        match *self {
            Task::Regression { .. } => {}
            Task::Binary => out.iter_mut().for_each(|z| *z = crate::loss::sigmoid(*z)),
            Task::Multiclass { classes } => lockstep_tensor::kernels::softmax_rows(out, classes),
        }
    }

    /// The loss trained with.
    pub fn loss(&self) -> Loss {
        match self {
            Task::Regression { .. } => Loss::Mse,
            Task::Binary => Loss::BceWithLogits,
            Task::Multiclass { .. } => Loss::SoftmaxCrossEntropy,
        }
    }
}

/// A trainable model over a flat parameter vector. See the module docs for layout and scaling.
pub trait Model: Send {
    /// Weigh each training row's loss by its class (`weights[class]`, binary `[negative,
    /// positive]`; `None`: unweighted). Held-out losses stay unweighted.
    ///
    /// # Errors
    /// [`ModelError::Spec`] when the model has no classes or takes no weights (the default, for
    /// models that do not implement it, unless `weights` is `None`).
    fn set_class_weights(&mut self, weights: Option<Vec<f32>>) -> Result<(), ModelError> {
        match weights {
            None => Ok(()),
            Some(_) => Err(SpecError::ClassWeightModel.into()),
        }
    }

    /// Models fitted in closed form (k-means, PCA; see [`crate::classic`]): the round's
    /// allreduced buffer holds their statistics, and this turns them into the new parameters
    /// in place of an optimizer step. Returns `false` (the default) for models that an optimizer
    /// trains.
    ///
    /// # Errors
    /// A statistics buffer of the wrong length.
    fn closed_form_update(&mut self, _stats: &[f32]) -> Result<bool, ModelError> {
        Ok(false)
    }

    /// Start from the training rows (`rows x in_dim`, row-major) where the initialisation needs
    /// them (k-means++), drawing from `seed`; the default does nothing.
    ///
    /// # Errors
    /// [`ModelError::Spec`] when the rows cannot start the model (fewer rows than clusters).
    fn init_from_data(&mut self, _x: &[f32], _seed: u64) -> Result<(), ModelError> {
        Ok(())
    }

    /// Whether the model ignores the label (k-means, PCA): the held-out evaluation then reports
    /// the model's own loss per row only (default `false`).
    fn unsupervised(&self) -> bool {
        false
    }

    /// Parameter tensors in offset order.
    fn layout(&self) -> &[ParamInfo];
    /// Gradient bucket ranges in the order backprop delivers them (increasing offsets,
    /// contiguous, covering every parameter).
    fn buckets(&self) -> &[Range<usize>];
    /// The flat parameters.
    fn params(&self) -> &[f32];
    /// The flat parameters, writable (optimizer steps, loading a checkpoint).
    fn params_mut(&mut self) -> &mut [f32];

    /// Forward, loss and backward on `batch`; overwrites `grads` (same length as the params)
    /// with the mean gradient over the rows, calling `on_bucket(range, &mut grads[range])` for
    /// each layer as soon as its gradients are final (last layer first). The callback may
    /// change the slice (e.g. average it across workers) before backprop continues.
    ///
    /// # Errors
    /// Bad batch shape or targets, a wrong-length `grads`, or [`ModelError::NonFiniteLoss`]
    /// (raised before any bucket is delivered).
    fn forward_backward(
        &mut self,
        batch: &Batch,
        grads: &mut [f32],
        on_bucket: &mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Result<StepOutput, ModelError> {
        let divisor = batch.rows.max(1) as f32;
        self.forward_backward_scaled(batch, divisor, grads, on_bucket)
    }

    /// As [`Model::forward_backward`], but gradients are the *sum* over rows divided by
    /// `divisor` (pass the global batch size on every worker and sum the shards). An empty batch
    /// is allowed: it gives zero gradients and still delivers every bucket.
    ///
    /// A model implements this or [`Model::forward_backward_into`] (each has a default in terms
    /// of the other); the built-in models implement `forward_backward_into`.
    ///
    /// # Errors
    /// As [`Model::forward_backward`], plus a non-positive `divisor`.
    fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        divisor: f32,
        grads: &mut [f32],
        on_bucket: &mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Result<StepOutput, ModelError> {
        ModelError::check_len("gradient", self.params().len(), grads.len())?;
        self.forward_backward_into(batch, divisor, &mut SliceSink::new(grads, on_bucket))
    }

    /// As [`Model::forward_backward_scaled`], writing each bucket's gradients into memory the
    /// `sink` hands out, bucket by bucket in [`Model::buckets`] order, and calling
    /// [`GradSink::ready`] as soon as a bucket is final. This is the runtime's path: the
    /// gradient stays one owned buffer whose pieces travel to the aggregator without a copy.
    ///
    /// The default runs [`Model::forward_backward_scaled`] into a scratch vector and copies each
    /// bucket into the sink; models that care about the copy implement this instead.
    ///
    /// # Errors
    /// As [`Model::forward_backward_scaled`].
    fn forward_backward_into(
        &mut self,
        batch: &Batch,
        divisor: f32,
        sink: &mut dyn GradSink,
    ) -> Result<StepOutput, ModelError> {
        let mut scratch = vec![0.0; self.params().len()];
        self.forward_backward_scaled(batch, divisor, &mut scratch, &mut |range, g| {
            sink.bucket(range.clone()).copy_from_slice(g);
            sink.ready(range);
        })
    }

    /// Loss over `batch` without gradients (evaluated in chunks, any size).
    ///
    /// # Errors
    /// Bad batch shape or targets, or a non-finite loss.
    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError>;

    /// Predictions for `rows` rows of `x`: `rows x out_dim`, probabilities for classification
    /// (sigmoid for [`Task::Binary`], softmax for [`Task::Multiclass`]), values for regression.
    ///
    /// # Errors
    /// [`ModelError::InputWidth`] / [`ModelError::BatchShape`] when `x` does not fit.
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError>;

    /// [`Model::evaluate`] and [`Model::predict`] of the same batch, with the same bits as calling
    /// both; models override it to run the forward pass once instead of twice.
    ///
    /// # Errors
    /// As [`Model::evaluate`].
    fn evaluate_predict(&mut self, batch: &Batch) -> Result<(StepOutput, Vec<f32>), ModelError> {
        let loss = self.evaluate(batch)?;
        let pred = self.predict(&batch.x, batch.rows)?;
        Ok((loss, pred))
    }

    /// Input features per row.
    fn in_dim(&self) -> usize;
    /// Output values per row.
    fn out_dim(&self) -> usize;
    /// The task (fixes the loss and the prediction transform).
    fn task(&self) -> Task;
    /// Model kind for messages (`mlp`, `cnn`, ...).
    fn name(&self) -> &str;

    /// The embedding tables' side of the model (see [`embedding`]); `None` for dense models.
    fn sparse(&mut self) -> Option<&mut dyn embedding::SparseModel> {
        None
    }
}

#[cfg(test)]
mod tests;
