//! `Network`: a stack of [`Layer`]s over one flat parameter vector, with a loss; the one
//! implementation of [`Model`] behind every model kind.
//!
//! Flat layout: parameter blocks are stored in *reverse* layer order (the output layer's block
//! at offset 0), each block holding its tensors in [`Layer::param_specs`] order. Backprop
//! finishes layers last-first, so each finished layer's gradients are the next contiguous range
//! of the gradient vector, handed to `on_bucket` in increasing offset order.

use super::layer::Layer;
use super::{GradSink, Model, ModelError, ParamInfo, SpecError, StepOutput, Task};
use crate::batch::{Batch, Targets};
use crate::init::{rng, STREAM_INIT};
use std::ops::Range;

/// Rows per chunk in [`Model::predict`], bounding scratch memory for large inputs.
/// Rows per forward pass when evaluating or predicting: the outputs of a row depend only on the
/// chunk it falls in, so a caller that cuts a batch at multiples of this gets the same bits.
pub const PREDICT_CHUNK: usize = 256;

/// A feed-forward network: layers, their parameters, scratch activations and a loss.
pub struct Network {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    /// Each layer's block of the flat vectors (empty for parameter-free layers).
    blocks: Vec<Range<usize>>,
    /// Non-empty blocks in backprop (increasing offset) order.
    buckets: Vec<Range<usize>>,
    layout: Vec<ParamInfo>,
    params: Vec<f32>,
    task: Task,
    /// Output of each layer for the last forward pass.
    acts: Vec<Vec<f32>>,
    /// Ping-pong buffers for `dL/d(activation)` during backprop.
    dbuf: [Vec<f32>; 2],
    /// Per-class weights of the training loss (held-out losses are unweighted).
    class_weights: Option<Vec<f32>>,
}

impl Network {
    /// Chain `layers` (checked: each layer's input width is the previous one's output width,
    /// and the last gives `task.out_dim()`), lay out and initialise parameters from `seed`.
    ///
    /// Parameter names are `{kind}{index}.{tensor}`, e.g. `dense3.weight`, with the layer's
    /// forward index. Initialisation runs in forward order from one ChaCha8 stream.
    ///
    /// # Errors
    /// [`ModelError::LayerChain`] when widths do not chain; [`ModelError::Spec`] when there
    /// are no layers or the output width does not match the task.
    pub fn new(
        name: &str,
        layers: Vec<Box<dyn Layer>>,
        task: Task,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let last = layers.last().ok_or_else(|| SpecError::NoLayers {
            model: name.to_string(),
        })?;
        if last.out_features() != task.out_dim() {
            return Err(SpecError::OutputWidth {
                model: name.to_string(),
                got: last.out_features(),
                need: task.out_dim(),
            }
            .into());
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[1].in_features() != pair[0].out_features() {
                return Err(ModelError::LayerChain {
                    index: i + 1,
                    kind: pair[1].kind(),
                    expected: pair[1].in_features(),
                    actual: pair[0].out_features(),
                });
            }
        }
        let mut blocks = vec![0..0; layers.len()];
        let mut layout = Vec::new();
        let mut offset = 0;
        for (i, layer) in layers.iter().enumerate().rev() {
            let start = offset;
            for spec in layer.param_specs() {
                let len = spec.len();
                layout.push(ParamInfo {
                    name: format!("{}{i}.{}", layer.kind(), spec.name),
                    shape: spec.shape,
                    offset,
                    len,
                });
                offset += len;
            }
            blocks[i] = start..offset;
        }
        let mut params = vec![0.0f32; offset];
        let mut r = rng(seed, STREAM_INIT);
        for (i, layer) in layers.iter().enumerate() {
            let mut at = blocks[i].start;
            for spec in layer.param_specs() {
                spec.init.fill(&mut r, &mut params[at..at + spec.len()]);
                at += spec.len();
            }
        }
        let buckets = blocks
            .iter()
            .rev()
            .filter(|b| !b.is_empty())
            .cloned()
            .collect();
        let acts = vec![Vec::new(); layers.len()];
        let name = name.to_string();
        Ok(Network {
            name,
            layers,
            blocks,
            buckets,
            layout,
            params,
            task,
            acts,
            dbuf: [Vec::new(), Vec::new()],
            class_weights: None,
        })
    }

