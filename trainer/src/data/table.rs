//! `Table` (rows of f32 features with targets, in memory) and `Split` (train and test tables with
//! the fitted transform that made them).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dataset::Dataset;

use super::columns::Kind;
use super::label::LabelPlan;
use super::preprocess::Preprocessor;
use super::spec::Task;
use crate::batch::{Batch, Targets};

/// Rows of features (`rows x cols`, row-major) and one target per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Features, row-major.
    pub x: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// Targets, one per row.
    pub y: Targets,
}

impl Table {
    /// The rows `indices` (in that order, repeats allowed) as a `Batch`.
    ///
    /// # Panics
    /// If an index is `>= self.rows` (indices come from the cursor and shard, never from input).
    pub fn batch(&self, indices: &[usize]) -> Batch {
        let mut x = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            x.extend_from_slice(&self.x[i * self.cols..(i + 1) * self.cols]);
        }
        let y = match &self.y {
            Targets::Real(v) => Targets::Real(indices.iter().map(|&i| v[i]).collect()),
            Targets::Class(v) => Targets::Class(indices.iter().map(|&i| v[i]).collect()),
        };
        Batch {
            x,
            rows: indices.len(),
            cols: self.cols,
            y,
        }
    }

    /// Rows `n..` as a table of their own; `self` keeps rows `..n` in place (only the tail is
    /// copied, no row is gathered).
    ///
    /// # Panics
    /// If `n > self.rows` (callers cut within what they hold).
    pub fn split_off(&mut self, n: usize) -> Table {
        assert!(n <= self.rows, "split_off({n}) of {} rows", self.rows);
        let y = match &mut self.y {
            Targets::Real(v) => Targets::Real(v.split_off(n)),
            Targets::Class(v) => Targets::Class(v.split_off(n)),
        };
        let rest = Table {
            x: self.x.split_off(n * self.cols),
            rows: self.rows - n,
            cols: self.cols,
            y,
        };
        self.rows = n;
        rest
    }

    /// All rows, in order, as one `Batch`, without a copy.
    pub fn into_batch(self) -> Batch {
        Batch {
            x: self.x,
            rows: self.rows,
            cols: self.cols,
            y: self.y,
        }
    }

    /// All rows, in order, as one `Batch`.
    pub fn all(&self) -> Batch {
        Batch {
            x: self.x.clone(),
            rows: self.rows,
            cols: self.cols,
            y: self.y.clone(),
        }
    }
}

/// Everything a fitted data set carries besides its tables: enough to transform new rows the same
/// way (streams, `lockstep predict`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// Feature transform fitted on the training rows.
    pub features: Preprocessor,
    /// Label mapping.
    pub label: LabelPlan,
}

impl Fitted {
    /// The input feature columns, in feature order, with the kind each was fitted on.
    pub fn feature_columns(&self) -> Vec<(String, Kind)> {
        self.features
            .columns
            .iter()
            .map(|plan| (plan.name().to_string(), plan.kind()))
            .collect()
    }
}

/// A data set split into training and held-out rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training rows (in file order; shuffling is per epoch, see `EpochPlan`).
    pub train: Table,
    /// Held-out rows (in file order).
    pub test: Table,
    /// Output feature names (`col` or `col=category`), `train.cols` of them.
    pub feature_names: Vec<String>,
    /// Class names: `[negative, positive]` (binary), `"0".."k-1"` (multiclass), empty (regression).
    pub classes: Vec<String>,
    /// The task.
    pub task: Task,
    /// The fitted transforms.
    pub fitted: Fitted,
    /// A dataset streamed from files or object storage: then `train` is empty and the training
    /// rows are read round by round (see [`train_source`](super::train_source)).
    pub dataset: Option<Arc<Dataset>>,
}

impl Split {
    /// Logical rows of the data set: training and held out (for a streamed dataset, all of its
    /// rows, not only the held-out ones kept in memory).
    pub fn data_rows(&self) -> u64 {
        match &self.dataset {
            Some(ds) => ds.layout.rows,
            None => (self.train.rows + self.test.rows) as u64,
        }
    }

    /// Rows the preprocessing was fitted on: the training rows, or a streamed dataset's sample of
    /// them. Meaningful when this load fitted the transform (not when it was given one).
    pub fn fitted_rows(&self) -> u64 {
        match &self.dataset {
            Some(ds) => ds.sample_rows as u64,
            None => self.train.rows as u64,
        }
    }

    /// Training rows: in the table, or in the streamed dataset.
    pub fn train_rows(&self) -> usize {
        match &self.dataset {
            Some(ds) => ds.layout.train_rows as usize,
            None => self.train.rows,
        }
    }

    /// Model outputs this task needs: 1 for regression and binary, k for multiclass.
    pub fn outputs(&self) -> usize {
        match self.task {
            Task::Multiclass => self.classes.len(),
            _ => 1,
        }
    }
}
