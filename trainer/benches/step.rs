//! Training-step throughput of an MLP 784-256-128-10 at batch 64 on one thread, next to a
//! GEMM-only reference doing the same eight GEMMs (3 forward, 5 backward: no input gradient
//! for the first layer) in the same run. Prints samples/s for both and their ratio (target
//! >= 0.6); criterion also reports each.
//!
//! Run: `cargo bench -p lockstep-trainer --bench step`.

use criterion::{black_box, Criterion, Throughput};
use lockstep_tensor::kernels::{gemm, Transpose};
use lockstep_trainer::init::rng;
use lockstep_trainer::model::{build_model, Model, ModelSpec};
use lockstep_trainer::optim::{Optimizer, OptimizerKind, OptimizerSpec};
use lockstep_trainer::{Batch, Targets};
use rand::Rng;
use std::time::Instant;

const BATCH: usize = 64;
const DIMS: [usize; 4] = [784, 256, 128, 10];

/// A full training step: forward, loss, backward with buckets, SGD-momentum update.
struct Step {
    model: Box<dyn Model>,
    opt: Optimizer,
    grads: Vec<f32>,
    batch: Batch,
}

impl Step {
    fn new() -> Step {
        let spec: ModelSpec = serde_json::from_str(r#"{"kind":"mlp","hidden":[256,128]}"#).unwrap();
        let model = build_model(&spec, DIMS[0], DIMS[3], 1).unwrap();
        let mut s = OptimizerSpec::new(OptimizerKind::Sgd, 0.01);
        s.momentum = Some(0.9);
        let opt = Optimizer::new(&s, model.params().len()).unwrap();
        let mut r = rng(2, 0);
        let x = (0..BATCH * DIMS[0])
            .map(|_| r.gen_range(0.0f32..1.0))
            .collect();
        let y = Targets::Class((0..BATCH as u32).map(|i| i % 10).collect());
        let grads = vec![0.0; model.params().len()];
        Step {
            model,
            opt,
            grads,
            batch: Batch {
                x,
                rows: BATCH,
                cols: DIMS[0],
                y,
            },
        }
    }

    fn run(&mut self) -> f64 {
        let out = self
            .model
            .forward_backward(&self.batch, &mut self.grads, &mut |_, g| {
                black_box(g);
            });
        let loss = out.unwrap().loss;
        self.opt.step(self.model.params_mut(), &self.grads).unwrap();
        loss
    }
}

/// The GEMMs of one step, on preallocated buffers.
struct Reference {
    w: Vec<Vec<f32>>,
    gw: Vec<Vec<f32>>,
    acts: Vec<Vec<f32>>,
    deltas: Vec<Vec<f32>>,
}

impl Reference {
    fn new() -> Reference {
        let mut r = rng(3, 0);
        let mut fill = |n: usize| {
            (0..n)
                .map(|_| r.gen_range(-0.1f32..0.1))
                .collect::<Vec<_>>()
        };
        let w = (0..3).map(|l| fill(DIMS[l] * DIMS[l + 1])).collect();
        let gw = (0..3).map(|l| vec![0.0; DIMS[l] * DIMS[l + 1]]).collect();
        let acts = (0..4).map(|l| fill(BATCH * DIMS[l])).collect();
        let deltas = (0..4).map(|l| fill(BATCH * DIMS[l])).collect();
        Reference {
            w,
            gw,
            acts,
            deltas,
        }
    }

    fn run(&mut self) {
        let (b, t, n) = (BATCH, Transpose::Yes, Transpose::No);
        for l in 0..3 {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            let (lo, hi) = self.acts.split_at_mut(l + 1);
            gemm(n, t, b, o, i, 1.0, &lo[l], &self.w[l], 0.0, &mut hi[0]).unwrap();
        }
        for l in (0..3).rev() {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            gemm(
                t,
                n,
                o,
                i,
                b,
                1.0,
                &self.deltas[l + 1],
                &self.acts[l],
                0.0,
                &mut self.gw[l],
            )
            .unwrap();
            if l > 0 {
                let (lo, hi) = self.deltas.split_at_mut(l + 1);
                gemm(n, n, b, i, o, 1.0, &hi[0], &self.w[l], 0.0, &mut lo[l]).unwrap();
            }
        }
        black_box(&self.gw);
    }
}

/// Best seconds per call over `reps` timed blocks of `iters` calls.
fn best_secs(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut step = Step::new();
    let mut reference = Reference::new();
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("mlp_784_256_128_10_b64");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.measurement_time(std::time::Duration::from_secs(3));
        g.bench_function("train_step", |bch| bch.iter(|| step.run()));
        g.bench_function("gemm_reference", |bch| bch.iter(|| reference.run()));
        g.finish();
    }
    // Interleaved blocks so both see the same machine state; best block of each.
    let (mut s_step, mut s_ref) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        s_step = s_step.min(best_secs(1, 50, || {
            black_box(step.run());
        }));
        s_ref = s_ref.min(best_secs(1, 50, || reference.run()));
    }
    let flops = 2.0 * BATCH as f64 * (784.0 * 256.0 + 256.0 * 128.0 + 128.0 * 10.0) * 3.0
        - 2.0 * BATCH as f64 * 784.0 * 256.0;
    println!(
        "train step:     {:>9.0} samples/s ({:.1} GFLOP/s)",
        BATCH as f64 / s_step,
        flops / s_step / 1e9
    );
    println!(
        "gemm reference: {:>9.0} samples/s ({:.1} GFLOP/s)",
        BATCH as f64 / s_ref,
        flops / s_ref / 1e9
    );
    println!(
        "ratio step/reference: {:.3} (target >= 0.6)",
        s_ref / s_step
    );
    c.final_summary();
}
