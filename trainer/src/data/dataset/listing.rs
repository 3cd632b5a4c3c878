//! From `[job.data] path` to the dataset's files: a single file, every Parquet file under a
//! directory (or prefix), or the files whose name matches a glob in the last path segment; in name
//! order, each with a summary of its footer (schema, rows per row group, the bytes of each column's
//! largest chunk) and a compact index of its chunks ([`FooterIndex`]). Parsed footers are not kept:
//! a wide file of many row groups has megabytes of them; the reader builds the metadata of the row
//! groups it reads from the index (see [`super::reader`]).
//!
//! Names starting with `_` or `.` (Spark's `_SUCCESS`, checksum files) and names without a
//! `.parquet`/`.pq` extension are not part of a directory. Files whose footer cannot be read are an
//! error, or are left out with `on_bad_file = "skip"`. The needed columns must exist in every file
//! with the same kind (numbers or strings); otherwise the error names the file and the column.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectMeta;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::file::metadata::ParquetStatisticsPolicy;

use super::footer::FooterIndex;
use super::store::Store;
use crate::data::columns::{column_kind, glob_match, missing_column};
use crate::data::error::DataError;
use crate::data::spec::OnBadFile;

/// Footers fetched at once when listing many files.
const FOOTER_CONCURRENCY: usize = 16;

/// One Parquet file of a dataset: what its footer says, without the footer.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// Name for messages (URL or local path).
    pub name: String,
    /// Object path in the store.
    pub location: ObjectPath,
    /// Size in bytes.
    pub size: u64,
    /// Arrow schema.
    pub schema: SchemaRef,
    /// Rows of each row group, in order.
    pub group_rows: Vec<u64>,
    /// Per top-level column (by schema index): its largest chunk over the row groups, compressed
    /// plus uncompressed bytes (what reading one row group of it holds at most).
    pub column_bytes: Vec<u64>,
    /// Memory of the parsed footer (while listing; a read holds its row groups' share of it).
    pub footer_bytes: u64,
    /// What reading needs of the footer, kept for the whole job.
    pub index: Arc<FooterIndex>,
    /// First logical row of this file in the dataset.
    pub first_row: u64,
    /// Rows in the file.
    pub rows: u64,
}

impl DataFile {
    /// Rows of each row group, in order.
    pub fn row_group_rows(&self) -> impl Iterator<Item = u64> + '_ {
        self.group_rows.iter().copied()
    }
}

/// Lists the files `store.location` names, in name order, and reads their footers.
///
/// # Errors
/// `Io` for a path that matches nothing, a missing bucket, refused credentials or a store that
/// keeps timing out (each naming the path or object); `Decode` for an unreadable footer when
/// `on_bad_file = "error"`.
///
/// Footers are parsed up to [`FOOTER_CONCURRENCY`] at once, fewer when the first file's parsed
/// footer says that many would not fit in `budget` bytes (a wide file of many row groups parses
/// to tens of MiB).
pub async fn list(
    store: &Store,
    on_bad: OnBadFile,
    budget: u64,
) -> Result<Vec<DataFile>, DataError> {
    let mut metas = matching_objects(store).await?.into_iter();
    let mut opened: Vec<Result<DataFile, DataError>> = Vec::new();
    // Sequentially until one footer parses: its size sets how many may be parsed at once.
    let mut at_once = 1;
    for m in metas.by_ref() {
        let f = open_footer(store, m).await;
        if let Ok(f) = &f {
            at_once = (budget / f.footer_bytes.max(1)).clamp(1, FOOTER_CONCURRENCY as u64) as usize;
        }
        let done = f.is_ok();
        opened.push(f);
        if done {
            break;
        }
    }
    let rest: Vec<Result<DataFile, DataError>> = futures::stream::iter(metas)
        .map(|m| open_footer(store, m))
        .buffered(at_once)
        .collect()
        .await;
    opened.extend(rest);
    let mut files = Vec::with_capacity(opened.len());
    for f in opened {
        match f {
            Ok(f) => files.push(f),
            Err(e @ DataError::Decode { .. }) if on_bad == OnBadFile::Skip => {
                tracing::warn!("skipping a bad dataset file (on_bad_file = \"skip\"): {e}");
            }
            Err(e) => return Err(e),
        }
    }
    let mut first_row = 0;
    for f in &mut files {
        f.first_row = first_row;
        first_row += f.rows;
    }
    if files.is_empty() {
        return Err(nothing(store));
    }
    Ok(files)
}

/// Checks that every file has `columns` with the kinds the first file has.
///
/// # Errors
/// `MissingColumn` or `Config`, naming the file and the column (and the first file).
pub fn check_schemas(files: &[DataFile], columns: &[String]) -> Result<(), DataError> {
    let Some(first) = files.first() else {
        return Ok(());
    };
    let schema0 = first.schema.as_ref();
    let kinds: Vec<_> = columns
        .iter()
        .map(|c| column_kind(schema0, &first.name, c))
        .collect::<Result<_, _>>()?;
    for f in &files[1..] {
        let schema = f.schema.as_ref();
        for (c, k) in columns.iter().zip(&kinds) {
            if schema.field_with_name(c).is_err() {
                return Err(missing_column(schema, &f.name, c));
            }
            let kind = column_kind(schema, &f.name, c)?;
            if kind != *k {
                let dtype = |s: &arrow_schema::Schema| {
                    s.field_with_name(c)
                        .map(|f| f.data_type().to_string())
                        .unwrap_or_default()
                };
                return Err(DataError::Config {
                    file: f.name.clone(),
                    column: c.clone(),
                    message: format!(
                        "type {} disagrees with {} in the dataset's first file {}",
                        dtype(schema),
                        dtype(schema0),
                        first.name
                    ),
                });
            }
        }
    }
    Ok(())
}

