//! Embedding models without a network: gradients against finite differences, a small MF that
//! learns through local table shards, and the spec's errors.

use super::*;
use crate::batch::{Batch, Targets};
use crate::model::spec::{ModelKind, ModelSpec};
use crate::model::{Model, SliceSink};

fn names() -> Vec<String> {
    ["age", "userId", "movieId"].map(String::from).to_vec()
}

fn spec(kind: ModelKind) -> ModelSpec {
    let mut s = ModelSpec::new(kind);
    s.embeddings = vec![
        EmbeddingSpec::new("userId", 3),
        EmbeddingSpec {
            buckets: Some(50),
            ..EmbeddingSpec::new("movieId", 3)
        },
    ];
    s.table_optimizer = Some(TableOptimizerSpec {
        kind: TableOptimizerKind::Sgd,
        lr: None,
        init_std: Some(0.5),
        l2: None,
        decay: None,
    });
    if kind == ModelKind::WideDeep {
        s.hidden = vec![4];
        s.activation = Some(crate::model::ActivationName::Tanh);
    }
    s
}

fn batch(rows: &[(f32, u32, u32, f32)]) -> Batch {
    Batch {
        x: rows
            .iter()
            .flat_map(|r| [r.0, r.1 as f32, r.2 as f32])
            .collect(),
        rows: rows.len(),
        cols: 3,
        y: Targets::Real(rows.iter().map(|r| r.3).collect()),
    }
}

pub(super) fn shards(m: &mut dyn Model) -> Vec<TableShard> {
    let s = m.sparse().expect("an embedding model");
    let o = RowOptimizer::new(TableOptimizerKind::Sgd);
    s.tables()
        .iter()
        .enumerate()
        .map(|(t, i)| TableShard::new(i.clone(), t, 3, o))
        .collect()
}

pub(super) fn pull(m: &mut dyn Model, tables: &mut [TableShard], b: &Batch) {
    let s = m.sparse().unwrap();
    let ids = s.batch_ids(&b.x, b.rows).unwrap();
    let rows = ids
        .into_iter()
        .zip(tables.iter_mut())
        .map(|(ids, t)| {
            let mut values = Vec::new();
            t.read(&ids, &mut values);
            lockstep_tensor::SparseRows {
                dim: t.info().width,
                ids,
                values,
            }
        })
        .collect();
    s.install_rows(rows).unwrap();
}

pub(super) fn loss_and_grads(
    m: &mut dyn Model,
    b: &Batch,
) -> (f64, Vec<f32>, Vec<lockstep_tensor::SparseRows>) {
    let mut g = vec![0.0; m.params().len()];
    let mut cb = |_, _: &mut [f32]| {};
    let out = m
        .forward_backward_into(b, b.rows as f32, &mut SliceSink::new(&mut g, &mut cb))
        .unwrap();
    (
        out.loss_sum / b.rows as f64,
        g,
        m.sparse().unwrap().take_grads(),
    )
}

#[test]
fn gradients_match_finite_differences() {
    let b = batch(&[(0.3, 1, 7, 1.0), (-0.2, 2, 7, -0.5), (0.9, 1, 9, 0.25)]);
    for kind in [ModelKind::Mf, ModelKind::WideDeep] {
        let mut m = build_embedding_model(&spec(kind), &names(), 1, 11, 0.0).unwrap();
        let mut tables = shards(m.as_mut());
        pull(m.as_mut(), &mut tables, &b);
        let (_, g, sparse) = loss_and_grads(m.as_mut(), &b);
        let h = 1e-3f32;
        for (i, &gi) in g.iter().enumerate() {
            let p0 = m.params()[i];
            m.params_mut()[i] = p0 + h;
            let up = m.evaluate(&b).unwrap().loss;
            m.params_mut()[i] = p0 - h;
            let down = m.evaluate(&b).unwrap().loss;
            m.params_mut()[i] = p0;
            let num = (up - down) / (2.0 * h as f64);
            assert!(
                (num - gi as f64).abs() < 2e-3,
                "{kind:?} dense {i}: {num} vs {gi}"
            );
        }
        // A table row: nudge it in the shard, pull again.
        for (t, s) in sparse.iter().enumerate() {
            assert!(s.is_valid());
            for k in 0..s.dim {
                let one = lockstep_tensor::SparseRows {
                    dim: s.dim,
                    ids: vec![s.ids[0]],
                    values: (0..s.dim).map(|j| if j == k { 1.0 } else { 0.0 }).collect(),
                };
                let mut plus = one.clone();
                plus.scale(-h); // SGD at lr 1 subtracts: this adds h
                tables[t].apply(&plus, 1.0, 0);
                pull(m.as_mut(), &mut tables, &b);
                let up = m.evaluate(&b).unwrap().loss;
                let mut minus = one;
                minus.scale(2.0 * h);
                tables[t].apply(&minus, 1.0, 0);
                pull(m.as_mut(), &mut tables, &b);
                let down = m.evaluate(&b).unwrap().loss;
                let mut back = lockstep_tensor::SparseRows {
                    dim: s.dim,
                    ids: vec![s.ids[0]],
                    values: vec![0.0; s.dim],
                };
                back.values[k] = -h;
                tables[t].apply(&back, 1.0, 0);
                let num = (up - down) / (2.0 * h as f64);
                let ana = s.row(0)[k] as f64;
                assert!(
                    (num - ana).abs() < 2e-3,
                    "{kind:?} table {t} col {k}: {num} vs {ana}"
                );
            }
        }
        assert_eq!(sparse[0].ids, vec![1, 2], "user ids combined and sorted");
    }
}

