//! The leading eigenpairs of a symmetric matrix, in f64, for PCA: subspace (block power)
//! iteration with a Rayleigh-Ritz step, and cyclic Jacobi for the small projected matrix.
//!
//! For the `k` largest eigenvalues of a `d x d` matrix `C` a block of `p = min(d, 2k + 10)`
//! orthonormal vectors is multiplied by `C` and re-orthonormalised (modified Gram-Schmidt, twice)
//! until the Ritz values of the block (the eigenvalues of `Qᵀ C Q`) stop changing (relative
//! change below 1e-13 of the largest); the error of the `i`-th Ritz value falls as
//! `(λ_{p+1} / λ_i)^{2t}` in the iterations `t`. The start block is fixed (no randomness), so
//! the result is the same bits on every machine.

/// Eigenvalues (largest first) and unit eigenvectors (`k x d`, row `i` for value `i`) of the
/// symmetric row-major `c` (`d x d`), at most 2,000 iterations.
pub fn top_eigen(c: &[f64], d: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let k = k.min(d);
    let p = d.min(2 * k + 10);
    // A fixed, well-spread start: a hashed pattern, orthonormalised.
    let mut q: Vec<Vec<f64>> = (0..p)
        .map(|j| {
            (0..d)
                .map(|i| {
                    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ (j as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
                    (h >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        })
        .collect();
    orthonormalise(&mut q);
    let mut last: Vec<f64> = Vec::new();
    let mut ritz = (Vec::new(), Vec::new());
    for it in 0..2000 {
        q = q.iter().map(|v| matvec(c, d, v)).collect();
        orthonormalise(&mut q);
        if it % 5 != 4 {
            continue;
        }
        ritz = rayleigh_ritz(c, d, &q);
        let scale = ritz.0.first().map_or(1.0, |v: &f64| v.abs().max(1e-300));
        let done = last.len() == k
            && ritz.0[..k]
                .iter()
                .zip(&last)
                .all(|(a, b)| (a - b).abs() <= 1e-13 * scale);
        last = ritz.0[..k].to_vec();
        if done {
            break;
        }
    }
    let (vals, vecs) = ritz;
    (vals[..k].to_vec(), vecs[..k * d].to_vec())
}

fn matvec(c: &[f64], d: usize, v: &[f64]) -> Vec<f64> {
    c.chunks_exact(d)
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram-Schmidt, twice ("twice is enough"); a vector that vanishes is replaced by a
/// unit vector along the first coordinate not yet spanned.
fn orthonormalise(q: &mut [Vec<f64>]) {
    for _ in 0..2 {
        for j in 0..q.len() {
            let (done, rest) = q.split_at_mut(j);
            let v = &mut rest[0];
            for u in done.iter() {
                let a = dot(u, v);
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= a * y);
            }
            let n = dot(v, v).sqrt();
            if n > 1e-300 {
                v.iter_mut().for_each(|x| *x /= n);
            } else {
                v.iter_mut().for_each(|x| *x = 0.0);
                let i = j % v.len();
                v[i] = 1.0;
            }
        }
    }
}

/// Ritz values (descending) and vectors (`p x d`) of the block `q`.
fn rayleigh_ritz(c: &[f64], d: usize, q: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let p = q.len();
    let cq: Vec<Vec<f64>> = q.iter().map(|v| matvec(c, d, v)).collect();
    let mut t = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            t[i * p + j] = dot(&q[i], &cq[j]);
        }
    }
    let (vals, vecs) = jacobi(&mut t, p);
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let mut out_vecs = vec![0.0; p * d];
    for (r, &o) in order.iter().enumerate() {
        let row = &mut out_vecs[r * d..(r + 1) * d];
        for (j, qj) in q.iter().enumerate() {
            let w = vecs[j * p + o];
            row.iter_mut().zip(qj).for_each(|(x, y)| *x += w * y);
        }
    }
    (order.iter().map(|&o| vals[o]).collect(), out_vecs)
}

/// Cyclic Jacobi on the symmetric `a` (`n x n`, destroyed): eigenvalues and the eigenvector
/// matrix `v` (column `j` belongs to value `j`).
fn jacobi(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                // The smaller root of t² + 2θt − 1 = 0 (f64::signum(0) is 1).
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let cs = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * cs;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = cs * akp - sn * akq;
                    a[k * n + q] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = cs * apk - sn * aqk;
                    a[q * n + k] = sn * apk + cs * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = cs * vkp - sn * vkq;
                    v[k * n + q] = sn * vkp + cs * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_leading_eigenpairs_of_a_known_matrix() {
        // C = U diag(l) Uᵀ with U a rotation in the (0, 1) plane and the identity elsewhere.
        let d = 40;
        let l: Vec<f64> = (0..d).map(|i| 50.0 / (i as f64 + 1.0)).collect();
        let (cs, sn) = (0.6f64, 0.8f64);
        let mut u = vec![0.0; d * d];
        (0..d).for_each(|i| u[i * d + i] = 1.0);
        (u[0], u[1], u[d], u[d + 1]) = (cs, -sn, sn, cs);
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] = (0..d).map(|m| u[i * d + m] * l[m] * u[j * d + m]).sum();
            }
        }
        let (vals, vecs) = top_eigen(&c, d, 5);
        for i in 0..5 {
            assert!((vals[i] - l[i]).abs() < 1e-9 * l[0], "{vals:?}");
        }
        // The first eigenvector is column 0 of U, up to sign.
        let v0 = &vecs[..d];
        assert!((v0[0].abs() - cs).abs() < 1e-9 && (v0[1].abs() - sn).abs() < 1e-9);
        assert!(v0[2..].iter().all(|x| x.abs() < 1e-9));
    }
}
