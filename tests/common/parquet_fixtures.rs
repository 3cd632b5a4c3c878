//! Parquet fixtures written in Rust (arrow/parquet crates), so that the data tests need no Python:
//! the credit rows cut into many files ([`split_dataset`]), a dataset with shifted values
//! ([`shifted`]) and a byte-exact text form of a Parquet file to compare ([`parquet_csv`]).
//!
//! Files the Python scripts wrote with pyarrow's defaults are written here with snappy
//! compression, column statistics and one row group unless a row group size is given.

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use std::path::Path;
use std::sync::Arc;

/// Every row of the Parquet file `path` as one batch (its Arrow schema and metadata included).
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema = builder.schema().clone();
    let rows = builder.metadata().file_metadata().num_rows() as usize;
    let reader = builder
        .with_batch_size(rows.max(1))
        .build()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match batches.len() {
        0 => RecordBatch::new_empty(schema),
        // The reader's batches lack the file's schema metadata (pandas'); pyarrow keeps it.
        1 => batches
            .remove(0)
            .with_schema(schema)
            .expect("the file's schema"),
        n => panic!("{}: {n} batches for one batch size", path.display()),
    }
}

/// pyarrow's `write_table` defaults: snappy, column statistics, row groups of up to 1Mi rows.
fn pyarrow_defaults() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
}

/// Writes `batch` to `path` with `props` (row groups of `max_row_group_size` rows).
pub fn write_parquet(path: &Path, batch: &RecordBatch, props: WriterProperties) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writer
        .write(batch)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writer
        .close()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `batch` with the column `name` replaced by `values` (same name and position, a nullable field
/// of the values' type, as pyarrow's `set_column` with a name gives).
fn replace_column(batch: &RecordBatch, name: &str, values: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let i = schema
        .index_of(name)
        .unwrap_or_else(|e| panic!("no column {name}: {e}"));
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = Field::new(name, values.data_type().clone(), true);
    let mut columns = batch.columns().to_vec();
    columns[i] = values;
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).expect("replace a column")
}

/// Writes the rows of the Parquet file `src` again, cut differently, for the dataset tests:
///
/// - `OUT/one/all.parquet`: every row in one file, one row group;
/// - `OUT/parts/part-NNN.parquet`: the same rows in files of uneven sizes with uneven row groups,
///   zstd and snappy alternating (plus a `_SUCCESS` marker and a `.crc` file that a listing must
///   ignore);
/// - `OUT/nostats/part-NNN.parquet`: the same parts written without column statistics;
/// - `OUT/bad-schema/`: two parts where the second has the `Age` column as strings;
/// - `OUT/bad-file/`: a good part followed by one truncated to half its bytes.
pub fn split_dataset(src: &Path, out: &Path) {
    let table = read_parquet(src);
    let n = table.num_rows();

    write_parquet(
        &out.join("one/all.parquet"),
        &table,
        pyarrow_defaults().set_max_row_group_size(n.max(1)).build(),
    );

    let cuts = [0, 7, 500, 1333, 1334, 2900, n];
    let groups = [3, 97, 250, 1, 400, 1000];
    for (i, (w, group)) in cuts.windows(2).zip(groups).enumerate() {
        let (lo, hi) = (w[0], w[1]);
        let part = table.slice(lo, hi - lo);
        let compression = if i % 2 == 1 {
            Compression::SNAPPY
        } else {
            Compression::ZSTD(ZstdLevel::default())
        };
        let name = format!("part-{i:03}.parquet");
        write_parquet(
            &out.join("parts").join(&name),
            &part,
            pyarrow_defaults()
                .set_max_row_group_size(group)
                .set_compression(compression)
                .build(),
        );
        write_parquet(
            &out.join("nostats").join(&name),
            &part,
            pyarrow_defaults()
                .set_max_row_group_size(group)
                .set_statistics_enabled(EnabledStatistics::None)
                .build(),
        );
    }
    std::fs::write(out.join("parts/_SUCCESS"), "").expect("write _SUCCESS");
    std::fs::write(out.join("parts/.part-000.parquet.crc"), "not parquet").expect("write .crc");

    let bad_schema = out.join("bad-schema");
    write_parquet(
        &bad_schema.join("part-000.parquet"),
        &table.slice(0, 100),
        pyarrow_defaults().build(),
    );
    // Python's `str(v)` of every value: the numbers as text, a missing one as "None".
    let bad = table.slice(100, 100);
    let age = bad.column_by_name("Age").expect("an Age column");
    let options = FormatOptions::default().with_null("None");
    let fmt = ArrayFormatter::try_new(age.as_ref(), &options).expect("format Age");
    let text: StringArray = (0..age.len())
        .map(|i| Some(fmt.value(i).to_string()))
        .collect();
    let bad = replace_column(&bad, "Age", Arc::new(text));
    write_parquet(
        &bad_schema.join("part-001.parquet"),
        &bad,
        pyarrow_defaults().build(),
    );

    let bad_file = out.join("bad-file");
    write_parquet(
        &bad_file.join("part-000.parquet"),
        &table.slice(0, 2000),
        pyarrow_defaults().build(),
    );
    let last = bad_file.join("part-001.parquet");
    write_parquet(
        &last,
        &table.slice(2000, n - 2000),
        pyarrow_defaults().build(),
    );
    let bytes = std::fs::read(&last).expect("read part-001");
    std::fs::write(&last, &bytes[..bytes.len() / 2]).expect("truncate part-001");
}

