//! From Arrow record batches to rows of `f32` features: the fitted transform applied to batches
//! that arrive after fitting (streamed datasets, Arrow streams, held-out rows, `predict`).
//!
//! One pass per batch, straight into the row-major matrix: the columns are looked up in the
//! batch's schema once per schema (a [`Conversion`] keeps the lookup while the schema stays the
//! same), each numeric column is read in its own Arrow type (no `f64` copy of the column, no cast
//! kernel, no allocation per column) and written into its strided slot of the rows, a tile of rows
//! at a time so the rows being written stay in cache. The arithmetic is the fitted transform's
//! ([`Preprocessor::transform`](super::Preprocessor::transform)), in the same order and precision,
//! so the features are bit for bit the same as through the general path. String (one-hot) columns
//! and numeric types without a direct reader (decimals, booleans, half floats) go through the
//! general cast, per column.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, SchemaRef};

use super::columns::{column_kind, extract_array, Kind, RawColumn};
use super::error::DataError;
use super::preprocess::{check_number, missing, ColumnPlan};
use super::table::{Fitted, Table};
use crate::batch::Targets;

/// Rows written together: one tile of output rows stays in cache while every column writes its
/// slot of them.
const TILE_ROWS: usize = 64;

/// The fitted columns' positions in one schema.
struct Bound {
    schema: SchemaRef,
    /// Per feature plan: its column's index in the schema.
    features: Vec<usize>,
    /// The label column's index and kind.
    label: (usize, Kind),
}

/// Converts record batches with a fitted transform, keeping the column lookup of the last schema
/// seen (batches of one file or stream share it).
#[derive(Default)]
pub struct Conversion {
    bound: Option<Bound>,
}

impl Conversion {
    /// Appends the rows `rows` of `batch` (in that order), transformed by `fitted`, to `out`.
    /// `name` (file or stream) appears in errors; rows are numbered within `batch`.
    ///
    /// # Errors
    /// Any [`DataError`] of the columns, values or labels; `out` may then hold a partial row set.
    pub fn append(
        &mut self,
        fitted: &Fitted,
        batch: &RecordBatch,
        name: &str,
        rows: &[usize],
        out: &mut Table,
    ) -> Result<(), DataError> {
        let schema = batch.schema();
        let same = self
            .bound
            .as_ref()
            .is_some_and(|b| std::sync::Arc::ptr_eq(&b.schema, &schema) || *b.schema == *schema);
        if !same {
            self.bound = Some(bind(fitted, &schema, name)?);
        }
        let Some(bound) = &self.bound else {
            return Ok(());
        };
        let label = &fitted.label;
        let label_raw = extract_array(
            batch.column(bound.label.0),
            name,
            &label.column,
            bound.label.1,
        )?;
        let width = fitted.features.width();
        let sources: Vec<Source> = fitted
            .features
            .columns
            .iter()
            .zip(&bound.features)
            .map(|(plan, &i)| Source::of(plan, batch.column(i), name))
            .collect::<Result<_, _>>()?;
        let start = out.x.len();
        out.x.resize(start + rows.len() * width, 0.0);
        let x = &mut out.x[start..];
        let refuse = fitted.features.refuse_missing;
        for (t, tile) in rows.chunks(TILE_ROWS).enumerate() {
            let tx = &mut x[t * TILE_ROWS * width..][..tile.len() * width];
            let mut offset = 0;
            for (plan, src) in fitted.features.columns.iter().zip(&sources) {
                let cell = Cell {
                    x: &mut *tx,
                    width,
                    offset,
                    refuse,
                    file: name,
                };
                src.write(plan, tile, cell)?;
                offset += plan_width(plan);
            }
        }
        let y = label.targets(&label_raw, rows, name)?;
        match (&mut out.y, y) {
            (Targets::Real(d), Targets::Real(s)) => d.extend(s),
            (Targets::Class(d), Targets::Class(s)) => d.extend(s),
            (d, s) => *d = s,
        }
        out.rows += rows.len();
        Ok(())
    }
}

impl Fitted {
    /// The rows of `batch` as a `Table`, transformed exactly as the training rows were.
    /// `name` (file or stream) appears in errors; rows are numbered within `batch`.
    ///
    /// # Errors
    /// Any [`DataError`] of the columns, values or labels.
    pub fn table(&self, batch: &RecordBatch, name: &str) -> Result<Table, DataError> {
        let rows: Vec<usize> = (0..batch.num_rows()).collect();
        self.table_rows(batch, name, &rows)
    }

