//! Held-out evaluation shared by the workers.
//!
//! The held-out rows are cut into chunks of [`PREDICT_CHUNK`] rows, the chunks a model evaluates
//! in anyway, and worker `r` of `n` evaluates chunks `r, r + n, r + 2n, ...` ([`share`]). The
//! coordinator puts the shares back in chunk order ([`combine`]): the loss is summed chunk after
//! chunk and the metrics are computed on the predictions in row order, so the figures are the same
//! bits whatever the number of workers, and the same as one process evaluating alone
//! ([`crate::job::evaluate`] is `combine(share(.., 0, 1))`). While rank 0 evaluated alone, the
//! others waited for it at the next allreduce; now every worker evaluates `1/n` of the rows.

use crate::error::{ProtocolError, RuntimeError, TrainingError};
use lockstep_trainer::data::Task as DataTask;
use lockstep_trainer::metrics;
use lockstep_trainer::model::{Model, PREDICT_CHUNK};
use lockstep_trainer::{Batch, Targets};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which figures a share carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvalKind {
    /// Class labels: accuracy from the hits of the most probable class.
    Classes,
    /// 0/1 labels: accuracy and ROC AUC from the predicted probabilities.
    Binary,
    /// Real labels: r2 and mse from the predictions.
    Regression,
    /// A model that ignores the label (k-means, PCA): its own loss per row only.
    Unsupervised,
}

/// One chunk's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalChunk {
    /// Chunk index (rows `index * PREDICT_CHUNK ..`).
    pub index: u32,
    /// Rows in the chunk.
    pub rows: u32,
    /// Sum of the rows' losses.
    pub loss_sum: f64,
    /// [`EvalKind::Classes`]: rows whose most probable class is the label.
    pub hits: u64,
    /// [`EvalKind::Binary`] and [`EvalKind::Regression`]: the predictions, row-major.
    pub pred: Vec<f32>,
    /// The labels of those rows.
    pub label: Vec<f32>,
}

/// One worker's part of a held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalShare {
    /// Which figures the chunks carry.
    pub kind: EvalKind,
    /// Chunks of the whole held-out split.
    pub of: u32,
    /// This worker's chunks, in index order.
    pub chunks: Vec<EvalChunk>,
}

/// Evaluate the chunks of `test` that belong to worker `rank` of `workers`.
///
/// # Errors
/// [`TrainingError::Model`] when the model cannot run on the rows.
pub fn share(
    model: &mut dyn Model,
    task: DataTask,
    test: &Batch,
    rank: usize,
    workers: usize,
) -> Result<EvalShare, RuntimeError> {
    let kind = match (&test.y, task) {
        _ if model.unsupervised() => EvalKind::Unsupervised,
        (Targets::Class(_), _) => EvalKind::Classes,
        (Targets::Real(_), DataTask::Binary) => EvalKind::Binary,
        (Targets::Real(_), _) => EvalKind::Regression,
    };
    let of = test.rows.div_ceil(PREDICT_CHUNK);
    let merr = TrainingError::key("evaluation");
    let mut chunks = Vec::new();
    for index in (rank..of).step_by(workers.max(1)) {
        let start = index * PREDICT_CHUNK;
        let rows = PREDICT_CHUNK.min(test.rows - start);
        let part = slice(test, start, rows, model.out_dim());
        if kind == EvalKind::Unsupervised {
            let loss = model.evaluate(&part).map_err(merr)?;
            chunks.push(EvalChunk {
                index: index as u32,
                rows: rows as u32,
                loss_sum: loss.loss_sum,
                hits: 0,
                pred: Vec::new(),
                label: Vec::new(),
            });
            continue;
        }
        let (loss, pred) = model.evaluate_predict(&part).map_err(merr)?;
        let mut chunk = EvalChunk {
            index: index as u32,
            rows: rows as u32,
            loss_sum: loss.loss_sum,
            hits: 0,
            pred: Vec::new(),
            label: Vec::new(),
        };
        match part.y {
            Targets::Class(labels) => {
                let top = metrics::argmax_rows(&pred, model.out_dim());
                chunk.hits = top.iter().zip(&labels).filter(|(p, l)| p == l).count() as u64;
            }
            Targets::Real(labels) => (chunk.pred, chunk.label) = (pred, labels),
        }
        chunks.push(chunk);
    }
    Ok(EvalShare {
        kind,
        of: of as u32,
        chunks,
    })
}

/// Rows `start..start + rows` of `test` (`per` label values per row for real labels).
fn slice(test: &Batch, start: usize, rows: usize, per: usize) -> Batch {
    let cols = test.cols;
    let y = match &test.y {
        Targets::Class(v) => Targets::Class(v[start..start + rows].to_vec()),
        Targets::Real(v) => {
            let per = if v.len() == test.rows { 1 } else { per };
            Targets::Real(v[start * per..(start + rows) * per].to_vec())
        }
    };
    Batch {
        x: test.x[start * cols..(start + rows) * cols].to_vec(),
        rows,
        cols,
        y,
    }
}

/// The metrics of the whole held-out split from every worker's share: `loss`, plus `accuracy`
/// (classes, binary), `auc` (binary, when both classes occur), `r2` and `mse` (regression).
///
/// # Errors
/// [`ProtocolError`] when the shares do not cover every chunk exactly once, or disagree
/// on the kind or the number of chunks (naming the worker, by its position in `shares`).
pub fn combine(shares: Vec<(String, EvalShare)>) -> Result<BTreeMap<String, f64>, RuntimeError> {
    let Some((_, first)) = shares.first() else {
        return Ok(BTreeMap::new());
    };
    let (kind, of) = (first.kind, first.of as usize);
    let mut slots: Vec<Option<EvalChunk>> = vec![None; of];
    for (node, s) in shares {
        if s.kind != kind || s.of as usize != of {
            return Err(ProtocolError::HeldOutCut {
                node,
                chunks: s.of,
                kind: s.kind,
                other_chunks: of,
                other_kind: kind,
            }
            .into());
        }
        for c in s.chunks {
            let i = c.index as usize;
            match slots.get_mut(i) {
                Some(slot @ None) => *slot = Some(c),
                _ => return Err(ProtocolError::HeldOutChunk { node, chunk: i }.into()),
            }
        }
    }
    let mut out = BTreeMap::new();
    let (mut loss_sum, mut rows, mut hits) = (0.0f64, 0usize, 0u64);
    let (mut pred, mut label) = (Vec::new(), Vec::new());
    for (i, slot) in slots.into_iter().enumerate() {
        let c = slot.ok_or(ProtocolError::HeldOutMissing { chunk: i, of })?;
        loss_sum += c.loss_sum;
        rows += c.rows as usize;
        hits += c.hits;
        pred.extend_from_slice(&c.pred);
        label.extend_from_slice(&c.label);
    }
    if rows == 0 {
        return Ok(out);
    }
    out.insert("loss".to_string(), loss_sum / rows as f64);
    match kind {
        EvalKind::Classes => {
            out.insert("accuracy".into(), hits as f64 / rows as f64);
        }
        EvalKind::Binary => {
            out.insert(
                "accuracy".into(),
                metrics::binary_accuracy(&pred, &label, 0.5),
            );
            if let Some(auc) = metrics::roc_auc(&pred, &label) {
                out.insert("auc".into(), auc);
            }
        }
        EvalKind::Regression => {
            out.insert("r2".into(), metrics::r2(&pred, &label));
            out.insert("mse".into(), metrics::mse(&pred, &label));
        }
        EvalKind::Unsupervised => {}
    }
    Ok(out)
}
