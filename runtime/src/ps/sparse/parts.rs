//! Embedding tables in checkpoints: each shard writes its own part,
//! `tables-K-of-N.safetensors` (shard K of N), into the checkpoint directory after the
//! checkpoint round's push; on resume every shard reads every part and keeps the rows it owns
//! under the current layout, so the number of shards may change between runs.
//!
//! Per table `t`: `t.ids` (i64, ascending), `t.values` (f32, `[rows, dim + 1]`), `t.state` (f32,
//! `[rows, state_len]`: the sparse optimizer's per-row state) and `t.since` (i64: the round after
//! each row's last update, for the lazy decay and Adam's step count). Each part is written
//! atomically; a checkpoint is complete for the tables when all `N` parts are there.

use super::Tables;
use crate::error::{RuntimeError, TrainingError};
use lockstep_tensor::{read_safetensors, write_safetensors, Tensor};
use lockstep_trainer::model::embedding::ShardRows;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Shard `k` of `n`'s part in checkpoint `dir`.
pub(crate) fn part_path(dir: &Path, k: usize, n: usize) -> PathBuf {
    dir.join(format!("tables-{k}-of-{n}.safetensors"))
}

/// Write shard `k` of `n`'s rows into checkpoint `dir` (created if needed).
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub(crate) fn write(dir: &Path, k: usize, n: usize, tables: &Tables) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    let path = part_path(dir, k, n);
    let io = |e| RuntimeError::io("write", &path, e);
    let mut tensors = Vec::new();
    for (t, (shard, rows)) in tables.shards().iter().zip(tables.export()).enumerate() {
        let (r, w, sl) = (rows.ids.len(), shard.info().width, shard.state_len());
        let ids: Vec<i64> = rows.ids.iter().map(|&i| i as i64).collect();
        let since: Vec<i64> = rows.since.iter().map(|&i| i as i64).collect();
        tensors.push((
            format!("{t}.ids"),
            Tensor::from_vec(vec![r], ids).map_err(io)?,
        ));
        tensors.push((
            format!("{t}.values"),
            Tensor::from_vec(vec![r, w], rows.values).map_err(io)?,
        ));
        tensors.push((
            format!("{t}.state"),
            Tensor::from_vec(vec![r, sl], rows.state).map_err(io)?,
        ));
        tensors.push((
            format!("{t}.since"),
            Tensor::from_vec(vec![r], since).map_err(io)?,
        ));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([("format".to_string(), "lockstep.table-part.v1".to_string())]);
    write_safetensors(&path, &refs, Some(meta)).map_err(io)
}

/// The parts of checkpoint `dir`: every `tables-K-of-N.safetensors`, checked complete.
///
/// # Errors
/// [`TrainingError::TablePartsMissing`] naming the missing files (or that there are none).
pub(crate) fn list(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let missing = |missing: String| TrainingError::TablePartsMissing {
        checkpoint: dir.display().to_string(),
        missing,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::io("list", dir, e))?;
    let n = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|name| parse(&name).map(|(_, n)| n))
        .ok_or_else(|| missing("no tables-K-of-N.safetensors at all".into()))?;
    let parts: Vec<PathBuf> = (0..n).map(|k| part_path(dir, k, n)).collect();
    let absent: Vec<String> = parts
        .iter()
        .filter(|p| !p.exists())
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if !absent.is_empty() {
        return Err(missing(absent.join(", ")).into());
    }
    Ok(parts)
}

/// Whether checkpoint `dir` holds any table part (a run with tables wrote it).
pub(crate) fn has_parts(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .any(|name| parse(&name).is_some())
    })
}

/// `(K, N)` of a part's file name.
fn parse(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("tables-")?.strip_suffix(".safetensors")?;
    let (k, n) = rest.split_once("-of-")?;
    let (k, n) = (k.parse().ok()?, n.parse().ok()?);
    (k < n).then_some((k, n))
}

