//! `<run dir>/endpoints.json`: every address a script may need to reach a running job (the
//! coordinator's control port, the metrics endpoint, ingest endpoints), as one JSON object of
//! `name -> "host:port"`.
//!
//! Several writers share the file (the coordinator, the metrics server, data sources), possibly
//! from different processes, so every write goes through [`merge`]: it takes an exclusive lock
//! on `endpoints.json.lock`, reads the object, sets one key, and replaces the file atomically
//! (write to a temporary file, then rename). A reader therefore never sees a half-written file,
//! and no writer loses another's key.
//!
//! # Examples
//! ```no_run
//! # fn main() -> Result<(), lockstep_runtime::RuntimeError> {
//! let dir = std::path::Path::new("runs/demo");
//! lockstep_runtime::observe::endpoints::merge(dir, "metrics", "127.0.0.1:9464")?;
//! let all = lockstep_runtime::observe::endpoints::read(dir)?;
//! assert_eq!(all["metrics"], "127.0.0.1:9464");
//! # Ok(()) }
//! ```

use crate::error::RuntimeError;
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file name inside a run directory.
pub(crate) const FILE_NAME: &str = "endpoints.json";

/// The path of `endpoints.json` in `run_dir`.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE_NAME)
}

/// An exclusive `flock` held until dropped (the descriptor closes, the lock goes with it).
struct Locked {
    _file: File,
}

fn lock(run_dir: &Path) -> Result<Locked, RuntimeError> {
    let lock_path = run_dir.join(format!("{FILE_NAME}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| RuntimeError::io("open", &lock_path, e))?;
    // SAFETY: flock(2) on a descriptor we own; it blocks until the lock is ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(RuntimeError::io("lock", &lock_path, e));
    }
    Ok(Locked { _file: file })
}

/// Set `key` to `value` in `<run_dir>/endpoints.json`, keeping every other key; creates the
/// directory and the file when missing.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file (unwritable directory, or an existing file that is not
/// a JSON object).
pub fn merge(run_dir: &Path, key: &str, value: &str) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(run_dir).map_err(|e| RuntimeError::io("create", run_dir, e))?;
    let _guard = lock(run_dir)?;
    let file = path(run_dir);
    let mut map = match std::fs::read(&file) {
        Ok(bytes) if !bytes.is_empty() => parse(&file, &bytes)?,
        _ => Map::new(),
    };
    map.insert(key.to_string(), Value::String(value.to_string()));
    let json = serde_json::to_vec_pretty(&Value::Object(map))
        .map_err(|e| RuntimeError::io("serialise", &file, e))?;
    lockstep_tensor::safetensors_io::write_atomic(&file, &json)
        .map_err(|e| RuntimeError::io("write", &file, e))
}

/// The keys of `endpoints.json` and their addresses.
pub(crate) type Endpoints = std::collections::BTreeMap<String, String>;

/// Every key of `<run_dir>/endpoints.json`.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file when it is missing or not a JSON object of strings.
pub fn read(run_dir: &Path) -> Result<Endpoints, RuntimeError> {
    let file = path(run_dir);
    let bytes = std::fs::read(&file).map_err(|e| RuntimeError::io("read", &file, e))?;
    parse(&file, &bytes)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(RuntimeError::io(
                "parse",
                &file,
                format!("key {k} is {other}, not a string"),
            )),
        })
        .collect()
}

fn parse(file: &Path, bytes: &[u8]) -> Result<Map<String, Value>, RuntimeError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RuntimeError::io("parse", file, "not a JSON object")),
        Err(e) => Err(RuntimeError::io("parse", file, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_keys_from_many_writers() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || merge(&d, &format!("k{i}"), &format!("h:{i}")))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let all = read(dir.path()).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(all["k3"], "h:3");
        merge(dir.path(), "k3", "other:1").unwrap();
        assert_eq!(read(dir.path()).unwrap()["k3"], "other:1");
    }
}
