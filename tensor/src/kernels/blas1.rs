//! Level-1 vector kernels. Written as simple indexed loops over equal-length slices, which the
//! compiler vectorises; lengths are checked with `assert_eq!` because a mismatch is a broken
//! invariant of the caller, not bad input.

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x *= alpha`.
pub fn scale(alpha: f32, x: &mut [f32]) {
    for v in x {
        *v *= alpha;
    }
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    zip_map(a, b, out, |x, y| x + y)
}

/// `out = a - b`.
pub fn sub(a: &[f32], b: &[f32], out: &mut [f32]) {
    zip_map(a, b, out, |x, y| x - y)
}

/// `out = a * b` elementwise.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    zip_map(a, b, out, |x, y| x * y)
}

/// `y += x`.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_assign: length mismatch");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `out[i] = f(a[i], b[i])`.
pub fn zip_map(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    assert_eq!(a.len(), b.len(), "zip_map: length mismatch");
    assert_eq!(a.len(), out.len(), "zip_map: length mismatch");
    for i in 0..out.len() {
        out[i] = f(a[i], b[i]);
    }
}

/// `out[i] = f(x[i])`.
pub fn map(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    assert_eq!(x.len(), out.len(), "map: length mismatch");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// `x[i] = f(x[i])`.
pub fn map_inplace(x: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in x {
        *v = f(*v);
    }
}

/// Set every element to `v`.
pub fn fill(x: &mut [f32], v: f32) {
    x.fill(v)
}

/// Dot product, accumulated in f64 for stability.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}
