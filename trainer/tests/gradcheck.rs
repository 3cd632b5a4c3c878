//! Finite-difference gradient checks for every layer and loss.
//!
//! The model path is f32, so the check uses central differences `(L(p+h) - L(p-h)) / 2h` with
//! `h = 1e-3` on small networks, losses summed in f64, and accepts
//! `|analytic - numeric| <= 5e-4 + 1e-2 * max(|analytic|, |numeric|)` for every parameter
//! (observed worst: about 1e-4). A larger `h` crosses ReLU and max-pool kinks in the conv stack.
//! Every layer sits behind a dense layer, so its input gradient (`dx`) is checked through the
//! dense layer's weight gradient, not only its own parameter gradients.

use lockstep_trainer::init::{rng, Init};
use lockstep_trainer::model::{
    build_model, Activation, ActivationKind, Conv2d, ConvGeom, Dense, Layer, MaxPool2, Model,
    ModelKind, ModelSpec, Network, Permute, Task,
};
use lockstep_trainer::{Batch, Targets};
use rand::Rng;

const H: f32 = 1e-3;
const ATOL: f64 = 5e-4;
const RTOL: f64 = 1e-2;

fn batch(rows: usize, cols: usize, y: Targets, seed: u64) -> Batch {
    let mut r = rng(seed, 9);
    let x = (0..rows * cols)
        .map(|_| r.gen_range(-1.0f32..1.0))
        .collect();
    Batch { x, rows, cols, y }
}

fn classes(rows: usize, k: u32) -> Targets {
    Targets::Class((0..rows as u32).map(|i| (i * 7 + 3) % k).collect())
}

/// Compare backprop with central differences on every parameter of `m`.
fn check(label: &str, m: &mut dyn Model, b: &Batch) {
    let mut grads = vec![0.0; m.params().len()];
    let mut seen = Vec::new();
    m.forward_backward(b, &mut grads, &mut |r, _| seen.push(r))
        .unwrap();
    assert_eq!(seen, m.buckets(), "{label}: buckets delivered out of order");
    let mut worst = 0.0f64;
    for (i, &g) in grads.iter().enumerate() {
        let p0 = m.params()[i];
        m.params_mut()[i] = p0 + H;
        let lp = m.evaluate(b).unwrap().loss;
        m.params_mut()[i] = p0 - H;
        let lm = m.evaluate(b).unwrap().loss;
        m.params_mut()[i] = p0;
        let num = (lp - lm) / (2.0 * f64::from(H));
        let ana = f64::from(g);
        let err = (ana - num).abs();
        let name = m
            .layout()
            .iter()
            .find(|p| p.range().contains(&i))
            .map_or("?", |p| p.name.as_str());
        assert!(
            err <= ATOL + RTOL * ana.abs().max(num.abs()),
            "{label}: {name} (flat {i}): backprop {ana} vs numeric {num}"
        );
        worst = worst.max(err);
    }
    eprintln!(
        "{label}: {} params, worst abs error {worst:.2e}",
        grads.len()
    );
}

fn spec(kind: ModelKind) -> ModelSpec {
    ModelSpec::new(kind)
}

#[test]
fn dense_with_each_loss() {
    let mut lin = build_model(&spec(ModelKind::Linear), 4, 3, 1).unwrap();
    let y = Targets::Real((0..18).map(|i| (i as f32 * 0.3).sin()).collect());
    check("dense + mse", lin.as_mut(), &batch(6, 4, y, 1));

    let mut logit = build_model(&spec(ModelKind::Logistic), 5, 2, 2).unwrap();
    let y = Targets::Real(vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.25]);
    check(
        "dense + bce (real targets)",
        logit.as_mut(),
        &batch(6, 5, y, 2),
    );
    check(
        "dense + bce (class targets)",
        logit.as_mut(),
        &batch(6, 5, classes(6, 2), 3),
    );

    let mut soft = build_model(&spec(ModelKind::Logistic), 5, 4, 3).unwrap();
    check(
        "dense + softmax ce",
        soft.as_mut(),
        &batch(7, 5, classes(7, 4), 4),
    );
}

#[test]
fn mlp_relu_and_tanh() {
    for act in ["relu", "tanh"] {
        let s: ModelSpec = serde_json::from_str(&format!(
            r#"{{"kind":"mlp","hidden":[6,5],"activation":"{act}"}}"#
        ))
        .unwrap();
        let mut m = build_model(&s, 4, 3, 5).unwrap();
        check(
            &format!("mlp {act}"),
            m.as_mut(),
            &batch(8, 4, classes(8, 3), 6),
        );
    }
    let s: ModelSpec =
        serde_json::from_str(r#"{"kind":"mlp","hidden":[5],"task":"regression"}"#).unwrap();
    let mut m = build_model(&s, 3, 2, 7).unwrap();
    let y = Targets::Real((0..10).map(|i| i as f32 * 0.1).collect());
    check("mlp regression", m.as_mut(), &batch(5, 3, y, 8));
}

/// dense -> to channel-major -> conv(same) -> relu -> pool (odd edge) -> conv(valid) -> relu ->
/// pool -> flatten -> dense: every conv-stack layer gets a checked input gradient.
#[test]
fn conv_pool_permute_flatten() {
    let (c, h, w) = (2, 7, 6);
    let g1 = ConvGeom {
        c_in: c,
        h,
        w,
        k: 3,
        pad: 1,
    };
    let g3 = ConvGeom {
        c_in: 3,
        h: 4,
        w: 5,
        k: 3,
        pad: 0,
    };
    let conv1 = Conv2d::new(g1, 3);
    let pool1 = MaxPool2::new(3, g1.ho(), g1.wo()); // 7x6 -> 3x3
    let up = Dense::new(
        3 * 9,
        3 * 4 * 5,
        Init::Xavier {
            fan_in: 27,
            fan_out: 60,
        },
    );
    let conv2 = Conv2d::new(g3, 2); // valid: 4x5 -> 2x3
    let pool2 = MaxPool2::new(2, g3.ho(), g3.wo()); // 2x3 -> 1x1
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Dense::xavier(5, c * h * w)),
        Box::new(Permute::to_channel_major(c, h * w)),
        Box::new(conv1),
        Box::new(Activation::new(ActivationKind::Relu, 3 * h * w)),
        Box::new(pool1),
        Box::new(Permute::flatten(3, 9)),
        Box::new(up),
        Box::new(Permute::to_channel_major(3, 20)),
        Box::new(conv2),
        Box::new(Activation::new(ActivationKind::Tanh, 2 * 6)),
        Box::new(pool2),
        Box::new(Permute::flatten(2, 1)),
        Box::new(Dense::xavier(2, 3)),
    ];
    let mut m = Network::new("cnn-check", layers, Task::Multiclass { classes: 3 }, 11).unwrap();
    check("conv stack", &mut m, &batch(3, 5, classes(3, 3), 12));
}

#[test]
fn cnn_from_spec() {
    let s: ModelSpec = serde_json::from_str(
        r#"{"kind":"cnn","image":[1,6,6],"channels":[2,3],"hidden":[4],"classes":3}"#,
    )
    .unwrap();
    let mut m = build_model(&s, 36, 3, 13).unwrap();
    check("cnn spec", m.as_mut(), &batch(4, 36, classes(4, 3), 14));
}