    /// As [`Fitted::table`], for the rows `rows` of `batch` only (in that order).
    ///
    /// # Errors
    /// Any [`DataError`] of the columns, values or labels.
    pub fn table_rows(
        &self,
        batch: &RecordBatch,
        name: &str,
        rows: &[usize],
    ) -> Result<Table, DataError> {
        let width = self.features.width();
        let mut out = Table {
            x: Vec::with_capacity(rows.len() * width),
            rows: 0,
            cols: width,
            y: match self.label.task {
                super::spec::Task::Multiclass => Targets::Class(Vec::with_capacity(rows.len())),
                _ => Targets::Real(Vec::with_capacity(rows.len())),
            },
        };
        Conversion::default().append(self, batch, name, rows, &mut out)?;
        Ok(out)
    }
}

fn plan_width(plan: &ColumnPlan) -> usize {
    match plan {
        ColumnPlan::Numeric { .. } => 1,
        ColumnPlan::OneHot {
            categories,
            missing_slot,
            ..
        } => categories.len() + usize::from(*missing_slot),
        ColumnPlan::Ids(p) => p.slots,
    }
}

/// The fitted columns' positions in `schema`.
fn bind(fitted: &Fitted, schema: &SchemaRef, name: &str) -> Result<Bound, DataError> {
    let mut features = Vec::with_capacity(fitted.features.columns.len());
    for plan in &fitted.features.columns {
        let column = plan.name();
        column_kind(schema, name, column)?;
        features.push(
            schema
                .index_of(column)
                .map_err(|_| super::columns::missing_column(schema, name, column))?,
        );
    }
    let column = &fitted.label.column;
    let kind = column_kind(schema, name, column)?;
    let index = schema
        .index_of(column)
        .map_err(|_| super::columns::missing_column(schema, name, column))?;
    Ok(Bound {
        schema: schema.clone(),
        features,
        label: (index, kind),
    })
}

/// Where one output cell group of a tile goes.
struct Cell<'a> {
    x: &'a mut [f32],
    width: usize,
    offset: usize,
    refuse: bool,
    file: &'a str,
}

/// One feature column of a batch, in the type it is read in.
enum Source<'a> {
    U8(&'a [u8], Nulls<'a>),
    U16(&'a [u16], Nulls<'a>),
    U32(&'a [u32], Nulls<'a>),
    U64(&'a [u64], Nulls<'a>),
    I8(&'a [i8], Nulls<'a>),
    I16(&'a [i16], Nulls<'a>),
    I32(&'a [i32], Nulls<'a>),
    I64(&'a [i64], Nulls<'a>),
    F32(&'a [f32], Nulls<'a>),
    F64(&'a [f64], Nulls<'a>),
    /// Any other type, cast as the general path casts it (numbers as `f64`, or strings).
    Raw(RawColumn),
}

/// The array, when it has nulls (asked per value then; most columns have none).
type Nulls<'a> = Option<&'a dyn Array>;

fn values<T: ArrowPrimitiveType>(a: &ArrayRef) -> (&[T::Native], Nulls<'_>) {
    let p = a.as_primitive::<T>();
    let nulls: Nulls<'_> = (p.null_count() > 0).then_some(a.as_ref());
    (p.values(), nulls)
}

impl<'a> Source<'a> {
    fn of(plan: &ColumnPlan, a: &'a ArrayRef, file: &str) -> Result<Self, DataError> {
        let (column, kind) = match plan {
            ColumnPlan::Numeric { name, .. } => (name.as_str(), Kind::Numeric),
            ColumnPlan::OneHot { .. } | ColumnPlan::Ids(_) => (plan.name(), Kind::String),
        };
        if kind == Kind::String || super::columns::kind_of(a.data_type()) != Some(Kind::Numeric) {
            // The general path: the column as the kind its type has (a mismatch with the plan
            // is reported when writing).
            let have = super::columns::kind_of(a.data_type()).unwrap_or(kind);
            return Ok(Source::Raw(extract_array(a, file, column, have)?));
        }
        Ok(match a.data_type() {
            DataType::UInt8 => {
                let (v, n) = values::<UInt8Type>(a);
                Source::U8(v, n)
            }
            DataType::UInt16 => {
                let (v, n) = values::<UInt16Type>(a);
                Source::U16(v, n)
            }
            DataType::UInt32 => {
                let (v, n) = values::<UInt32Type>(a);
                Source::U32(v, n)
            }
            DataType::UInt64 => {
                let (v, n) = values::<UInt64Type>(a);
                Source::U64(v, n)
            }
            DataType::Int8 => {
                let (v, n) = values::<Int8Type>(a);
                Source::I8(v, n)
            }
            DataType::Int16 => {
                let (v, n) = values::<Int16Type>(a);
                Source::I16(v, n)
            }
            DataType::Int32 => {
                let (v, n) = values::<Int32Type>(a);
                Source::I32(v, n)
            }
            DataType::Int64 => {
                let (v, n) = values::<Int64Type>(a);
                Source::I64(v, n)
            }
            DataType::Float32 => {
                let (v, n) = values::<Float32Type>(a);
                Source::F32(v, n)
            }
            DataType::Float64 => {
                let (v, n) = values::<Float64Type>(a);
                Source::F64(v, n)
            }
            _ => Source::Raw(extract_array(a, file, column, Kind::Numeric)?),
        })
    }