/// Restore into `tables` the rows of every part of checkpoint `dir` that `mine` keeps.
///
/// # Errors
/// As [`list`]; [`TrainingError::TablePart`] for a part that does not fit the tables.
pub(crate) fn restore(
    dir: &Path,
    tables: &mut Tables,
    mine: impl Fn(u64) -> bool,
) -> Result<usize, RuntimeError> {
    let mut kept = 0;
    for path in list(dir)? {
        let file = path.display().to_string();
        let bad = |problem: String| TrainingError::TablePart {
            file: file.clone(),
            problem,
        };
        let set = read_safetensors(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
        for (t, shard) in tables.shards_mut().iter_mut().enumerate() {
            let get = |what: &str| {
                set.get(&format!("{t}.{what}"))
                    .ok_or_else(|| bad(format!("no tensor {t}.{what} (table {t})")))
            };
            let ids: Vec<i64> = get("ids")?.to_vec().map_err(|e| bad(e.to_string()))?;
            let since: Vec<i64> = get("since")?.to_vec().map_err(|e| bad(e.to_string()))?;
            let rows = ShardRows {
                ids: ids.iter().map(|&i| i as u64).collect(),
                values: get("values")?.to_vec().map_err(|e| bad(e.to_string()))?,
                state: get("state")?.to_vec().map_err(|e| bad(e.to_string()))?,
                since: since.iter().map(|&i| i as u64).collect(),
            };
            let (r, w, sl) = (rows.ids.len(), shard.info().width, shard.state_len());
            if rows.values.len() != r * w || rows.state.len() != r * sl || rows.since.len() != r {
                let problem = format!(
                    "table {t} ({}): {r} rows do not fit rows of {w} values and {sl} state values \
                     (another model or table optimizer?)",
                    shard.info().column
                );
                return Err(bad(problem).into());
            }
            for i in (0..r).filter(|&i| mine(rows.ids[i])) {
                shard.restore(&rows, i);
                kept += 1;
            }
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_collective::RowStore;
    use lockstep_tensor::SparseRows;
    use lockstep_trainer::model::embedding::{RowOptimizer, TableInfo, TableOptimizerKind};

    fn tables() -> Tables {
        let info = TableInfo {
            column: "u".into(),
            width: 3,
            buckets: None,
            init_std: 0.1,
        };
        Tables::new(&[info], 5, RowOptimizer::new(TableOptimizerKind::Adam), 0.0)
    }

    #[test]
    fn parts_restore_rows_and_state_under_another_sharding() {
        let mut a = tables();
        let mut sink = Vec::new();
        a.read(0, &[1, 2, 3, 4], &mut sink);
        let g = SparseRows {
            dim: 3,
            ids: vec![2, 4],
            values: vec![0.5; 6],
        };
        a.round = 6;
        a.lr = 0.1;
        a.apply(0, &g);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 0, 1, &a).unwrap();
        // Two shards now: each keeps its half, together the same rows and digest.
        let (mut even, mut odd) = (tables(), tables());
        assert_eq!(restore(dir.path(), &mut even, |id| id % 2 == 0).unwrap(), 2);
        assert_eq!(restore(dir.path(), &mut odd, |id| id % 2 == 1).unwrap(), 2);
        let mut both = even.digest();
        super::super::add_mod(&mut both, &odd.digest());
        assert_eq!(both, a.digest());
        // The optimizer state came along: the next update is the same.
        even.round = 7;
        even.lr = 0.1;
        a.round = 7;
        even.apply(0, &g);
        a.apply(0, &g);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        even.read(0, &[2, 4], &mut x);
        a.read(0, &[2, 4], &mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn a_missing_part_is_named() {
        let a = tables();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1, 3, &a).unwrap();
        let e = list(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("tables-0-of-3") && e.contains("tables-2-of-3"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(list(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no tables-K-of-N"));
    }
}
