//! Kernels against naive references.

use lockstep_tensor::kernels::*;

fn naive(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                s += f64::from(av) * f64::from(bv);
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[test]
fn gemm_matches_naive_for_all_transposes() {
    let (m, n, k) = (7, 5, 9);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 3.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 11 % 13) as f32 - 6.0) / 5.0)
        .collect();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let want = naive(ta, tb, m, n, k, &a, &b);
        let t = |x| if x { Transpose::Yes } else { Transpose::No };
        let mut c = vec![1.0f32; m * n];
        gemm(t(ta), t(tb), m, n, k, 2.0, &a, &b, 0.5, &mut c).unwrap();
        for (got, w) in c.iter().zip(&want) {
            assert!(
                (got - (2.0 * w + 0.5)).abs() < 1e-4,
                "ta={ta} tb={tb}: {got} vs {}",
                2.0 * w + 0.5
            );
        }
    }
    // beta = 0 ignores NaN in C.
    let mut c = vec![f32::NAN; m * n];
    gemm(
        Transpose::No,
        Transpose::No,
        m,
        n,
        k,
        1.0,
        &a,
        &b,
        0.0,
        &mut c,
    )
    .unwrap();
    assert!(c.iter().all(|v| v.is_finite()));
    // Wrong lengths are errors.
    assert!(gemm(
        Transpose::No,
        Transpose::No,
        m,
        n,
        k,
        1.0,
        &a[1..],
        &b,
        0.0,
        &mut c
    )
    .is_err());
}

#[test]
fn blas1_and_reductions() {
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let mut y = [1.0f32; 9];
    axpy(2.0, &x, &mut y);
    assert_eq!(y[8], 19.0);
    assert_eq!(sum(&x), 45.0);
    assert_eq!(argmax(&x), Some(8));
    assert_eq!(max(&x), 9.0);
    assert!((dot(&x, &x) - 285.0).abs() < 1e-9);
    let mut s = [1.0f32, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
    softmax_rows(&mut s, 3);
    assert!((s[0] + s[1] + s[2] - 1.0).abs() < 1e-6);
    assert!((s[3] - 1.0 / 3.0).abs() < 1e-6, "stable for large logits");
    let mut l = [1.0f32, 2.0, 3.0];
    log_softmax_rows(&mut l, 3);
    let total: f32 = l.iter().map(|v| v.exp()).sum();
    assert!((total - 1.0).abs() < 1e-6);
}
