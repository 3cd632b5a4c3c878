//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! One directory per checkpoint, `<dir>/round-000123/`, holding
//! - `state.safetensors`: every parameter under its layout name, and the optimizer's buffers as
//!   `optimizer.<name>` (full length, layout order);
//! - `meta.json`: the next round to run, the epoch and data cursor, the seed, the optimizer's step
//!   count, the SHA-256 of `state.safetensors` and of the parameters, and for a stream the
//!   per-producer committed offsets (the next row of each producer to train on).
//!
//! With a parameter server the optimizer state lives on the server shards; they send it to the
//! first worker at the checkpoint round, which writes the same format (see [`crate::ps::state`]).
//!
//! Both files are written atomically (temporary file, fsync, rename) and `meta.json` last: it is
//! the commit marker. A checkpoint without it, or whose state file does not match the recorded
//! checksum, is torn or corrupt: [`find_latest`] skips it with a warning and takes the next older
//! one. Training draws no random numbers after initialisation (the data order is a function of
//! the seed and the epoch), so the seed and the cursor are the whole RNG state.

pub mod remote;

use crate::error::{MismatchError, RuntimeError};
use crate::job;
use crate::job::stored_transform::StoredTransform;
use lockstep_tensor::safetensors_io::write_atomic;
use lockstep_tensor::{read_safetensors, write_safetensors, Tensor};
use lockstep_trainer::data::DataCursor;
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::{Optimizer, OptimizerState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `meta.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The next round to run.
    pub round: u64,
    /// Where the data continues.
    pub cursor: DataCursor,
    /// The job seed.
    pub seed: u64,
    /// Optimizer steps taken.
    pub optimizer_step: u64,
    /// SHA-256 of `state.safetensors`.
    pub state_sha256: String,
    /// SHA-256 of the parameters (as in the report).
    pub weights_sha256: String,
    /// Streams: per producer, the offset of the next row to train on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_offsets: Option<std::collections::BTreeMap<u32, u64>>,
    /// The fitted data transform the run trains with (`--resume` takes it instead of refitting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<StoredTransform>,
}

/// A checkpoint read back.
pub struct Restored {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Parameters in layout order.
    pub params: Vec<f32>,
    /// Optimizer state.
    pub optimizer: OptimizerState,
}

/// SHA-256 (hex) of a file's bytes, as recorded in `meta.json`.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub fn sha256_file(path: &Path) -> Result<String, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The directory of the checkpoint taken before `round`.
pub fn dir_for(root: &Path, round: u64) -> PathBuf {
    root.join(format!("round-{round:09}"))
}

/// Write a checkpoint of `model` and `optimizer` to continue at `round`; keep the newest `keep`.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub fn write(
    root: &Path,
    round: u64,
    cursor: DataCursor,
    seed: u64,
    model: &dyn Model,
    optimizer: &Optimizer,
    keep: usize,
) -> Result<PathBuf, RuntimeError> {
    write_with_offsets(
        root, round, cursor, seed, model, optimizer, keep, None, None,
    )
}

/// As [`write`], with a stream's per-producer committed offsets and the data transform in
/// `meta.json`.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_with_offsets(
    root: &Path,
    round: u64,
    cursor: DataCursor,
    seed: u64,
    model: &dyn Model,
    optimizer: &Optimizer,
    keep: usize,
    stream_offsets: Option<&std::collections::BTreeMap<u32, u64>>,
    transform: Option<&StoredTransform>,
) -> Result<PathBuf, RuntimeError> {
    let dir = dir_for(root, round);
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
    let params = model.params();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for p in model.layout() {
        let t = Tensor::from_slice(p.shape.clone(), &params[p.range()])
            .map_err(|e| RuntimeError::io("checkpoint", &dir, e))?;
        tensors.push((p.name.clone(), t));
    }
    let state = optimizer.state();
    for (name, buf) in &state.buffers {
        let t = Tensor::from_slice([buf.len()], buf)
            .map_err(|e| RuntimeError::io("checkpoint", &dir, e))?;
        tensors.push((format!("optimizer.{name}"), t));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let state_path = dir.join("state.safetensors");
    write_safetensors(&state_path, &refs, None)
        .map_err(|e| RuntimeError::io("write", &state_path, e))?;
    let meta = CheckpointMeta {
        round,
        cursor,
        seed,
        optimizer_step: state.step,
        state_sha256: sha256_file(&state_path)?,
        weights_sha256: job::weights_sha256(params),
        stream_offsets: stream_offsets.cloned(),
        transform: transform.cloned(),
    };
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| RuntimeError::io("serialise", &dir, e))?;
    let meta_path = dir.join("meta.json");
    write_atomic(&meta_path, &json).map_err(|e| RuntimeError::io("write", &meta_path, e))?;
    prune(root, keep);
    Ok(dir)
}

fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix("round-")
                .and_then(|r| r.parse().ok())
                .map(|r| (r, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Keep the newest `keep` (at least one) *complete* checkpoints; remove older complete ones and
/// every torn one (no parseable `meta.json`, the commit marker). Torn folders never count towards
/// `keep`: counting them could delete the newest complete checkpoint while keeping wreckage.
fn prune(root: &Path, keep: usize) {
    let mut complete = 0;
    for (_, p) in list(root).into_iter().rev() {
        let committed = std::fs::read(p.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<CheckpointMeta>(&b).ok())
            .is_some();
        if committed && complete < keep.max(1) {
            complete += 1;
            continue;
        }
        if !committed {
            tracing::warn!(checkpoint = %p.display(), "removing a torn checkpoint");
        }
        let _ = std::fs::remove_dir_all(p);
    }
}

/// Why a checkpoint directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointInvalid {
    /// No `meta.json` (the commit marker) that can be read.
    #[error("no readable meta.json ({0}): torn checkpoint")]
    NoMeta(#[source] std::io::Error),
    /// A `meta.json` that does not parse.
    #[error("meta.json does not parse: {0}")]
    Meta(#[source] serde_json::Error),
    /// A state file that cannot be read.
    #[error("read {}: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A state file whose checksum is not the recorded one.
    #[error("state.safetensors checksum {actual} does not match meta.json's {recorded}")]
    Checksum {
        /// The file's checksum.
        actual: String,
        /// `meta.json`'s.
        recorded: String,
    },
    /// Some shards' parts of the embedding tables are missing (a crash before every shard wrote).
    #[error("{0}")]
    TableParts(String),
}

/// Check one checkpoint directory.
///
/// # Errors
/// [`CheckpointInvalid`]: why it cannot be used.
pub fn verify(dir: &Path) -> Result<CheckpointMeta, CheckpointInvalid> {
    let meta_path = dir.join("meta.json");
    let bytes = std::fs::read(&meta_path).map_err(CheckpointInvalid::NoMeta)?;
    let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(CheckpointInvalid::Meta)?;
    let path = dir.join("state.safetensors");
    let state = std::fs::read(&path).map_err(|source| CheckpointInvalid::State {
        path: path.clone(),
        source,
    })?;
    let actual = hex::encode(Sha256::digest(&state));
    if actual != meta.state_sha256 {
        return Err(CheckpointInvalid::Checksum {
            actual,
            recorded: meta.state_sha256,
        });
    }
    if crate::ps::sparse::has_table_parts(dir) {
        crate::ps::sparse::table_parts(dir)
            .map_err(|e| CheckpointInvalid::TableParts(e.to_string()))?;
    }
    Ok(meta)
}

/// The newest complete checkpoint under `root`; torn or corrupt ones are skipped with a warning.
pub fn find_latest(root: &Path) -> Option<(PathBuf, CheckpointMeta)> {
    for (_, dir) in list(root).into_iter().rev() {
        match verify(&dir) {
            Ok(meta) => return Some((dir, meta)),
            Err(why) => tracing::warn!(checkpoint = %dir.display(), "skipping checkpoint: {why}"),
        }
    }
    None
}

/// Read a checkpoint for a model of `layout` and an optimizer with `buffer_names`.
///
/// # Errors
/// A message naming the file and the missing or mismatching tensor.
pub fn read(
    dir: &Path,
    model: &dyn Model,
    optimizer: &Optimizer,
) -> Result<Restored, RuntimeError> {
    let meta = verify(dir).map_err(|m| RuntimeError::io("verify", dir, m))?;
    let path = dir.join("state.safetensors");
    let set = read_safetensors(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
    let mut params = vec![0.0f32; model.params().len()];
    for p in model.layout() {
        let t = set
            .get(&p.name)
            .ok_or_else(|| RuntimeError::io("read", &path, format!("no tensor {}", p.name)))?;
        if t.shape().dims() != p.shape.as_slice() {
            return Err(MismatchError::TensorShape {
                file: path.display().to_string(),
                tensor: p.name.clone(),
                shape: t.shape().to_string(),
                model: p.shape.clone(),
            }
            .into());
        }
        params[p.range()].copy_from_slice(
            &t.to_vec::<f32>()
                .map_err(|e| RuntimeError::io("read", &path, e))?,
        );
    }
    let mut buffers = Vec::new();
    for (name, _) in optimizer.state().buffers {
        let key = format!("optimizer.{name}");
        let t = set
            .get(&key)
            .ok_or_else(|| RuntimeError::io("read", &path, format!("no tensor {key}")))?;
        buffers.push((
            name,
            t.to_vec::<f32>()
                .map_err(|e| RuntimeError::io("read", &path, e))?,
        ));
    }
    let optimizer = OptimizerState {
        step: meta.optimizer_step,
        buffers,
    };
    Ok(Restored {
        meta,
        params,
        optimizer,
    })
}
