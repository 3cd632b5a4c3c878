//! Optimizer tests: known one-step values, exact save/restore continuation, shard equivalence.

use super::*;

fn spec(kind: OptimizerKind, lr: f32) -> OptimizerSpec {
    OptimizerSpec::new(kind, lr)
}

fn run(opt: &mut Optimizer, p: &mut [f32], steps: usize) {
    for s in 0..steps {
        let g: Vec<f32> = p
            .iter()
            .enumerate()
            .map(|(i, &x)| x * 0.3 + ((i + s) as f32).sin())
            .collect();
        opt.step(p, &g).unwrap();
    }
}

#[test]
fn sgd_known_values() {
    let mut p = [1.0f32];
    let mut o = Optimizer::new(&spec(OptimizerKind::Sgd, 0.1), 1).unwrap();
    o.step(&mut p, &[0.5]).unwrap();
    assert_eq!(p, [0.95]);

    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.momentum = Some(0.9);
    let mut o = Optimizer::new(&s, 1).unwrap();
    let mut p = [1.0f32];
    o.step(&mut p, &[0.5]).unwrap();
    o.step(&mut p, &[0.5]).unwrap();
    assert!((p[0] - 0.855).abs() < 1e-6, "{p:?}");

    s.nesterov = Some(true);
    let mut o = Optimizer::new(&s, 1).unwrap();
    let mut p = [1.0f32];
    o.step(&mut p, &[0.5]).unwrap();
    assert!((p[0] - 0.905).abs() < 1e-6, "{p:?}");

    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.weight_decay = 0.5;
    let mut o = Optimizer::new(&s, 1).unwrap();
    let mut p = [2.0f32];
    o.step(&mut p, &[0.0]).unwrap();
    assert!((p[0] - 1.9).abs() < 1e-6);
}

#[test]
fn adam_and_adamw_known_values() {
    // First Adam step moves each parameter by lr * sign(g) (bias correction makes m/sqrt(v) = 1).
    let mut o = Optimizer::new(&spec(OptimizerKind::Adam, 0.1), 2).unwrap();
    let mut p = [1.0f32, 1.0];
    o.step(&mut p, &[3.0, -0.01]).unwrap();
    assert!(
        (p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-5,
        "{p:?}"
    );

    let mut s = spec(OptimizerKind::Adamw, 0.1);
    s.weight_decay = 0.1;
    let mut o = Optimizer::new(&s, 1).unwrap();
    let mut p = [1.0f32];
    o.step(&mut p, &[2.0]).unwrap();
    assert!((p[0] - 0.89).abs() < 1e-6, "{p:?}");
}

#[test]
fn restore_continues_bit_identically() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ] {
        let mut s = spec(kind, 0.05);
        s.weight_decay = 0.01;
        if kind == OptimizerKind::Sgd {
            s.momentum = Some(0.9);
            s.nesterov = Some(true);
        }
        s.schedule = ScheduleKind::Cosine;
        s.warmup_steps = 2;
        s.total_steps = Some(10);
        let mut a = Optimizer::new(&s, 5).unwrap();
        let mut pa: Vec<f32> = (0..5).map(|i| i as f32 - 2.0).collect();
        run(&mut a, &mut pa, 3);
        let (saved_state, mut pb) = (a.state(), pa.clone());
        run(&mut a, &mut pa, 4);
        let mut b = Optimizer::new(&s, 5).unwrap();
        b.load_state(&saved_state).unwrap();
        run(&mut b, &mut pb, 4);
        assert_eq!(
            pa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            pb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(a.state(), b.state());
    }
}

#[test]
fn load_state_rejects_mismatch() {
    let adam = Optimizer::new(&spec(OptimizerKind::Adam, 0.1), 3).unwrap();
    let mut sgd = Optimizer::new(&spec(OptimizerKind::Sgd, 0.1), 3).unwrap();
    assert!(sgd
        .load_state(&adam.state())
        .unwrap_err()
        .to_string()
        .contains("exp_avg"));
    let mut short = Optimizer::new(&spec(OptimizerKind::Adam, 0.1), 2).unwrap();
    assert!(short
        .load_state(&adam.state())
        .unwrap_err()
        .to_string()
        .contains("has 3 values"));
    let mut p = [0.0f32; 2];
    assert!(matches!(
        sgd.step(&mut p, &[0.0; 2]),
        Err(OptimError::Len { what: "params", .. })
    ));
}

