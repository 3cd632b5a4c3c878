//! Reading logical row ranges of a dataset: each range is mapped onto the files and row groups
//! that hold it, and read with the parquet crate's async reader (only the needed columns, only the
//! row groups that overlap, a row selection for the rest), so the bytes fetched are those of the
//! ranges and not whole files.
//!
//! Footers are not fetched again: the metadata of the row groups a read touches is built from the
//! listing's [`FooterIndex`](super::footer::FooterIndex) of the file. Record batches are cut to at
//! most [`DECODE_BYTES`] of decoded values, so wide rows decode in fewer rows.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;

use super::listing::DataFile;
use super::store::Store;
use crate::data::error::DataError;

/// Rows per decoded record batch at most.
pub const READ_BATCH_ROWS: usize = 8192;
/// Bytes of one decoded record batch at most, counted with [`value_bytes`] per value.
/// Large batches matter: the reader's cost per batch (one array per column, its buffers, the
/// conversion's column lookup) is paid per batch, so narrow batches of wide rows are slow.
pub const DECODE_BYTES: usize = 32 << 20;

/// Bytes one decoded value of Arrow type `t` holds: its Arrow array and the reader's buffer it was
/// decoded in (Parquet stores integers narrower than 32 bits as 32-bit values); 32 for strings
/// and other variable-width types.
pub fn value_bytes(t: &arrow_schema::DataType) -> usize {
    match t.primitive_width() {
        Some(w) => w + w.max(4),
        None => 32,
    }
}

/// The positions in `schema` of those of `columns` it has, by name through a map (`index_of` per
/// column is quadratic in wide schemas).
pub fn positions(schema: &arrow_schema::Schema, columns: &[String]) -> Vec<usize> {
    let by_name: std::collections::HashMap<&str, usize> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    columns
        .iter()
        .filter_map(|c| by_name.get(c.as_str()).copied())
        .collect()
}

/// Bytes one row of the columns at `positions` of `schema` holds decoded (see [`value_bytes`]).
pub fn row_bytes(schema: &arrow_schema::Schema, positions: &[usize]) -> usize {
    positions
        .iter()
        .map(|&i| value_bytes(schema.field(i).data_type()))
        .sum()
}

/// Rows per decoded record batch for rows of `row_bytes` decoded bytes.
pub fn batch_rows(row_bytes: usize) -> usize {
    (DECODE_BYTES / row_bytes.max(1)).clamp(64, READ_BATCH_ROWS)
}

/// What every read needs: the store, the files and the columns to project.
pub struct ReadCtx {
    /// The store.
    pub store: Store,
    /// The files, in dataset order.
    pub files: Vec<DataFile>,
    /// Columns to read (features and label).
    pub columns: Vec<String>,
}

/// Merges sorted, possibly adjacent ranges.
pub fn merge(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        if r.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

impl ReadCtx {
    /// A context reading `columns` of `files` from `store`.
    pub fn new(store: Store, files: Vec<DataFile>, columns: Vec<String>) -> Self {
        ReadCtx {
            store,
            files,
            columns,
        }
    }

    /// Reads the logical rows `ranges` (sorted, disjoint) in order and hands each piece to `sink`
    /// with its first logical row and the name of its file.
    ///
    /// # Errors
    /// `Io` (object store) or `Decode` (Parquet) naming the file; whatever `sink` returns.
    pub async fn read(
        &self,
        ranges: &[Range<u64>],
        sink: &mut (dyn FnMut(RecordBatch, u64, &str) -> Result<(), DataError> + Send),
    ) -> Result<(), DataError> {
        for (index, f) in self.files.iter().enumerate() {
            let file_range = f.first_row..f.first_row + f.rows;
            let local: Vec<Range<u64>> = ranges
                .iter()
                .filter(|r| r.start < file_range.end && r.end > file_range.start)
                .map(|r| {
                    r.start.max(file_range.start) - f.first_row
                        ..r.end.min(file_range.end) - f.first_row
                })
                .collect();
            if !local.is_empty() {
                self.read_file(index, &local, sink).await?;
            }
        }
        Ok(())
    }

    async fn read_file(
        &self,
        index: usize,
        local: &[Range<u64>],
        sink: &mut (dyn FnMut(RecordBatch, u64, &str) -> Result<(), DataError> + Send),
    ) -> Result<(), DataError> {
        let f = &self.files[index];
        let (groups, selection, mut runs) = plan_file(f, local);
        let metadata = f.index.metadata(&groups).map_err(|e| DataError::Decode {
            file: f.name.clone(),
            format: "parquet",
            message: e.to_string(),
        })?;
        let schema = metadata.schema();
        let roots = positions(schema, &self.columns);
        let rows_per_batch = batch_rows(row_bytes(schema, &roots));
        let mask = ProjectionMask::roots(metadata.metadata().file_metadata().schema_descr(), roots);
        let reader = ParquetObjectReader::new(Arc::clone(&self.store.inner), f.location.clone())
            .with_file_size(f.size);
        let decode = |e: parquet::errors::ParquetError| match e {
            parquet::errors::ParquetError::External(inner) => DataError::Io {
                file: f.name.clone(),
                message: format!("cannot read: {inner}"),
            },
            other => DataError::Decode {
                file: f.name.clone(),
                format: "parquet",
                message: other.to_string(),
            },
        };
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_projection(mask)
            .with_row_groups((0..groups.len()).collect())
            .with_row_selection(selection)
            .with_batch_size(rows_per_batch)
            .build()
            .map_err(decode)?;
        while let Some(batch) = stream.try_next().await.map_err(decode)? {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let Some(run) = runs.front_mut() else { break };
                let take = (run.end - run.start).min((batch.num_rows() - offset) as u64) as usize;
                sink(batch.slice(offset, take), f.first_row + run.start, &f.name)?;
                run.start += take as u64;
                offset += take;
                if run.start == run.end {
                    runs.pop_front();
                }
            }
        }
        Ok(())
    }
}

/// Row groups overlapping `local` (file rows), the selection within them, and the selected runs.
fn plan_file(
    f: &DataFile,
    local: &[Range<u64>],
) -> (Vec<usize>, RowSelection, VecDeque<Range<u64>>) {
    let mut groups = Vec::new();
    let mut selectors = Vec::new();
    let mut start = 0u64;
    for (g, n) in f.row_group_rows().enumerate() {
        let group = start..start + n;
        start += n;
        let inside: Vec<Range<u64>> = local
            .iter()
            .filter(|r| r.start < group.end && r.end > group.start)
            .map(|r| r.start.max(group.start)..r.end.min(group.end))
            .collect();
        if inside.is_empty() {
            continue;
        }
        groups.push(g);
        let mut at = group.start;
        for r in &inside {
            if r.start > at {
                selectors.push(RowSelector::skip((r.start - at) as usize));
            }
            selectors.push(RowSelector::select((r.end - r.start) as usize));
            at = r.end;
        }
        if group.end > at {
            selectors.push(RowSelector::skip((group.end - at) as usize));
        }
    }
    (groups, selectors.into(), local.iter().cloned().collect())
}
