//! `EmbeddingModel`: a [`Model`] whose dense part is an ordinary flat parameter vector (trained
//! like any other model, allreduced by the runtime) and whose embedding tables live elsewhere
//! (parameter-server shards). Per batch the runtime asks for the ids ([`SparseModel::batch_ids`]),
//! pulls those rows and installs them ([`SparseModel::install_rows`]), runs the ordinary
//! forward/backward, then takes the touched rows' gradients ([`SparseModel::take_grads`]).

use super::arch::{Arch, Parts, Pass};
use super::error::EmbeddingError;
use super::ids::IdColumn;
use super::table::TableInfo;
use super::SparseModel;
use crate::batch::Batch;
use crate::init::{rng, STREAM_INIT};
use crate::model::{GradSink, Layer, Model, ModelError, ParamInfo, StepOutput, Task};
use lockstep_tensor::sparse::tree_sum;
use lockstep_tensor::SparseRows;
use std::ops::Range;

/// An embedding model; see the module docs.
pub struct EmbeddingModel {
    arch: Arch,
    task: Task,
    in_dim: usize,
    ids: Vec<IdColumn>,
    tables: Vec<TableInfo>,
    dims: Vec<usize>,
    dense: Vec<usize>,
    params: Vec<f32>,
    layout: Vec<ParamInfo>,
    buckets: Vec<Range<usize>>,
    layers: Vec<(Box<dyn Layer>, Range<usize>)>,
    pulled: Vec<SparseRows>,
    l2: f32,
    /// Sparse gradients of each forward/backward since the last take, in call order.
    pending: Vec<Vec<SparseRows>>,
}

/// What [`EmbeddingModel::new`] needs.
pub struct Parts0 {
    /// The architecture.
    pub arch: Arch,
    /// The task (one output).
    pub task: Task,
    /// Feature columns per row.
    pub in_dim: usize,
    /// One id column per table.
    pub ids: Vec<IdColumn>,
    /// One description per table.
    pub tables: Vec<TableInfo>,
    /// The feature columns that are not ids.
    pub dense: Vec<usize>,
    /// `wide_deep`: the MLP (its last layer gives one output).
    pub layers: Vec<Box<dyn Layer>>,
    /// L2 on the looked-up rows, per occurrence.
    pub l2: f32,
}

impl EmbeddingModel {
    /// Lay out and initialise the dense parameters from `seed`.
    pub fn new(p: Parts0, seed: u64) -> Self {
        let mut layout: Vec<ParamInfo> = Vec::new();
        let mut inits = Vec::new();
        let mut layers = Vec::new();
        if p.arch == Arch::Mf {
            push(&mut layout, "global.bias".into(), vec![1]);
            push(&mut layout, "dense.weight".into(), vec![p.dense.len()]);
        }
        for (i, layer) in p.layers.into_iter().enumerate() {
            let start = layout.last().map_or(0, |l| l.offset + l.len);
            for s in layer.param_specs() {
                push(
                    &mut layout,
                    format!("{}{i}.{}", layer.kind(), s.name),
                    s.shape.clone(),
                );
                inits.push((layout.len() - 1, s.init));
            }
            let end = layout.last().map_or(0, |l| l.offset + l.len);
            layers.push((layer, start..end));
        }
        let n = layout.last().map_or(0, |l| l.offset + l.len);
        let mut params = vec![0.0; n];
        let mut r = rng(seed, STREAM_INIT);
        for (k, init) in inits {
            init.fill(&mut r, &mut params[layout[k].range()]);
        }
        let dims = p.tables.iter().map(|t| t.width - 1).collect();
        let pulled = p
            .tables
            .iter()
            .map(|t| SparseRows::empty(t.width))
            .collect();
        EmbeddingModel {
            arch: p.arch,
            task: p.task,
            in_dim: p.in_dim,
            ids: p.ids,
            tables: p.tables,
            dims,
            dense: p.dense,
            params,
            layout,
            buckets: std::iter::once(0..n).collect(),
            layers,
            pulled,
            l2: p.l2,
            pending: Vec::new(),
        }
    }

    /// Set the output's bias (`mf`: the global bias; `wide_deep`: the last layer's bias).
    pub fn set_output_bias(&mut self, b: f32) {
        if let Some(last) = self.layout.last().filter(|_| self.arch == Arch::WideDeep) {
            let at = last.offset + last.len - 1;
            self.params[at] = b;
        } else if let Some(p) = self.params.first_mut() {
            *p = b;
        }
    }

