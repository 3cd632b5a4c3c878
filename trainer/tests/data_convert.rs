//! The one-pass conversion of record batches (`Conversion`, `Fitted::table_rows`) gives bit for
//! bit the features, targets and errors of the general path (each column cast to `f64`, then
//! `Preprocessor::transform`), for every numeric type it reads directly, for types it casts,
//! for nulls, NaN, strings, sliced batches, scattered rows and a table that already holds rows.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, RecordBatch, StringArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use lockstep_trainer::data::{
    column_kind, extract, ColumnKind, Conversion, DataError, DataSpec, Fitted, LabelPlan, Missing,
    Preprocessor, RawColumn, Scaling, Table, Task,
};
use lockstep_trainer::Targets;

const ROWS: usize = 200;

/// A batch of every supported kind of column; `poison` puts an infinity in `f32` at row 150.
fn batch(poison: bool) -> RecordBatch {
    let n = ROWS;
    let f32s: Vec<Option<f32>> = (0..n)
        .map(|i| match i % 17 {
            3 => None,
            5 => Some(f32::NAN),
            _ if poison && i == 150 => Some(f32::INFINITY),
            _ => Some(i as f32 * 0.37 - 20.0),
        })
        .collect();
    let strs: Vec<Option<&str>> = (0..n)
        .map(|i| match i % 7 {
            0 => None,
            1 | 2 => Some("red"),
            3 => Some("green"),
            _ => Some("blue"),
        })
        .collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "u8",
            Arc::new(UInt8Array::from_iter_values(
                (0..n).map(|i| (i * 7 % 256) as u8),
            )),
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter_values(
                (0..n).map(|i| (i * 331) as u16),
            )),
        ),
        (
            "u32",
            Arc::new(UInt32Array::from_iter(
                (0..n).map(|i| (i % 11 != 4).then_some(i as u32 * 3)),
            )),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from_iter_values(
                (0..n).map(|i| (i as u64) << 40),
            )),
        ),
        (
            "i8",
            Arc::new(Int8Array::from_iter_values(
                (0..n).map(|i| (i as i64 % 200 - 100) as i8),
            )),
        ),
        (
            "i16",
            Arc::new(Int16Array::from_iter_values(
                (0..n).map(|i| (i as i16) * -13),
            )),
        ),
        (
            "i32",
            Arc::new(Int32Array::from_iter_values(
                (0..n).map(|i| (i as i32 - 90) * 1001),
            )),
        ),
        (
            "i64",
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 9 != 2).then_some(i as i64 * 12345 - 7)),
            )),
        ),
        ("f32", Arc::new(Float32Array::from(f32s))),
        (
            "f64",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| (i as f64).sqrt() / 3.0),
            )),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0)))),
        ),
        ("colour", Arc::new(StringArray::from(strs))),
        (
            "label",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i % 4) as i64))),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

const FEATURES: [&str; 12] = [
    "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "flag", "colour",
];

fn raw_columns(batch: &RecordBatch) -> Vec<(String, RawColumn)> {
    let schema = batch.schema();
    FEATURES
        .iter()
        .map(|c| {
            let kind = column_kind(&schema, "t", c).unwrap();
            let raw = extract(std::slice::from_ref(batch), "t", c, kind).unwrap();
            (c.to_string(), raw)
        })
        .collect()
}

fn fitted(scaling: Scaling, missing: Missing) -> Fitted {
    let b = batch(false);
    let mut spec = DataSpec::new("t", "label", Task::Multiclass);
    spec.scaling = scaling;
    spec.missing = missing;
    let cols = raw_columns(&b);
    let train: Vec<usize> = (0..ROWS).step_by(2).collect();
    let features = Preprocessor::fit(&spec, &cols, &train, "t").unwrap();
    let label_raw = extract(std::slice::from_ref(&b), "t", "label", ColumnKind::Numeric).unwrap();
    let label = LabelPlan::fit("label", Task::Multiclass, None, None, &label_raw, "t").unwrap();
    Fitted { features, label }
}

