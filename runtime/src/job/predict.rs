//! `lockstep predict --input DATA --output OUT.parquet`: a trained model applied to any Parquet or
//! CSV file that has the feature columns, with the *training* transform (imputation fills,
//! scaling, one-hot categories, fitted on the training rows), written as Parquet.
//!
//! The fitted transform travels in the model file's metadata (see
//! [`crate::job::stored_transform`]); a readable copy is stored beside the model when a run starts:
//! `model.safetensors` gets `model.transform.json` (the serialised [`Fitted`]: feature plans and
//! label plan). `lockstep predict` reads the metadata first, then that file; a model with
//! neither gets the transform refitted from the manifest's data and seed.
//!
//! The input is read and written in record batches (8192 rows), so memory stays bounded by a
//! batch, except that with a label column the predictions and labels are kept to compute the
//! metrics at the end (a few bytes per row).

use crate::error::{RuntimeError, TrainingError};
use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lockstep_trainer::data::{
    self, ColumnPlan, FileRecords, Fitted, Format, RawColumn, RecordBatchSource, Task,
};
use lockstep_trainer::model::Model;
use lockstep_trainer::Targets;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the transform of `model` lives: `model.safetensors` -> `model.transform.json`.
pub fn transform_path(model: &Path) -> PathBuf {
    model.with_extension("transform.json")
}

/// Store `fitted` beside `model` (atomically).
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub(crate) fn save_transform(model: &Path, fitted: &Fitted) -> Result<(), RuntimeError> {
    let path = transform_path(model);
    let json =
        serde_json::to_vec_pretty(fitted).map_err(|e| RuntimeError::io("serialise", &path, e))?;
    lockstep_tensor::safetensors_io::write_atomic(&path, &json)
        .map_err(|e| RuntimeError::io("write", &path, e))
}

/// The transform stored beside `model`, if there is one.
///
/// # Errors
/// [`RuntimeError::Io`] when the file exists but cannot be read or parsed.
pub fn load_transform(model: &Path) -> Result<Option<Fitted>, RuntimeError> {
    let path = transform_path(model);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RuntimeError::io("parse", &path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", &path, e)),
    }
}

/// What to predict and where to write it.
#[derive(Debug, Clone)]
pub struct PredictFile {
    /// Parquet or CSV input with the feature columns (label optional).
    pub input: PathBuf,
    /// Parquet output.
    pub output: PathBuf,
    /// Input columns copied to the output; `None`: an `id` column and the label, if present.
    pub keep: Option<Vec<String>>,
}

/// What a prediction run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predicted {
    /// Rows written.
    pub rows: usize,
    /// Metrics, when the input had the label column.
    pub metrics: Option<BTreeMap<String, f64>>,
}

/// The input columns copied to the output: `--keep`, else `id` and the label when present.
fn kept_columns(
    job: &PredictFile,
    schema: &Schema,
    file: &str,
    label: &str,
) -> Result<Vec<String>, RuntimeError> {
    let keep: Vec<String> = match &job.keep {
        Some(k) => k.clone(),
        None => ["id", "ID", "Id", label]
            .iter()
            .filter(|c| schema.field_with_name(c).is_ok())
            .map(|c| c.to_string())
            .collect(),
    };
    for c in &keep {
        data::column_kind(schema, file, c).map_err(data_err)?;
    }
    Ok(keep)
}

fn data_err(e: data::DataError) -> RuntimeError {
    RuntimeError::Data(e)
}

