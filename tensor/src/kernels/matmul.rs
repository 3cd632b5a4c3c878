//! General matrix multiply, `C = alpha * op(A) * op(B) + beta * C`, row-major, over the `gemm`
//! crate's tuned micro-kernels, single-threaded (data parallelism comes from processes).

use crate::error::{Error, Result};

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use its transpose.
    Yes,
}

/// Element types the GEMM supports.
pub trait GemmScalar: Copy + 'static + PartialEq {
    /// Additive identity.
    const ZERO: Self;
}
impl GemmScalar for f32 {
    const ZERO: f32 = 0.0;
}
impl GemmScalar for f64 {
    const ZERO: f64 = 0.0;
}

fn check(name: &'static str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(Error::Shape {
            op: "gemm",
            expected: format!("{name} of {want} elements"),
            actual: format!("{len} elements"),
        });
    }
    Ok(())
}

/// `C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C`, all row-major.
///
/// `A` is stored `m x k` (or `k x m` when `ta` is [`Transpose::Yes`]); `B` is stored `k x n` (or
/// `n x k`). With `beta == 0` the old contents of `C` are ignored (NaNs included).
///
/// # Errors
/// [`Error::Shape`] when a slice length does not match its dimensions.
///
/// # Examples
/// ```
/// use lockstep_tensor::kernels::{gemm, Transpose};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // 2x2
/// let b = [1.0f32, 0.0, 0.0, 1.0];
/// let mut c = [0.0f32; 4];
/// gemm(Transpose::No, Transpose::No, 2, 2, 2, 1.0, &a, &b, 0.0, &mut c).unwrap();
/// assert_eq!(c, a);
/// ```
pub fn gemm<T: GemmScalar>(
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) -> Result<()> {
    check("A", a.len(), m * k)?;
    check("B", b.len(), k * n)?;
    check("C", c.len(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Strides of op(A) (m x k) and op(B) (k x n) as (row stride, column stride).
    let (a_rs, a_cs) = match ta {
        Transpose::No => (k as isize, 1),
        Transpose::Yes => (1, m as isize),
    };
    let (b_rs, b_cs) = match tb {
        Transpose::No => (n as isize, 1),
        Transpose::Yes => (1, k as isize),
    };
    let read_dst = beta != T::ZERO;
    // SAFETY: the lengths were checked above, so every index the strides reach lies inside the
    // slices; `c` is exclusively borrowed and does not alias `a` or `b`. The `gemm` crate computes
    // dst = alpha_g * dst + beta_g * lhs * rhs, hence the swapped scalars.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}