    /// Writes `plan`'s features of `rows` (batch rows) into `cell`.
    fn write(&self, plan: &ColumnPlan, rows: &[usize], cell: Cell<'_>) -> Result<(), DataError> {
        match (plan, self) {
            (ColumnPlan::Numeric { .. }, Source::U8(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::U16(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::U32(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::U64(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::I8(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::I16(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::I32(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::I64(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::F32(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::F64(v, n)) => numeric(plan, v, *n, rows, cell),
            (ColumnPlan::Numeric { .. }, Source::Raw(RawColumn::Num(v))) => {
                numeric(plan, v, None, rows, cell)
            }
            (
                ColumnPlan::OneHot {
                    name,
                    categories,
                    missing_slot,
                    fill,
                },
                Source::Raw(RawColumn::Str(v)),
            ) => {
                for (i, &r) in rows.iter().enumerate() {
                    let slot = match v[r].as_deref().or(fill.as_deref()) {
                        Some(s) => categories.binary_search_by(|c| c.as_str().cmp(s)).ok(),
                        None if cell.refuse => return Err(missing(name, r, cell.file)),
                        None => missing_slot.then_some(categories.len()),
                    };
                    if let Some(j) = slot {
                        cell.x[i * cell.width + cell.offset + j] = 1.0;
                    }
                }
                Ok(())
            }
            (ColumnPlan::Ids(p), Source::Raw(RawColumn::Str(v))) => {
                p.write(v, rows, cell.x, cell.width, cell.offset, cell.file)
            }
            (plan, _) => Err(DataError::Config {
                file: cell.file.to_string(),
                column: plan.name().to_string(),
                message: "column changed between numbers and strings since the pipeline was fitted"
                    .into(),
            }),
        }
    }
}

/// A value as the general path sees it: `f64` exactly as Arrow's cast makes it.
trait AsF64: Copy {
    /// Never NaN nor infinite (integers): no check needed.
    const FINITE: bool;
    fn f64(self) -> f64;
}

macro_rules! as_f64 {
    ($($t:ty => $finite:expr),*) => {$(
        impl AsF64 for $t {
            const FINITE: bool = $finite;
            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}

as_f64!(u8 => true, u16 => true, u32 => true, u64 => true, i8 => true, i16 => true,
    i32 => true, i64 => true, f32 => false, f64 => false);

/// `(value_or_fill - shift) / scale` of `rows` of `v` into the cells, as the fitted transform.
#[inline(always)]
fn numeric<T: AsF64>(
    plan: &ColumnPlan,
    v: &[T],
    nulls: Nulls<'_>,
    rows: &[usize],
    cell: Cell<'_>,
) -> Result<(), DataError> {
    let ColumnPlan::Numeric {
        name,
        fill,
        shift,
        scale,
    } = plan
    else {
        return Ok(());
    };
    let (shift, scale, fill) = (*shift, *scale, *fill);
    let Cell {
        x,
        width,
        offset,
        refuse,
        file,
    } = cell;
    let cells = x[offset..].iter_mut().step_by(width);
    if T::FINITE && nulls.is_none() {
        for (out, &r) in cells.zip(rows) {
            *out = ((v[r].f64() - shift) / scale) as f32;
        }
        return Ok(());
    }
    for (out, &r) in cells.zip(rows) {
        let raw = match nulls {
            Some(n) if n.is_null(r) => f64::NAN,
            _ => v[r].f64(),
        };
        let value = check_number(raw, name, r, refuse, file)?.unwrap_or(fill);
        *out = ((value - shift) / scale) as f32;
    }
    Ok(())
}