/// Predict every row of `job.input` with `model` (and its embedding `tables`, if it has any) and
/// the training transform `fitted`, writing `job.output`. See the module docs.
///
/// # Errors
/// A [`RuntimeError::Data`] naming the input file and the missing feature column (before any
/// row is read), model errors, and I/O errors naming the output.
pub fn predict_file(
    model: &mut dyn Model,
    mut tables: Option<&mut crate::job::model_tables::StoredTables>,
    fitted: &Fitted,
    job: &PredictFile,
) -> Result<Predicted, RuntimeError> {
    let file = job.input.display().to_string();
    let label = fitted.label.column.clone();
    let mut src = FileRecords::open(&job.input, Format::Auto, &label).map_err(data_err)?;
    let schema = src.schema();
    let kinds = feature_kinds(fitted, &schema, &file)?;
    let has_label = schema.field_with_name(&label).is_ok();
    let keep = kept_columns(job, &schema, &file, &label)?;
    let (task, classes) = (fitted.label.task, fitted.label.classes.clone());
    let mut out_fields: Vec<Field> = keep
        .iter()
        .map(|c| schema.field_with_name(c).cloned().expect("checked above"))
        .collect();
    let unsupervised = crate::job::predict_classic::fields(model);
    let has_label = has_label && unsupervised.is_none();
    out_fields.extend(
        unsupervised
            .clone()
            .unwrap_or_else(|| prediction_fields(task, &classes)),
    );
    let out_schema = Arc::new(Schema::new(out_fields));
    let out_io = |e: &dyn std::fmt::Display| RuntimeError::io("write", &job.output, e.to_string());
    if let Some(dir) = job.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    }
    let sink = std::fs::File::create(&job.output).map_err(|e| out_io(&e))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(sink, out_schema.clone(), None)
        .map_err(|e| out_io(&e))?;
    let (mut rows, mut all_pred, mut all_y) = (0usize, Vec::new(), Vec::new());
    while let Some(batch) = src.next_batch().map_err(data_err)? {
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let one = std::slice::from_ref(&batch);
        let cols = fitted
            .features
            .columns
            .iter()
            .zip(&kinds)
            .map(|(p, k)| {
                let name = plan_name(p);
                Ok((name.to_string(), data::extract(one, &file, name, *k)?))
            })
            .collect::<Result<Vec<(String, RawColumn)>, data::DataError>>()
            .map_err(data_err)?;
        let idx: Vec<usize> = (0..n).collect();
        let x = fitted
            .features
            .transform(&cols, &idx, &file)
            .map_err(data_err)?;
        let predict_err = |source| TrainingError::Predict {
            file: file.to_string(),
            source,
        };
        if let Some(t) = tables.as_deref_mut() {
            t.install(model, &x, n).map_err(predict_err)?;
        }
        let pred = model.predict(&x, n).map_err(predict_err)?;
        let mut arrays: Vec<ArrayRef> = keep
            .iter()
            .map(|c| batch.column_by_name(c).cloned().expect("checked above"))
            .collect();
        arrays.extend(match unsupervised {
            Some(_) => crate::job::predict_classic::arrays(model, &pred, n),
            None => prediction_arrays(task, &classes, &pred, n),
        });
        let out = RecordBatch::try_new(out_schema.clone(), arrays).map_err(|e| out_io(&e))?;
        writer.write(&out).map_err(|e| out_io(&e))?;
        if has_label {
            let kind = data::column_kind(&schema, &file, &label).map_err(data_err)?;
            let raw = data::extract(one, &file, &label, kind).map_err(data_err)?;
            let y = fitted.label.targets(&raw, &idx, &file).map_err(data_err)?;
            all_y.push(y);
            all_pred.extend_from_slice(&pred);
        }
        rows += n;
    }
    writer.close().map_err(|e| out_io(&e))?;
    let metrics = if has_label && rows > 0 {
        Some(metrics_of(task, &all_pred, all_y, rows))
    } else {
        None
    };
    Ok(Predicted { rows, metrics })
}

fn plan_name(p: &ColumnPlan) -> &str {
    match p {
        ColumnPlan::Numeric { name, .. } | ColumnPlan::OneHot { name, .. } => name,
        ColumnPlan::Ids(ids) => &ids.name,
    }
}

