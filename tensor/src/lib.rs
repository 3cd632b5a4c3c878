//! # lockstep-tensor
//!
//! The bottom layer of Lockstep: memory and math, no networks, no actors.
//!
//! - [`Buffer`] is one cheaply clonable, sliceable handle over heap (64-byte aligned), shared
//!   memory (a `memmap2` mapping another process can map too), file mappings and external memory
//!   (RDMA regions, `bytes::Bytes`). Shared while immutable, writable when unique. Why one type:
//!   a receive buffer from a shared-memory ring or a pool can become a tensor without a copy, and
//!   the layers above deal with a single concrete type on the hot path.
//! - [`BufferPool`] recycles receive buffers once their last handle is gone.
//! - [`DType`], [`Shape`], [`Tensor`]: typed views are checked (dtype, length, alignment), never
//!   trusted, so a wrong view is an error instead of undefined behaviour.
//! - [`kernels`]: GEMM through the `gemm` crate, axpy and friends, reductions, softmax,
//!   f16/bf16 conversion through `half`.
//! - [`safetensors_io`]: named tensor sets to and from safetensors files, reading from a mapping.
//!
//! # Examples
//! ```
//! use lockstep_tensor::{Tensor, DType};
//! let t = Tensor::from_vec([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
//! assert_eq!(t.as_slice::<f32>().unwrap()[3], 4.0);
//! assert!(t.as_slice::<f64>().is_err()); // wrong dtype is an error
//! assert_eq!(t.dtype(), DType::F32);
//! ```

mod alloc;
mod buffer;
mod dtype;
mod error;
pub mod kernels;
pub mod safetensors_io;
mod shape;
pub mod shm;
pub mod sparse;
mod tensor;

pub use alloc::{BufferPool, PoolStats, ALIGN};
pub use buffer::{Backing, Buffer, BufferMut, ExternalMemory};
pub use dtype::{DType, Element};
pub use error::{Error, Result, SafeTensorsError};
pub use half::{bf16, f16};
pub use safetensors_io::{read_safetensors, write_safetensors, NamedTensors};
pub use shape::{fingerprint_dims, Shape};
pub use sparse::SparseRows;
pub use tensor::{cast_slice, cast_slice_mut, Tensor};
