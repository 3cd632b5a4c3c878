//! The error type of the tensor crate.
//!
//! Every variant says what was expected and what was found, so a caller several layers up can
//! pass the message to a user unchanged.

use crate::DType;
use std::path::PathBuf;

/// Errors from buffers, tensors, kernels and safetensors I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A typed view asked for one dtype on a tensor of another.
    #[error("dtype mismatch: tensor holds {actual}, view asked for {expected}")]
    DType {
        /// The dtype the caller asked for.
        expected: DType,
        /// The dtype the tensor holds.
        actual: DType,
    },
    /// The bytes under a typed view are not aligned for the element type.
    #[error("misaligned view: address {addr:#x} is not a multiple of {align} for {dtype}")]
    Misaligned {
        /// The start address of the view.
        addr: usize,
        /// The alignment the element type needs.
        align: usize,
        /// The element type.
        dtype: DType,
    },
    /// Lengths or shapes that must agree do not.
    #[error("shape mismatch in {op}: expected {expected}, got {actual}")]
    Shape {
        /// The operation that checked.
        op: &'static str,
        /// What it expected.
        expected: String,
        /// What it got.
        actual: String,
    },
    /// A mutable view was asked of a buffer that is shared (or read-only).
    #[error(
        "buffer is shared or read-only; a mutable view needs the only handle to writable memory"
    )]
    NotUnique,
    /// A slice outside the buffer.
    #[error("range {start}..{end} out of bounds for a buffer of {len} bytes")]
    OutOfBounds {
        /// Start of the requested range.
        start: usize,
        /// End of the requested range.
        end: usize,
        /// Length of the buffer.
        len: usize,
    },
    /// An I/O error with the path it concerned.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "map", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file that could not be read or written.
    #[error("safetensors {path}: {problem}")]
    SafeTensors {
        /// The file (empty for bytes in memory).
        path: PathBuf,
        /// What went wrong.
        problem: SafeTensorsError,
    },
}

/// Why safetensors bytes could not be parsed or a tensor set serialised.
#[derive(Debug, thiserror::Error)]
pub enum SafeTensorsError {
    /// The format is broken (header, JSON, offsets), as the `safetensors` crate reports it.
    #[error("{0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// A tensor of a dtype this crate does not have.
    #[error("tensor {name}: unsupported dtype {dtype:?}")]
    Dtype {
        /// The tensor's name.
        name: String,
        /// Its dtype in the file.
        dtype: safetensors::Dtype,
    },
    /// A tensor whose shape and dtype do not fit the bytes it points at.
    #[error("tensor {name}: {source}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// Why the tensor could not be made.
        source: Box<Error>,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