    /// The layers, in forward order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    fn check_input(&self, x_len: usize, rows: usize, cols: usize) -> Result<(), ModelError> {
        if cols != self.in_dim() {
            return Err(ModelError::InputWidth {
                model: self.name.clone(),
                expected: self.in_dim(),
                actual: cols,
            });
        }
        if x_len != rows * cols {
            let what = format!("{x_len} feature values for {rows} rows x {cols} columns");
            return Err(ModelError::BatchShape { what });
        }
        Ok(())
    }

    /// Run every layer on `x` (`rows` rows); the output is `self.acts.last()`.
    fn forward(&mut self, x: &[f32], rows: usize) -> Result<(), ModelError> {
        for i in 0..self.layers.len() {
            let (done, rest) = self.acts.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            let out = &mut rest[0];
            out.resize(rows * self.layers[i].out_features(), 0.0);
            self.layers[i].forward(&self.params[self.blocks[i].clone()], input, rows, out)?;
        }
        Ok(())
    }

    /// Backprop from `self.dbuf[0]` (dL/d output), handing each block to `sink` as it finishes.
    fn backward(
        &mut self,
        x: &[f32],
        rows: usize,
        sink: &mut dyn GradSink,
    ) -> Result<(), ModelError> {
        let [mut dy, mut dx] = std::mem::take(&mut self.dbuf);
        for i in (0..self.layers.len()).rev() {
            let input = if i == 0 { x } else { &self.acts[i - 1] };
            let block = self.blocks[i].clone();
            let want_dx = if i > 0 {
                dx.resize(rows * self.layers[i].in_features(), 0.0);
                Some(&mut dx[..])
            } else {
                None
            };
            let p = &self.params[block.clone()];
            let g: &mut [f32] = if block.is_empty() {
                &mut []
            } else {
                sink.bucket(block.clone())
            };
            self.layers[i].backward(p, input, &self.acts[i], &dy, rows, g, want_dx)?;
            if !block.is_empty() {
                sink.ready(block);
            }
            std::mem::swap(&mut dy, &mut dx);
        }
        self.dbuf = [dy, dx];
        Ok(())
    }

    /// Forward then loss; leaves `dL/d output` (scaled by `1 / divisor`) in `dbuf[0]`.
    fn forward_loss(
        &mut self,
        batch: &Batch,
        divisor: f32,
        weighted: bool,
    ) -> Result<StepOutput, ModelError> {
        self.check_input(batch.x.len(), batch.rows, batch.cols)?;
        self.forward(&batch.x, batch.rows)?;
        let out = self.acts.last().map(Vec::as_slice).unwrap_or(&[]);
        self.dbuf[0].resize(out.len(), 0.0);
        let class_w = self.class_weights.as_deref().filter(|_| weighted);
        let sum = self.task.loss().eval_weighted(
            out,
            batch.rows,
            self.task.out_dim(),
            &batch.y,
            divisor,
            &mut self.dbuf[0],
            class_w,
        )?;
        let mean = if batch.rows == 0 {
            0.0
        } else {
            sum / batch.rows as f64
        };
        if !sum.is_finite() {
            return Err(ModelError::NonFiniteLoss {
                loss: mean,
                rows: batch.rows,
            });
        }
        Ok(StepOutput {
            loss: mean,
            loss_sum: sum,
            rows: batch.rows,
        })
    }
    /// Loss over `batch` in chunks of [`PREDICT_CHUNK`] rows (the chunks [`Model::predict`] uses,
    /// so the outputs are the same bits); with `outputs`, the raw outputs are appended to it.
    fn held_out(
        &mut self,
        batch: &Batch,
        mut outputs: Option<&mut Vec<f32>>,
    ) -> Result<StepOutput, ModelError> {
        let mut total = StepOutput {
            loss: 0.0,
            loss_sum: 0.0,
            rows: 0,
        };
        self.check_input(batch.x.len(), batch.rows, batch.cols)?;
        let cols = batch.cols;
        let per = match self.task {
            Task::Regression { outputs } => outputs,
            _ => 1,
        };
        for start in (0..batch.rows).step_by(PREDICT_CHUNK) {
            let n = PREDICT_CHUNK.min(batch.rows - start);
            let x = batch
                .x
                .get(start * cols..(start + n) * cols)
                .unwrap_or(&[])
                .to_vec();
            let y = slice_targets(&batch.y, start, n, per);
            let part = self.forward_loss(
                &Batch {
                    x,
                    rows: n,
                    cols,
                    y,
                },
                1.0,
                false,
            )?;
            if let Some(out) = outputs.as_deref_mut() {
                out.extend_from_slice(self.acts.last().map(Vec::as_slice).unwrap_or(&[]));
            }
            total.loss_sum += part.loss_sum;
            total.rows += n;
        }
        total.loss = if total.rows == 0 {
            0.0
        } else {
            total.loss_sum / total.rows as f64
        };
        Ok(total)
    }
}

