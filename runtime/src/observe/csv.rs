//! `<run dir>/metrics.csv`: one row per evaluation, appended (and flushed) as the run goes, so a
//! spreadsheet, pandas or `lockstep plot` can read it at any time.
//!
//! Columns: `round` (rounds completed), `epoch` (fractional epochs completed), `elapsed_s`
//! (since training started at the coordinator), `train_loss` (mean over the rounds since the
//! previous row), `samples_per_s` (over the same rounds), then `eval_<metric>` for every metric
//! of the first evaluation, sorted by name (`eval_accuracy`, `eval_loss`, ...). The header is
//! written with the first row.
//!
//! A stream (`source = "stream"`) has no epochs: its rows have `rows` (rows trained so far) in
//! place of `epoch`, and `preq_<metric>` columns (the prequential metrics over the last `window`
//! rows) before the `eval_<metric>` ones; its last row (after the last round, when that round
//! did not evaluate) has the prequential metrics and empty `eval_` cells.

use crate::error::RuntimeError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CsvRow {
    /// Rounds completed.
    pub round: u64,
    /// Epochs completed (fractional).
    pub epoch: f64,
    /// Seconds since training started.
    pub elapsed_s: f64,
    /// Mean training loss since the previous row.
    pub train_loss: f64,
    /// Throughput since the previous row.
    pub samples_per_s: f64,
    /// The evaluation.
    pub eval: BTreeMap<String, f64>,
    /// Streams: rows trained so far (written in place of `epoch`).
    pub rows: Option<u64>,
    /// Streams: the prequential metrics over the window (`preq_<metric>` columns).
    pub prequential: BTreeMap<String, f64>,
}

/// Appends rows to `metrics.csv`.
pub(crate) struct MetricsCsv {
    path: PathBuf,
    file: Option<std::fs::File>,
    columns: Vec<String>,
    preq_columns: Vec<String>,
}

impl MetricsCsv {
    /// A writer of `path` (created, or truncated, with the first row).
    pub(crate) fn new(path: PathBuf) -> Self {
        MetricsCsv {
            path,
            file: None,
            columns: Vec::new(),
            preq_columns: Vec::new(),
        }
    }

    /// Append `row` (the first one also writes the header and fixes the eval columns).
    ///
    /// # Errors
    /// [`RuntimeError::Io`] naming the file.
    pub(crate) fn append(&mut self, row: &CsvRow) -> Result<(), RuntimeError> {
        let io = |e| RuntimeError::io("write", &self.path, e);
        if self.file.is_none() {
            let mut f = std::fs::File::create(&self.path).map_err(io)?;
            self.columns = row.eval.keys().cloned().collect();
            // The window's size is not a metric.
            self.preq_columns = row
                .prequential
                .keys()
                .filter(|k| *k != "rows")
                .cloned()
                .collect();
            let preqs: String = (self.preq_columns.iter())
                .map(|c| format!(",preq_{c}"))
                .collect();
            let evals: String = self.columns.iter().map(|c| format!(",eval_{c}")).collect();
            let progress = if row.rows.is_some() { "rows" } else { "epoch" };
            writeln!(
                f,
                "round,{progress},elapsed_s,train_loss,samples_per_s{preqs}{evals}"
            )
            .map_err(io)?;
            self.file = Some(f);
        }
        let cells = |columns: &[String], values: &BTreeMap<String, f64>| -> String {
            (columns.iter())
                .map(|c| values.get(c).map_or(",".to_string(), |v| format!(",{v}")))
                .collect()
        };
        let preqs = cells(&self.preq_columns, &row.prequential);
        let evals = cells(&self.columns, &row.eval);
        let progress = match row.rows {
            Some(rows) => rows.to_string(),
            None => format!("{:.4}", row.epoch),
        };
        let line = format!(
            "{},{progress},{:.3},{},{:.1}{preqs}{evals}\n",
            row.round, row.elapsed_s, row.train_loss, row.samples_per_s
        );
        let f = self.file.as_mut().expect("opened above");
        f.write_all(line.as_bytes()).map_err(io)?;
        f.flush().map_err(io)
    }
}

/// `metrics.csv` read back: the header and every row as numbers (empty cells are NaN).
///
/// # Errors
/// [`RuntimeError::Io`] naming the file when it is missing or a cell is not a number.
pub(crate) fn read(path: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>), RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io("read", path, e))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| RuntimeError::io("read", path, "empty file"))?
        .split(',')
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let row = line
            .split(',')
            .map(|c| match c {
                "" => Ok(f64::NAN),
                c => c.parse::<f64>().map_err(|e| {
                    RuntimeError::io("parse", path, format!("line {}: {c:?}: {e}", i + 2))
                }),
            })
            .collect::<Result<Vec<f64>, _>>()?;
        rows.push(row);
    }
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_and_rows_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut w = MetricsCsv::new(path.clone());
        for r in 1..=3u64 {
            let eval = BTreeMap::from([("accuracy".into(), 0.5 + r as f64 / 10.0)]);
            let row = CsvRow {
                round: r * 10,
                epoch: r as f64,
                elapsed_s: r as f64,
                train_loss: 1.0 / r as f64,
                samples_per_s: 100.0,
                eval,
                rows: None,
                prequential: BTreeMap::new(),
            };
            w.append(&row).unwrap();
        }
        let (header, rows) = read(&path).unwrap();
        assert_eq!(
            header,
            [
                "round",
                "epoch",
                "elapsed_s",
                "train_loss",
                "samples_per_s",
                "eval_accuracy"
            ]
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2][0], 30.0);
        assert!((rows[2][5] - 0.8).abs() < 1e-12);
    }

    #[test]
    fn a_stream_writes_rows_and_prequential_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut w = MetricsCsv::new(path.clone());
        let preq = |auc: f64| {
            BTreeMap::from([
                ("auc".to_string(), auc),
                ("loss".to_string(), 0.5),
                ("rows".to_string(), 1000.0),
            ])
        };
        let row = |round: u64, eval: BTreeMap<String, f64>, auc: f64| CsvRow {
            round,
            epoch: 0.0,
            elapsed_s: 1.0,
            train_loss: 0.6,
            samples_per_s: 100.0,
            eval,
            rows: Some(round * 32),
            prequential: preq(auc),
        };
        w.append(&row(50, BTreeMap::from([("auc".into(), 0.8)]), 0.7))
            .unwrap();
        // The last row: no held-out evaluation at that round.
        w.append(&row(139, BTreeMap::new(), 0.75)).unwrap();
        let (header, rows) = read(&path).unwrap();
        assert_eq!(
            header,
            [
                "round",
                "rows",
                "elapsed_s",
                "train_loss",
                "samples_per_s",
                "preq_auc",
                "preq_loss",
                "eval_auc"
            ]
        );
        assert_eq!(rows[0][1], 1600.0);
        assert_eq!(rows[1][1], 139.0 * 32.0);
        assert_eq!(rows[1][5], 0.75);
        assert!(rows[1][7].is_nan());
    }
}
