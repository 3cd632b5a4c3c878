//! Held-out evaluation split across workers: every worker count gives the same bits as one
//! process evaluating alone, and shares that do not cover the split are refused by name.

use lockstep_runtime::job;
use lockstep_runtime::job::held_out::{combine, share, EvalShare};
use lockstep_trainer::data::Task as DataTask;
use lockstep_trainer::model::{build_model, ModelSpec, PREDICT_CHUNK};
use lockstep_trainer::{Batch, Targets};

/// `rows` rows of `dim` features, deterministic and irregular.
fn rows(rows: usize, dim: usize, y: impl Fn(usize) -> f32) -> (Vec<f32>, Vec<f32>) {
    let x = (0..rows * dim)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    (x, (0..rows).map(y).collect())
}

fn cases() -> Vec<(&'static str, usize, DataTask, Batch)> {
    let n = 3 * PREDICT_CHUNK + 37; // the last chunk is short
    let (x, y) = rows(n, 5, |i| (i % 3) as f32);
    let classes = Batch {
        x,
        rows: n,
        cols: 5,
        y: Targets::Class(y.iter().map(|v| *v as u32).collect()),
    };
    let (x, y) = rows(n, 5, |i| ((i * 7) % 5 < 2) as u8 as f32);
    let binary = Batch {
        x,
        rows: n,
        cols: 5,
        y: Targets::Real(y),
    };
    let (x, y) = rows(n, 5, |i| (i % 11) as f32 * 0.3 - 1.0);
    let real = Batch {
        x,
        rows: n,
        cols: 5,
        y: Targets::Real(y),
    };
    vec![
        (
            r#"{"kind":"mlp","hidden":[7]}"#,
            3,
            DataTask::Multiclass,
            classes,
        ),
        (
            r#"{"kind":"mlp","hidden":[7]}"#,
            2,
            DataTask::Binary,
            binary,
        ),
        (
            r#"{"kind":"mlp","hidden":[7],"task":"regression"}"#,
            1,
            DataTask::Regression,
            real,
        ),
    ]
}

#[test]
fn any_number_of_workers_gives_the_bits_of_one_process() {
    for (spec, out, task, test) in cases() {
        let spec: ModelSpec = serde_json::from_str(spec).unwrap();
        let mut model = build_model(&spec, 5, out, 11).unwrap();
        let alone = job::evaluate(model.as_mut(), task, &test).unwrap();
        assert!(alone.contains_key("loss"), "{task:?}: {alone:?}");
        assert!(alone.len() >= 2, "{task:?}: {alone:?}");
        for workers in [2, 3, 4, 7] {
            // Shares arrive in any order; the chunks put them back in row order.
            let shares: Vec<(String, EvalShare)> = (0..workers)
                .rev()
                .map(|r| {
                    let s = share(model.as_mut(), task, &test, r, workers).unwrap();
                    (format!("worker-{r}"), s)
                })
                .collect();
            let split = combine(shares).unwrap();
            let bits = |m: &std::collections::BTreeMap<String, f64>| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&split), bits(&alone), "{task:?}, {workers} workers");
        }
    }
}

#[test]
fn a_missing_or_repeated_chunk_is_refused_naming_the_worker() {
    let (spec, out, task, test) = cases().remove(0);
    let spec: ModelSpec = serde_json::from_str(spec).unwrap();
    let mut model = build_model(&spec, 5, out, 11).unwrap();
    let a = share(model.as_mut(), task, &test, 0, 2).unwrap();
    let b = share(model.as_mut(), task, &test, 1, 2).unwrap();
    let e = combine(vec![("worker-0".into(), a.clone())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no worker evaluated held-out chunk 1"), "{e}");
    let e = combine(vec![
        ("worker-0".into(), a.clone()),
        ("worker-1".into(), b),
        ("worker-2".into(), a),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("worker-2") && e.contains("chunk 0"), "{e}");
}
