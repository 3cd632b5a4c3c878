//! `load`: a data file and a `DataSpec` in, a `Split` out. Reading, column checks, labels, the
//! seeded (stratified) train/test split, then the transform fitted on the training rows only.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::columns::{column_kind, extract, select_features, Kind, RawColumn};
use super::error::DataError;
use super::label::LabelPlan;
use super::preprocess::Preprocessor;
use super::source::FileRecords;
use super::spec::{Categorical, DataSpec};
use super::table::{Fitted, Split, Table};

/// Reads `spec.path` (already resolved, see [`DataSpec::resolved`]) and returns the split tables.
/// A directory, glob, URL or a spec with `memory_mb` goes to the streaming reader instead
/// ([`load_dataset`](super::dataset::load_dataset)).
/// The split depends only on the file, the spec and `seed` (ChaCha8, stream 0).
///
/// # Errors
/// Any [`DataError`]; each names the file and, where one is involved, the column and row.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Split, DataError> {
    load_with(spec, seed, None)
}

/// As [`load`], but with `stored` (a transform fitted earlier, e.g. by the run a checkpoint
/// belongs to) the data is transformed with it as it is: nothing is refitted, the feature columns
/// are the stored plans' columns, and the label plan (classes) is the stored one. The split is
/// drawn as in [`load`].
///
/// # Errors
/// As [`load`]; a column of the stored transform that is missing or of another kind is a
/// `MissingColumn` or `Config` error naming the file and the column.
pub fn load_with(spec: &DataSpec, seed: u64, stored: Option<&Fitted>) -> Result<Split, DataError> {
    if spec.is_dataset() {
        return super::dataset::load_dataset(spec, seed, stored);
    }
    let file = spec.path.display().to_string();
    let (schema, batches) = FileRecords::open(&spec.path, spec.format, &spec.label)?.read_all()?;
    if !(0.0..1.0).contains(&spec.test_fraction) {
        return Err(DataError::Config {
            file,
            column: spec.label.clone(),
            message: format!("test_fraction = {} is outside [0, 1)", spec.test_fraction),
        });
    }
    let cols = match stored {
        Some(f) => stored_columns(f, &schema, &batches, &file)?,
        None => read_columns(spec, &schema, &batches, &file)?,
    };
    let label_kind = column_kind(&schema, &file, &spec.label)?;
    let label_raw = extract(&batches, &file, &spec.label, label_kind)?;
    if label_raw.is_empty() {
        return Err(DataError::EmptyFile {
            file,
            column: spec.label.clone(),
        });
    }
    let label = match stored {
        Some(f) => f.label.clone(),
        None => LabelPlan::fit(
            &spec.label,
            spec.task,
            spec.positive.as_deref(),
            spec.classes,
            &label_raw,
            &file,
        )?,
    };
    let all: Vec<usize> = (0..label_raw.len()).collect();
    let targets = label.targets(&label_raw, &all, &file)?;
    let strata = if spec.stratify {
        label.strata(&targets)
    } else {
        None
    };
    let (train_rows, test_rows) =
        split_rows(label_raw.len(), spec.test_fraction, strata.as_deref(), seed);
    let features = match stored {
        Some(f) => f.features.clone(),
        None => Preprocessor::fit(spec, &cols, &train_rows, &file)?,
    };
    let table = |rows: &[usize]| -> Result<Table, DataError> {
        Ok(Table {
            x: features.transform(&cols, rows, &file)?,
            rows: rows.len(),
            cols: features.width(),
            y: label.targets(&label_raw, rows, &file)?,
        })
    };
    let (train, test) = (table(&train_rows)?, table(&test_rows)?);
    Ok(Split {
        train,
        test,
        feature_names: features.feature_names.clone(),
        classes: label.classes.clone(),
        task: spec.task,
        fitted: Fitted { features, label },
        dataset: None,
    })
}

/// The selected feature columns, checked (types, string encoding) before any value is read.
fn read_columns(
    spec: &DataSpec,
    schema: &Schema,
    batches: &[RecordBatch],
    file: &str,
) -> Result<Vec<(String, RawColumn)>, DataError> {
    column_kind(schema, file, &spec.label)?;
    let names = select_features(schema, file, &spec.label, spec.features.as_deref())?;
    let mut kinds = Vec::with_capacity(names.len());
    for name in &names {
        let kind = column_kind(schema, file, name)?;
        if kind == Kind::String && spec.categorical == Categorical::Error && spec.id(name).is_none()
        {
            return Err(DataError::StringFeature {
                file: file.to_string(),
                column: name.clone(),
            });
        }
        kinds.push(kind);
    }
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(DataError::EmptyFile {
            file: file.to_string(),
            column: spec.label.clone(),
        });
    }
    names
        .into_iter()
        .zip(kinds)
        .map(|(name, kind)| Ok((name.clone(), extract(batches, file, &name, kind)?)))
        .collect()
}

/// The columns of a stored transform, checked against the file's schema (names and kinds).
fn stored_columns(
    fitted: &Fitted,
    schema: &Schema,
    batches: &[RecordBatch],
    file: &str,
) -> Result<Vec<(String, RawColumn)>, DataError> {
    fitted.check_schema(schema, file)?;
    fitted
        .feature_columns()
        .into_iter()
        .map(|(name, kind)| Ok((name.clone(), extract(batches, file, &name, kind)?)))
        .collect()
}

/// Seeded train/test split of `rows` rows; both lists sorted. With `strata` every class is split
/// in the same proportion (each class rounds its own test count). The training side keeps at least
/// one row.
pub fn split_rows(
    rows: usize,
    test_fraction: f64,
    strata: Option<&[u32]>,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for r in 0..rows {
        groups
            .entry(strata.map_or(0, |s| s[r]))
            .or_default()
            .push(r);
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for group in groups.values_mut() {
        group.shuffle(&mut rng);
        let n_test = ((group.len() as f64 * test_fraction).round() as usize).min(group.len());
        test.extend_from_slice(&group[..n_test]);
        train.extend_from_slice(&group[n_test..]);
    }
    if train.is_empty() {
        if let Some(r) = test.pop() {
            train.push(r);
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}
