//! Shared-memory backend (Gloo shape: `mod.rs` = setup of the segments, `link.rs` = one peer,
//! `ring.rs` = the SPSC ring in shared memory).
//!
//! Per directed pair one ring in `/dev/shm/lockstep-<cluster>-<from>-<to>`, created by its
//! producer. Setup runs over the pair's authenticated TCP connection: each side creates its
//! outgoing ring (after removing a stale one: a segment whose creator pid is dead), sends the
//! ring's random generation, maps the peer's ring and checks magic, generation and size, and once
//! both sides have mapped, each unlinks the file it created. So nothing is left in `/dev/shm`
//! after setup even if a process later dies, and a crash during setup leaves a segment that the
//! next run recognises by its dead owner pid and removes. The TCP socket stays open: heartbeats
//! travel on it and its EOF tells a survivor at once that the peer process died.

pub mod link;
pub mod ring;

pub use link::ShmLink;

use crate::error::{ConfigError, Result};
use std::path::{Path, PathBuf};

/// Segment path of the ring carrying `from` -> `to` in `cluster`.
pub fn segment_path(cluster: &str, from: &str, to: &str) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    lockstep_tensor::shm::shm_path(&format!(
        "lockstep-{}-{}-{}",
        clean(cluster),
        clean(from),
        clean(to)
    ))
}

/// Whether process `pid` exists (a zombie counts as gone only once reaped).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission; sends nothing.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Remove a segment left at `path` by a run that is gone. A segment whose creator is alive (and
/// is not this process) belongs to a live run: refuse rather than clobber it.
///
/// # Errors
/// [`crate::Error::Config`] when a live process owns the segment or it cannot be removed.
pub fn remove_stale(path: &Path) -> Result<()> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let mut bytes = Vec::with_capacity(ring::RING_HEADER);
    let _ = f.take(ring::RING_HEADER as u64).read_to_end(&mut bytes);
    match ring::read_info(&bytes) {
        Some(info) if info.owner_pid != std::process::id() && pid_alive(info.owner_pid) => {
            return Err(ConfigError::SegmentInUse {
                path: path.to_path_buf(),
                pid: info.owner_pid,
            }
            .into());
        }
        Some(info) => {
            tracing::warn!(path = %path.display(), owner_pid = info.owner_pid, "removing stale segment of a dead run")
        }
        None => tracing::warn!(path = %path.display(), "removing unrecognised segment"),
    }
    std::fs::remove_file(path).map_err(|e| {
        ConfigError::StaleSegment {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
        .into()
    })
}
