//! The pyo3 layer of [`crate::stream`]: `lockstep._native.Stream(group, options_json)`, whose
//! `next_into(group, x, y)` fills the caller's NumPy arrays with this rank's share of the next
//! round (the GIL released while it waits for the producers).

use crate::py::{to_py, writable, Group};
use crate::stream::{RankStream, StreamError, StreamOptions};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;

pub(crate) fn stream_err(e: StreamError) -> PyErr {
    match e {
        StreamError::Config(_) | StreamError::Data(_) => PyValueError::new_err(e.to_string()),
        StreamError::Group(g) => to_py(g),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// This rank's side of a producer stream (see `lockstep.data.StreamDataset`).
#[pyclass(module = "lockstep._native", frozen)]
pub struct Stream {
    inner: Mutex<RankStream>,
    bootstrap: String,
}

#[pymethods]
impl Stream {
    /// Fit the warm-up sample, serve this rank's ingest endpoint and (rank 0) the bootstrap.
    /// Collective.
    #[new]
    fn new(py: Python<'_>, group: &Group, options: &str) -> PyResult<Stream> {
        let o: StreamOptions = serde_json::from_str(options)
            .map_err(|e| PyValueError::new_err(format!("StreamDataset: {e}")))?;
        let s = group.with_stream(py, move |g| RankStream::open(g, o))?;
        let bootstrap = s.bootstrap().to_string();
        Ok(Stream {
            inner: Mutex::new(s),
            bootstrap,
        })
    }

    /// The bootstrap address producers connect to.
    #[getter]
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// `{"rows", "cols", "classes", "features"}` of every batch.
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock()?;
        let d = PyDict::new(py);
        let sh = s.shape();
        d.set_item("rows", sh.rows)?;
        d.set_item("cols", sh.cols)?;
        d.set_item("classes", sh.classes)?;
        d.set_item("features", sh.features.clone())?;
        Ok(d)
    }

    /// The next round to be taken.
    #[getter]
    fn round(&self) -> PyResult<u64> {
        Ok(self.lock()?.round())
    }

    /// `(rows received, duplicates dropped)` over this rank's producers.
    fn counts(&self) -> PyResult<(u64, u64)> {
        Ok(self.lock()?.counts())
    }

    /// Per producer of this rank, the offset of its next row to train.
    fn offsets(&self) -> PyResult<std::collections::BTreeMap<u32, u64>> {
        Ok(self.lock()?.offsets())
    }

    /// Fill `x` (float32, rows x cols) and `y` (float32, or int64 class ids) with this rank's
    /// share of the next round; `False` (on every rank alike) when the stream has ended.
    /// Collective.
    fn next_into(
        &self,
        py: Python<'_>,
        group: &Group,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let (rows, cols, classes) = {
            let s = self.lock()?;
            (s.shape().rows, s.shape().cols, s.shape().classes)
        };
        let xb = writable::<f32>(x, "StreamDataset", "float32")?;
        if xb.item_count() != rows * cols {
            return Err(PyValueError::new_err(format!(
                "StreamDataset: x holds {} values, a batch has {rows} x {cols}",
                xb.item_count()
            )));
        }
        let (xp, yp) = (xb.buf_ptr() as usize, label_buffer(y, rows, classes)?);
        let inner = &self.inner;
        let got = group.with_stream(py, move |g| {
            let mut s = inner
                .lock()
                .map_err(|_| StreamError::Config("the stream broke in an earlier call".into()))?;
            s.next(g)
        })?;
        let Some(batch) = got else {
            return Ok(false);
        };
        // SAFETY: `xb` and the label buffer stay exported (alive, writable, contiguous and of
        // the sizes checked above) until this function returns; the GIL is held again here.
        unsafe {
            std::ptr::copy_nonoverlapping(batch.x.as_ptr(), xp as *mut f32, rows * cols);
        }
        yp.fill(&batch.y);
        Ok(true)
    }
}

impl Stream {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, RankStream>> {
        self.inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("StreamDataset: broken in an earlier call"))
    }
}

/// The label array: float32 (regression, binary 0/1) or int64 class ids (multiclass).
enum Labels {
    Real(PyBufferPtr<f32>),
    Class(PyBufferPtr<i64>),
}

struct PyBufferPtr<T: pyo3::buffer::Element> {
    _buf: pyo3::buffer::PyBuffer<T>,
    ptr: usize,
}

fn label_buffer(y: &Bound<'_, PyAny>, rows: usize, classes: bool) -> PyResult<Labels> {
    let check = |n: usize| {
        if n == rows {
            Ok(())
        } else {
            Err(PyValueError::new_err(format!(
                "StreamDataset: y holds {n} values, a batch has {rows}"
            )))
        }
    };
    if classes {
        let b = writable::<i64>(y, "StreamDataset", "int64 (class ids)")?;
        check(b.item_count())?;
        let ptr = b.buf_ptr() as usize;
        Ok(Labels::Class(PyBufferPtr { _buf: b, ptr }))
    } else {
        let b = writable::<f32>(y, "StreamDataset", "float32")?;
        check(b.item_count())?;
        let ptr = b.buf_ptr() as usize;
        Ok(Labels::Real(PyBufferPtr { _buf: b, ptr }))
    }
}

impl Labels {
    fn fill(&self, t: &lockstep_trainer::batch::Targets) {
        use lockstep_trainer::batch::Targets;
        // SAFETY: as in `next_into`: the buffers are exported, writable and hold `v.len()`
        // values (checked against the batch's rows).
        match (self, t) {
            (Labels::Real(b), Targets::Real(v)) => unsafe {
                std::ptr::copy_nonoverlapping(v.as_ptr(), b.ptr as *mut f32, v.len());
            },
            (Labels::Class(b), Targets::Class(v)) => {
                let out = unsafe { std::slice::from_raw_parts_mut(b.ptr as *mut i64, v.len()) };
                for (o, c) in out.iter_mut().zip(v) {
                    *o = i64::from(*c);
                }
            }
            // The task fixes the kind; a mismatch cannot happen for a fitted transform.
            _ => {}
        }
    }
}