#[test]
fn mf_learns_a_low_rank_rating_matrix_through_table_shards() {
    // Ratings r(u, i) = a_u * b_i + 3, 20 users x 20 items, all pairs.
    let rows: Vec<(f32, u32, u32, f32)> = (0..20u32)
        .flat_map(|u| {
            (0..20u32).map(move |i| {
                (
                    0.0,
                    u,
                    i,
                    3.0 + ((u % 5) as f32 - 2.0) * ((i % 4) as f32 - 1.5) * 0.5,
                )
            })
        })
        .collect();
    let b = batch(&rows);
    let mut s = spec(ModelKind::Mf);
    s.embeddings[1].buckets = None;
    let mut m = build_embedding_model(&s, &names(), 1, 5, 0.0).unwrap();
    let mut tables = shards(m.as_mut());
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..400 {
        pull(m.as_mut(), &mut tables, &b);
        let (loss, g, sparse) = loss_and_grads(m.as_mut(), &b);
        first.get_or_insert(loss);
        last = loss;
        m.params_mut()
            .iter_mut()
            .zip(&g)
            .for_each(|(p, g)| *p -= 0.5 * g);
        for (t, s) in sparse.iter().enumerate() {
            tables[t].apply(s, 2.0, 0);
        }
    }
    let first = first.unwrap();
    assert!(last < first * 0.05, "loss {first} -> {last}");
    assert_eq!(tables[0].rows(), 20, "only the touched rows exist");
}

#[test]
fn micro_batch_gradients_sum_in_a_tree_over_calls() {
    let b = batch(&[
        (0.3, 1, 7, 1.0),
        (-0.2, 2, 7, -0.5),
        (0.9, 1, 9, 0.25),
        (0.1, 4, 7, 2.0),
    ]);
    let mut m = build_embedding_model(&spec(ModelKind::Mf), &names(), 1, 11, 0.0).unwrap();
    let mut tables = shards(m.as_mut());
    pull(m.as_mut(), &mut tables, &b);
    let halves = [b.slice_rows(0..2), b.slice_rows(2..4)];
    let mut parts = Vec::new();
    for h in &halves {
        parts.push(loss_and_grads(m.as_mut(), h).2);
    }
    for h in &halves {
        let mut g = vec![0.0; m.params().len()];
        let mut cb = |_, _: &mut [f32]| {};
        m.forward_backward_into(h, 2.0, &mut SliceSink::new(&mut g, &mut cb))
            .unwrap();
    }
    let together = m.sparse().unwrap().take_grads();
    for t in 0..2 {
        let mut a = parts[0][t].clone();
        let mut c = parts[1][t].clone();
        a.scale(1.0);
        c.scale(1.0);
        assert_eq!(together[t], lockstep_tensor::SparseRows::merge_add(&a, &c));
    }
}

#[test]
fn bad_specs_and_ids_are_named() {
    let err = |s: &ModelSpec| {
        build_embedding_model(s, &names(), 1, 1, 0.0)
            .err()
            .unwrap()
            .to_string()
    };
    let mut s = spec(ModelKind::Mf);
    s.embeddings[0].dim = 0;
    assert!(err(&s).contains("embeddings[0].dim"), "{}", err(&s));
    let mut s = spec(ModelKind::Mf);
    s.embeddings[1].column = "title".into();
    assert!(
        err(&s).contains("no feature column \"title\""),
        "{}",
        err(&s)
    );
    let names2: Vec<String> = ["age", "userId", "movieId=Heat"].map(String::from).to_vec();
    let e = build_embedding_model(&spec(ModelKind::Mf), &names2, 1, 1, 0.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("string column"), "{e}");
    let mut s = spec(ModelKind::Mf);
    s.embeddings.pop();
    assert!(err(&s).contains("at least 2"), "{}", err(&s));
    let m = build_embedding_model(&spec(ModelKind::Mf), &names(), 1, 1, 0.0).unwrap();
    let mut m = m;
    let b = batch(&[(0.0, 1, 2, 0.0)]);
    let mut x = b.x.clone();
    x[1] = f32::NAN;
    let e = m
        .sparse()
        .unwrap()
        .batch_ids(&x, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("userId") && e.contains("row 0"), "{e}");
    let e = m.predict(&b.x, 1).err().unwrap().to_string();
    assert!(e.contains("was not pulled"), "{e}");
}
