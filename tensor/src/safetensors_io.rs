//! safetensors read/write of named tensor sets (through the `safetensors` crate).
//!
//! Writing is atomic: the file is written beside its destination, fsynced, then renamed, so a
//! reader never sees half a file. Reading maps the file and hands out tensors that point into
//! the mapping: no copy, the page cache is the only storage.

use crate::buffer::Buffer;
use crate::dtype::DType;
use crate::error::{Error, Result, SafeTensorsError};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A set of named tensors plus free-form string metadata, in file order.
#[derive(Debug, Clone, Default)]
pub struct NamedTensors {
    /// The tensors, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

impl NamedTensors {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

fn to_st(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
    }
}

fn from_st(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

struct StView<'a>(&'a Tensor);

impl View for StView<'_> {
    fn dtype(&self) -> Dtype {
        to_st(self.0.dtype())
    }
    fn shape(&self) -> &[usize] {
        self.0.shape().dims()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.0.as_bytes())
    }
    fn data_len(&self) -> usize {
        self.0.nbytes()
    }
}

/// Serialise tensors to safetensors bytes in memory.
///
/// # Errors
/// [`Error::SafeTensors`] (with an empty path) when the set cannot be serialised.
pub fn to_safetensors_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    serialize(tensors, metadata).map_err(|problem| Error::SafeTensors {
        path: Default::default(),
        problem,
    })
}

fn serialize(
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> std::result::Result<Vec<u8>, SafeTensorsError> {
    let views = tensors.iter().map(|(n, t)| (n.to_string(), StView(t)));
    Ok(safetensors::serialize(views, &metadata)?)
}

/// Write tensors to `path` atomically (temporary file, fsync, rename, fsync of the directory).
///
/// # Errors
/// [`Error::SafeTensors`] or [`Error::Io`].
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = serialize(tensors, metadata).map_err(|problem| Error::SafeTensors {
        path: path.to_path_buf(),
        problem,
    })?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` atomically: a sibling temporary file, fsync, rename, directory fsync.
/// On failure the temporary file is removed and `path` is left as it was.
///
/// # Errors
/// [`Error::Io`] naming the step that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |op, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    let written = f
        .write_all(bytes)
        .map_err(|e| io("write", e))
        .and_then(|_| f.sync_all().map_err(|e| io("fsync", e)))
        .and_then(|_| {
            drop(f);
            std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
        });
    if let Err(e) = written {
        // A full disk (ENOSPC) or a failed rename must not leave the temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Read a safetensors file through a read-only mapping; the tensors point into the mapping.
///
/// # Errors
/// [`Error::Io`] when the file cannot be mapped, [`Error::SafeTensors`] when it is not valid.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<NamedTensors> {
    let path = path.as_ref();
    let buffer = Buffer::map_file(path)?;
    parse_safetensors(&buffer).map_err(|problem| Error::SafeTensors {
        path: path.to_path_buf(),
        problem,
    })
}

/// Parse safetensors bytes held in a buffer; the tensors share the buffer (no copy).
///
/// # Errors
/// The [`SafeTensorsError`] saying what is wrong with the bytes.
pub fn parse_safetensors(buffer: &Buffer) -> std::result::Result<NamedTensors, SafeTensorsError> {
    let bytes = buffer.as_bytes();
    let st = SafeTensors::deserialize(bytes)?;
    let (_, meta) = SafeTensors::read_metadata(bytes)?;
    let base = bytes.as_ptr() as usize;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let Some(dtype) = from_st(view.dtype()) else {
            return Err(SafeTensorsError::Dtype {
                name,
                dtype: view.dtype(),
            });
        };
        let offset = view.data().as_ptr() as usize - base;
        let t = match Tensor::new(dtype, view.shape().to_vec(), buffer.clone(), offset) {
            Ok(t) => t,
            Err(e) => {
                return Err(SafeTensorsError::Tensor {
                    name,
                    source: Box::new(e),
                })
            }
        };
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok(NamedTensors { tensors, metadata })
}

#[cfg(test)]
mod atomic_write_tests {
    use super::write_atomic;
    use std::path::Path;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the data was written.
        let target = tmp.path().join("meta.json");
        std::fs::create_dir_all(target.join("x")).unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    /// A full disk (a 64 KiB tmpfs, so ENOSPC comes from the kernel): the write fails, no
    /// temporary file stays behind. Needs root to mount; skipped otherwise.
    #[test]
    fn a_full_disk_leaves_no_temporary_file() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().to_path_buf();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here");
            return;
        }
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _guard = Unmount(mnt.clone());
        let err = write_atomic(&mnt.join("state.safetensors"), &vec![7u8; 1 << 20])
            .expect_err("1 MiB fitted into a 64 KiB filesystem");
        assert!(err.to_string().contains("No space"), "{err}");
        assert_eq!(leftovers(&mnt), Vec::<String>::new());
        assert!(!mnt.join("state.safetensors").exists());
    }
}