/// Targets of rows `start..start + n` (`per` values per row for real targets).
fn slice_targets(y: &Targets, start: usize, n: usize, per: usize) -> Targets {
    match y {
        Targets::Real(v) => Targets::Real(
            v.get(start * per..(start + n) * per)
                .unwrap_or(&[])
                .to_vec(),
        ),
        Targets::Class(v) => Targets::Class(v.get(start..start + n).unwrap_or(&[]).to_vec()),
    }
}

impl Model for Network {
    fn set_class_weights(&mut self, weights: Option<Vec<f32>>) -> Result<(), ModelError> {
        let classes = match self.task {
            Task::Binary => 2,
            Task::Multiclass { classes } => classes,
            Task::Regression { .. } if weights.is_none() => 0,
            Task::Regression { .. } => return Err(SpecError::ClassWeightTask.into()),
        };
        if let Some(w) = &weights {
            if w.len() != classes {
                return Err(SpecError::ClassWeightCount {
                    weights: w.len(),
                    classes,
                }
                .into());
            }
        }
        self.class_weights = weights;
        Ok(())
    }

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

    fn forward_backward_into(
        &mut self,
        batch: &Batch,
        divisor: f32,
        sink: &mut dyn GradSink,
    ) -> Result<StepOutput, ModelError> {
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(ModelError::BatchShape {
                what: format!("gradient divisor {divisor} is not positive"),
            });
        }
        let out = self.forward_loss(batch, divisor, true)?;
        if batch.rows == 0 {
            for b in self.buckets.clone() {
                sink.bucket(b.clone()).fill(0.0);
                sink.ready(b);
            }
            return Ok(out);
        }
        self.backward(&batch.x, batch.rows, sink)?;
        Ok(out)
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError> {
        self.held_out(batch, None)
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        let cols = self.in_dim();
        self.check_input(x.len(), rows, cols)?;
        let mut out = Vec::with_capacity(rows * self.task.out_dim());
        for start in (0..rows).step_by(PREDICT_CHUNK) {
            let n = PREDICT_CHUNK.min(rows - start);
            self.forward(&x[start * cols..(start + n) * cols], n)?;
            out.extend_from_slice(self.acts.last().map(Vec::as_slice).unwrap_or(&[]));
        }
        self.task.to_predictions(&mut out);
        Ok(out)
    }

    fn evaluate_predict(&mut self, batch: &Batch) -> Result<(StepOutput, Vec<f32>), ModelError> {
        let mut out = Vec::with_capacity(batch.rows * self.task.out_dim());
        let loss = self.held_out(batch, Some(&mut out))?;
        self.task.to_predictions(&mut out);
        Ok((loss, out))
    }

    fn in_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.in_features())
    }
    fn out_dim(&self) -> usize {
        self.task.out_dim()
    }
    fn task(&self) -> Task {
        self.task
    }
    fn name(&self) -> &str {
        &self.name
    }
}
