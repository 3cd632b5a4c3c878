//! Datasets larger than memory: many Parquet files in a directory, a glob or object storage,
//! streamed by each worker within a memory budget.
//!
//! [`load_dataset`] lists the files ([`listing`]) in the store the path names ([`store`]), checks
//! that their schemas agree, fixes the held-out split and the epoch order ([`order`]), fits the
//! preprocessing on a documented sample of the training rows, and reads the held-out rows for
//! evaluation (up to a share of the budget). The result is a [`Split`] whose training side is a
//! [`Dataset`]; [`DatasetSource`] streams it round by round ([`source`], [`reader`]).
//!
//! # Memory budget (`[job.data] memory_mb`, default 1024 MiB)
//! See [`budget`]: windows 40%, held-out rows 10%, preprocessing sample 20% (fit only), reader
//! 15% (footers, one row group, decode), the process 15%.

pub mod budget;
pub mod footer;
pub mod listing;
pub mod order;
pub mod reader;
pub mod source;
pub mod store;

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;

use self::budget::{mib, Budget, ReaderCost, ROW_OVERHEAD};
use self::listing::{check_schemas, list};
use self::order::{held_out, Layout};
use self::reader::{merge, ReadCtx};
use self::source::empty_table;
pub use self::source::DatasetSource;
use super::columns::{column_kind, extract, select_features, Kind, RawColumn};
use super::convert::Conversion;
use super::cursor::{BatchSource, TableSource};
use super::error::DataError;
use super::label::LabelPlan;
use super::preprocess::Preprocessor;
use super::spec::{Categorical, DataSpec, Format};
use super::table::{Fitted, Split, Table};
use crate::batch::Targets;

/// Default budget when `memory_mb` is not set.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Default rows per shuffle block.
pub const DEFAULT_BLOCK_ROWS: u64 = 4096;

/// A dataset that is streamed, not held: its files, the fitted transform and the epoch layout.
pub struct Dataset {
    /// The path as given (for messages and the source name).
    pub name: String,
    /// Files, store and projected columns.
    pub ctx: ReadCtx,
    /// The transform fitted on the sample.
    pub fitted: Fitted,
    /// Held-out split and epoch order.
    pub layout: Layout,
    /// Features per row after the transform.
    pub width: usize,
    /// An empty `Targets` of the task's kind.
    pub target_kind: Targets,
    /// Rows in the preprocessing sample.
    pub sample_rows: usize,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("files", &self.ctx.files.len())
            .field("rows", &self.layout.rows)
            .field("train_rows", &self.layout.train_rows)
            .field("window_rows", &self.layout.window_rows)
            .finish()
    }
}

impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.layout == other.layout && self.fitted == other.fitted
    }
}

/// The `BatchSource` for `split`'s training rows: a [`DatasetSource`] for a streamed dataset, a
/// [`TableSource`] for a table in memory. `lanes` cuts a streamed dataset's global batches (see
/// [`order`]): the same for every world size of a job, ideally a multiple of it.
///
/// # Errors
/// As [`TableSource::new`] / [`DatasetSource::new`].
pub fn train_source(
    split: &Split,
    name: &str,
    global_batch: usize,
    drop_last: bool,
    seed: u64,
    lanes: usize,
    rank: usize,
    world: usize,
    fixed_order: bool,
) -> Result<Box<dyn BatchSource>, DataError> {
    Ok(match &split.dataset {
        Some(ds) => Box::new(
            DatasetSource::new(Arc::clone(ds), global_batch, drop_last, lanes, rank, world)?
                .with_fixed_order(fixed_order),
        ),
        None => Box::new(
            TableSource::new(
                name,
                Arc::new(split.train.clone()),
                global_batch,
                drop_last,
                seed,
                rank,
                world,
            )?
            .with_fixed_order(fixed_order),
        ),
    })
}

/// `categorical = "error"`: a string feature that is not an id column is an error.
fn refuse_strings(
    spec: &DataSpec,
    features: &[String],
    kinds: &[Kind],
    file: &str,
) -> Result<(), DataError> {
    let string = |(c, k): &(&String, &Kind)| {
        **k == Kind::String && spec.categorical == Categorical::Error && spec.id(c).is_none()
    };
    match features.iter().zip(kinds).find(string) {
        Some((c, _)) => Err(DataError::StringFeature {
            file: file.to_string(),
            column: c.clone(),
        }),
        None => Ok(()),
    }
}

