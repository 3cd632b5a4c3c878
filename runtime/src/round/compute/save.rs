//! Writing the model: the final save (and, at the end of a stream or a graceful stop, the
//! checkpoint that goes with it), and the atomic republishing of `model.safetensors`.

use super::Compute;
use crate::error::RuntimeError;
use crate::job;
use crate::job::stored_transform::{StoredTransform, METADATA_KEY};
use crate::round::messages::SaveModel;
use actix::{Handler, SyncContext};
use lockstep_tensor::{write_safetensors, Tensor};
use lockstep_trainer::model::Model;
use std::collections::HashMap;
use std::path::Path;

impl Compute {
    /// Write the checkpoint `plan` asks for after `round` (model, optimizer state, data cursor,
    /// stream offsets and the data transform); its directory.
    pub(super) fn write_checkpoint(
        &self,
        plan: &crate::control::protocol::CheckpointPlan,
        round: u64,
    ) -> Result<std::path::PathBuf, RuntimeError> {
        #[cfg(feature = "fault-injection")]
        self.reporter.activity().slow_checkpoint_point(round);
        let dir = crate::checkpoint::write_with_offsets(
            Path::new(&plan.root),
            round + 1,
            plan.cursor,
            plan.seed,
            self.model.as_ref(),
            &self.optimizer,
            plan.keep,
            plan.stream_offsets.as_ref(),
            self.transform.as_deref(),
        )?;
        if let Some(url) = &plan.remote {
            crate::checkpoint::remote::upload(url, &dir, plan.keep)?;
        }
        Ok(dir)
    }
}

impl Handler<SaveModel> for Compute {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: SaveModel, _: &mut SyncContext<Self>) -> Self::Result {
        #[cfg(feature = "fault-injection")]
        self.reporter.activity().stall_save_point(msg.round);
        let mut written = None;
        if let Some(c) = &msg.checkpoint {
            written = Some(self.write_checkpoint(c, msg.round)?);
        }
        // An empty path: only the checkpoint (arrival-order streams), whose directory answers.
        if msg.path.is_empty() {
            return Ok(written.map(|d| d.display().to_string()).unwrap_or_default());
        }
        publish_model(
            self.model.as_ref(),
            &msg.path,
            msg.round,
            self.transform.as_deref(),
        )?;
        self.saved_model = Some(msg.path.clone().into());
        Ok(msg.path)
    }
}

/// Republish the model at `path` atomically (written next to it, then renamed), so a serving
/// process that reloads the file never sees half of it.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub(crate) fn publish_model(
    model: &dyn Model,
    path: &str,
    round: u64,
    transform: Option<&StoredTransform>,
) -> Result<(), RuntimeError> {
    let tmp = format!("{path}.tmp");
    save_model(model, &tmp, round, transform)?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", path, e))
}

/// Write a model's parameters as safetensors, one tensor per layout entry, with the data
/// `transform` (if given) in the metadata under [`METADATA_KEY`].
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub(crate) fn save_model(
    model: &dyn Model,
    path: &str,
    round: u64,
    transform: Option<&StoredTransform>,
) -> Result<(), RuntimeError> {
    let params = model.params();
    let mut tensors = Vec::new();
    for p in model.layout() {
        let t = Tensor::from_slice(p.shape.clone(), &params[p.range()])
            .map_err(|e| RuntimeError::io("save", path, e))?;
        tensors.push((p.name.clone(), t));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut meta = HashMap::from([
        ("round".to_string(), round.to_string()),
        ("model".to_string(), model.name().to_string()),
        ("weights_sha256".to_string(), job::weights_sha256(params)),
    ]);
    if let Some(t) = transform {
        meta.insert(METADATA_KEY.to_string(), t.to_json(Path::new(path))?);
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    }
    write_safetensors(path, &refs, Some(meta)).map_err(|e| RuntimeError::io("write", path, e))
}
