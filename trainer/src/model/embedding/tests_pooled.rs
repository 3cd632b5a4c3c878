//! Multi-valued id columns: pooled rows' gradients against finite differences (sum and mean,
//! both architectures), empty cells, and the keys' errors.

use super::tests::{loss_and_grads, pull, shards};
use super::*;
use crate::batch::{Batch, Targets};
use crate::data::ID_PAD;
use crate::model::spec::{ModelKind, ModelSpec};

fn names() -> Vec<String> {
    ["age", "userId", "genres[0]", "genres[1]", "genres[2]"]
        .map(String::from)
        .to_vec()
}

fn spec(kind: ModelKind, pooling: Pooling) -> ModelSpec {
    let mut s = ModelSpec::new(kind);
    s.embeddings = vec![
        EmbeddingSpec::new("userId", 3),
        EmbeddingSpec {
            pooling: Some(pooling),
            ..EmbeddingSpec::new("genres", 3)
        },
    ];
    s.table_optimizer = Some(TableOptimizerSpec {
        init_std: Some(0.5),
        ..TableOptimizerSpec::sgd()
    });
    if kind == ModelKind::WideDeep {
        s.hidden = vec![4];
        s.activation = Some(crate::model::ActivationName::Tanh);
    }
    s
}

/// Rows of (age, user, genres (up to 3), label).
fn batch(rows: &[(f32, u32, &[u32], f32)]) -> Batch {
    let x = rows
        .iter()
        .flat_map(|r| {
            let mut v = vec![r.0, r.1 as f32, ID_PAD, ID_PAD, ID_PAD];
            for (k, &g) in r.2.iter().enumerate() {
                v[2 + k] = g as f32;
            }
            v
        })
        .collect();
    Batch {
        x,
        rows: rows.len(),
        cols: 5,
        y: Targets::Real(rows.iter().map(|r| r.3).collect()),
    }
}

fn sample() -> Batch {
    batch(&[
        (0.3, 1, &[4, 2], 1.0),
        (-0.2, 2, &[], -0.5),
        (0.9, 1, &[2, 7, 4], 0.25),
        (0.4, 3, &[7], 0.5),
    ])
}

#[test]
fn pooled_gradients_match_finite_differences() {
    let b = sample();
    let h = 1e-3f32;
    for kind in [ModelKind::Mf, ModelKind::WideDeep] {
        for pooling in [Pooling::Sum, Pooling::Mean] {
            let mut m = build_embedding_model(&spec(kind, pooling), &names(), 1, 11, 0.0).unwrap();
            let mut tables = shards(m.as_mut());
            pull(m.as_mut(), &mut tables, &b);
            let (_, _, sparse) = loss_and_grads(m.as_mut(), &b);
            assert_eq!(sparse[1].ids, vec![2, 4, 7], "genres combined and sorted");
            for (t, s) in sparse.iter().enumerate() {
                for (i, &id) in s.ids.iter().enumerate() {
                    for k in 0..s.dim {
                        let nudge = |tables: &mut [TableShard], by: f32| {
                            let mut d = lockstep_tensor::SparseRows {
                                dim: s.dim,
                                ids: vec![id],
                                values: vec![0.0; s.dim],
                            };
                            d.values[k] = -by; // SGD at lr 1 subtracts
                            tables[t].apply(&d, 1.0, 0);
                        };
                        nudge(&mut tables, h);
                        pull(m.as_mut(), &mut tables, &b);
                        let up = m.evaluate(&b).unwrap().loss;
                        nudge(&mut tables, -2.0 * h);
                        pull(m.as_mut(), &mut tables, &b);
                        let down = m.evaluate(&b).unwrap().loss;
                        nudge(&mut tables, h);
                        let num = (up - down) / (2.0 * h as f64);
                        let ana = s.row(i)[k] as f64;
                        assert!(
                            (num - ana).abs() < 2e-3,
                            "{kind:?} {pooling:?} table {t} id {id} col {k}: {num} vs {ana}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn an_empty_cell_pools_to_zeros() {
    let mut m =
        build_embedding_model(&spec(ModelKind::Mf, Pooling::Sum), &names(), 1, 3, 0.0).unwrap();
    let mut tables = shards(m.as_mut());
    let b = batch(&[(0.0, 5, &[], 0.0)]);
    pull(m.as_mut(), &mut tables, &b);
    let p = m.predict(&b.x, 1).unwrap()[0];
    // No genre rows: the prediction is the global bias and the user's bias (0 at the start).
    assert_eq!(p, m.params()[0]);
    let (_, _, sparse) = loss_and_grads(m.as_mut(), &b);
    assert!(sparse[1].ids.is_empty(), "no genre row touched");
}

#[test]
fn pooling_keys_are_checked_and_named() {
    let err = |s: &ModelSpec, names: &[String]| {
        build_embedding_model(s, names, 1, 1, 0.0)
            .err()
            .unwrap()
            .to_string()
    };
    let mut s = spec(ModelKind::Mf, Pooling::Sum);
    s.embeddings[0].separator = Some(",".into());
    let e = err(&s, &names());
    assert!(
        e.contains("embeddings[0].separator") && e.contains("pooling"),
        "{e}"
    );
    let mut s = spec(ModelKind::Mf, Pooling::Sum);
    s.embeddings[1].separator = Some(String::new());
    assert!(err(&s, &names()).contains("embeddings[1].separator"));
    let mut s = spec(ModelKind::Mf, Pooling::Sum);
    s.embeddings[1].max_values = Some(0);
    assert!(err(&s, &names()).contains("embeddings[1].max_values"));
    let mut s = spec(ModelKind::Mf, Pooling::Sum);
    s.embeddings[0].pooling = Some(Pooling::Mean);
    let e = err(&s, &names());
    assert!(
        e.contains("embeddings[0].pooling") && e.contains("not a multi-valued"),
        "{e}"
    );
    let mut s = spec(ModelKind::Mf, Pooling::Sum);
    s.embeddings[1].dim = 0;
    assert!(err(&s, &names()).contains("embeddings[1].dim"));
    let short: Vec<String> = ["userId", "age"].map(String::from).to_vec();
    let e = err(&spec(ModelKind::Mf, Pooling::Sum), &short);
    assert!(e.contains("no feature column \"genres\""), "{e}");
}

#[test]
fn the_dense_features_leave_out_every_slot() {
    let s = spec(ModelKind::WideDeep, Pooling::Mean);
    let m = build_embedding_model(&s, &names(), 1, 1, 0.0).unwrap();
    // The MLP's input: two vectors of 3 and one dense feature (age).
    assert_eq!(m.layout()[0].shape, vec![4, 7], "{:?}", m.layout()[0]);
}