/// Rows of `src` with `Income` times 1000 (as float64, like pyarrow's `pc.multiply` by a float),
/// written to `out`: a refit gives other scales. With `cut` only the first 300 rows, and `Home`
/// the string "castle" in every row, a category never seen before (a refit also gives another
/// one-hot width).
pub fn shifted(src: &Path, out: &Path, cut: bool) {
    let mut t = read_parquet(src);
    let income = t.column_by_name("Income").expect("an Income column");
    let income = arrow_cast::cast(income, &DataType::Float64).expect("Income as float64");
    let income: Float64Array = income
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("float64")
        .unary(|v| v * 1000.0);
    t = replace_column(&t, "Income", Arc::new(income));
    if cut {
        t = t.slice(0, 300.min(t.num_rows()));
        let home = StringArray::from(vec!["castle"; t.num_rows()]);
        t = replace_column(&t, "Home", Arc::new(home));
    }
    write_parquet(out, &t, pyarrow_defaults().build());
}

/// The rows of the Parquet file `path` as CSV with a header line (arrow's CSV writer): the same
/// rows give the same bytes.
pub fn parquet_csv(path: &Path) -> Vec<u8> {
    let batch = read_parquet(path);
    let mut out = Vec::new();
    let mut writer = arrow_csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut out);
    writer
        .write(&batch)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    drop(writer);
    out
}

/// `src` with the rows whose `column` equals `value` thinned to every `keep_every`-th (the
/// others kept whole, order unchanged): an imbalanced variant of a classification table.
pub fn thinned(src: &Path, out: &Path, column: &str, value: &str, keep_every: usize) {
    let batch = read_parquet(src);
    let col = arrow_cast::cast(
        batch
            .column_by_name(column)
            .unwrap_or_else(|| panic!("{}: no column {column}", src.display())),
        &arrow_schema::DataType::Utf8,
    )
    .unwrap();
    let col = col
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    let (mut seen, mut keep) = (0usize, Vec::new());
    for i in 0..batch.num_rows() {
        if col.is_valid(i) && col.value(i) == value {
            seen += 1;
            if !seen.is_multiple_of(keep_every) {
                continue;
            }
        }
        keep.push(i as u32);
    }
    let idx = arrow_array::UInt32Array::from(keep);
    let cols: Vec<arrow_array::ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| arrow_select::take::take(c, &idx, None).unwrap())
        .collect();
    let thin = RecordBatch::try_new(batch.schema(), cols).unwrap();
    write_parquet(out, &thin, pyarrow_defaults().build());
}