/// Opens the dataset `spec.path` names (file, directory, glob or URL) for streaming. With
/// `stored` (a transform fitted earlier) nothing is fitted and no sample is read: the columns are
/// the stored plans' columns and every row is transformed with it.
///
/// # Errors
/// Any [`DataError`]; listing and schema errors name the file (object) and column.
pub fn load_dataset(
    spec: &DataSpec,
    seed: u64,
    stored: Option<&Fitted>,
) -> Result<Split, DataError> {
    let name = spec.path.display().to_string();
    let config = |message: String| DataError::Config {
        file: name.clone(),
        column: spec.label.clone(),
        message,
    };
    if spec.format == Format::Csv {
        return Err(config(
            "the streaming dataset reader reads Parquet only; give one CSV file without memory_mb"
                .into(),
        ));
    }
    if !(0.0..1.0).contains(&spec.test_fraction) {
        return Err(config(format!(
            "test_fraction = {} is outside [0, 1)",
            spec.test_fraction
        )));
    }
    let budget = Budget {
        bytes: spec.memory_mb.unwrap_or(DEFAULT_MEMORY_MB).max(1) * (1 << 20),
    };
    let store = store::open(spec)?;
    let files = store::block_on(&name, list(&store, spec.on_bad_file, budget.reader()))?;
    let first = &files[0];
    let features = match stored {
        Some(f) => {
            f.check_schema(&first.schema, &first.name)?;
            f.feature_columns().into_iter().map(|(c, _)| c).collect()
        }
        None => select_features(
            &first.schema,
            &first.name,
            &spec.label,
            spec.features.as_deref(),
        )?,
    };
    let mut columns = features.clone();
    columns.push(spec.label.clone());
    check_schemas(&files, &columns)?;
    let kinds: Vec<Kind> = columns
        .iter()
        .map(|c| column_kind(&first.schema, &first.name, c))
        .collect::<Result<_, _>>()?;
    refuse_strings(spec, &features, &kinds, &first.name)?;
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let block_rows = spec.block_rows.unwrap_or(DEFAULT_BLOCK_ROWS).max(1);
    let mut layout = Layout::new(rows, block_rows, 1, seed, spec.test_fraction);
    if layout.train_rows == 0 {
        return Err(DataError::EmptyFile {
            file: name,
            column: spec.label.clone(),
        });
    }
    let ctx = ReadCtx::new(store, files, columns.clone());
    let raw_bytes: usize = kinds
        .iter()
        .map(|k| if *k == Kind::String { 32 } else { 8 })
        .sum();
    let sample_cap = (budget.sample() as usize / raw_bytes.max(1)).max(1);
    let (fitted, sample_rows) = match stored {
        Some(f) => (f.clone(), 0),
        None => fit_on_sample(spec, &ctx, &layout, &columns, &kinds, sample_cap)?,
    };
    let width = fitted.features.width();
    let target_kind = match spec.task {
        super::spec::Task::Multiclass => Targets::Class(Vec::new()),
        _ => Targets::Real(Vec::new()),
    };
    let row_bytes = width as u64 * 4 + ROW_OVERHEAD;
    let window_rows = (budget.window() / row_bytes).max(1);
    layout.window_rows = window_rows;
    let mut ds = Dataset {
        name: name.clone(),
        ctx,
        fitted,
        layout,
        width,
        target_kind,
        sample_rows,
    };
    let eval_cap = (budget.held_out() / (width as u64 * 4 + 4)).max(1) as usize;
    let test = read_held_out(&ds, eval_cap)?;
    ds.ctx.columns = columns;
    tracing::info!(
        "dataset {name}: {} files, {rows} rows ({} training, {} held out read for evaluation), \
         {width} features, blocks of {block_rows} rows, windows of {} rows, \
         preprocessing {}, budget {} MiB",
        ds.ctx.files.len(),
        ds.layout.train_rows,
        test.rows,
        ds.layout.window_rows,
        match stored {
            Some(_) => "given (stored with the run, not refitted)".to_string(),
            None => format!("fitted on {sample_rows} rows"),
        },
        budget.bytes >> 20
    );
    let cost = ReaderCost::of(&ds.ctx.files, &ds.ctx.columns);
    tracing::info!(
        "dataset {name}: memory plan (MiB): windows 4 x {} (this rank's rows only), held-out rows \
         2 x {}, preprocessing sample {} (fit only), reader {} of {} (footers {}, largest row \
         group {}, decode {})",
        mib(budget.window()),
        mib(budget.held_out()),
        mib(budget.sample()),
        mib(cost.total()),
        mib(budget.reader()),
        mib(cost.footers),
        mib(cost.row_group),
        mib(cost.decode)
    );
    if cost.total() > budget.reader() {
        tracing::warn!(
            "dataset {name}: reading needs {} MiB (footers {}, largest row group {}, decode {}), \
             more than the reader's share of memory_mb = {} ({} MiB): the process may exceed \
             the budget; raise memory_mb, or write smaller row groups or fewer columns",
            mib(cost.total()),
            mib(cost.footers),
            mib(cost.row_group),
            mib(cost.decode),
            budget.bytes >> 20,
            mib(budget.reader())
        );
    }
    let fitted = ds.fitted.clone();
    Ok(Split {
        train: empty_table(width, &ds.target_kind, 0),
        test,
        feature_names: fitted.features.feature_names.clone(),
        classes: fitted.label.classes.clone(),
        task: spec.task,
        fitted,
        dataset: Some(Arc::new(ds)),
    })
}