fn nothing(store: &Store) -> DataError {
    DataError::Io {
        file: format!("{}{}", store.display_prefix, store.location),
        message: "matches no Parquet file".into(),
    }
}

fn is_data_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('_')
        && !name.starts_with('.')
        && (lower.ends_with(".parquet") || lower.ends_with(".pq"))
}

/// The objects `store.location` names, sorted by path.
async fn matching_objects(store: &Store) -> Result<Vec<ObjectMeta>, DataError> {
    let loc = store.location.trim_end_matches('/');
    let (dir, pattern) = match loc.rsplit_once('/') {
        Some((d, last)) if last.contains(['*', '?', '[']) => (d.to_string(), Some(last)),
        None if loc.contains(['*', '?', '[']) => (String::new(), Some(loc)),
        _ => (loc.to_string(), None),
    };
    let prefix = ObjectPath::from(dir.as_str());
    if pattern.is_none() && !store.location.ends_with('/') {
        match store.inner.head(&prefix).await {
            Ok(meta) => return Ok(vec![meta]),
            Err(object_store::Error::NotFound { .. }) => {}
            // A local directory answers `head` with an error of its own: list it instead.
            Err(_) if store.local => {}
            Err(e) => return Err(store_error(store, &prefix, "looking it up", e)),
        }
    }
    let listed: Vec<ObjectMeta> = store
        .inner
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error(store, &prefix, "listing", e))?;
    let mut hits: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| {
            let rel = m
                .location
                .prefix_match(&prefix)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
                .unwrap_or_default();
            let Some(file) = rel.last() else { return false };
            let hidden = rel.iter().any(|p| p.starts_with('_') || p.starts_with('.'));
            match pattern {
                Some(p) => rel.len() == 1 && glob_match(p, file),
                None => !hidden && is_data_name(file),
            }
        })
        .collect();
    hits.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    if hits.is_empty() {
        return Err(nothing(store));
    }
    Ok(hits)
}

/// An object-store error as a `DataError` naming the object.
pub fn store_error(
    store: &Store,
    path: &ObjectPath,
    what: &str,
    e: object_store::Error,
) -> DataError {
    DataError::Io {
        file: store.name(path),
        message: format!("{what}: {e}"),
    }
}

/// Reads and parses the footer of `location` (`size` bytes), naming `name` in errors.
///
/// # Errors
/// `Io` when the store fails, `Decode` when the footer is not Parquet.
pub async fn load_footer(
    store: &Store,
    location: &ObjectPath,
    size: u64,
    name: &str,
) -> Result<ArrowReaderMetadata, DataError> {
    let mut reader =
        ParquetObjectReader::new(Arc::clone(&store.inner), location.clone()).with_file_size(size);
    // Page encoding statistics are not used: not decoding them makes the footer cheaper to
    // parse (it is parsed again each time reading moves to the file).
    let options =
        ArrowReaderOptions::new().with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll);
    ArrowReaderMetadata::load_async(&mut reader, options)
        .await
        .map_err(|e| match e {
            parquet::errors::ParquetError::External(inner) => DataError::Io {
                file: name.to_string(),
                message: format!("cannot read: {inner}"),
            },
            other => DataError::Decode {
                file: name.to_string(),
                format: "parquet",
                message: other.to_string(),
            },
        })
}

async fn open_footer(store: &Store, meta: ObjectMeta) -> Result<DataFile, DataError> {
    let name = store.name(&meta.location);
    let md = load_footer(store, &meta.location, meta.size, &name).await?;
    let pq = md.metadata();
    let descr = pq.file_metadata().schema_descr();
    let mut column_bytes = vec![0u64; md.schema().fields().len()];
    for g in pq.row_groups() {
        let mut in_group = vec![0u64; column_bytes.len()];
        for (leaf, chunk) in g.columns().iter().enumerate() {
            let root = descr.get_column_root_idx(leaf);
            let bytes = chunk.compressed_size().max(0) + chunk.uncompressed_size().max(0);
            if let Some(b) = in_group.get_mut(root) {
                *b += bytes as u64;
            }
        }
        for (max, b) in column_bytes.iter_mut().zip(in_group) {
            *max = (*max).max(b);
        }
    }
    Ok(DataFile {
        name,
        location: meta.location,
        size: meta.size,
        schema: md.schema().clone(),
        group_rows: pq
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect(),
        column_bytes,
        footer_bytes: pq.memory_size() as u64,
        index: Arc::new(FooterIndex::of(pq)),
        first_row: 0,
        rows: pq.file_metadata().num_rows().max(0) as u64,
    })
}
