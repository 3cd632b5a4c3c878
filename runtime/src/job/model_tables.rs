//! `model.tables.safetensors`: the embedding tables of a trained model, beside
//! `model.safetensors` (which holds the dense part). The first worker writes it at the end of a
//! run, after every shard's rows were brought to it ([`crate::ps::sparse`]); `lockstep predict`
//! reads it back.
//!
//! Per table (named by its id column): `<column>.ids` (i64, ascending) and `<column>.rows` (f32,
//! `[rows, dim + 1]`: the vector, then the bias). The file holds every row touched in training
//! or evaluation; an id it lacks gets the row training would have started it with (a function
//! of the job seed, the table and the id), which is what a never-trained row is.

use crate::error::{MismatchError, RuntimeError};
use lockstep_tensor::{read_safetensors, write_safetensors, SparseRows, Tensor};
use lockstep_trainer::model::embedding::{RowOptimizer, TableInfo, TableOptimizerKind, TableShard};
use lockstep_trainer::model::{Model, ModelError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the tables of `model` live: `model.safetensors` -> `model.tables.safetensors`.
pub fn tables_path(model: &Path) -> PathBuf {
    model.with_extension("tables.safetensors")
}

/// Write `rows` (per table of `tables`, ascending ids) beside `model`, atomically.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub(crate) fn write(
    model: &Path,
    tables: &[TableInfo],
    rows: &[SparseRows],
) -> Result<(), RuntimeError> {
    let path = tables_path(model);
    let io = |e| RuntimeError::io("write", &path, e);
    let mut tensors = Vec::new();
    for (t, r) in tables.iter().zip(rows) {
        let ids: Vec<i64> = r.ids.iter().map(|&i| i as i64).collect();
        let n = ids.len();
        tensors.push((
            format!("{}.ids", t.column),
            Tensor::from_vec(vec![n], ids).map_err(io)?,
        ));
        let values = Tensor::from_slice(vec![n, t.width], &r.values).map_err(io)?;
        tensors.push((format!("{}.rows", t.column), values));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([("format".to_string(), "lockstep.tables.v1".to_string())]);
    write_safetensors(&path, &refs, Some(meta)).map_err(io)?;
    let total: usize = rows.iter().map(|r| r.ids.len()).sum();
    tracing::info!(path = %path.display(), rows = total, "wrote the embedding tables");
    Ok(())
}

/// A trained model's tables in memory, answering any id (see the module docs).
pub struct StoredTables {
    shards: Vec<TableShard>,
}

impl StoredTables {
    /// The tables stored beside `model_path` for `model`, or `None` when `model` has no tables.
    /// `seed` is the job's (rows the file lacks start from it).
    ///
    /// # Errors
    /// [`RuntimeError::Io`] when the file is missing or unreadable;
    /// [`MismatchError::StoredTable`] when a table is missing or has another width.
    pub fn load(
        model_path: &Path,
        model: &mut dyn Model,
        seed: u64,
    ) -> Result<Option<StoredTables>, RuntimeError> {
        let Some(sparse) = model.sparse() else {
            return Ok(None);
        };
        let path = tables_path(model_path);
        let file = read_safetensors(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
        let bad = |column: &str, problem: String| MismatchError::StoredTable {
            path: path.display().to_string(),
            column: column.to_string(),
            problem,
        };
        let mut shards = Vec::new();
        for (t, info) in sparse.tables().iter().enumerate() {
            let (Some(ids), Some(rows)) = (
                file.get(&format!("{}.ids", info.column)),
                file.get(&format!("{}.rows", info.column)),
            ) else {
                return Err(bad(&info.column, "is not in the file".into()).into());
            };
            let ids: Vec<i64> = ids.to_vec().map_err(|e| bad(&info.column, e.to_string()))?;
            let rows: Vec<f32> = rows
                .to_vec()
                .map_err(|e| bad(&info.column, e.to_string()))?;
            if rows.len() != ids.len() * info.width {
                let problem = format!(
                    "has {} values for {} ids, the model's rows are {} wide",
                    rows.len(),
                    ids.len(),
                    info.width
                );
                return Err(bad(&info.column, problem).into());
            }
            let optimizer = RowOptimizer::new(TableOptimizerKind::Sgd);
            let mut shard = TableShard::new(info.clone(), t, seed, optimizer);
            for (id, row) in ids.iter().zip(rows.chunks_exact(info.width)) {
                shard.load_row(*id as u64, row);
            }
            shards.push(shard);
        }
        Ok(Some(StoredTables { shards }))
    }

    /// Hand `model` the rows the `rows` rows of `x` look up (before `predict` or `evaluate`).
    ///
    /// # Errors
    /// A value of an id column that is not an id (named by column and row).
    pub fn install(
        &mut self,
        model: &mut dyn Model,
        x: &[f32],
        rows: usize,
    ) -> Result<(), ModelError> {
        let Some(sparse) = model.sparse() else {
            return Ok(());
        };
        let ids = sparse.batch_ids(x, rows)?;
        let pulled = self
            .shards
            .iter_mut()
            .zip(ids)
            .map(|(shard, ids)| {
                let mut values = Vec::new();
                shard.read(&ids, &mut values);
                SparseRows {
                    dim: shard.info().width,
                    ids,
                    values,
                }
            })
            .collect();
        sparse.install_rows(pulled)
    }

    /// Per table, the ids of every stored row, ascending.
    pub fn ids(&self) -> Vec<Vec<u64>> {
        self.shards.iter().map(TableShard::ids).collect()
    }
}