#[test]
fn shards_match_the_whole() {
    let mut s = spec(OptimizerKind::Adamw, 0.01);
    s.weight_decay = 0.1;
    let mut whole = Optimizer::new(&s, 7).unwrap();
    let mut p: Vec<f32> = (0..7).map(|i| (i as f32).cos()).collect();
    run(&mut whole, &mut p, 2);
    let mut lo = whole.shard(0..3).unwrap();
    let mut hi = whole.shard(3..7).unwrap();
    let g: Vec<f32> = (0..7).map(|i| (i as f32 * 0.7).sin()).collect();
    let mut q = p.clone();
    whole.step(&mut p, &g).unwrap();
    lo.step(&mut q[..3], &g[..3]).unwrap();
    hi.step(&mut q[3..], &g[3..]).unwrap();
    assert_eq!(p, q);
    assert!(whole.shard(5..9).is_err());
}

#[test]
fn l2_adds_its_gradient_to_the_weights_only() {
    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.l2 = 0.5;
    // Parameters 0..2 are weights, 2 is a bias.
    let mut o = Optimizer::new(&s, 3)
        .unwrap()
        .with_penalized(std::iter::once(0..2));
    let mut p = [1.0f32, -2.0, 4.0];
    o.step(&mut p, &[0.0, 0.0, 0.0]).unwrap();
    // w <- w - lr * l2 * w; the bias does not move without a data gradient.
    assert_eq!(p, [1.0 - 0.05, -2.0 + 0.1, 4.0]);
    // Adam sees the penalised gradient too; AdamW with l2 alike.
    for kind in [OptimizerKind::Adam, OptimizerKind::Adamw] {
        let mut s = spec(kind, 0.1);
        s.l2 = 0.5;
        let mut o = Optimizer::new(&s, 2)
            .unwrap()
            .with_penalized(std::iter::once(0..1));
        let mut p = [1.0f32, 1.0];
        o.step(&mut p, &[0.0, 0.0]).unwrap();
        assert!(p[0] < 1.0 && p[1] == 1.0, "{kind:?}: {p:?}");
    }
}

#[test]
fn l1_soft_thresholds_the_weights_after_the_step() {
    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.l1 = 1.0;
    let mut o = Optimizer::new(&s, 5)
        .unwrap()
        .with_penalized(std::iter::once(0..4));
    let mut p = [0.3f32, -0.3, 0.05, -0.05, 0.05];
    o.step(&mut p, &[0.0; 5]).unwrap();
    // Threshold lr * l1 = 0.1: large weights shrink by it, small ones become exactly zero;
    // the bias (index 4) is left alone.
    let want = [0.3f32 - 0.1, -(0.3f32 - 0.1), 0.0, 0.0, 0.05];
    assert_eq!(p, want);
    assert_eq!(p[3].to_bits() & 0x7fff_ffff, 0, "exactly zero");
    // A zero weight whose gradient is smaller than the threshold stays zero.
    let mut p = [0.0f32, 0.0, 0.0, 0.0, 0.0];
    o.step(&mut p, &[0.5, -0.5, 2.0, 0.0, 0.0]).unwrap();
    assert_eq!(&p[..2], &[0.0, 0.0]);
    assert!((p[2] - (-0.2 + 0.1)).abs() < 1e-7, "{}", p[2]);
}

#[test]
fn penalties_are_validated_and_sharded_with_the_parameters() {
    let mut s = spec(OptimizerKind::Adam, 0.1);
    s.l1 = 0.1;
    let e = Optimizer::new(&s, 1).unwrap_err().to_string();
    assert!(e.contains("l1 = 0.1 needs kind = \"sgd\""), "{e}");
    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.l2 = -1.0;
    let e = Optimizer::new(&s, 1).unwrap_err().to_string();
    assert!(e.contains("l2 = -1 must be >= 0"), "{e}");
    // A shard keeps the penalised part of its range, re-based.
    let mut s = spec(OptimizerKind::Sgd, 0.1);
    s.l2 = 0.5;
    s.l1 = 0.01;
    let whole = Optimizer::new(&s, 10).unwrap().with_penalized([0..3, 5..8]);
    assert_eq!(whole.shard(2..7).unwrap().penalized(), &[0..1, 3..5]);
    assert_eq!(
        whole.shard(3..5).unwrap().penalized(),
        &[] as &[Range<usize>]
    );
    // ... and computes on its range what the whole computes there.
    let mut pw: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.4).collect();
    let g: Vec<f32> = (0..10).map(|i| (i as f32).cos()).collect();
    let mut ps = pw[2..7].to_vec();
    let mut w = whole.clone();
    w.step(&mut pw, &g).unwrap();
    let mut sh = whole.shard(2..7).unwrap();
    sh.step(&mut ps, &g[2..7]).unwrap();
    assert_eq!(&pw[2..7], &ps[..]);
}