/// The general path: every column cast to `f64` (or strings), then the fitted transform.
fn general(f: &Fitted, batch: &RecordBatch, rows: &[usize]) -> Result<Table, DataError> {
    let cols = raw_columns(batch);
    let label_raw = extract(
        std::slice::from_ref(batch),
        "t",
        "label",
        ColumnKind::Numeric,
    )?;
    Ok(Table {
        x: f.features.transform(&cols, rows, "t")?,
        rows: rows.len(),
        cols: f.features.width(),
        y: f.label.targets(&label_raw, rows, "t")?,
    })
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_pass_conversion_is_bit_identical_to_the_general_path() {
    for scaling in [
        Scaling::Standard,
        Scaling::MinMax,
        Scaling::Divide(255.0),
        Scaling::None,
    ] {
        let f = fitted(scaling, Missing::Impute);
        let b = batch(false);
        assert!(
            f.features.width() > FEATURES.len(),
            "one-hot columns expected"
        );
        // Scattered rows, repeated and out of order, across several tiles of rows.
        let rows: Vec<usize> = (0..ROWS).rev().step_by(3).chain([7, 7, 0, 199]).collect();
        let want = general(&f, &b, &rows).unwrap();
        let got = f.table_rows(&b, "t", &rows).unwrap();
        assert_eq!(bits(&got.x), bits(&want.x), "{scaling:?}: features differ");
        assert_eq!(got.y, want.y);
        assert_eq!((got.rows, got.cols), (want.rows, want.cols));

        // A sliced batch (arrays with an offset), appended after rows already in the table.
        let sliced = b.slice(40, 120);
        let local: Vec<usize> = (0..120).filter(|i| i % 5 != 1).collect();
        let mut table = f.table_rows(&b, "t", &[1, 2]).unwrap();
        let mut conv = Conversion::default();
        conv.append(&f, &sliced, "t", &local, &mut table).unwrap();
        conv.append(&f, &sliced, "t", &local[..10], &mut table)
            .unwrap();
        let mut expect = general(&f, &b, &[1, 2]).unwrap();
        for part in [&local[..], &local[..10]] {
            let more = general(&f, &sliced, part).unwrap();
            expect.x.extend_from_slice(&more.x);
            match (&mut expect.y, more.y) {
                (Targets::Class(d), Targets::Class(s)) => d.extend(s),
                _ => panic!("multiclass targets expected"),
            }
            expect.rows += more.rows;
        }
        assert_eq!(
            bits(&table.x),
            bits(&expect.x),
            "{scaling:?}: sliced batch differs"
        );
        assert_eq!(table.y, expect.y);
        assert_eq!(table.rows, expect.rows);
    }
}

#[test]
fn one_pass_conversion_reports_the_general_paths_errors() {
    // An infinite value: NonFinite naming the column and the row within the batch.
    let f = fitted(Scaling::Standard, Missing::Impute);
    let bad = batch(true);
    let rows: Vec<usize> = (0..ROWS).collect();
    let want = general(&f, &bad, &rows).unwrap_err();
    let got = f.table_rows(&bad, "t", &rows).unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
    assert!(got.to_string().contains("f32"), "{got}");
    assert!(
        matches!(got, DataError::NonFinite { row: 150, .. }),
        "{got:?}"
    );

    // `missing = "error"`: the first null (u32 row 4) is refused, naming its column and row.
    let mut strict = fitted(Scaling::None, Missing::Impute);
    strict.features.refuse_missing = true;
    let b = batch(false);
    let want = general(&strict, &b, &rows).unwrap_err();
    let got = strict.table_rows(&b, "t", &rows).unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
    assert!(
        matches!(got, DataError::MissingValue { row: 4, .. }),
        "{got:?}"
    );

    // A column missing from the batch is named.
    let without = b.project(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12]).unwrap();
    let got = f.table_rows(&without, "t", &[0]).unwrap_err();
    assert!(
        matches!(&got, DataError::MissingColumn { column, .. } if column == "f64"),
        "{got:?}"
    );

    // A numeric column that became strings is refused as the general path refuses it.
    let mut swapped: Vec<(String, ArrayRef)> = b
        .schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(fd, a)| (fd.name().clone(), a.clone()))
        .collect();
    swapped[0].1 = Arc::new(StringArray::from_iter_values(
        (0..ROWS).map(|i| i.to_string()),
    ));
    let swapped = RecordBatch::try_from_iter(swapped).unwrap();
    let got = f.table_rows(&swapped, "t", &[0]).unwrap_err();
    assert!(
        matches!(&got, DataError::Config { column, .. } if column == "u8"),
        "{got:?}"
    );
}
