//! The Python environment of the tests that need Python (the producer client, moto's S3 server,
//! the safetensors check): a virtual environment under the target directory
//! (`target/python-venv`), created with `python3 -m venv` and filled from the pinned
//! `tests/requirements.txt` the first time a test asks for it, under a file lock so parallel
//! tests and test binaries create it once; later runs reuse it (a stamp holds the requirements it
//! was made from, so an edited file rebuilds it).
//!
//! Where it cannot be made (no `python3`, no package index reachable) the test fails with one
//! line saying what to run; it never passes silently. `LOCKSTEP_TEST_PYTHON` names an interpreter
//! to use instead (one that already has the packages).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The pinned requirements (this file's sibling `../requirements.txt`).
const REQUIREMENTS: &str = include_str!("../requirements.txt");

/// The interpreter of the tests' environment, made on first use.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("LOCKSTEP_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory")
            .to_path_buf();
        provision(&target.join("python-venv")).unwrap_or_else(|why| {
            panic!(
                "this test needs Python packages and could not make its environment: {why}; run: python3 -m venv {v} && {v}/bin/pip install -r tests/requirements.txt (or set LOCKSTEP_TEST_PYTHON to a python3 that has them)",
                v = target.join("python-venv").display()
            )
        })
    })
    .clone()
}

/// A `Command` for the tests' interpreter.
pub fn python_cmd() -> Command {
    Command::new(python())
}

/// Make `venv` unless a complete one from the same requirements is there; returns its python.
fn provision(venv: &Path) -> Result<PathBuf, String> {
    let py = venv.join("bin/python");
    let stamp = venv.join("lockstep-requirements.txt");
    let ready = || std::fs::read_to_string(&stamp).ok().as_deref() == Some(REQUIREMENTS);
    if ready() {
        return Ok(py);
    }
    let parent = venv.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let _lock = Lock::take(&venv.with_extension("lock"))?;
    if ready() {
        return Ok(py); // another test made it while this one waited
    }
    eprintln!(
        "making the tests' Python environment {} from tests/requirements.txt (once per checkout)",
        venv.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(|e| format!("{}: {e}", venv.display()))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    let req = venv.join("requirements.txt");
    std::fs::write(&req, REQUIREMENTS).map_err(|e| format!("{}: {e}", req.display()))?;
    run(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--timeout", "30", "--retries", "2", "-r"])
        .arg(&req))?;
    std::fs::write(&stamp, REQUIREMENTS).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(py)
}

/// Run a command to the end; `Err` names it with its stderr's last line.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("{shown} failed ({}): {last}", out.status))
}

/// An exclusive `flock` on a file, released on drop (and by the kernel if the test dies).
struct Lock(std::fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock, String> {
        use std::os::unix::io::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Bounded: another test making the environment holds it for a minute or two.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("locking {}: {e}", path.display()));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "another test has held {} for 15 minutes while making the environment",
                    path.display()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: unlocking the descriptor this guard owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A directory for `PYTHONPATH` holding the `lockstep` package (`python/lockstep`) with its
/// native module built from this checkout (`cargo build -p lockstep-python --features
/// extension-module`, incremental), as `pip install ./python` would install it.
pub fn lockstep_package() -> PathBuf {
    static PKG: OnceLock<PathBuf> = OnceLock::new();
    PKG.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let dir = target.join("python-lockstep");
        std::fs::create_dir_all(&dir).expect("python-lockstep");
        let _lock = Lock::take(&target.join("python-lockstep.lock")).expect("lock");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "lockstep-python",
                "--features",
                "extension-module",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("building the Python extension: {e}"));
        let pkg = dir.join("lockstep");
        std::fs::create_dir_all(&pkg).expect("package dir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/lockstep");
        for f in std::fs::read_dir(&src).expect("python/lockstep").flatten() {
            if f.path().extension().is_some_and(|e| e == "py") {
                std::fs::copy(f.path(), pkg.join(f.file_name())).expect("copy");
            }
        }
        let so = target.join("debug/liblockstep_python.so");
        // Write a new file and rename it: a process still running an older copy keeps its own.
        let tmp = pkg.join("_native.so.tmp");
        std::fs::copy(&so, &tmp).unwrap_or_else(|e| panic!("{}: {e}", so.display()));
        std::fs::rename(&tmp, pkg.join("_native.so")).expect("rename");
        dir
    })
    .clone()
}

/// A python3 with PyTorch (`LOCKSTEP_TORCH_PYTHON`, else Debian's `/usr/bin/python3` with
/// `python3-torch`), or why there is none.
pub fn torch_python() -> Result<PathBuf, String> {
    let py = std::env::var_os("LOCKSTEP_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    let ok = Command::new(&py)
        .args(["-c", "import torch, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import torch: install PyTorch (Debian: apt install python3-torch) or set LOCKSTEP_TORCH_PYTHON",
            py.display()
        ))
    }
}

/// The pinned packages of [`pandas_python`]'s environment.
const PANDAS_REQUIREMENTS: &str =
    "numpy==2.4.6\npandas==3.1.1\npython-dateutil==4.0.0\ntzdata==2026.6\n";

/// A python3 with pandas, for data preparation that reads a pickled pandas DataFrame (the
/// MovieLens ratings of `examples/pytorch/prepare_data.py movielens`): `LOCKSTEP_PANDAS_PYTHON`,
/// else `target/python-pandas-venv`, made from [`PANDAS_REQUIREMENTS`] the first time a test asks
/// for it, under a file lock as [`python`] makes its own (a stamp holds the requirements).
pub fn pandas_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("LOCKSTEP_PANDAS_PYTHON") {
            return PathBuf::from(p);
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let venv = target.join("python-pandas-venv");
        let py = venv.join("bin/python");
        let stamp = venv.join("lockstep-requirements.txt");
        let ready = || {
            std::fs::read_to_string(&stamp).ok().as_deref() == Some(PANDAS_REQUIREMENTS)
        };
        let make = || -> Result<(), String> {
            if ready() {
                return Ok(());
            }
            let _lock = Lock::take(&venv.with_extension("lock"))?;
            if ready() {
                return Ok(()); // another test made it while this one waited
            }
            eprintln!("making {} with pandas (once per checkout)", venv.display());
            if venv.exists() {
                std::fs::remove_dir_all(&venv).map_err(|e| format!("{}: {e}", venv.display()))?;
            }
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
            let req = venv.join("requirements.txt");
            std::fs::write(&req, PANDAS_REQUIREMENTS)
                .map_err(|e| format!("{}: {e}", req.display()))?;
            run(Command::new(&py)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(["--timeout", "30", "--retries", "2", "-r"])
                .arg(&req))?;
            std::fs::write(&stamp, PANDAS_REQUIREMENTS)
                .map_err(|e| format!("{}: {e}", stamp.display()))
        };
        make().unwrap_or_else(|why| {
            panic!(
                "this test needs pandas and could not make its environment: {why}; run: python3 -m venv {v} && {v}/bin/pip install pandas (or set LOCKSTEP_PANDAS_PYTHON to a python3 that has it)",
                v = venv.display()
            )
        });
        py
    })
    .clone()
}