/// Every feature column's kind in the input, refusing a missing one by name.
fn feature_kinds(
    fitted: &Fitted,
    schema: &Schema,
    file: &str,
) -> Result<Vec<data::ColumnKind>, RuntimeError> {
    fitted
        .features
        .columns
        .iter()
        .map(|p| {
            let name = plan_name(p);
            if schema.field_with_name(name).is_err() {
                return Err(RuntimeError::Data(data::DataError::Config {
                    file: file.to_string(),
                    column: name.to_string(),
                    message: format!(
                        "the model needs feature column '{name}', which this file does not have"
                    ),
                }));
            }
            Ok(match p {
                ColumnPlan::Numeric { .. } => data::ColumnKind::Numeric,
                ColumnPlan::OneHot { .. } | ColumnPlan::Ids(_) => data::ColumnKind::String,
            })
        })
        .collect()
}

/// Output columns: `probability` + `predicted` (binary), `prob_<class>`... + `predicted`
/// (multiclass), `prediction` (regression).
fn prediction_fields(task: Task, classes: &[String]) -> Vec<Field> {
    let predicted = Field::new("predicted", DataType::Utf8, false);
    match task {
        Task::Binary => vec![
            Field::new("probability", DataType::Float32, false),
            predicted,
        ],
        Task::Multiclass => {
            let mut v: Vec<Field> = classes
                .iter()
                .map(|c| Field::new(format!("prob_{c}"), DataType::Float32, false))
                .collect();
            v.push(predicted);
            v
        }
        Task::Regression => vec![Field::new("prediction", DataType::Float32, false)],
    }
}

fn prediction_arrays(task: Task, classes: &[String], pred: &[f32], n: usize) -> Vec<ArrayRef> {
    let class = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    match task {
        Task::Binary => {
            let labels: Vec<String> = pred.iter().map(|&p| class(usize::from(p >= 0.5))).collect();
            vec![
                Arc::new(Float32Array::from(pred.to_vec())),
                Arc::new(StringArray::from(labels)),
            ]
        }
        Task::Multiclass => {
            let k = pred.len() / n.max(1);
            let mut v: Vec<ArrayRef> = (0..k)
                .map(|j| {
                    let col: Vec<f32> = (0..n).map(|i| pred[i * k + j]).collect();
                    Arc::new(Float32Array::from(col)) as ArrayRef
                })
                .collect();
            let best = lockstep_trainer::metrics::argmax_rows(pred, k);
            let labels: Vec<String> = best.iter().map(|&j| class(j as usize)).collect();
            v.push(Arc::new(StringArray::from(labels)));
            v
        }
        Task::Regression => vec![Arc::new(Float32Array::from(pred.to_vec()))],
    }
}

/// The held-out metrics of `lockstep predict` for the predictions and labels of a whole file.
fn metrics_of(task: Task, pred: &[f32], ys: Vec<Targets>, rows: usize) -> BTreeMap<String, f64> {
    let y = ys
        .into_iter()
        .fold(None, |acc: Option<Targets>, t| match (acc, t) {
            (None, t) => Some(t),
            (Some(Targets::Class(mut a)), Targets::Class(b)) => {
                a.extend(b);
                Some(Targets::Class(a))
            }
            (Some(Targets::Real(mut a)), Targets::Real(b)) => {
                a.extend(b);
                Some(Targets::Real(a))
            }
            (Some(a), _) => Some(a),
        });
    let Some(y) = y else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    match (&y, task) {
        (Targets::Class(labels), _) => {
            let k = pred.len() / rows.max(1);
            let best = lockstep_trainer::metrics::argmax_rows(pred, k);
            out.insert(
                "accuracy".into(),
                lockstep_trainer::metrics::accuracy(&best, labels),
            );
        }
        (Targets::Real(labels), Task::Binary) => {
            let m = lockstep_trainer::metrics::binary_accuracy(pred, labels, 0.5);
            out.insert("accuracy".into(), m);
            if let Some(auc) = lockstep_trainer::metrics::roc_auc(pred, labels) {
                out.insert("auc".into(), auc);
            }
        }
        (Targets::Real(labels), _) => {
            out.insert("r2".into(), lockstep_trainer::metrics::r2(pred, labels));
            out.insert("mse".into(), lockstep_trainer::metrics::mse(pred, labels));
        }
    }
    out
}
