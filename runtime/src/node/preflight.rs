//! Checks a node runs before it joins the cluster, so that a problem it would otherwise meet
//! only hours into a run (a read-only run directory at the first checkpoint) stops it at once
//! with a message naming the directory.

use crate::error::{RuntimeError, SetupError};
use crate::node::NodeContext;
use std::io::Write;
use std::path::Path;

/// The directories this node will write: the run directory on the coordinator (model, report)
/// and the checkpoint directory on the first worker (which writes the checkpoints).
///
/// # Errors
/// [`SetupError::NotWritable`] naming the directory and the system's reason.
pub(crate) fn check_run_dir(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    if ctx.coordinator_name() == ctx.name {
        check_writable(&ctx.opts.run_dir)?;
    }
    if m.worker_names().first() == Some(&ctx.name) {
        check_writable(&m.job.checkpoint.local_root(&ctx.opts.run_dir))?;
    }
    Ok(())
}

/// Create `dir` if needed and prove a file can be written in it (a probe file, removed again).
///
/// # Errors
/// [`SetupError::NotWritable`] naming `dir`.
pub(crate) fn check_writable(dir: &Path) -> Result<(), RuntimeError> {
    let fail = |source: std::io::Error| SetupError::NotWritable {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".lockstep-write-probe-{}", std::process::id()));
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"x").and_then(|_| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    Ok(res.map_err(fail)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_created_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        // Under a regular file nothing can be created, even by root.
        let dir = file.join("run");
        let err = check_writable(&dir).unwrap_err().to_string();
        assert!(
            err.contains("not writable") && err.contains("a-file/run"),
            "{err}"
        );
        check_writable(&tmp.path().join("ok/checkpoints")).unwrap();
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("ok/checkpoints"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "the probe file was left behind");
    }
}
