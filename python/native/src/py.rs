//! The pyo3 layer: `lockstep._native.init(...)` returns a `Group` whose collectives take any
//! writable, C-contiguous buffer (the buffer protocol: NumPy arrays, `tensor.numpy()` views) and
//! run with the GIL released. Type and layout problems are `TypeError` / `ValueError`; a failed
//! collective is `lockstep.PeerError` naming the peer, the operation and its sequence number.

use crate::group::{GroupError, GroupOptions, ProcessGroup};
use crate::stream::StreamError;
use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

pyo3::create_exception!(
    _native,
    PeerError,
    PyRuntimeError,
    "A collective failed: a peer died, froze past the peer timeout, or called another operation."
);

pub(crate) fn to_py(e: GroupError) -> PyErr {
    match e {
        GroupError::Config(m) => PyValueError::new_err(m),
        other => PeerError::new_err(other.to_string()),
    }
}

/// A writable, C-contiguous buffer of `T`, or a clear `TypeError` / `ValueError`.
pub(crate) fn writable<T: Element>(
    obj: &Bound<'_, PyAny>,
    op: &str,
    what: &str,
) -> PyResult<PyBuffer<T>> {
    let b = PyBuffer::<T>::get(obj).map_err(|e| {
        PyTypeError::new_err(format!(
            "{op}: expected a buffer of {what} (a NumPy array or a CPU tensor's .numpy() view), got {}: {e}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))
    })?;
    if b.readonly() {
        return Err(PyValueError::new_err(format!(
            "{op}: the buffer is read-only; the collective writes its result into it"
        )));
    }
    if !b.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{op}: the buffer is not contiguous; pass a contiguous array (np.ascontiguousarray, tensor.contiguous()) so that it can be used in place"
        )));
    }
    Ok(b)
}

/// A joined process group.
#[pyclass(module = "lockstep._native", frozen)]
pub(crate) struct Group {
    inner: Mutex<Option<ProcessGroup>>,
    rank: usize,
    size: usize,
    local_rank: usize,
}

impl Group {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut ProcessGroup) -> Result<R, GroupError> + Send,
    ) -> PyResult<R> {
        self.locked(py, f, to_py)
    }

    /// As [`Group::with`], for the stream's operations (their errors name the stream).
    pub(crate) fn with_stream<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut ProcessGroup) -> Result<R, StreamError> + Send,
    ) -> PyResult<R> {
        self.locked(py, f, crate::py_stream::stream_err)
    }

    /// Run `f` on the group with the GIL released; its error becomes a Python one by `map`.
    fn locked<R: Send, E: From<GroupError> + Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut ProcessGroup) -> Result<R, E> + Send,
        map: fn(E) -> PyErr,
    ) -> PyResult<R> {
        py.allow_threads(|| {
            let mut g = self
                .inner
                .lock()
                .map_err(|_| GroupError::Config("the group broke in an earlier call".into()))?;
            match g.as_mut() {
                Some(g) => f(g),
                None => Err(GroupError::Config("the group was closed".into()).into()),
            }
        })
        .map_err(map)
    }
}

#[pymethods]
impl Group {
    /// This process's rank.
    #[getter]
    fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Rank on this host.
    #[getter]
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Allreduce a float32 buffer in place (sum, or mean); `exact` sums in the fixed tree.
    #[pyo3(signature = (buf, mean = false, exact = false))]
    fn allreduce_f32(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        mean: bool,
        exact: bool,
    ) -> PyResult<()> {
        let b = writable::<f32>(buf, "allreduce_", "float32")?;
        let (ptr, len) = (b.buf_ptr() as usize, b.item_count());
        // SAFETY: the exported buffer `b` stays alive (and its memory valid, writable and
        // contiguous, checked above) until after the call; the GIL is released, so Python code
        // that mutates the same array concurrently races like any in-place NumPy operation.
        self.with(py, move |g| {
            let s = unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, len) };
            g.allreduce(s, mean, exact)
        })
    }

    /// Copy rank `root`'s bytes into every rank's buffer (a uint8 view of any array).
    fn broadcast_u8(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: usize) -> PyResult<()> {
        let b = writable::<u8>(buf, "broadcast_", "uint8")?;
        let (ptr, len) = (b.buf_ptr() as usize, b.item_count());
        // SAFETY: as in allreduce_f32.
        self.with(py, move |g| {
            let s = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
            g.broadcast(s, root)
        })
    }

    /// Every rank's bytes of `mine`, in rank order, into `out` (uint8 views).
    fn allgather_u8(
        &self,
        py: Python<'_>,
        mine: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let m = PyBuffer::<u8>::get(mine)
            .map_err(|e| PyTypeError::new_err(format!("allgather: expected a uint8 view: {e}")))?;
        if !m.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "allgather: the input is not contiguous",
            ));
        }
        let o = writable::<u8>(out, "allgather", "uint8")?;
        let (mp, ml) = (m.buf_ptr() as usize, m.item_count());
        let (op, ol) = (o.buf_ptr() as usize, o.item_count());
        if (mp < op + ol) && (op < mp + ml) {
            return Err(PyValueError::new_err("allgather: input and output overlap"));
        }
        // SAFETY: both buffers stay exported until after the call; they do not overlap.
        self.with(py, move |g| {
            let mine = unsafe { std::slice::from_raw_parts(mp as *const u8, ml) };
            let out = unsafe { std::slice::from_raw_parts_mut(op as *mut u8, ol) };
            g.allgather(mine, out)
        })
    }

    /// Wait until every rank has called it.
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |g| g.barrier())
    }

    /// Close the links now (peers see the close at once); later calls raise ValueError.
    fn close(&self, py: Python<'_>) {
        let taken = py.allow_threads(|| self.inner.lock().ok().and_then(|mut g| g.take()));
        drop(taken);
    }
}

