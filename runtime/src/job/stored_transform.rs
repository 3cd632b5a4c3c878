//! The fitted data transform (imputation fills, scaling, one-hot vocabularies, label plan) stored
//! with a run, so that `--resume` and `lockstep predict` apply exactly the transform training
//! used and never refit it:
//!
//! - every checkpoint's `meta.json` holds it (`transform`), written by rank 0 with the parameters;
//! - `model.safetensors` holds it in its `__metadata__` under [`METADATA_KEY`] (JSON), so a model
//!   file carries its transform wherever it is copied (`model.transform.json` beside it is a
//!   readable copy written when the run starts).
//!
//! On `--resume` every node takes the transform of the newest complete checkpoint before it
//! loads the data ([`load_split_for`]) and transforms the data with it: no refit, and no
//! preprocessing sample is read. When the data set changed since the run started (its row count
//! differs: files added or removed), a warning says so; the transform stays the stored one, the
//! held-out split of the rows that were there is unchanged (a function of the seed and the row),
//! and the epoch order is drawn over the rows there are now, so the remaining rounds are not
//! those of an uninterrupted run on the old rows.
//!
//! `serde_json` is built with `float_roundtrip`, so every `f64` of the plans parses back to the
//! bits it was written from: the stored transform is bit-identical to the fitted one.

use crate::error::{MismatchError, RuntimeError};
use crate::job;
use crate::node::NodeContext;
use lockstep_trainer::data::{Fitted, Split};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Key of the transform in the `__metadata__` of `model.safetensors`.
pub(crate) const METADATA_KEY: &str = "lockstep.transform";

/// The fitted transform and what it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTransform {
    /// Feature plans and label plan.
    pub fitted: Fitted,
    /// Logical rows of the data set when the transform was fitted (training and held out).
    pub data_rows: u64,
    /// Rows it was fitted on (the training rows, or a streamed dataset's sample of them).
    pub fitted_rows: u64,
}

impl StoredTransform {
    /// The transform `split` was loaded with, as fitted by that load.
    pub fn of(split: &Split) -> Self {
        StoredTransform {
            fitted: split.fitted.clone(),
            data_rows: split.data_rows(),
            fitted_rows: split.fitted_rows(),
        }
    }

    /// JSON for the model's metadata.
    ///
    /// # Errors
    /// [`RuntimeError::Io`] (serialisation), naming `path`.
    pub(crate) fn to_json(&self, path: &Path) -> Result<String, RuntimeError> {
        serde_json::to_string(self).map_err(|e| RuntimeError::io("serialise", path, e))
    }

    /// The transform in the metadata of the safetensors file `model`, if it has one.
    ///
    /// # Errors
    /// [`RuntimeError::Io`] when the file cannot be read or the stored transform does not parse.
    pub fn from_model(model: &Path) -> Result<Option<Self>, RuntimeError> {
        let set = lockstep_tensor::read_safetensors(model)
            .map_err(|e| RuntimeError::io("read", model, e))?;
        match set.metadata.get(METADATA_KEY) {
            None => Ok(None),
            Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
                RuntimeError::io("parse", model, format!("metadata {METADATA_KEY}: {e}"))
            }),
        }
    }
}

/// The transform stored in the newest complete checkpoint of this node's run directory, when
/// the node was started with `--resume` and that checkpoint has one.
pub(crate) fn for_resume(ctx: &NodeContext) -> Option<(PathBuf, StoredTransform)> {
    if !ctx.opts.resume {
        return None;
    }
    let root = ctx.manifest.job.checkpoint.local_root(&ctx.opts.run_dir);
    let (dir, meta) = crate::checkpoint::find_latest(&root)?;
    match meta.transform {
        Some(t) => Some((dir, t)),
        None => {
            tracing::warn!(
                "checkpoint {} stores no data transform (written by an older version): refitting it",
                dir.display()
            );
            None
        }
    }
}

/// The node's data split and the transform to store with the run: on `--resume` the
/// checkpoint's stored transform (the data is transformed with it, nothing refitted; a warning
/// when the data set's row count changed), otherwise the one fitted now.
///
/// # Errors
/// As [`job::load_split`]; a stored transform whose columns the data lacks names the column.
pub(crate) fn load_split_for(
    ctx: &NodeContext,
) -> Result<(Arc<Split>, Arc<StoredTransform>), RuntimeError> {
    let m = &ctx.manifest;
    let Some((dir, stored)) = for_resume(ctx) else {
        let split = job::load_split(m)?;
        let t = StoredTransform::of(&split);
        return Ok((split, Arc::new(t)));
    };
    let split = job::load_split_with(m, Some(&stored.fitted))?;
    let path = m.job.data.resolved(&m.base_dir).path.display().to_string();
    tracing::info!(
        node = %ctx.name,
        "data transform taken from checkpoint {} (fitted on {} of {} rows when the run started), not refitted",
        dir.display(),
        stored.fitted_rows,
        stored.data_rows
    );
    let now = split.data_rows();
    if now != stored.data_rows {
        tracing::warn!(
            node = %ctx.name,
            "data set {path} has {now} rows now, {} when the run started: resuming with the \
             stored transform unchanged (not refitted); the held-out split of the old rows is \
             unchanged, the epoch order is drawn over the {now} rows there are now",
            stored.data_rows
        );
    }
    Ok((split, Arc::new(stored)))
}

/// Checks that `stored` (a checkpoint's) is the transform this node loaded its data with.
///
/// # Errors
/// [`MismatchError::Transform`] naming the checkpoint and the node.
pub(crate) fn check_same(
    stored: Option<&StoredTransform>,
    loaded: &Fitted,
    checkpoint: &str,
    node: &str,
) -> Result<(), RuntimeError> {
    match stored {
        Some(t) if &t.fitted != loaded => Err(MismatchError::Transform {
            checkpoint: checkpoint.to_string(),
            node: node.to_string(),
        }
        .into()),
        _ => Ok(()),
    }
}
