//! What a node needs before its actors start: the data split, the model, the optimizer and the
//! round schedule, all derived from the manifest and its seed. Shared by `lockstep node`,
//! `lockstep launch`'s pre-flight check and programs that embed the runtime.

pub mod held_out;
pub mod model_tables;
pub mod predict;
mod predict_classic;
pub mod split_export;
pub mod stored_transform;
pub mod top_k;

use crate::control::protocol::ModelSignature;
use crate::error::{RuntimeError, TrainingError};
use crate::manifest::Manifest;
use lockstep_trainer::data::{self, EpochPlan, Split, Task as DataTask};

use lockstep_trainer::model::embedding::{build_embedding_model, id_specs};
use lockstep_trainer::model::{build_model, ClassWeight, Model, ModelKind};
use lockstep_trainer::optim::{Optimizer, OptimizerSpec};
use lockstep_trainer::{Batch, Targets};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Load and split the manifest's data set (paths resolve against the manifest's directory).
///
/// # Errors
/// [`RuntimeError::Data`] naming the file and column.
pub fn load_split(m: &Manifest) -> Result<Arc<Split>, RuntimeError> {
    load_split_with(m, None)
}

/// As [`load_split`]; with `stored` the data is transformed with that transform (fitted
/// earlier, kept in a checkpoint or a model's metadata) instead of refitting one.
///
/// # Errors
/// [`RuntimeError::Data`] naming the file and column.
pub fn load_split_with(
    m: &Manifest,
    stored: Option<&data::Fitted>,
) -> Result<Arc<Split>, RuntimeError> {
    Ok(Arc::new(data::load_with(
        &data_spec(m),
        m.job.seed,
        stored,
    )?))
}

/// The manifest's `[job.data]`, its path resolved against the manifest's directory and the
/// model's id columns attached (string and multi-valued ids become ids in the transform).
pub(crate) fn data_spec(m: &Manifest) -> data::DataSpec {
    let mut spec = m.job.data.resolved(&m.base_dir);
    spec.ids = id_specs(&m.job.model);
    spec
}

/// Build the manifest's model for `split`, initialised from the job seed.
///
/// # Errors
/// [`TrainingError`] naming the field that does not fit.
pub fn build(m: &Manifest, split: &Split) -> Result<Box<dyn Model>, RuntimeError> {
    let spec = &m.job.model;
    let built = match spec.kind {
        ModelKind::Mf | ModelKind::WideDeep => {
            let base = match &split.train.y {
                Targets::Real(y) if split.task == DataTask::Regression && !y.is_empty() => {
                    (y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64) as f32
                }
                _ => 0.0,
            };
            let names = &split.feature_names;
            build_embedding_model(spec, names, split.outputs(), m.job.seed, base)
        }
        _ => build_model(spec, split.train.cols, split.outputs(), m.job.seed),
    };
    let mut model = built.map_err(TrainingError::key("job.model"))?;
    model
        .set_class_weights(class_weights(m, split)?)
        .map_err(TrainingError::key("job.model.class_weight"))?;
    model
        .init_from_data(&split.train.x, m.job.seed)
        .map_err(TrainingError::key("job.model"))?;
    Ok(model)
}

/// Whether the manifest's model has embedding tables (`kind = "mf"` or `"wide_deep"`).
pub(crate) fn has_tables(m: &Manifest) -> bool {
    matches!(m.job.model.kind, ModelKind::Mf | ModelKind::WideDeep)
}

/// Build the manifest's model for data transformed by `fitted` with `outputs` outputs (no
/// training rows at hand: `lockstep predict --input`), initialised from the job seed; the
/// caller loads the trained parameters into it.
///
/// # Errors
/// [`TrainingError`] naming the field that does not fit.
pub fn build_for_fitted(
    m: &Manifest,
    fitted: &lockstep_trainer::data::Fitted,
    outputs: usize,
) -> Result<Box<dyn Model>, RuntimeError> {
    let spec = &m.job.model;
    let names = &fitted.features.feature_names;
    let built = match spec.kind {
        ModelKind::Mf | ModelKind::WideDeep => {
            build_embedding_model(spec, names, outputs, m.job.seed, 0.0)
        }
        _ => build_model(spec, names.len(), outputs, m.job.seed),
    };
    Ok(built.map_err(TrainingError::key("job.model"))?)
}

/// The per-class weights of `[job.model] class_weight` (classes in label order), from the
/// training split's class counts for `"balanced"`; `None` when unset.
///
/// # Errors
/// [`TrainingError::ClassWeight`]: a regression task, an unknown class
/// or name, a weight that is not positive, or `"balanced"` without training rows in memory (a
/// dataset streamed from files or a stream).
pub(crate) fn class_weights(m: &Manifest, split: &Split) -> Result<Option<Vec<f32>>, RuntimeError> {
    let Some(cw) = &m.job.model.class_weight else {
        return Ok(None);
    };
    let bad = |reason: String| TrainingError::ClassWeight { reason };
    if split.classes.is_empty() {
        return Err(bad("applies to classification only".into()).into());
    }
    let mut counts = vec![0u64; split.classes.len()];
    match &split.train.y {
        Targets::Real(v) => {
            let last = counts.len() - 1;
            for t in v {
                counts[usize::from(*t >= 0.5).min(last)] += 1;
            }
        }
        Targets::Class(v) => {
            for &c in v {
                if let Some(n) = counts.get_mut(c as usize) {
                    *n += 1;
                }
            }
        }
    }
    if counts.iter().sum::<u64>() == 0 && matches!(cw, ClassWeight::Named(_)) {
        return Err(bad(
            "\"balanced\" counts the classes of the training rows, and this job has none in memory (a dataset streamed from files, or a stream): give a table of class = weight".into(),
        ).into());
    }
    Ok(cw
        .weights(&split.classes, &counts)
        .map(Some)
        .map_err(|e| bad(e.to_string()))?)
}