/// Evenly spaced blocks holding about `cap` rows (every block when the dataset is smaller).
fn sample_blocks(layout: &Layout, cap: usize) -> Vec<Range<u64>> {
    let nb = layout.blocks();
    let k = (cap as u64).div_ceil(layout.block_rows).clamp(1, nb.max(1));
    merge((0..k).map(|i| layout.block_range(i * nb / k)))
}

fn append(dst: &mut RawColumn, src: RawColumn) {
    match (dst, src) {
        (RawColumn::Num(d), RawColumn::Num(s)) => d.extend(s),
        (RawColumn::Str(d), RawColumn::Str(s)) => d.extend(s),
        (d, s) => *d = s,
    }
}

/// Fits the label mapping and the feature transform on the training rows of the sample blocks.
fn fit_on_sample(
    spec: &DataSpec,
    ctx: &ReadCtx,
    layout: &Layout,
    columns: &[String],
    kinds: &[Kind],
    cap: usize,
) -> Result<(Fitted, usize), DataError> {
    let ranges = sample_blocks(layout, cap);
    // Sized once: growing by doubling would hold up to twice the sample.
    let n: usize = ranges.iter().map(|r| (r.end - r.start) as usize).sum();
    let mut raw: Vec<RawColumn> = kinds
        .iter()
        .map(|k| match k {
            Kind::Numeric => RawColumn::Num(Vec::with_capacity(n)),
            Kind::String => RawColumn::Str(Vec::with_capacity(n)),
        })
        .collect();
    let mut train_idx = Vec::with_capacity(n);
    let mut seen = 0usize;
    let (seed, tf) = (layout.seed, layout.test_fraction);
    let mut sink = |batch: RecordBatch, first: u64, file: &str| {
        for (i, (c, k)) in columns.iter().zip(kinds).enumerate() {
            append(
                &mut raw[i],
                extract(std::slice::from_ref(&batch), file, c, *k)?,
            );
        }
        for i in 0..batch.num_rows() {
            if !held_out(seed, tf, first + i as u64) {
                train_idx.push(seen + i);
            }
        }
        seen += batch.num_rows();
        Ok(())
    };
    store::block_on(&ctx.store.location, ctx.read(&ranges, &mut sink))?;
    let label_raw = raw.pop().unwrap_or(RawColumn::Num(Vec::new()));
    let named: Vec<(String, RawColumn)> = columns.iter().cloned().zip(raw).collect();
    let name = spec.path.display().to_string();
    let label = LabelPlan::fit(
        &spec.label,
        spec.task,
        spec.positive.as_deref(),
        spec.classes,
        &label_raw,
        &name,
    )?;
    let features = Preprocessor::fit(spec, &named, &train_idx, &name)?;
    Ok((Fitted { features, label }, train_idx.len()))
}

/// The first `cap` held-out rows in dataset order, transformed.
fn read_held_out(ds: &Dataset, cap: usize) -> Result<Table, DataError> {
    let layout = &ds.layout;
    let mut end = 0u64;
    let mut n = 0usize;
    while end < layout.rows && n < cap {
        if held_out(layout.seed, layout.test_fraction, end) {
            n += 1;
        }
        end += 1;
    }
    let mut table = empty_table(ds.width, &ds.target_kind, n);
    if n == 0 {
        return Ok(table);
    }
    let mut conversion = Conversion::default();
    let mut rows = Vec::new();
    let mut sink = |batch: RecordBatch, first: u64, file: &str| {
        rows.clear();
        rows.extend(
            (0..batch.num_rows())
                .filter(|&i| held_out(layout.seed, layout.test_fraction, first + i as u64)),
        );
        conversion.append(&ds.fitted, &batch, file, &rows, &mut table)
    };
    let whole = 0..end;
    let prefix = std::slice::from_ref(&whole);
    store::block_on(&ds.name, ds.ctx.read(prefix, &mut sink))?;
    Ok(table)
}
