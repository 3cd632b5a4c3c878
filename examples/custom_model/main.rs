//! Embedding Lockstep: a program that defines its own model type ("wide and deep": a linear
//! path plus a tanh hidden path, summed into the logits, with hand-written backprop) and trains
//! it on the digits data set, three ways:
//!
//! ```sh
//! # The whole cluster in this process (every node on its own threads), over shm or TCP:
//! cargo run --release --example custom_model -- local --workers 2 --transport shm
//! # Every node its own OS process of this program, supervised as `lockstep launch` does:
//! cargo run --release --example custom_model -- launch --workers 2
//! # One node of a job across processes or machines: the same flags as `lockstep node`
//! # (`--node NAME`, or the torchrun / Slurm / Kubernetes environment without it):
//! custom_model node examples/custom_model/cluster.toml --node worker-0 --coordinator HOST:PORT
//! ```
//!
//! WORKERS must divide 64 (the global batch). docs/embedding.md explains each route.

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep::cli::NodeArgs;
use lockstep::runtime::embed::{EmbeddedNode, LocalCluster};
use lockstep::runtime::manifest::TransportChoice;
use lockstep::runtime::{LaunchOptions, Manifest, NodeOptions, RuntimeError};
use lockstep::tensor::kernels::{gemm, softmax_rows, Transpose};
use lockstep::trainer::data::Split;
use lockstep::trainer::model::{Model, ModelError, ParamInfo, StepOutput, Task};
use lockstep::trainer::{Batch, Targets};
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::path::PathBuf;

/// The data, optimizer and schedule; the model is defined here.
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/custom_model/cluster.toml"
);

const HIDDEN: usize = 32;

/// logits = W2 tanh(W1 x + b1) + Wl x + b. Parameters, output side first so that backprop
/// finishes the flat gradient from offset 0 upwards: [w2, b, wl | w1, b1].
struct WideAndDeep {
    d: usize,
    k: usize,
    params: Vec<f32>,
    layout: Vec<ParamInfo>,
    buckets: Vec<Range<usize>>,
}

impl WideAndDeep {
    fn new(d: usize, k: usize, seed: u64) -> Self {
        let shapes = [
            ("w2", vec![k, HIDDEN]),
            ("b", vec![k]),
            ("wl", vec![k, d]),
            ("w1", vec![HIDDEN, d]),
            ("b1", vec![HIDDEN]),
        ];
        let mut layout = Vec::new();
        let mut offset = 0;
        for (name, shape) in shapes {
            let len = shape.iter().product();
            layout.push(ParamInfo {
                name: name.into(),
                shape,
                offset,
                len,
            });
            offset += len;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0f32; offset];
        for p in &layout {
            let fan_in = *p.shape.last().unwrap_or(&1) as f32;
            let scale = if p.shape.len() == 2 {
                (1.0 / fan_in).sqrt()
            } else {
                0.0
            };
            for v in &mut params[p.range()] {
                *v = (rng.gen::<f32>() * 2.0 - 1.0) * scale;
            }
        }
        let head = layout[2].offset + layout[2].len;
        WideAndDeep {
            d,
            k,
            params,
            layout,
            buckets: vec![0..head, head..offset],
        }
    }

    /// Logits and hidden activations for `rows` rows.
    fn forward(&self, x: &[f32], rows: usize) -> (Vec<f32>, Vec<f32>) {
        let p = |i: usize| &self.params[self.layout[i].range()];
        let mut h = vec![0.0f32; rows * HIDDEN];
        for r in 0..rows {
            h[r * HIDDEN..(r + 1) * HIDDEN].copy_from_slice(p(4));
        }
        gemm(
            Transpose::No,
            Transpose::Yes,
            rows,
            HIDDEN,
            self.d,
            1.0,
            x,
            p(3),
            1.0,
            &mut h,
        )
        .expect("shapes");
        h.iter_mut().for_each(|v| *v = v.tanh());
        let mut logits = vec![0.0f32; rows * self.k];
        for r in 0..rows {
            logits[r * self.k..(r + 1) * self.k].copy_from_slice(p(1));
        }
        gemm(
            Transpose::No,
            Transpose::Yes,
            rows,
            self.k,
            HIDDEN,
            1.0,
            &h,
            p(0),
            1.0,
            &mut logits,
        )
        .expect("shapes");
        gemm(
            Transpose::No,
            Transpose::Yes,
            rows,
            self.k,
            self.d,
            1.0,
            x,
            p(2),
            1.0,
            &mut logits,
        )
        .expect("shapes");
        (logits, h)
    }

