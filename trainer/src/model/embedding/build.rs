//! [`build_embedding_model`]: an `mf` or `wide_deep` model from the `[job.model]` table and the
//! data's feature column names, with every key checked and named.

use super::arch::Arch;
use super::error::EmbeddingError;
use super::ids::IdColumn;
use super::model::{EmbeddingModel, Parts0};
use super::spec::EmbeddingSpec;
use super::table::TableInfo;
use crate::model::spec::{ActivationName, ModelKind, ModelSpec, TaskName};
use crate::model::{Activation, ActivationKind, Dense, Layer, Model, ModelError, Task};

const DEFAULT_INIT_STD: f32 = 0.05;

fn spec_err(key: impl Into<String>, reason: impl Into<String>) -> ModelError {
    EmbeddingError::Spec {
        key: key.into(),
        reason: reason.into(),
    }
    .into()
}

/// Build the embedding model `spec` describes for rows whose feature columns are
/// `feature_names`, with `outputs` classes (classification) or outputs (regression); the
/// output's bias starts at `base` (the training labels' mean for a regression, so that neither
/// the tables' biases nor the dense learning rate have to carry the mean rating first).
///
/// # Errors
/// [`EmbeddingError::Spec`] naming the key: no tables (or fewer than two for `mf`), `dim = 0`,
/// `buckets = 0`, a column that is missing, a string column or used twice, `mf` tables of
/// different widths, more than one output, a bad `table_optimizer`.
pub fn build_embedding_model(
    spec: &ModelSpec,
    feature_names: &[String],
    outputs: usize,
    seed: u64,
    base: f32,
) -> Result<Box<dyn Model>, ModelError> {
    let arch = match spec.kind {
        ModelKind::Mf => Arch::Mf,
        ModelKind::WideDeep => Arch::WideDeep,
        _ => return Err(spec_err("kind", "not an embedding model (mf, wide_deep)")),
    };
    let stray = spec.stray_fields();
    if !stray.is_empty() {
        return Err(spec_err(stray.join(", "), "does not apply to this kind"));
    }
    let need = if arch == Arch::Mf { 2 } else { 1 };
    if spec.embeddings.len() < need {
        return Err(spec_err(
            "embeddings",
            format!("this kind needs at least {need} [[job.model.embeddings]] tables"),
        ));
    }
    let opt = spec.table_optimizer.as_ref();
    for (key, v) in [
        ("table_optimizer.l2", opt.and_then(|o| o.l2)),
        ("table_optimizer.decay", opt.and_then(|o| o.decay)),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(spec_err(key, "must be >= 0"));
        }
    }
    let init_std = match &spec.table_optimizer {
        Some(o) if o.lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) => {
            return Err(spec_err("table_optimizer.lr", "must be positive"))
        }
        Some(o) => o.init_std.unwrap_or(DEFAULT_INIT_STD),
        None => DEFAULT_INIT_STD,
    };
    if !(init_std.is_finite() && init_std >= 0.0) {
        return Err(spec_err("table_optimizer.init_std", "must be >= 0"));
    }
    let mut ids = Vec::new();
    let mut tables = Vec::new();
    for (i, e) in spec.embeddings.iter().enumerate() {
        if ids.iter().any(|c: &IdColumn| c.name == e.column) {
            return Err(spec_err(
                format!("embeddings[{i}].column"),
                format!("{:?} has a table already", e.column),
            ));
        }
        ids.push(id_column(i, e, feature_names)?);
        tables.push(TableInfo {
            column: e.column.clone(),
            width: e.dim + 1,
            buckets: e.buckets,
            init_std,
        });
    }
    if arch == Arch::Mf
        && spec
            .embeddings
            .iter()
            .any(|e| e.dim != spec.embeddings[0].dim)
    {
        return Err(spec_err("embeddings", "mf: every table needs the same dim"));
    }
    let task = task(spec, outputs)?;
    let dense: Vec<usize> = (0..feature_names.len())
        .filter(|j| !ids.iter().any(|c| (c.col..c.col + c.slots).contains(j)))
        .collect();
    let layers = match arch {
        Arch::Mf => Vec::new(),
        Arch::WideDeep => {
            let width = spec.embeddings.iter().map(|e| e.dim).sum::<usize>() + dense.len();
            mlp(spec, width)?
        }
    };
    let parts = Parts0 {
        arch,
        task,
        in_dim: feature_names.len(),
        ids,
        tables,
        dense,
        layers,
        l2: opt.and_then(|o| o.l2).unwrap_or(0.0),
    };
    let mut model = EmbeddingModel::new(parts, seed);
    if base.is_finite() {
        model.set_output_bias(base);
    }
    Ok(Box::new(model))
}