/// [`class_weights`] by class name, as the report shows them.
///
/// # Errors
/// As [`class_weights`].
pub(crate) fn class_weights_by_name(
    m: &Manifest,
    split: &Split,
) -> Result<Option<BTreeMap<String, f64>>, RuntimeError> {
    Ok(class_weights(m, split)?.map(|w| {
        let w = w.into_iter().map(f64::from);
        split.classes.iter().cloned().zip(w).collect()
    }))
}

/// A fresh optimizer for `model`'s parameters, its `l2` / `l1` penalties on the weights only
/// (every tensor but the biases, `*.bias` in the layout).
///
/// # Errors
/// [`TrainingError::Optimizer`] naming the optimizer field.
pub fn optimizer(spec: &OptimizerSpec, model: &dyn Model) -> Result<Optimizer, RuntimeError> {
    let weights = model
        .layout()
        .iter()
        .filter(|p| !p.name.ends_with(".bias"))
        .map(|p| p.range());
    let optimizer = Optimizer::new(spec, model.params().len())
        .map_err(TrainingError::optimizer(None, "job.optimizer"))?;
    Ok(optimizer.with_penalized(weights))
}

/// Check everything that can be checked before processes start: data file, columns, model and
/// optimizer specs. Errors name the key, file or column.
///
/// # Errors
/// As [`load_split`], [`build`] and [`optimizer`].
pub fn preflight(m: &Manifest) -> Result<(), RuntimeError> {
    let split = load_split(m)?;
    let model = build(m, &split)?;
    optimizer(&m.job.optimizer, model.as_ref())?;
    total_rounds(m, split.train_rows())?;
    Ok(())
}

/// The epoch plan every rank uses (same seed, same global batch). With `micro_batches` a partial
/// last global batch is dropped (it could not be cut into equal micro-batches).
pub fn plan(m: &Manifest, train_rows: usize) -> EpochPlan {
    EpochPlan {
        rows: train_rows,
        global_batch: global_batch(m, train_rows),
        drop_last: m.job.micro_batches > 0,
        seed: m.job.seed,
        fixed_order: full_batch(m),
    }
}

/// Whether every round sees the whole training split in one fixed order: full-batch L-BFGS,
/// and the closed-form models (k-means, PCA) whose rounds sum statistics over every row.
pub(crate) fn full_batch(m: &Manifest) -> bool {
    use lockstep_trainer::model::ModelKind;
    m.job.optimizer.kind == lockstep_trainer::optim::OptimizerKind::Lbfgs
        || matches!(m.job.model.kind, ModelKind::Kmeans | ModelKind::Pca)
}

/// Rows per global batch: `job.global_batch`; for L-BFGS, k-means and PCA the whole training
/// split (rounded down to a multiple of `micro_batches`, so that every evaluation has the same
/// rows), whatever `global_batch` says.
pub fn global_batch(m: &Manifest, train_rows: usize) -> usize {
    if full_batch(m) {
        let lanes = m.job.micro_batches.max(1);
        return (train_rows / lanes * lanes).max(1);
    }
    m.job.global_batch
}

/// Rounds in the whole job: `job.rounds`, or `job.epochs` times the batches per epoch.
///
/// # Errors
/// [`RuntimeError::Manifest`]-style message when an epoch has no batch.
pub fn total_rounds(m: &Manifest, train_rows: usize) -> Result<u64, RuntimeError> {
    if m.stream().is_some() {
        return Ok(m.job.rounds.unwrap_or(u64::MAX));
    }
    let per_epoch = plan(m, train_rows).batches_per_epoch();
    if per_epoch == 0 {
        return Err(TrainingError::NoBatch {
            global_batch: global_batch(m, train_rows),
            train_rows,
        }
        .into());
    }
    Ok(match (m.job.rounds, m.job.epochs) {
        (Some(r), _) => r,
        (None, Some(e)) => e * per_epoch,
        (None, None) => per_epoch,
    })
}

/// Evaluate `model` on `table`-shaped data: loss plus accuracy / auc / r2 as fits the task.
///
/// # Errors
/// [`TrainingError::Model`] when the model cannot run on the batch.
pub fn evaluate(
    model: &mut dyn Model,
    task: DataTask,
    test: &Batch,
) -> Result<BTreeMap<String, f64>, RuntimeError> {
    let all = crate::job::held_out::share(model, task, test, 0, 1)?;
    crate::job::held_out::combine(vec![(String::from("this node"), all)])
}

/// SHA-256 of parameters as little-endian f32 in layout order (the report's `weights_sha256`).
pub fn weights_sha256(params: &[f32]) -> String {
    let mut h = Sha256::new();
    for p in params {
        h.update(p.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The layout of a model, compared across workers.
pub fn signature(model: &dyn Model) -> ModelSignature {
    ModelSignature {
        params: model
            .layout()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect(),
        data: None,
    }
}

/// [`signature`] with the node's view of `split` (its rows and the hash of its transform).
pub(crate) fn signature_with_data(model: &dyn Model, split: &Split) -> ModelSignature {
    let plans = serde_json::to_vec(&split.fitted).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(&plans));
    ModelSignature {
        data: Some(crate::control::protocol::DataView {
            rows: split.data_rows(),
            transform: hash,
        }),
        ..signature(model)
    }
}

/// The metric a progress line shows for `task`.
pub(crate) fn headline_metric(task: DataTask) -> &'static str {
    match task {
        DataTask::Regression => "r2",
        DataTask::Binary => "auc",
        DataTask::Multiclass => "accuracy",
    }
}