    fn parts(&mut self) -> Parts<'_> {
        Parts {
            arch: self.arch,
            ids: &self.ids,
            dense: &self.dense,
            dims: &self.dims,
            pulled: &self.pulled,
            params: &self.params,
            layers: &mut self.layers,
            l2: self.l2,
        }
    }

    fn check(&self, x: &[f32], rows: usize) -> Result<(), ModelError> {
        if x.len() != rows * self.in_dim {
            return Err(ModelError::InputWidth {
                model: self.name().into(),
                expected: self.in_dim,
                actual: x.len() / rows.max(1),
            });
        }
        Ok(())
    }

    fn forward(&mut self, x: &[f32], rows: usize) -> Result<Pass, ModelError> {
        self.check(x, rows)?;
        let cols = self.in_dim;
        self.parts().forward(x, rows, cols)
    }
}

/// Append a tensor named `name` of `shape` after the last one.
fn push(layout: &mut Vec<ParamInfo>, name: String, shape: Vec<usize>) {
    let offset = layout.last().map_or(0, |l| l.offset + l.len);
    let len = shape.iter().product();
    layout.push(ParamInfo {
        name,
        shape,
        offset,
        len,
    });
}

impl Model for EmbeddingModel {
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
        let rows = batch.rows;
        let pass = self.forward(&batch.x, rows)?;
        let mut dout = vec![0.0; rows];
        let loss = self.task.loss();
        let loss_sum = loss.eval(&pass.out, rows, 1, &batch.y, divisor, &mut dout)?;
        let mean = loss_sum / rows.max(1) as f64;
        if !mean.is_finite() {
            return Err(ModelError::NonFiniteLoss { loss: mean, rows });
        }
        let n = self.params.len();
        let cols = self.in_dim;
        let grads = sink.bucket(0..n);
        let sparse = self
            .parts()
            .backward(&pass, &batch.x, cols, &dout, divisor, grads)?;
        sink.ready(0..n);
        self.pending.push(sparse);
        Ok(StepOutput {
            loss: mean,
            loss_sum,
            rows,
        })
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError> {
        let rows = batch.rows;
        let pass = self.forward(&batch.x, rows)?;
        let mut dout = vec![0.0; rows];
        let divisor = rows.max(1) as f32;
        let loss_sum = self
            .task
            .loss()
            .eval(&pass.out, rows, 1, &batch.y, divisor, &mut dout)?;
        Ok(StepOutput {
            loss: loss_sum / rows.max(1) as f64,
            loss_sum,
            rows,
        })
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        let mut out = self.forward(x, rows)?.out;
        self.task.to_predictions(&mut out);
        Ok(out)
    }

    fn in_dim(&self) -> usize {
        self.in_dim
    }
    fn out_dim(&self) -> usize {
        1
    }
    fn task(&self) -> Task {
        self.task
    }
    fn name(&self) -> &str {
        match self.arch {
            Arch::Mf => "mf",
            Arch::WideDeep => "wide_deep",
        }
    }
    fn sparse(&mut self) -> Option<&mut dyn SparseModel> {
        Some(self)
    }
}

impl SparseModel for EmbeddingModel {
    fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    fn batch_ids(&self, x: &[f32], rows: usize) -> Result<Vec<Vec<u64>>, ModelError> {
        self.check(x, rows)?;
        self.ids
            .iter()
            .map(|c| Ok(c.unique(x, rows, self.in_dim)?.0))
            .collect()
    }

    fn install_rows(&mut self, rows: Vec<SparseRows>) -> Result<(), ModelError> {
        if rows.len() != self.tables.len() {
            return Err(EmbeddingError::RowTables {
                given: rows.len(),
                tables: self.tables.len(),
            }
            .into());
        }
        for (r, t) in rows.iter().zip(&self.tables) {
            if r.dim != t.width || !r.is_valid() {
                return Err(EmbeddingError::RowShape {
                    column: t.column.clone(),
                    width: r.dim,
                    model_width: t.width,
                    ids: r.ids.len(),
                    values: r.values.len(),
                    ascending: r.ids.windows(2).all(|w| w[0] < w[1]),
                }
                .into());
            }
        }
        self.pulled = rows;
        Ok(())
    }

    fn take_grads(&mut self) -> Vec<SparseRows> {
        let calls = std::mem::take(&mut self.pending);
        (0..self.tables.len())
            .map(|t| {
                let parts: Vec<SparseRows> = calls.iter().map(|c| c[t].clone()).collect();
                tree_sum(&parts).unwrap_or_else(|| SparseRows::empty(self.tables[t].width))
            })
            .collect()
    }
}
