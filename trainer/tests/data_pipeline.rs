//! The data pipeline on the real data sets and on small files written here: column selection,
//! encoding, imputation and scaling with training-only statistics, seeded splits, CSV = Parquet,
//! and the `[job.data]` table's parsing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use lockstep_trainer::data::{load, ColumnPlan, DataSpec, MissingStrings, Scaling, Task};
use lockstep_trainer::Targets;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(name)
}

fn credit_spec() -> DataSpec {
    let mut spec = DataSpec::new(data("credit_data.parquet"), "Status", Task::Binary);
    spec.positive = Some("bad".into());
    spec.scaling = Scaling::Standard;
    spec
}

fn real(y: &Targets) -> &[f32] {
    match y {
        Targets::Real(v) => v,
        Targets::Class(_) => panic!("expected real targets"),
    }
}

#[test]
fn spec_parses_with_defaults_and_refuses_unknown_keys() {
    let spec: DataSpec = serde_json::from_str(
        r#"{"path": "d.parquet", "label": "label", "task": "multiclass", "features": ["px*"], "scaling": {"divide": 255.0}}"#,
    )
    .unwrap();
    assert_eq!(spec.scaling, Scaling::Divide(255.0));
    assert_eq!(spec.test_fraction, 0.2);
    assert!(spec.stratify);
    let err = serde_json::from_str::<DataSpec>(
        r#"{"path": "d", "label": "y", "task": "regression", "sclaing": "none"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("sclaing"), "{err}");
    let resolved = spec.resolved(Path::new("/jobs/x"));
    assert_eq!(resolved.path, PathBuf::from("/jobs/x/d.parquet"));
}

#[test]
fn credit_is_encoded_imputed_and_standardised_on_train_only() {
    let split = load(&credit_spec(), 42).unwrap();
    assert_eq!(split.train.rows + split.test.rows, 4454);
    assert_eq!(split.test.rows, 891, "20% held out, rounded per class");
    let names = &split.feature_names;
    assert_eq!(split.train.cols, names.len());
    assert!(names.iter().any(|n| n == "Home=owner"), "{names:?}");
    assert!(names.iter().any(|n| n == "Income"));
    assert!(!names.iter().any(|n| n.starts_with("Status")));
    assert!(split
        .train
        .x
        .iter()
        .chain(&split.test.x)
        .all(|v| v.is_finite()));
    // Numeric columns have mean 0 / std 1 over the training rows (imputed values included).
    let c = names.iter().position(|n| n == "Income").unwrap();
    let col: Vec<f64> = (0..split.train.rows)
        .map(|r| f64::from(split.train.x[r * split.train.cols + c]))
        .collect();
    let mean = col.iter().sum::<f64>() / col.len() as f64;
    let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
    assert!(
        mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
        "mean {mean} var {var}"
    );
    // One-hot rows sum to 1 per string column (Home has a <missing> slot only if train saw one).
    let home: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].starts_with("Home="))
        .collect();
    for r in 0..split.train.rows {
        let s: f32 = home
            .iter()
            .map(|&i| split.train.x[r * split.train.cols + i])
            .sum();
        assert_eq!(s, 1.0, "row {r}");
    }
    let pos = real(&split.train.y).iter().filter(|v| **v == 1.0).count();
    assert!(pos > 900 && pos < 1100, "positives in train: {pos}");
}

#[test]
fn split_is_deterministic_by_seed_and_stratified() {
    let a = load(&credit_spec(), 1).unwrap();
    let b = load(&credit_spec(), 1).unwrap();
    let c = load(&credit_spec(), 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.test.x, c.test.x);
    let share = |y: &Targets| real(y).iter().sum::<f32>() / y.len() as f32;
    assert!((share(&a.train.y) - share(&a.test.y)).abs() < 0.01);
}

#[test]
fn mnist_globs_and_divide_scaling() {
    let mut spec = DataSpec::new(data("mnist5k.parquet"), "label", Task::Multiclass);
    spec.features = Some(vec!["px*".into()]);
    spec.scaling = Scaling::Divide(255.0);
    let split = load(&spec, 0).unwrap();
    assert_eq!(
        (split.train.rows, split.test.rows, split.train.cols),
        (4000, 1000, 784)
    );
    assert_eq!(split.feature_names[0], "px0");
    assert_eq!(split.feature_names[783], "px783");
    assert_eq!(split.outputs(), 10);
    let max = split.train.x.iter().fold(0.0f32, |m, v| m.max(*v));
    assert_eq!(max, 1.0);
    match &split.test.y {
        Targets::Class(v) => {
            for k in 0..10 {
                assert_eq!(v.iter().filter(|c| **c == k).count(), 100, "class {k}");
            }
        }
        Targets::Real(_) => panic!("multiclass gives class targets"),
    }
}

