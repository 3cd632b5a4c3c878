//! The memory budget of a streamed dataset (`[job.data] memory_mb`): what each share holds.
//!
//! The shares that decide *what is computed* (window size, so the shuffle; sample size, so the
//! fitted transform; held-out rows kept, so the evaluation) are fixed fractions of the budget and
//! of the row width, never of the file layout or the number of workers, so the same rows cut
//! differently give the same results. What the layout decides (the footers kept for every file,
//! the largest row group fetched whole, the decode transients) is measured from the footers and
//! checked against its own share; when it does not fit, a warning names the figures.
//!
//! | share | of `memory_mb` | holds |
//! |---|---|---|
//! | windows | 40% | at most 4 windows of 10% each (features as `f32`, target, order): in practice three, the one in use, one prefetched, one being read |
//! | held-out rows | 10% | 2 copies of 5% (the split and the evaluator's batch) |
//! | preprocessing sample | 20% | raw sample values while fitting, freed before training |
//! | reader | 15% | the footer indexes of all files and the metadata of the row groups being read, one projected row group (compressed and decoded), one decoded record batch and its transform |
//! | process | 15% | not data: binary, threads, runtime, model, optimizer, gradients, communication buffers, allocator slack |
//!
//! Windows hold only the rows of this rank's shares, so with `w` workers a window takes about
//! `1/w` of its 10% (the window's *size* in rows does not depend on `w`).

use super::listing::DataFile;
use super::reader::{batch_rows, positions, row_bytes};

/// Bytes per window row besides its features: target (4), order slot (4), permutation (4),
/// position bookkeeping while it is built (5).
pub const ROW_OVERHEAD: u64 = 17;

/// The budget in bytes and its shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// `memory_mb` in bytes.
    pub bytes: u64,
}

impl Budget {
    /// One window (of at most four).
    pub fn window(&self) -> u64 {
        self.bytes / 10
    }
    /// One copy (of two) of the held-out rows kept for evaluation.
    pub fn held_out(&self) -> u64 {
        self.bytes / 20
    }
    /// The preprocessing sample (fit only).
    pub fn sample(&self) -> u64 {
        self.bytes / 5
    }
    /// Footers, row-group fetch and decode.
    pub fn reader(&self) -> u64 {
        self.bytes * 3 / 20
    }
}

/// What reading costs whatever the window size, from the footers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReaderCost {
    /// The footer indexes of every file, and the metadata a read builds of its row groups.
    pub footers: u64,
    /// The largest row group's projected columns, compressed plus uncompressed (fetched whole,
    /// then decoded page by page).
    pub row_group: u64,
    /// One decoded record batch: Arrow arrays and the reader's buffers.
    pub decode: u64,
}

impl ReaderCost {
    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.footers + self.row_group + self.decode
    }

    /// The cost of reading `columns` of `files`.
    pub fn of(files: &[DataFile], columns: &[String]) -> Self {
        let mut footers: u64 = files.iter().map(|f| f.index.bytes()).sum();
        let mut per_read = 0u64;
        let mut row_group = 0u64;
        let mut decoded_row = 0usize;
        for f in files {
            let at = positions(&f.schema, columns);
            decoded_row = decoded_row.max(row_bytes(&f.schema, &at));
            // A read builds the metadata of the row groups it touches: about two.
            let groups = f.group_rows.len().max(1) as u64;
            per_read = per_read.max(2 * f.footer_bytes.div_ceil(groups));
            let bytes: u64 = at.iter().filter_map(|&i| f.column_bytes.get(i)).sum();
            row_group = row_group.max(bytes);
        }
        footers += per_read;
        // Arrow arrays and the reader's buffers (see `reader::value_bytes`); the batch is
        // transformed straight into the window (counted there), one tile of rows at a time.
        let decode = (batch_rows(decoded_row) * decoded_row) as u64;
        ReaderCost {
            footers,
            row_group,
            decode,
        }
    }
}

/// MiB, one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}