fn wrap(g: ProcessGroup) -> Group {
    Group {
        rank: g.rank(),
        size: g.size(),
        local_rank: g.local_rank(),
        inner: Mutex::new(Some(g)),
    }
}

/// Elastic (under `lockstep run --elastic`): join the next generation with the newest committed
/// `step` (-1: none). Returns `(group, generation, source rank)`, or `None` when the job has
/// already finished.
#[pyfunction]
fn elastic_join(py: Python<'_>, step: i64) -> PyResult<Option<(Group, u64, usize)>> {
    let o = GroupOptions::from_env().map_err(to_py)?;
    let joined = py
        .allow_threads(|| ProcessGroup::join_elastic(&o, step))
        .map_err(to_py)?;
    Ok(joined.map(|(g, gen)| (wrap(g), gen.number, gen.source)))
}

/// Elastic: tell the rendezvous service that the job is done.
#[pyfunction]
fn elastic_finish(py: Python<'_>) -> PyResult<()> {
    let o = GroupOptions::from_env().map_err(to_py)?;
    py.allow_threads(|| ProcessGroup::elastic_finish(&o))
        .map_err(to_py)
}

/// Elastic: how many processes wait to join at the rendezvous service.
#[pyfunction]
fn elastic_waiting(py: Python<'_>) -> PyResult<usize> {
    let o = GroupOptions::from_env().map_err(to_py)?;
    py.allow_threads(|| ProcessGroup::elastic_waiting(&o))
        .map_err(to_py)
}

/// Join a process group. Values not given come from the environment (torchrun's `RANK`,
/// `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; Slurm's; `LOCKSTEP_TOKEN`,
/// `LOCKSTEP_TRANSPORT`, `LOCKSTEP_PEER_TIMEOUT_MS`).
#[pyfunction]
#[pyo3(signature = (rank = None, world_size = None, master_addr = None, master_port = None, token = None, transport = None, peer_timeout_ms = None, connect_timeout_ms = None, cluster = None))]
#[allow(clippy::too_many_arguments)]
fn init(
    py: Python<'_>,
    rank: Option<usize>,
    world_size: Option<usize>,
    master_addr: Option<String>,
    master_port: Option<u16>,
    token: Option<String>,
    transport: Option<String>,
    peer_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    cluster: Option<String>,
) -> PyResult<Group> {
    let explicit =
        rank.is_some() && world_size.is_some() && master_addr.is_some() && master_port.is_some();
    let mut o = if explicit {
        let token = match &token {
            Some(t) => t.clone(),
            None => std::env::var("LOCKSTEP_TOKEN").map_err(|_| {
                PyValueError::new_err("no token= given and LOCKSTEP_TOKEN is not set: every rank needs the same shared secret")
            })?,
        };
        let master = format!(
            "{}:{}",
            master_addr.as_deref().unwrap_or_default(),
            master_port.unwrap_or(0)
        );
        GroupOptions::new(
            rank.unwrap_or(0),
            world_size.unwrap_or(0),
            &master,
            token.as_bytes(),
        )
    } else {
        if let Some(t) = &token {
            // The environment's other values, this token.
            std::env::set_var("LOCKSTEP_TOKEN", t);
        }
        let mut o = GroupOptions::from_env().map_err(to_py)?;
        if let Some(r) = rank {
            o.rank = r;
        }
        if let Some(w) = world_size {
            o.world = w;
        }
        o
    };
    if let Some(t) = transport {
        o.transport = t.parse().map_err(|e: lockstep_transport::Error| {
            PyValueError::new_err(format!("transport: {e}"))
        })?;
    }
    if let Some(ms) = peer_timeout_ms {
        o.peer_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = connect_timeout_ms {
        o.connect_timeout = Duration::from_millis(ms);
    }
    if let Some(c) = cluster {
        o.cluster = c;
    }
    let g = py.allow_threads(|| ProcessGroup::init(&o)).map_err(to_py)?;
    Ok(wrap(g))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Group>()?;
    m.add_class::<crate::py_stream::Stream>()?;
    m.add("PeerError", m.py().get_type::<PeerError>())?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(elastic_join, m)?)?;
    m.add_function(wrap_pyfunction!(elastic_waiting, m)?)?;
    m.add_function(wrap_pyfunction!(elastic_finish, m)?)?;
    Ok(())
}
