//! Where Arrow record batches come from: the `RecordBatchSource` trait (bounded files now,
//! unbounded streams such as Arrow IPC from Apache Flink later) and its file-backed implementation
//! over Parquet and CSV.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::error::DataError;
use super::spec::Format;
use super::table::{Fitted, Table};

/// Rows per record batch when reading files.
const READ_BATCH_ROWS: usize = 8192;

/// A source of Arrow record batches sharing one schema; possibly unbounded.
///
/// `next_batch` returns `Ok(None)` once a bounded source is exhausted; an unbounded one blocks
/// (with a deadline of its own) until rows arrive.
pub trait RecordBatchSource: Send {
    /// Name used in error messages (the file path, or the stream's name).
    fn name(&self) -> &str;
    /// Schema of every batch.
    fn schema(&self) -> SchemaRef;
    /// The next batch, or `None` at the end.
    ///
    /// # Errors
    /// A [`DataError`] naming the source when decoding fails.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, DataError>;
}

/// Where a stream's converted rows come from. Every [`RecordBatchSource`] is one: its batches are
/// converted by the job's [`Fitted`] transform as they are read. A source that has converted its
/// rows already (the ingest buffers convert every batch on arrival, to refuse a bad value from one
/// producer without failing the job) implements this directly and hands its tables over, so no row
/// is converted twice.
pub trait RowSource: Send {
    /// Name used in error messages.
    fn name(&self) -> &str;
    /// The next rows, converted by `fitted`, or `None` at the end.
    ///
    /// # Errors
    /// A [`DataError`] naming the source when reading or converting fails.
    fn next_rows(&mut self, fitted: &Fitted) -> Result<Option<Table>, DataError>;
}

impl<R: RecordBatchSource> RowSource for R {
    fn name(&self) -> &str {
        RecordBatchSource::name(self)
    }

    fn next_rows(&mut self, fitted: &Fitted) -> Result<Option<Table>, DataError> {
        match self.next_batch()? {
            Some(rb) => fitted.table(&rb, RecordBatchSource::name(self)).map(Some),
            None => Ok(None),
        }
    }
}

enum Reader {
    Parquet(ParquetRecordBatchReader),
    Csv(Box<arrow_csv::Reader<File>>),
}

/// A Parquet or CSV file read batch by batch.
pub struct FileRecords {
    name: String,
    format: Format,
    schema: SchemaRef,
    reader: Reader,
}

impl FileRecords {
    /// Opens `path` as `format` (`Auto` guesses from the extension).
    ///
    /// # Errors
    /// `Io`, `UnknownFormat`, `Decode` or, for a 0-byte file, `EmptyFile` (naming `label`).
    pub fn open(path: &Path, format: Format, label: &str) -> Result<Self, DataError> {
        let name = path.display().to_string();
        let format = resolve_format(path, format)?;
        let io = |e: std::io::Error| DataError::Io {
            file: name.clone(),
            message: e.to_string(),
        };
        let file = File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            return Err(DataError::EmptyFile {
                file: name,
                column: label.to_string(),
            });
        }
        let (schema, reader) = match format {
            Format::Csv => open_csv(file, &name)?,
            _ => open_parquet(file, &name)?,
        };
        Ok(FileRecords {
            name,
            format,
            schema,
            reader,
        })
    }

    /// Reads every remaining batch.
    ///
    /// # Errors
    /// As [`RecordBatchSource::next_batch`].
    pub fn read_all(mut self) -> Result<(SchemaRef, Vec<RecordBatch>), DataError> {
        let mut batches = Vec::new();
        while let Some(b) = self.next_batch()? {
            batches.push(b);
        }
        Ok((self.schema, batches))
    }
}

impl RecordBatchSource for FileRecords {
    fn name(&self) -> &str {
        &self.name
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, DataError> {
        let next = match &mut self.reader {
            Reader::Parquet(r) => r.next(),
            Reader::Csv(r) => r.next(),
        };
        next.transpose().map_err(|e| DataError::Decode {
            file: self.name.clone(),
            format: format_name(self.format),
            message: e.to_string(),
        })
    }
}

fn resolve_format(path: &Path, format: Format) -> Result<Format, DataError> {
    if format != Format::Auto {
        return Ok(format);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("parquet") | Some("pq") => Ok(Format::Parquet),
        Some("csv") => Ok(Format::Csv),
        _ => Err(DataError::UnknownFormat {
            file: PathBuf::from(path).display().to_string(),
        }),
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        _ => "parquet",
    }
}

fn open_parquet(file: File, name: &str) -> Result<(SchemaRef, Reader), DataError> {
    let err = |e: parquet::errors::ParquetError| DataError::Decode {
        file: name.to_string(),
        format: "parquet",
        message: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(err)?;
    Ok((schema, Reader::Parquet(reader)))
}

fn open_csv(mut file: File, name: &str) -> Result<(SchemaRef, Reader), DataError> {
    let err = |message: String| DataError::Decode {
        file: name.to_string(),
        format: "csv",
        message,
    };
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(&mut file, None)
        .map_err(|e| err(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| err(e.to_string()))?;
    let schema = Arc::new(schema);
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(READ_BATCH_ROWS)
        .build(file)
        .map_err(|e| err(e.to_string()))?;
    Ok((schema, Reader::Csv(Box::new(reader))))
}