/// Table `i`'s id column among the feature columns, its keys checked: `dim`, `buckets`, and for
/// a multi-valued column (`pooling`) its slots `col[0]`, `col[1]`, ... (see
/// [`crate::data::ids`]).
fn id_column(i: usize, e: &EmbeddingSpec, names: &[String]) -> Result<IdColumn, ModelError> {
    let key = |k: &str| format!("embeddings[{i}].{k}");
    if e.dim == 0 {
        return Err(spec_err(key("dim"), "must be at least 1"));
    }
    if e.buckets == Some(0) {
        return Err(spec_err(key("buckets"), "must be at least 1"));
    }
    let Some(pooling) = e.pooling else {
        for (k, set) in [
            ("separator", e.separator.is_some()),
            ("max_values", e.max_values.is_some()),
        ] {
            if set {
                return Err(spec_err(
                    key(k),
                    "applies to a multi-valued column: set pooling = \"sum\" or \"mean\"",
                ));
            }
        }
        let col = find_column(names, &e.column, key("column"))?;
        return Ok(IdColumn::single(e.column.clone(), col, e.buckets));
    };
    if e.separator.as_deref() == Some("") {
        return Err(spec_err(key("separator"), "must not be empty"));
    }
    if e.max_values == Some(0) {
        return Err(spec_err(key("max_values"), "must be at least 1"));
    }
    let slot = |k: usize| format!("{}[{k}]", e.column);
    let Some(col) = names.iter().position(|n| *n == slot(0)) else {
        return Err(match find_column(names, &e.column, key("column")) {
            Ok(_) => spec_err(
                key("pooling"),
                format!("{:?} is not a multi-valued column (a numeric column holds one id per row): drop pooling", e.column),
            ),
            Err(err) => err.into(),
        });
    };
    let slots = (0..)
        .take_while(|&k| names.get(col + k) == Some(&slot(k)))
        .count();
    Ok(IdColumn {
        slots,
        pooling: Some(pooling),
        ..IdColumn::single(e.column.clone(), col, e.buckets)
    })
}

/// The index of the id column `column` among the feature columns; `key` names it in errors.
fn find_column(names: &[String], column: &str, key: String) -> Result<usize, EmbeddingError> {
    if let Some(j) = names.iter().position(|n| n == column) {
        return Ok(j);
    }
    let column = column.to_string();
    if names.iter().any(|n| n.starts_with(&format!("{column}="))) {
        return Err(EmbeddingError::StringIds { key, column });
    }
    Err(EmbeddingError::NoColumn {
        key,
        column,
        features: names.to_vec(),
    })
}

fn task(spec: &ModelSpec, outputs: usize) -> Result<Task, ModelError> {
    match spec.task.unwrap_or(TaskName::Regression) {
        TaskName::Regression if outputs == 1 => Ok(Task::Regression { outputs: 1 }),
        TaskName::Classification if (1..=2).contains(&outputs) => Ok(Task::Binary),
        _ => Err(spec_err(
            "task",
            format!("embedding models predict one value (regression or two classes); the data gives {outputs}"),
        )),
    }
}

fn mlp(spec: &ModelSpec, input: usize) -> Result<Vec<Box<dyn Layer>>, ModelError> {
    if spec.hidden.contains(&0) {
        return Err(spec_err("hidden", "entries must be positive"));
    }
    let act = match spec.activation.unwrap_or(ActivationName::Relu) {
        ActivationName::Relu => ActivationKind::Relu,
        ActivationName::Tanh => ActivationKind::Tanh,
    };
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut width = input;
    for &h in &spec.hidden {
        layers.push(Box::new(match act {
            ActivationKind::Relu => Dense::he(width, h),
            ActivationKind::Tanh => Dense::xavier(width, h),
        }));
        layers.push(Box::new(Activation::new(act, h)));
        width = h;
    }
    layers.push(Box::new(Dense::xavier(width, 1)));
    Ok(layers)
}
