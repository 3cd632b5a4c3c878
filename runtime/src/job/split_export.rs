//! `lockstep split MANIFEST --out DIR`: the job's train/held-out split exactly as the workers see
//! it (the seeded, stratified split and the transform fitted on the training rows: imputation,
//! one-hot columns, scaling), written as two Parquet files so that another tool (scikit-learn,
//! a notebook) can fit the same matrices:
//!
//! - `DIR/train.parquet`, `DIR/test.parquet`: one `Float32` column per model input, named as the
//!   model sees it (`Income`, `Home=owner`, `Home=<missing>`, ...), in input order, then the
//!   label column under the manifest's label name: `Float32` 0/1 (binary), the value (regression)
//!   or `Int64` class index (multiclass). Rows in file order.
//! - `DIR/split.json`: the task, the class names (index order) and the row counts.
//!
//! A dataset streamed from files (a directory, a glob, object storage, `memory_mb`) or a stream
//! keeps no training table in memory and is refused, naming `job.data`.

use crate::error::RuntimeError;
use crate::manifest::Manifest;
use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use lockstep_trainer::data::{Split, Table};
use lockstep_trainer::Targets;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a split could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The data source keeps no fixed training split in memory.
    #[error("job.data: {0} has no fixed training split in memory to write; point job.data.path at one Parquet or CSV file (without memory_mb)")]
    NoSplit(&'static str),
    /// Reading the data, or writing a file.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The files [`write_split`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// `train.parquet`, `test.parquet` and `split.json`.
    pub files: Vec<PathBuf>,
    /// Training and held-out rows.
    pub rows: (usize, usize),
}

/// Load the manifest's split (as every worker does) and write it under `dir`.
///
/// # Errors
/// [`ExportError::NoSplit`] naming `job.data` for a stream or a dataset streamed from files;
/// data errors naming the file and column; I/O errors naming the output file.
pub fn export(m: &Manifest, dir: &Path) -> Result<Written, ExportError> {
    if m.stream().is_some() {
        return Err(ExportError::NoSplit("a stream"));
    }
    let split = crate::job::load_split(m)?;
    write_split(&split, &m.job.data.label, dir)
}

/// Write `split` under `dir` (see the module docs); `label` names the target column.
///
/// # Errors
/// As [`export`].
pub(crate) fn write_split(split: &Split, label: &str, dir: &Path) -> Result<Written, ExportError> {
    if split.dataset.is_some() {
        return Err(ExportError::NoSplit("a dataset streamed from files"));
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    let mut files = Vec::new();
    for (name, table) in [
        ("train.parquet", &split.train),
        ("test.parquet", &split.test),
    ] {
        let path = dir.join(name);
        write_table(table, &split.feature_names, label, &path)?;
        files.push(path);
    }
    let meta = serde_json::json!({
        "task": split.task,
        "label": label,
        "classes": split.classes,
        "features": split.feature_names,
        "train_rows": split.train.rows,
        "test_rows": split.test.rows,
    });
    let path = dir.join("split.json");
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| RuntimeError::io("write", &path, e))?;
    std::fs::write(&path, text).map_err(|e| RuntimeError::io("write", &path, e))?;
    files.push(path);
    Ok(Written {
        files,
        rows: (split.train.rows, split.test.rows),
    })
}

/// One table as Parquet: a `Float32` column per feature, then the label.
fn write_table(
    table: &Table,
    names: &[String],
    label: &str,
    path: &Path,
) -> Result<(), RuntimeError> {
    let io = |e: &dyn std::fmt::Display| RuntimeError::io("write", path, e.to_string());
    let mut fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(n, DataType::Float32, false))
        .collect();
    let mut cols: Vec<ArrayRef> = (0..table.cols)
        .map(|c| {
            let v: Float32Array = (0..table.rows)
                .map(|r| Some(table.x[r * table.cols + c]))
                .collect();
            Arc::new(v) as ArrayRef
        })
        .collect();
    match &table.y {
        Targets::Real(v) => {
            fields.push(Field::new(label, DataType::Float32, false));
            cols.push(Arc::new(Float32Array::from(v.clone())));
        }
        Targets::Class(v) => {
            fields.push(Field::new(label, DataType::Int64, false));
            cols.push(Arc::new(Int64Array::from_iter_values(
                v.iter().map(|&c| i64::from(c)),
            )));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| io(&e))?;
    let file = std::fs::File::create(path).map_err(|e| io(&e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| io(&e))?;
    w.write(&batch).map_err(|e| io(&e))?;
    w.close().map_err(|e| io(&e))?;
    Ok(())
}
