//! Shared-memory buffers: a `memmap2` shared mapping of a file under `/dev/shm` (or any path),
//! so that another process mapping the same file sees the same bytes.
//!
//! The creator owns the file and unlinks it when the mapping is dropped; an opener only maps it.
//! Cross-process synchronisation (who may read when) is the caller's business: the transport's
//! rings publish with atomics in the mapped header.

use crate::buffer::{Buffer, BufferMut, Storage};
use crate::error::{Error, Result};
use std::fs::OpenOptions;
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
        .open(path)
        .map_err(io("create", path))?;
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
/// [`Error::Io`] when the file cannot be opened or mapped.
pub fn open_shared_mut(path: impl AsRef<Path>) -> Result<BufferMut> {
    let path = path.as_ref();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
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

/// Map an existing shared segment for reading.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or mapped.
pub fn open_shared(path: impl AsRef<Path>) -> Result<Buffer> {
    Ok(open_shared_mut(path)?.freeze())
}
