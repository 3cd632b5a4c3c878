//! `lockstep predict --top-k K --users FILE --output OUT.parquet`: each user's K best items that
//! the user has not rated in the training split, scored by a trained recommender with its
//! tables ([`crate::job::model_tables`]).
//!
//! The model must be an embedding model over exactly two id columns and no dense features (a
//! matrix factorisation of users and items): the column the users file has is the user, the
//! other the item. The candidates are every item of the training split; the items a user rated
//! there are left out. Scores are the model's predictions (a rating for regression, a
//! probability for binary classification); ties go to the smaller item id. The output has the
//! user column, the item column, `score` and `rank` (1 = best), users in the order of the file
//! (each once).

use crate::error::{RuntimeError, TrainingError};
use crate::job::model_tables::StoredTables;
use arrow_array::{ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use lockstep_trainer::data::{self, FileRecords, Format, RawColumn, RecordBatchSource};
use lockstep_trainer::model::Model;
use lockstep_trainer::Batch;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Rows scored per model call.
const CHUNK: usize = 8192;

/// What to rank and where to write it.
#[derive(Debug, Clone)]
pub struct TopK {
    /// Items per user.
    pub k: usize,
    /// Parquet or CSV with the user id column.
    pub users: PathBuf,
    /// Parquet output.
    pub output: PathBuf,
}

/// Why top-k cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TopKError {
    /// The model is not a two-column recommender.
    #[error(
        "needs an embedding model over exactly two id columns and no dense features; this one \
         has features {features:?} and tables {tables:?}"
    )]
    NotUserItem {
        /// The model's feature columns.
        features: Vec<String>,
        /// Its tables' id columns.
        tables: Vec<String>,
    },
    /// The users file has neither id column.
    #[error("{file} has neither id column {columns:?}")]
    NoUserColumn {
        /// The users file.
        file: String,
        /// The id columns looked for.
        columns: Vec<String>,
    },
    /// A user id that is not an id.
    #[error("{file}: row {row} of column {column:?} is {value}, not an integer id")]
    BadUser {
        /// The users file.
        file: String,
        /// The user column.
        column: String,
        /// The row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// `--top-k 0`.
    #[error("K must be at least 1")]
    ZeroK,
}

