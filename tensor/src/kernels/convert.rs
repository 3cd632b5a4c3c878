//! f16/bf16 <-> f32 conversion over slices, through `half`'s vectorised slice routines.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// `dst = src` converted to f16 (round to nearest even).
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    dst.convert_from_f32_slice(src)
}

/// `dst = src` converted to f32 (exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    src.convert_to_f32_slice(dst)
}

/// `dst = src` converted to bf16 (round to nearest even).
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    dst.convert_from_f32_slice(src)
}

/// `dst = src` converted to f32 (exact).
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    src.convert_to_f32_slice(dst)
}

/// Allocating form of [`f32_to_f16`].
pub fn f32_to_f16_vec(src: &[f32]) -> Vec<f16> {
    let mut v = vec![f16::ZERO; src.len()];
    f32_to_f16(src, &mut v);
    v
}

/// Allocating form of [`f16_to_f32`].
pub fn f16_to_f32_vec(src: &[f16]) -> Vec<f32> {
    let mut v = vec![0.0; src.len()];
    f16_to_f32(src, &mut v);
    v
}

/// Allocating form of [`f32_to_bf16`].
pub fn f32_to_bf16_vec(src: &[f32]) -> Vec<bf16> {
    let mut v = vec![bf16::ZERO; src.len()];
    f32_to_bf16(src, &mut v);
    v
}

/// Allocating form of [`bf16_to_f32`].
pub fn bf16_to_f32_vec(src: &[bf16]) -> Vec<f32> {
    let mut v = vec![0.0; src.len()];
    bf16_to_f32(src, &mut v);
    v
}
