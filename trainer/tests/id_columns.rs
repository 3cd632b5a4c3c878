//! Id columns through the data pipeline: a CSV with a string id column and a multi-valued one,
//! loaded with the model's id specs; the record-batch conversion (streams, datasets, predict) and
//! a reload with the stored transform give the same features as the load.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use lockstep_trainer::data::{load, load_with, DataSpec, IdSpec, Missing, Task, ID_PAD};

fn write_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::from("user,title,genres,rating\n");
    for i in 0..40 {
        let genres = ["Comedy|Drama", "Drama", "", "Action|Comedy|Drama"][i % 4];
        text += &format!("{},movie {},{genres},{}\n", i % 7, i % 5, (i % 5) as f64);
    }
    let path = dir.join("r.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn spec(path: &std::path::Path) -> DataSpec {
    let mut spec = DataSpec::new(path, "rating", Task::Regression);
    spec.missing = Missing::Error;
    spec.test_fraction = 0.25;
    spec.ids = vec![
        IdSpec {
            column: "title".into(),
            ..IdSpec::default()
        },
        IdSpec {
            column: "genres".into(),
            separator: Some("|".into()),
            ..IdSpec::default()
        },
    ];
    spec
}

#[test]
fn string_and_multi_valued_ids_load_convert_and_reload_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path());
    let split = load(&spec(&path), 3).unwrap();
    assert_eq!(
        split.feature_names,
        ["user", "title", "genres[0]", "genres[1]", "genres[2]"]
    );
    // Titles "movie 0".."movie 4": ids 1..5; genres Action 1, Comedy 2, Drama 3.
    let x = &split.train.x;
    for r in 0..split.train.rows {
        let row = &x[r * 5..(r + 1) * 5];
        assert!((1.0..=5.0).contains(&row[1]), "{row:?}");
        let genres: Vec<f32> = row[2..].iter().copied().filter(|&v| v != ID_PAD).collect();
        assert!(
            [vec![2.0, 3.0], vec![3.0], vec![], vec![1.0, 2.0, 3.0]].contains(&genres),
            "{row:?}"
        );
    }
    // The same rows as one record batch, through the conversion of later batches.
    let titles: Vec<String> = (0..40).map(|i| format!("movie {}", i % 5)).collect();
    let genres: Vec<&str> = (0..40)
        .map(|i| ["Comedy|Drama", "Drama", "", "Action|Comedy|Drama"][i % 4])
        .collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "user",
            Arc::new(Int64Array::from_iter_values((0..40).map(|i| i % 7))),
        ),
        ("title", Arc::new(StringArray::from_iter_values(titles))),
        ("genres", Arc::new(StringArray::from(genres))),
        (
            "rating",
            Arc::new(Float64Array::from_iter_values(
                (0..40).map(|i| (i % 5) as f64),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let rows: Vec<usize> = (0..40).filter(|r| !split_is_test(&split, *r)).collect();
    let converted = split.fitted.table_rows(&batch, "batch", &rows).unwrap();
    assert_eq!(converted.x, split.train.x);
    // A reload with the stored transform fits nothing and maps identically.
    let again = load_with(&spec(&path), 3, Some(&split.fitted)).unwrap();
    assert_eq!(again.train.x, split.train.x);
    assert_eq!(again.test.x, split.test.x);
    // An unseen title maps to the reserved row 0.
    let unseen = RecordBatch::try_from_iter(vec![
        ("user", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("title", Arc::new(StringArray::from(vec!["never rated"]))),
        ("genres", Arc::new(StringArray::from(vec!["Drama|Horror"]))),
        ("rating", Arc::new(Float64Array::from(vec![3.0]))),
    ])
    .unwrap();
    let t = split.fitted.table(&unseen, "batch").unwrap();
    assert_eq!(t.x, vec![1.0, 0.0, 3.0, 0.0, ID_PAD]);
}

/// Whether data row `r` is held out (the split is seeded: the same as `load`'s).
fn split_is_test(split: &lockstep_trainer::data::Split, r: usize) -> bool {
    let (_, test) = lockstep_trainer::data::split_rows(40, 0.25, None, 3);
    assert_eq!(test.len(), split.test.rows);
    test.contains(&r)
}

#[test]
fn a_string_id_column_is_no_string_feature_error_and_nulls_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path());
    let mut s = spec(&path);
    s.categorical = lockstep_trainer::data::Categorical::Error;
    assert!(load(&s, 3).is_ok(), "id columns are not string features");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("3,movie 3,", "3,,");
    std::fs::write(&path, text).unwrap();
    let e = load(&spec(&path), 3).unwrap_err().to_string();
    assert!(e.contains("id column 'title', row 3: null id"), "{e}");
}
