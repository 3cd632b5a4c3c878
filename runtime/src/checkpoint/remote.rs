//! Checkpoints on object storage: `[job.checkpoint] dir = "s3://bucket/prefix"` (or `gs://`,
//! `az://`; the same credentials from the environment as datasets, see `docs/data.md`). Each
//! checkpoint is written locally first (`<run dir>/checkpoints/round-N/`, as without a URL), then
//! uploaded by the worker that wrote it: `state.safetensors` first, `meta.json` last, so an
//! object-store checkpoint without `meta.json` is incomplete and skipped, exactly like a local
//! one. Older ones beyond `keep` are deleted, `meta.json` first.
//!
//! With `--resume`, every node first fetches the newest complete checkpoint from the store into
//! its local checkpoint directory (checking the recorded SHA-256 of the state), so a rescheduled
//! pod with an empty disk continues where the job stopped.

use crate::error::RuntimeError;
use lockstep_trainer::data::dataset::store::{block_on, open_location, Store};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::path::{Path, PathBuf};

/// Whether a `[job.checkpoint] dir` is an object-store URL.
pub(crate) fn is_remote(dir: &Path) -> bool {
    dir.to_str().is_some_and(|d| d.contains("://"))
}

fn open(url: &str) -> Result<Store, RuntimeError> {
    Ok(open_location(Path::new(url), true, None, None)?)
}

fn object(store: &Store, name: &str) -> ObjectPath {
    let base = store.location.trim_end_matches('/');
    if base.is_empty() {
        ObjectPath::from(name)
    } else {
        ObjectPath::from(format!("{base}/{name}"))
    }
}

fn failed(url: &str, what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::io("checkpoint on object storage", url, format!("{what}: {e}"))
}

/// The checkpoint rounds under the store's prefix (`round-N/`), newest first.
fn rounds(store: &Store, url: &str) -> Result<Vec<String>, RuntimeError> {
    let prefix = object(store, "");
    let inner = store.inner.clone();
    let listed = block_on("checkpoint listing", async move {
        inner.list_with_delimiter(Some(&prefix)).await.map_err(|e| {
            lockstep_trainer::data::DataError::Io {
                file: prefix.to_string(),
                message: e.to_string(),
            }
        })
    })
    .map_err(|e| failed(url, "listing", e))?;
    let mut names: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|n| n.starts_with("round-"))
        .collect();
    names.sort();
    names.reverse();
    Ok(names)
}

/// Upload the local checkpoint `dir` (`.../round-N`) to `url`, commit marker last, and delete
/// the store's checkpoints beyond the newest `keep`.
///
/// # Errors
/// [`RuntimeError::Io`] naming the URL and the object.
pub fn upload(url: &str, dir: &Path, keep: usize) -> Result<(), RuntimeError> {
    let store = open(url)?;
    let round = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| failed(url, "checkpoint directory", dir.display()))?
        .to_string();
    for file in ["state.safetensors", "meta.json"] {
        let local = dir.join(file);
        let bytes = std::fs::read(&local).map_err(|e| RuntimeError::io("read", &local, e))?;
        let at = object(&store, &format!("{round}/{file}"));
        let inner = store.inner.clone();
        let shown = store.name(&at);
        block_on(&shown.clone(), async move {
            inner
                .put(&at, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| lockstep_trainer::data::DataError::Io {
                    file: shown,
                    message: e.to_string(),
                })
        })
        .map_err(|e| failed(url, "upload", e))?;
    }
    for old in rounds(&store, url)?.into_iter().skip(keep.max(1)) {
        for file in ["meta.json", "state.safetensors"] {
            let at = object(&store, &format!("{old}/{file}"));
            let inner = store.inner.clone();
            // Best effort: a leftover without meta.json is skipped as incomplete.
            let _ = block_on("checkpoint pruning", async move {
                inner
                    .delete(&at)
                    .await
                    .map_err(|e| lockstep_trainer::data::DataError::Io {
                        file: at.to_string(),
                        message: e.to_string(),
                    })
            });
        }
    }
    Ok(())
}

/// Fetch the newest complete checkpoint under `url` into `local_root` (`round-N/` there, files
/// written atomically, `meta.json` last) and check it; incomplete or corrupt ones are skipped
/// with a warning. `None` when the store holds none.
///
/// # Errors
/// [`RuntimeError::Io`] naming the URL when the store cannot be listed or read.
pub(crate) fn fetch_latest(url: &str, local_root: &Path) -> Result<Option<PathBuf>, RuntimeError> {
    let store = open(url)?;
    for round in rounds(&store, url)? {
        let dir = local_root.join(&round);
        let mut got = Vec::new();
        for file in ["meta.json", "state.safetensors"] {
            let at = object(&store, &format!("{round}/{file}"));
            let inner = store.inner.clone();
            let shown = store.name(&at);
            let bytes = block_on(&shown.clone(), async move {
                let r = inner.get(&at).await;
                match r {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
                .map_err(|e| lockstep_trainer::data::DataError::Io {
                    file: shown,
                    message: e.to_string(),
                })
            })
            .map_err(|e| failed(url, "download", e))?;
            got.push(bytes);
        }
        let (Some(meta), Some(state)) = (got[0].take(), got[1].take()) else {
            tracing::warn!("checkpoint {url}/{round} is incomplete (no meta.json); skipped");
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
        let state_path = dir.join("state.safetensors");
        lockstep_tensor::safetensors_io::write_atomic(&state_path, &state)
            .map_err(|e| RuntimeError::io("write", &state_path, e))?;
        let meta_path = dir.join("meta.json");
        lockstep_tensor::safetensors_io::write_atomic(&meta_path, &meta)
            .map_err(|e| RuntimeError::io("write", &meta_path, e))?;
        match super::verify(&dir) {
            Ok(_) => {
                tracing::info!("fetched checkpoint {url}/{round} into {}", dir.display());
                return Ok(Some(dir));
            }
            Err(why) => {
                tracing::warn!("checkpoint {url}/{round} cannot be used ({why}); skipped");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Ok(None)
}
