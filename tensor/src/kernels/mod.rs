//! CPU kernels that training needs: GEMM with transposes (through the `gemm` crate), level-1
//! vector operations, reductions, softmax, and f16/bf16 conversion (through `half`).
//!
//! Kernels work on slices, not tensors, so the trainer can call them on sub-ranges of parameter
//! and gradient buffers without building tensor handles in inner loops.

mod blas1;
mod convert;
mod copy;
mod matmul;
mod reduce;

pub use blas1::{add, add_assign, axpy, dot, fill, map, map_inplace, mul, scale, sub, zip_map};
pub use convert::{
    bf16_to_f32, bf16_to_f32_vec, f16_to_f32, f16_to_f32_vec, f32_to_bf16, f32_to_bf16_vec,
    f32_to_f16, f32_to_f16_vec,
};
pub use copy::{copy, copy_f32};
pub use matmul::{gemm, GemmScalar, Transpose};
pub use reduce::{argmax, log_softmax_rows, max, mean, softmax_rows, sum, sum_f64};