/// A file where the label equals feature `f` (so the training rows' raw values are visible in
/// the targets), with `f` missing in rows divisible by 7.
fn twin_file(dir: &Path) -> (PathBuf, PathBuf) {
    let n: usize = 60;
    let f: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if i.is_multiple_of(7) {
                None
            } else {
                Some((i * i) as f64)
            }
        })
        .collect();
    let y: Vec<f64> = (0..n).map(|i| (i * i) as f64).collect();
    let cat: Vec<Option<&str>> = (0..n)
        .map(|i| [Some("x"), Some("y"), Some("y"), None][i % 4])
        .collect();
    let ids: Vec<i64> = (0..n as i64).collect();
    let b = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("f", Arc::new(Float64Array::from(f)) as ArrayRef),
        ("cat", Arc::new(StringArray::from(cat)) as ArrayRef),
        ("y", Arc::new(Float64Array::from(y)) as ArrayRef),
    ])
    .unwrap();
    let pq = dir.join("twin.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), b.schema(), None)
            .unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let csv = dir.join("twin.csv");
    let mut w = arrow_csv::Writer::new(std::fs::File::create(&csv).unwrap());
    w.write(&b).unwrap();
    (pq, csv)
}

#[test]
fn statistics_come_from_the_training_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let (pq, _) = twin_file(dir.path());
    let mut spec = DataSpec::new(pq, "y", Task::Regression);
    spec.features = Some(vec!["f".into()]);
    spec.scaling = Scaling::MinMax;
    let mut differs_from_whole_file = 0;
    for seed in 0..10 {
        let split = load(&spec, seed).unwrap();
        // Present training values of f: the training labels whose root is not a multiple of 7.
        let ys = real(&split.train.y);
        let mut present: Vec<f64> = ys
            .iter()
            .map(|v| f64::from(*v))
            .filter(|v| !(v.sqrt() as usize).is_multiple_of(7))
            .collect();
        present.sort_by(f64::total_cmp);
        let m = present.len();
        let median = if m % 2 == 1 {
            present[m / 2]
        } else {
            (present[m / 2 - 1] + present[m / 2]) / 2.0
        };
        let (lo, hi) = (present[0].min(median), present[m - 1].max(median));
        let ColumnPlan::Numeric {
            fill, shift, scale, ..
        } = &split.fitted.features.columns[0]
        else {
            panic!("f is numeric")
        };
        assert_eq!(
            (*fill, *shift, *scale),
            (median, lo, hi - lo),
            "seed {seed}"
        );
        // Present values over the whole file run from 1 to 59^2 = 3481.
        differs_from_whole_file += usize::from(lo != 1.0 || hi != 3481.0);
    }
    assert!(
        differs_from_whole_file > 0,
        "no seed held out an extreme: the check above proves nothing"
    );
}

#[test]
fn csv_and_parquet_give_the_same_split() {
    let dir = tempfile::tempdir().unwrap();
    let (pq, csv) = twin_file(dir.path());
    let mut spec = DataSpec::new(pq, "y", Task::Regression);
    spec.scaling = Scaling::Standard;
    let a = load(&spec, 9).unwrap();
    spec.path = csv;
    let b = load(&spec, 9).unwrap();
    assert_eq!(a.feature_names, b.feature_names);
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
}

#[test]
fn missing_strings_become_a_category_or_the_most_frequent_value() {
    let dir = tempfile::tempdir().unwrap();
    let (pq, _) = twin_file(dir.path());
    let mut spec = DataSpec::new(pq, "y", Task::Regression);
    spec.features = Some(vec!["cat".into()]);
    spec.test_fraction = 0.0;
    let own = load(&spec, 0).unwrap();
    assert_eq!(own.feature_names, vec!["cat=x", "cat=y", "cat=<missing>"]);
    assert_eq!(&own.train.x[9..12], &[0.0, 0.0, 1.0], "row 3 is missing");
    spec.missing_strings = MissingStrings::MostFrequent;
    let freq = load(&spec, 0).unwrap();
    assert_eq!(freq.feature_names, vec!["cat=x", "cat=y"]);
    assert_eq!(
        &freq.train.x[6..8],
        &[0.0, 1.0],
        "row 3 imputed as the most frequent, y"
    );
}