/// Rank the items of `train` for every user of `job.users` with `model` and its `tables`;
/// returns the rows written.
///
/// # Errors
/// [`TopKError`] (named above), data errors naming the users file, model errors, and I/O errors
/// naming the output.
pub fn top_k(
    model: &mut dyn Model,
    tables: &mut StoredTables,
    features: &[String],
    train: &Batch,
    job: &TopK,
) -> Result<usize, RuntimeError> {
    if job.k == 0 {
        return Err(TopKError::ZeroK.into());
    }
    let (user_col, item_col) = user_item(model, features, &job.users)?;
    let users = read_users(job, &features[user_col])?;
    let (items, seen) = catalogue(train, user_col, item_col);
    let mut out = Ranked::default();
    let cols = features.len();
    for &user in &users {
        let mut scored: Vec<(f32, u64)> = Vec::with_capacity(items.len());
        let unseen: Vec<u64> = match seen.get(&user) {
            Some(s) => items.iter().copied().filter(|i| !s.contains(i)).collect(),
            None => items.clone(),
        };
        for chunk in unseen.chunks(CHUNK) {
            let mut x = vec![0.0f32; chunk.len() * cols];
            for (r, &item) in chunk.iter().enumerate() {
                x[r * cols + user_col] = user as f32;
                x[r * cols + item_col] = item as f32;
            }
            let predict_err = |source| TrainingError::Predict {
                file: job.users.display().to_string(),
                source,
            };
            tables
                .install(model, &x, chunk.len())
                .map_err(predict_err)?;
            let pred = model.predict(&x, chunk.len()).map_err(predict_err)?;
            scored.extend(pred.into_iter().zip(chunk.iter().copied()));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (rank, (score, item)) in scored.into_iter().take(job.k).enumerate() {
            out.push(user, item, score, rank + 1);
        }
    }
    out.write(job, &features[user_col], &features[item_col])
}

/// Which feature is the user and which the item.
fn user_item(
    model: &mut dyn Model,
    features: &[String],
    users: &std::path::Path,
) -> Result<(usize, usize), RuntimeError> {
    let tables: Vec<String> = model
        .sparse()
        .map(|s| s.tables().iter().map(|t| t.column.clone()).collect())
        .unwrap_or_default();
    let fits =
        features.len() == 2 && tables.len() == 2 && features.iter().all(|f| tables.contains(f));
    if !fits {
        return Err(TopKError::NotUserItem {
            features: features.to_vec(),
            tables,
        }
        .into());
    }
    let file = users.display().to_string();
    let src = FileRecords::open(users, Format::Auto, "").map_err(RuntimeError::Data)?;
    let schema = src.schema();
    match features
        .iter()
        .position(|f| schema.field_with_name(f).is_ok())
    {
        Some(u) => Ok((u, 1 - u)),
        None => Err(TopKError::NoUserColumn {
            file,
            columns: features.to_vec(),
        }
        .into()),
    }
}

/// The distinct user ids of the users file, in file order.
fn read_users(job: &TopK, column: &str) -> Result<Vec<u64>, RuntimeError> {
    let file = job.users.display().to_string();
    let mut src = FileRecords::open(&job.users, Format::Auto, "").map_err(RuntimeError::Data)?;
    let kind = data::column_kind(&src.schema(), &file, column).map_err(RuntimeError::Data)?;
    let (mut users, mut known, mut row) = (Vec::new(), HashSet::new(), 0usize);
    while let Some(batch) = src.next_batch().map_err(RuntimeError::Data)? {
        let raw = data::extract(std::slice::from_ref(&batch), &file, column, kind)
            .map_err(RuntimeError::Data)?;
        let RawColumn::Num(values) = raw else {
            return Err(TopKError::BadUser {
                file,
                column: column.into(),
                row,
                value: f64::NAN,
            }
            .into());
        };
        for v in values {
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0) {
                let (column, value) = (column.to_string(), v);
                return Err(TopKError::BadUser {
                    file,
                    column,
                    row,
                    value,
                }
                .into());
            }
            if known.insert(v as u64) {
                users.push(v as u64);
            }
            row += 1;
        }
    }
    Ok(users)
}

/// The training split's items (ascending) and each user's rated items.
fn catalogue(train: &Batch, user: usize, item: usize) -> (Vec<u64>, HashMap<u64, HashSet<u64>>) {
    let (mut items, mut seen) = (BTreeSet::new(), HashMap::<u64, HashSet<u64>>::new());
    for r in 0..train.rows {
        let (u, i) = (
            train.x[r * train.cols + user],
            train.x[r * train.cols + item],
        );
        items.insert(i as u64);
        seen.entry(u as u64).or_default().insert(i as u64);
    }
    (items.into_iter().collect(), seen)
}

/// The output rows.
#[derive(Default)]
struct Ranked {
    users: Vec<i64>,
    items: Vec<i64>,
    scores: Vec<f32>,
    ranks: Vec<i32>,
}

impl Ranked {
    fn push(&mut self, user: u64, item: u64, score: f32, rank: usize) {
        self.users.push(user as i64);
        self.items.push(item as i64);
        self.scores.push(score);
        self.ranks.push(rank as i32);
    }

    fn write(self, job: &TopK, user: &str, item: &str) -> Result<usize, RuntimeError> {
        let out = &job.output;
        let io = |e: &dyn std::fmt::Display| RuntimeError::io("write", out, e.to_string());
        let schema = Arc::new(Schema::new(vec![
            Field::new(user, DataType::Int64, false),
            Field::new(item, DataType::Int64, false),
            Field::new("score", DataType::Float32, false),
            Field::new("rank", DataType::Int32, false),
        ]));
        let rows = self.users.len();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.users)),
            Arc::new(Int64Array::from(self.items)),
            Arc::new(Float32Array::from(self.scores)),
            Arc::new(Int32Array::from(self.ranks)),
        ];
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| io(&e))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
        }
        let sink = std::fs::File::create(out).map_err(|e| io(&e))?;
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(sink, schema, None).map_err(|e| io(&e))?;
        writer.write(&batch).map_err(|e| io(&e))?;
        writer.close().map_err(|e| io(&e))?;
        Ok(rows)
    }
}