    fn labels<'a>(&self, batch: &'a Batch) -> Result<&'a [u32], ModelError> {
        match &batch.y {
            Targets::Class(c) if c.len() == batch.rows => Ok(c),
            _ => Err(ModelError::Targets {
                loss: "softmax cross-entropy",
                what: "need one class index per row".into(),
            }),
        }
    }

    fn check(&self, batch: &Batch) -> Result<(), ModelError> {
        if batch.cols != self.d || batch.x.len() != batch.rows * batch.cols {
            return Err(ModelError::InputWidth {
                model: "wide-and-deep".into(),
                expected: self.d,
                actual: batch.cols,
            });
        }
        Ok(())
    }
}

/// Softmax in place; returns the summed cross-entropy.
fn softmax_xent(logits: &mut [f32], k: usize, y: &[u32]) -> f64 {
    softmax_rows(logits, k);
    y.iter()
        .enumerate()
        .map(|(r, &c)| -f64::from(logits[r * k + c as usize].max(1e-12)).ln())
        .sum()
}

impl Model for WideAndDeep {
    fn layout(&self) -> &[ParamInfo] {
        &self.layout
    }
    fn buckets(&self) -> &[Range<usize>] {
        &self.buckets
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        divisor: f32,
        grads: &mut [f32],
        on_bucket: &mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Result<StepOutput, ModelError> {
        self.check(batch)?;
        let (rows, k, d) = (batch.rows, self.k, self.d);
        let y = self.labels(batch)?;
        let (mut dl, h) = self.forward(&batch.x, rows);
        let loss_sum = softmax_xent(&mut dl, k, y);
        if !loss_sum.is_finite() {
            return Err(ModelError::NonFiniteLoss {
                loss: loss_sum / rows.max(1) as f64,
                rows,
            });
        }
        for (r, &c) in y.iter().enumerate() {
            dl[r * k + c as usize] -= 1.0;
        }
        dl.iter_mut().for_each(|v| *v /= divisor);
        let r = |i: usize| self.layout[i].range();
        // Head bucket: w2, b, wl.
        gemm(
            Transpose::Yes,
            Transpose::No,
            k,
            HIDDEN,
            rows,
            1.0,
            &dl,
            &h,
            0.0,
            &mut grads[r(0)],
        )
        .expect("shapes");
        let gb = &mut grads[r(1)];
        gb.fill(0.0);
        for row in dl.chunks(k) {
            gb.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        }
        gemm(
            Transpose::Yes,
            Transpose::No,
            k,
            d,
            rows,
            1.0,
            &dl,
            &batch.x,
            0.0,
            &mut grads[r(2)],
        )
        .expect("shapes");
        let head = self.buckets[0].clone();
        on_bucket(head.clone(), &mut grads[head]);
        // Deep bucket: w1, b1 through tanh.
        let mut dh = vec![0.0f32; rows * HIDDEN];
        gemm(
            Transpose::No,
            Transpose::No,
            rows,
            HIDDEN,
            k,
            1.0,
            &dl,
            &self.params[r(0)],
            0.0,
            &mut dh,
        )
        .expect("shapes");
        dh.iter_mut().zip(&h).for_each(|(g, a)| *g *= 1.0 - a * a);
        gemm(
            Transpose::Yes,
            Transpose::No,
            HIDDEN,
            d,
            rows,
            1.0,
            &dh,
            &batch.x,
            0.0,
            &mut grads[r(3)],
        )
        .expect("shapes");
        let gb1 = &mut grads[r(4)];
        gb1.fill(0.0);
        for row in dh.chunks(HIDDEN) {
            gb1.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        }
        let deep = self.buckets[1].clone();
        on_bucket(deep.clone(), &mut grads[deep]);
        Ok(StepOutput {
            loss: loss_sum / rows.max(1) as f64,
            loss_sum,
            rows,
        })
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<StepOutput, ModelError> {
        self.check(batch)?;
        let y = self.labels(batch)?;
        let (mut logits, _) = self.forward(&batch.x, batch.rows);
        let loss_sum = softmax_xent(&mut logits, self.k, y);
        Ok(StepOutput {
            loss: loss_sum / batch.rows.max(1) as f64,
            loss_sum,
            rows: batch.rows,
        })
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        if x.len() != rows * self.d {
            return Err(ModelError::BatchShape {
                what: format!("{} values for {rows} rows of {}", x.len(), self.d),
            });
        }
        let (mut logits, _) = self.forward(x, rows);
        softmax_rows(&mut logits, self.k);
        Ok(logits)
    }

    fn in_dim(&self) -> usize {
        self.d
    }
    fn out_dim(&self) -> usize {
        self.k
    }
    fn task(&self) -> Task {
        Task::Multiclass { classes: self.k }
    }
    fn name(&self) -> &str {
        "wide-and-deep"
    }
}

/// Every node builds its replica from the job seed, so all start from the same parameters.
fn model(m: &Manifest, split: &Split) -> Result<Box<dyn Model>, RuntimeError> {
    Ok(Box::new(WideAndDeep::new(
        split.train.cols,
        split.outputs(),
        m.job.seed,
    )))
}

#[derive(Parser)]
#[command(about = "Train a custom model type with Lockstep (default: `local`)")]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand)]
enum Mode {
    /// The whole cluster in this process, every node on its own threads.
    Local(LocalArgs),
    /// Every node its own OS process of this program (`node` below), supervised like
    /// `lockstep launch`.
    Launch(LocalArgs),
    /// One node of a job across processes or machines: the same flags as `lockstep node`.
    Node(NodeArgs),
}

#[derive(Args, Clone)]
struct LocalArgs {
    /// In-process workers (must divide the global batch, 64).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, value_enum, default_value_t = Link::Shm)]
    transport: Link,
    /// Run directory: report.json and model.safetensors.
    #[arg(long, default_value = "runs/custom")]
    run_dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy)]
enum Link {
    Shm,
    Tcp,
}

fn main() -> std::process::ExitCode {
    lockstep::logging::init();
    let mode = Cli::parse().mode.unwrap_or(Mode::Local(LocalArgs {
        workers: 2,
        transport: Link::Shm,
        run_dir: "runs/custom".into(),
    }));
    match run(mode) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_model: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode) -> Result<(), RuntimeError> {
    match mode {
        // The whole cluster in this process:
        Mode::Local(a) => {
            let report = LocalCluster::from_manifest(MANIFEST.as_ref(), &[])?
                .workers(a.workers)
                .transport(match a.transport {
                    Link::Shm => TransportChoice::Shm,
                    Link::Tcp => TransportChoice::Tcp,
                })
                .run_dir(&a.run_dir)
                .model(model)
                .run()?;
            println!("{}", report.summary());
        }
        // One node of a job across processes or machines (`node MANIFEST --node NAME`):
        Mode::Node(a) => {
            EmbeddedNode::from_options(node_options(a))
                .model(model)
                .run()?;
        }
        // Every node a process of this program, each started as `node MANIFEST --node NAME ...`:
        Mode::Launch(a) => {
            let transport = match a.transport {
                Link::Shm => "shm",
                Link::Tcp => "tcp",
            };
            let report = lockstep::runtime::launch(&LaunchOptions {
                manifest: MANIFEST.into(),
                workers: Some(a.workers),
                sets: vec![format!("cluster.transport=\"{transport}\"")],
                run_dir: Some(a.run_dir),
                exe: std::env::current_exe()
                    .map_err(|e| RuntimeError::io("find", "this program", e))?,
                ..Default::default()
            })?;
            println!("{}", report.summary());
        }
    }
    Ok(())
}

/// `lockstep node`'s flags as [`NodeOptions`] (what `lockstep node` itself does with them).
fn node_options(a: NodeArgs) -> NodeOptions {
    let mut sets = a.sets;
    if let Some(addr) = a.metrics_addr {
        sets.push(format!("observe.metrics_addr=\"{addr}\""));
    }
    if a.trace {
        sets.push("observe.trace=true".into());
    }
    NodeOptions {
        manifest: a.manifest,
        node: a.node,
        sets,
        workers: a.workers,
        run_dir: a.run_dir,
        report: a.report,
        coordinator: a.coordinator,
        announce: a.announce,
        resume: a.resume,
    }
}
