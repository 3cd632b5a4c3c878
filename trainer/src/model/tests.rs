//! Model tests: determinism, bucket order, shard scaling, spec errors, and small models that
//! train to low loss on synthetic data.

use super::*;
use crate::batch::Targets;
use crate::init::rng;
use crate::optim::{Optimizer, OptimizerKind, OptimizerSpec};
use rand::Rng;

fn spec(json: &str) -> ModelSpec {
    serde_json::from_str(json).unwrap()
}

/// Two Gaussian-ish blobs per class on a circle, `k` classes, `dim` features.
fn blobs(rows: usize, dim: usize, k: u32, seed: u64) -> Batch {
    let mut r = rng(seed, 5);
    let mut x = Vec::with_capacity(rows * dim);
    let mut y = Vec::with_capacity(rows);
    for i in 0..rows {
        let c = (i as u32) % k;
        for d in 0..dim {
            let centre = ((c as usize * 3 + d) as f32 * 1.3).sin() * 2.0;
            x.push(centre + r.gen_range(-0.5f32..0.5));
        }
        y.push(c);
    }
    Batch {
        x,
        rows,
        cols: dim,
        y: Targets::Class(y),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn train(m: &mut dyn Model, b: &Batch, opt: &OptimizerSpec, steps: usize) -> f64 {
    let mut o = Optimizer::new(opt, m.params().len()).unwrap();
    let mut g = vec![0.0; m.params().len()];
    let mut last = 0.0;
    for _ in 0..steps {
        last = m.forward_backward(b, &mut g, &mut |_, _| {}).unwrap().loss;
        o.step(m.params_mut(), &g).unwrap();
    }
    last
}

#[test]
fn same_seed_same_bits() {
    let s = spec(r#"{"kind":"cnn","image":[1,8,8],"channels":[3],"hidden":[5]}"#);
    let b = blobs(6, 64, 4, 1);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut m = build_model(&s, 64, 4, 42).unwrap();
        let p0 = bits(m.params());
        let mut g = vec![0.0; p0.len()];
        let loss = m.forward_backward(&b, &mut g, &mut |_, _| {}).unwrap().loss;
        runs.push((p0, bits(&g), loss.to_bits()));
    }
    assert_eq!(runs[0], runs[1]);
    let other = build_model(&s, 64, 4, 43).unwrap();
    assert_ne!(runs[0].0, bits(other.params()));
}

#[test]
fn buckets_are_contiguous_last_layer_first() {
    let mut m = build_model(&spec(r#"{"kind":"mlp","hidden":[7,5]}"#), 4, 3, 1).unwrap();
    let names: Vec<_> = m
        .layout()
        .iter()
        .map(|p| (p.name.as_str(), p.offset, p.len))
        .collect();
    assert_eq!(
        names,
        [
            ("dense4.weight", 0, 15),
            ("dense4.bias", 15, 3),
            ("dense2.weight", 18, 35),
            ("dense2.bias", 53, 5),
            ("dense0.weight", 58, 28),
            ("dense0.bias", 86, 7)
        ]
    );
    let mut got = Vec::new();
    let mut g = vec![f32::NAN; m.params().len()];
    m.forward_backward(&blobs(5, 4, 3, 2), &mut g, &mut |r, s| {
        assert!(
            s.iter().all(|v| v.is_finite()),
            "bucket {r:?} delivered before it was final"
        );
        got.push(r);
    })
    .unwrap();
    assert_eq!(got, [0..18, 18..58, 58..93]);
    assert_eq!(got, m.buckets());
}

#[test]
fn summed_scaled_shards_equal_the_full_batch() {
    let mut m = build_model(&spec(r#"{"kind":"mlp","hidden":[6]}"#), 3, 4, 3).unwrap();
    let full = blobs(10, 3, 4, 3);
    let n = m.params().len();
    let (mut gf, mut g1, mut g2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let lf = m.forward_backward(&full, &mut gf, &mut |_, _| {}).unwrap();
    let part = |lo: usize, hi: usize| Batch {
        x: full.x[lo * 3..hi * 3].to_vec(),
        rows: hi - lo,
        cols: 3,
        y: Targets::Class(match &full.y {
            Targets::Class(c) => c[lo..hi].to_vec(),
            Targets::Real(_) => unreachable!(),
        }),
    };
    let l1 = m
        .forward_backward_scaled(&part(0, 3), 10.0, &mut g1, &mut |_, _| {})
        .unwrap();
    let l2 = m
        .forward_backward_scaled(&part(3, 10), 10.0, &mut g2, &mut |_, _| {})
        .unwrap();
    assert!((l1.loss_sum + l2.loss_sum - lf.loss_sum).abs() < 1e-5);
    for i in 0..n {
        assert!((g1[i] + g2[i] - gf[i]).abs() < 1e-6, "param {i}");
    }
    let empty = Batch {
        x: vec![],
        rows: 0,
        cols: 3,
        y: Targets::Class(vec![]),
    };
    let mut count = 0;
    m.forward_backward_scaled(&empty, 10.0, &mut g1, &mut |_, _| count += 1)
        .unwrap();
    assert_eq!(
        (count, g1.iter().all(|&v| v == 0.0)),
        (m.buckets().len(), true)
    );
}

#[test]
fn spec_errors_name_the_problem() {
    let cnn = spec(r#"{"kind":"cnn","image":[1,28,28],"channels":[8]}"#);
    let e = build_model(&cnn, 64, 10, 0).err().unwrap().to_string();
    assert!(
        e.contains("[1, 28, 28]") && e.contains("784") && e.contains("64"),
        "{e}"
    );
    let e = build_model(&spec(r#"{"kind":"linear","hidden":[3]}"#), 4, 1, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden"), "{e}");
    let e = build_model(&spec(r#"{"kind":"logistic","classes":3}"#), 4, 2, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("classes = 3") && e.contains("2 classes"), "{e}");
    let e = build_model(
        &spec(r#"{"kind":"cnn","image":[1,4,4],"channels":[2,2,2]}"#),
        16,
        3,
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("conv block 2"), "{e}");
    assert!(
        serde_json::from_str::<ModelSpec>(r#"{"kind":"mlp","hiden":[3]}"#)
            .unwrap_err()
            .to_string()
            .contains("hiden")
    );
}

#[test]
fn bad_input_and_non_finite_loss_are_errors() {
    let mut m = build_model(&ModelSpec::new(ModelKind::Logistic), 3, 2, 0).unwrap();
    let mut g = vec![0.0; m.params().len()];
    let b = Batch {
        x: vec![0.0; 8],
        rows: 2,
        cols: 4,
        y: Targets::Real(vec![0.0, 1.0]),
    };
    let e = m.forward_backward(&b, &mut g, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::InputWidth {
                expected: 3,
                actual: 4,
                ..
            }
        ),
        "{e}"
    );
    m.params_mut()[0] = f32::NAN;
    let b = Batch {
        x: vec![1.0; 6],
        rows: 2,
        cols: 3,
        y: Targets::Real(vec![0.0, 1.0]),
    };
    let mut delivered = false;
    let e = m
        .forward_backward(&b, &mut g, &mut |_, _| delivered = true)
        .unwrap_err();
    assert!(
        matches!(e, ModelError::NonFiniteLoss { rows: 2, .. }) && !delivered,
        "{e}"
    );
}

#[test]
fn mlp_and_logistic_learn_blobs() {
    let b = blobs(120, 4, 3, 7);
    let mut m = build_model(
        &spec(r#"{"kind":"mlp","hidden":[16],"activation":"tanh"}"#),
        4,
        3,
        7,
    )
    .unwrap();
    let mut adam = OptimizerSpec::new(OptimizerKind::Adam, 0.05);
    adam.beta2 = Some(0.99);
    let loss = train(m.as_mut(), &b, &adam, 150);
    assert!(loss < 0.05, "mlp loss {loss}");
    let p = m.predict(&b.x, b.rows).unwrap();
    assert!(p
        .chunks(3)
        .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5));

    let mut lin = build_model(&ModelSpec::new(ModelKind::Linear), 3, 1, 1).unwrap();
    let x: Vec<f32> = (0..90)
        .map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0)
        .collect();
    let y = x
        .chunks(3)
        .map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2] + 0.3)
        .collect();
    let reg = Batch {
        x,
        rows: 30,
        cols: 3,
        y: Targets::Real(y),
    };
    let mut sgd = OptimizerSpec::new(OptimizerKind::Sgd, 0.1);
    sgd.momentum = Some(0.9);
    let loss = train(lin.as_mut(), &reg, &sgd, 200);
    assert!(loss < 1e-6, "linear loss {loss}");
}

/// Images with a bright bar in one of four places; a small CNN must tell which.
#[test]
fn small_cnn_learns_bars() {
    let (rows, hw) = (64, 8);
    let mut r = rng(3, 6);
    let mut x = vec![0.0f32; rows * 2 * hw * hw];
    let mut y = Vec::new();
    for (n, img) in x.chunks_mut(2 * hw * hw).enumerate() {
        let c = (n % 4) as u32;
        img.iter_mut().for_each(|v| *v = r.gen_range(0.0..0.3));
        let at = 1 + 4 * (c as usize % 2) + r.gen_range(0..2);
        for i in 0..hw {
            let px = if c < 2 { at * hw + i } else { i * hw + at };
            img[(c as usize % 2) * hw * hw + px] += 1.0;
        }
        y.push(c);
    }
    let b = Batch {
        x,
        rows,
        cols: 2 * hw * hw,
        y: Targets::Class(y),
    };
    let s = spec(r#"{"kind":"cnn","image":[2,8,8],"channels":[4,8],"hidden":[16]}"#);
    let mut m = build_model(&s, 128, 4, 9).unwrap();
    let loss = train(
        m.as_mut(),
        &b,
        &OptimizerSpec::new(OptimizerKind::Adam, 0.01),
        80,
    );
    assert!(loss < 0.05, "cnn loss {loss}");
}

#[test]
fn kmeans_and_pca_specs_need_their_size_and_refuse_other_fields() {
    let mut s = ModelSpec::new(ModelKind::Kmeans);
    let e = build_model(&s, 4, 1, 0).err().unwrap().to_string();
    assert!(e.contains("clusters = K"), "{e}");
    s.clusters = Some(3);
    let m = build_model(&s, 4, 1, 0).unwrap();
    assert_eq!((m.name(), m.params().len()), ("kmeans", 3 * 4 * 2 + 3));
    s.components = Some(2);
    let e = build_model(&s, 4, 1, 0).err().unwrap().to_string();
    assert!(e.contains("components"), "{e}");
    let mut p = ModelSpec::new(ModelKind::Pca);
    p.components = Some(5);
    let e = build_model(&p, 4, 1, 0).err().unwrap().to_string();
    assert!(e.contains("between 1 and the 4 features"), "{e}");
    p.components = Some(2);
    let m = build_model(&p, 4, 1, 0).unwrap();
    assert_eq!((m.out_dim(), m.unsupervised()), (2, true));
}
