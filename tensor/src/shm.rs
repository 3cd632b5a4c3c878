//! Shared-memory buffers: a `memmap2` shared mapping of a file under `/dev/shm` (or any path),
//! so that another process mapping the same file sees the same bytes.
//!
//! The creator owns the file and unlinks it when the mapping is dropped; an opener only maps it.
//!
//! Other users of the host must not read or write a segment: it is created with `O_EXCL` and mode
//! `0600` (whatever the umask), never through a symbolic link, and an opener checks that the file
//! is a regular file owned by this user with no permission bits for group or others before it
//! maps it, so a segment planted by someone else is refused rather than trusted.
//! Cross-process synchronisation (who may read when) is the caller's business: the transport's
//! rings publish with atomics in the mapped header.

use crate::buffer::{Buffer, BufferMut, Storage};
use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directory for shared-memory segments on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// A live shared mapping.
pub(crate) struct ShmMapping {
    map: memmap2::MmapMut,
    path: PathBuf,
    unlink_on_drop: bool,
}

impl ShmMapping {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.map
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The default path for a named segment: `/dev/shm/<name>`.
pub fn shm_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(name)
}

/// Create (or replace) a shared segment of `len` zeroed bytes at `path` and map it writable.
/// The file is removed when the returned buffer and every handle frozen from it are dropped.
/// It is created exclusively (`O_EXCL`, no symbolic link followed) with mode `0600`: a file
/// another user left at `path` (which the sticky `/dev/shm` does not let us remove) is an error.
///
/// # Errors
/// [`Error::Io`] when the file cannot be created, sized or mapped.
pub fn create_shared(path: impl AsRef<Path>, len: usize) -> Result<BufferMut> {
    let path = path.as_ref();
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("create", path))?;
    // The mode above is filtered by the umask; make it exactly 0600 (the umask could only have
    // removed bits, but be explicit about what the segment allows).
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", path))?;
    file.set_len(len as u64).map_err(io("size", path))?;
    // SAFETY: a shared mapping of a file we just created; other processes may write to it, which
    // is the purpose; readers synchronise through atomics in the mapped data.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io("map", path))?;
    // Commit every page now: memory use is then fixed from the start instead of creeping up as a
    // ring's head first walks through the segment (which looks like a leak in a soak test).
    for page in map.chunks_mut(4096) {
        page[0] = 0;
    }
    let storage = Storage::Shm(ShmMapping {
        map,
        path: path.to_path_buf(),
        unlink_on_drop: true,
    });
    Ok(BufferMut::from_storage(storage, len))
}

/// Map an existing shared segment writable (for the peer that fills it). The file is not removed
/// on drop.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or mapped, or (`PermissionDenied`) when it is not
/// a regular file owned by this user with mode `0600` or stricter.
pub fn open_shared_mut(path: impl AsRef<Path>) -> Result<BufferMut> {
    let path = path.as_ref();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("open", path))?;
    check_private(&file, path)?;
    // SAFETY: see `create_shared`. `populate` maps every (already committed) page up front.
    let map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&file) }
        .map_err(io("map", path))?;
    let len = map.len();
    let storage = Storage::Shm(ShmMapping {
        map,
        path: path.to_path_buf(),
        unlink_on_drop: false,
    });
    Ok(BufferMut::from_storage(storage, len))
}

/// Refuse a segment that another user owns or could read or write: it could have been planted
/// to feed this process hostile bytes, or be read by someone it was not meant for.
fn check_private(file: &std::fs::File, path: &Path) -> Result<()> {
    let meta = file.metadata().map_err(io("fstat", path))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if !meta.file_type().is_file() {
        Some("not a regular file".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "mode {:o} lets other users in (expected 0600)",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::Io {
            op: "check owner and mode of",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        }),
    }
}

/// Map an existing shared segment for reading.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or mapped.
pub fn open_shared(path: impl AsRef<Path>) -> Result<Buffer> {
    Ok(open_shared_mut(path)?.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        shm_path(&format!("lockstep-test-{tag}-{}", std::process::id()))
    }

    #[test]
    fn segments_are_created_private_and_exclusive() {
        let path = scratch("mode");
        let seg = create_shared(&path, 8192).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "segment mode");
        // The owner may map it.
        drop(open_shared_mut(&path).unwrap());
        drop(seg);
        assert!(!path.exists(), "the creator removes its segment");
    }

    #[test]
    fn a_segment_others_could_read_is_refused() {
        let path = scratch("open");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(err) = open_shared_mut(&path) else {
            panic!("a 0644 segment was mapped")
        };
        assert!(err.to_string().contains("mode 644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        drop(open_shared_mut(&path).unwrap());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root, hand the file to `nobody`: a segment of another user is refused too.
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; chown only changes the file's owner.
            assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
            let Err(err) = open_shared_mut(&path) else {
                panic!("a foreign segment was mapped")
            };
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        } else {
            eprintln!("skipped the foreign-owner case: it needs root to chown");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let target = scratch("target");
        let link = scratch("link");
        std::fs::write(&target, [0u8; 4096]).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_shared_mut(&link).is_err(), "mapped through a symlink");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&target).unwrap();
    }
}
