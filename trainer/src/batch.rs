//! `Batch` and `Targets`: what the data pipeline hands to a model, shared by `data` and `model`.

/// Labels of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One real value per row (regression, or 0/1 for binary classification).
    Real(Vec<f32>),
    /// One class index per row (multi-class classification).
    Class(Vec<u32>),
}

impl Targets {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Targets::Real(v) => v.len(),
            Targets::Class(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A batch of rows: features row-major (`rows x cols`, images flattened `C*H*W`) and targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Features, `rows * cols` values.
    pub x: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// One target per row.
    pub y: Targets,
}

impl Batch {
    /// The contiguous rows `range` as a batch of their own (e.g. a micro-batch).
    ///
    /// # Panics
    /// If `range` reaches past `self.rows` (ranges come from the caller's own arithmetic).
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Batch {
        let y = match &self.y {
            Targets::Real(v) => Targets::Real(v[range.clone()].to_vec()),
            Targets::Class(v) => Targets::Class(v[range.clone()].to_vec()),
        };
        let x = self.x[range.start * self.cols..range.end * self.cols].to_vec();
        Batch {
            x,
            rows: range.len(),
            cols: self.cols,
            y,
        }
    }
}
