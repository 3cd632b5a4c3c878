//! GEMM throughput through Lockstep's kernel API next to the `gemm` crate called directly, in the
//! same run, for the shapes training uses. The ratio (wrapper / direct) should be ~1.0.

#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lockstep_tensor::kernels::{gemm as ls_gemm, Transpose};
use std::hint::black_box;

fn direct(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    // SAFETY: slices have exactly m*k, k*n and m*n elements, row-major strides below.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    for &(m, k, n) in &[(512usize, 512usize, 512usize), (256, 784, 64)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.2).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let label = format!("{m}x{k}x{n}");
        group.bench_with_input(BenchmarkId::new("lockstep", &label), &(), |bch, _| {
            bch.iter(|| {
                ls_gemm(
                    Transpose::No,
                    Transpose::No,
                    m,
                    n,
                    k,
                    1.0,
                    &a,
                    &b,
                    0.0,
                    &mut out,
                )
                .unwrap();
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("gemm-crate", &label), &(), |bch, _| {
            bch.iter(|| {
                direct(m, n, k, &a, &b, &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
