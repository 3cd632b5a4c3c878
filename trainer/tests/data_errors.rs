//! Bad data gets a clear error naming the file and the column: small bad Parquet/CSV files are
//! written with the Arrow writers into a temporary directory, loaded, and the message checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use lockstep_trainer::data::{load, Categorical, DataError, DataSpec, Missing, Task};
use parquet::arrow::ArrowWriter;

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).unwrap()
}

fn write_parquet(dir: &Path, name: &str, b: &RecordBatch) -> PathBuf {
    let path = dir.join(name);
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), b.schema(), None).unwrap();
    w.write(b).unwrap();
    w.close().unwrap();
    path
}

fn write_csv(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn good_columns() -> Vec<(&'static str, ArrayRef)> {
    vec![
        (
            "a",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from(vec![5, 6, 7, 8])) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5, 3.5])) as ArrayRef,
        ),
    ]
}

/// Loads and returns the error message, asserting that it names the file and every `needles`.
fn expect_error(spec: &DataSpec, needles: &[&str]) -> DataError {
    let err = load(spec, 7).expect_err("bad data must be refused");
    let msg = err.to_string();
    let file = spec.path.display().to_string();
    assert!(
        msg.contains(&file),
        "message does not name the file {file}: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "message does not name {n:?}: {msg}");
    }
    err
}

#[test]
fn missing_label_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_parquet(dir.path(), "no_label.parquet", &batch(good_columns()));
    let err = expect_error(
        &DataSpec::new(path, "target", Task::Regression),
        &["'target'", "not found", "a, b, y"],
    );
    assert!(matches!(err, DataError::MissingColumn { .. }));
}

#[test]
fn missing_feature_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "f.csv", "a,b,y\n1,2,3\n4,5,6\n");
    let mut spec = DataSpec::new(path, "y", Task::Regression);
    spec.features = Some(vec!["a".into(), "bmi".into()]);
    expect_error(&spec, &["'bmi'", "not found"]);
}

#[test]
fn glob_matching_nothing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "g.csv", "a,b,y\n1,2,3\n4,5,6\n");
    let mut spec = DataSpec::new(path, "y", Task::Regression);
    spec.features = Some(vec!["px*".into()]);
    expect_error(&spec, &["'px*'", "matches no column"]);
}

#[test]
fn string_feature_without_encoding_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cols = good_columns();
    cols.insert(
        1,
        (
            "home",
            Arc::new(StringArray::from(vec!["rent", "own", "rent", "other"])) as ArrayRef,
        ),
    );
    let path = write_parquet(dir.path(), "strings.parquet", &batch(cols));
    let mut spec = DataSpec::new(path, "y", Task::Regression);
    spec.categorical = Categorical::Error;
    let err = expect_error(&spec, &["'home'", "categorical"]);
    assert!(matches!(err, DataError::StringFeature { .. }));
}

#[test]
fn empty_parquet_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty: Vec<(&str, ArrayRef)> = good_columns()
        .into_iter()
        .map(|(n, a)| (n, a.slice(0, 0)))
        .collect();
    let path = write_parquet(dir.path(), "empty.parquet", &batch(empty));
    let err = expect_error(
        &DataSpec::new(path, "y", Task::Regression),
        &["no data rows", "'y'"],
    );
    assert!(matches!(err, DataError::EmptyFile { .. }));
}

#[test]
fn empty_and_header_only_csv_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let zero = write_csv(dir.path(), "zero.csv", "");
    let err = expect_error(
        &DataSpec::new(zero, "y", Task::Regression),
        &["no data rows", "'y'"],
    );
    assert!(matches!(err, DataError::EmptyFile { .. }));
    let header = write_csv(dir.path(), "header.csv", "a,b,y\n");
    let err = expect_error(
        &DataSpec::new(header, "y", Task::Regression),
        &["no data rows", "'y'"],
    );
    assert!(matches!(err, DataError::EmptyFile { .. }));
}

#[test]
fn nan_label_is_named_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut cols = good_columns();
    cols[2] = (
        "y",
        Arc::new(Float64Array::from(vec![0.5, 1.5, f64::NAN, 3.5])) as ArrayRef,
    );
    let path = write_parquet(dir.path(), "nan_label.parquet", &batch(cols));
    let err = expect_error(
        &DataSpec::new(path, "y", Task::Regression),
        &["label column 'y'", "row 2", "NaN"],
    );
    assert!(matches!(err, DataError::BadLabel { row: 2, .. }));
}

#[test]
fn null_label_in_csv_is_named_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "null_label.csv", "a,y\n1,good\n2,\n3,bad\n");
    let mut spec = DataSpec::new(path, "y", Task::Binary);
    spec.positive = Some("bad".into());
    expect_error(&spec, &["label column 'y'", "row 1", "missing"]);
}

#[test]
fn binary_string_labels_need_positive() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "binary.csv", "a,Status\n1,good\n2,bad\n");
    let err = expect_error(
        &DataSpec::new(path, "Status", Task::Binary),
        &["'Status'", "positive"],
    );
    assert!(matches!(err, DataError::Config { .. }));
}

#[test]
fn multiclass_label_out_of_range_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "classes.csv", "a,label\n1,0\n2,1\n3,2.5\n");
    expect_error(
        &DataSpec::new(path, "label", Task::Multiclass),
        &["label column 'label'", "row 2", "2.5"],
    );
}

#[test]
fn unsupported_column_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cols = good_columns();
    let blobs: Vec<&[u8]> = vec![b"x", b"y", b"z", b"w"];
    cols.push(("blob", Arc::new(BinaryArray::from(blobs)) as ArrayRef));
    let path = write_parquet(dir.path(), "binary_col.parquet", &batch(cols));
    let err = expect_error(
        &DataSpec::new(path, "y", Task::Regression),
        &["'blob'", "unsupported type", "Binary"],
    );
    assert!(matches!(err, DataError::UnsupportedType { .. }));
}

#[test]
fn missing_value_refused_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    // Row 1 of `b` is empty; every row is in the training split (test_fraction 0).
    let path = write_csv(dir.path(), "holes.csv", "a,b,y\n1,2,3\n4,,6\n7,8,9\n");
    let mut spec = DataSpec::new(path, "y", Task::Regression);
    spec.missing = Missing::Error;
    spec.test_fraction = 0.0;
    let err = expect_error(&spec, &["column 'b'", "row 1", "missing"]);
    assert!(matches!(err, DataError::MissingValue { row: 1, .. }));
}

#[test]
fn infinite_feature_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cols = good_columns();
    cols[0] = (
        "a",
        Arc::new(Float64Array::from(vec![1.0, f64::INFINITY, 3.0, 4.0])) as ArrayRef,
    );
    let path = write_parquet(dir.path(), "inf.parquet", &batch(cols));
    let mut spec = DataSpec::new(path, "y", Task::Regression);
    spec.test_fraction = 0.0;
    expect_error(&spec, &["column 'a'", "row 1", "inf"]);
}

#[test]
fn missing_file_and_unknown_extension_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let nofile = dir.path().join("absent.parquet");
    expect_error(
        &DataSpec::new(nofile, "y", Task::Regression),
        &["cannot read"],
    );
    let odd = write_csv(dir.path(), "data.txt", "a,y\n1,2\n");
    expect_error(&DataSpec::new(odd, "y", Task::Regression), &["format"]);
}

#[test]
fn garbage_parquet_is_a_decode_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "garbage.parquet", "this is not parquet at all");
    let err = expect_error(&DataSpec::new(path, "y", Task::Regression), &["parquet"]);
    assert!(matches!(err, DataError::Decode { .. }));
}
