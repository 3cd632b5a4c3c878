//! `Preprocessor`: the fitted feature transform (imputation, one-hot encoding, scaling). Fitted on
//! the training rows only, then applied unchanged to the test rows and to any later batch (a
//! stream, or `lockstep predict`); it is serialisable so a checkpoint can carry it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::columns::{Kind, RawColumn};
use super::error::DataError;
use super::ids::{not_text, IdPlan};
use super::spec::{DataSpec, Missing, MissingStrings, Scaling};

/// Rows transformed together (see [`Preprocessor::transform`]).
const TRANSFORM_TILE_ROWS: usize = 64;

/// Name suffix of the one-hot column for missing strings.
pub const MISSING_CATEGORY: &str = "<missing>";

/// How one input column becomes output features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnPlan {
    /// One feature: `(value_or_fill - shift) / scale`.
    Numeric {
        /// Input column.
        name: String,
        /// Value used for a missing entry (training median).
        fill: f64,
        /// Subtracted first.
        shift: f64,
        /// Divided by after.
        scale: f64,
    },
    /// One 0/1 feature per training category (sorted), plus `name=<missing>` if `missing_slot`.
    OneHot {
        /// Input column.
        name: String,
        /// Categories seen in training, sorted.
        categories: Vec<String>,
        /// Whether a trailing `<missing>` feature exists.
        missing_slot: bool,
        /// Imputed category for a missing entry (`missing_strings = "most-frequent"`).
        fill: Option<String>,
    },
    /// An embedding model's text or multi-valued id column: integer ids in slots (see
    /// [`ids`](super::ids)).
    Ids(IdPlan),
}

impl ColumnPlan {
    fn width(&self) -> usize {
        match self {
            ColumnPlan::Numeric { .. } => 1,
            ColumnPlan::OneHot {
                categories,
                missing_slot,
                ..
            } => categories.len() + usize::from(*missing_slot),
            ColumnPlan::Ids(p) => p.slots,
        }
    }

    /// The kind of input column the plan was fitted on.
    pub fn kind(&self) -> Kind {
        match self {
            ColumnPlan::Numeric { .. } => Kind::Numeric,
            ColumnPlan::OneHot { .. } | ColumnPlan::Ids(_) => Kind::String,
        }
    }

    /// The input column.
    pub fn name(&self) -> &str {
        match self {
            ColumnPlan::Numeric { name, .. } | ColumnPlan::OneHot { name, .. } => name,
            ColumnPlan::Ids(p) => &p.name,
        }
    }
}

/// The fitted transform from input columns to a row-major `f32` feature matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    /// One plan per input column, in feature order.
    pub columns: Vec<ColumnPlan>,
    /// `missing = "error"`: a missing value is refused, also in later batches.
    pub refuse_missing: bool,
    /// Output feature names (`col`, or `col=category` for one-hot features).
    pub feature_names: Vec<String>,
}

impl Preprocessor {
    /// Fits on `train_rows` of `cols` (name, values) following `spec`.
    ///
    /// # Errors
    /// `MissingValue` (with `missing = "error"`) or `NonFinite`, naming the column and row.
    pub fn fit(
        spec: &DataSpec,
        cols: &[(String, RawColumn)],
        train_rows: &[usize],
        file: &str,
    ) -> Result<Self, DataError> {
        let refuse_missing = spec.missing == Missing::Error;
        let mut columns = Vec::with_capacity(cols.len());
        for (name, raw) in cols {
            let plan = match (spec.id(name), raw) {
                (Some(id), RawColumn::Str(v)) => {
                    ColumnPlan::Ids(IdPlan::fit(id, v, train_rows, file)?)
                }
                (Some(id), RawColumn::Num(_)) if id.separator.is_some() => {
                    return Err(not_text(id, file))
                }
                (_, RawColumn::Num(v)) => {
                    fit_numeric(name, v, train_rows, spec.scaling, refuse_missing, file)?
                }
                (_, RawColumn::Str(v)) => fit_strings(
                    name,
                    v,
                    train_rows,
                    spec.missing_strings,
                    refuse_missing,
                    file,
                )?,
            };
            columns.push(plan);
        }
        let feature_names = columns.iter().flat_map(feature_names_of).collect();
        Ok(Preprocessor {
            columns,
            refuse_missing,
            feature_names,
        })
    }

    /// Number of output features.
    pub fn width(&self) -> usize {
        self.feature_names.len()
    }

    /// Row-major features of `rows` of `cols` (same order as at fit time).
    ///
    /// # Errors
    /// `MissingValue`/`NonFinite` naming column and row; `Config` if a column changed kind.
    pub fn transform(
        &self,
        cols: &[(String, RawColumn)],
        rows: &[usize],
        file: &str,
    ) -> Result<Vec<f32>, DataError> {
        let width = self.width();
        let mut x = vec![0.0f32; rows.len() * width];
        // Tiles of rows: each column writes a strided run that stays in cache (a whole batch of
        // wide rows does not).
        for (t, tile) in rows.chunks(TRANSFORM_TILE_ROWS).enumerate() {
            let out = &mut x[t * TRANSFORM_TILE_ROWS * width..][..tile.len() * width];
            self.transform_tile(cols, tile, out, file)?;
        }
        Ok(x)
    }

    fn transform_tile(
        &self,
        cols: &[(String, RawColumn)],
        rows: &[usize],
        x: &mut [f32],
        file: &str,
    ) -> Result<(), DataError> {
        let width = self.width();
        let mut offset = 0;
        for (plan, (name, raw)) in self.columns.iter().zip(cols) {
            match (plan, raw) {
                (
                    ColumnPlan::Numeric {
                        fill, shift, scale, ..
                    },
                    RawColumn::Num(v),
                ) => {
                    for (i, &r) in rows.iter().enumerate() {
                        let value = check_number(v[r], name, r, self.refuse_missing, file)?
                            .unwrap_or(*fill);
                        x[i * width + offset] = ((value - shift) / scale) as f32;
                    }
                }
                (
                    ColumnPlan::OneHot {
                        categories,
                        missing_slot,
                        fill,
                        ..
                    },
                    RawColumn::Str(v),
                ) => {
                    for (i, &r) in rows.iter().enumerate() {
                        let slot = match v[r].as_deref().or(fill.as_deref()) {
                            Some(s) => categories.binary_search_by(|c| c.as_str().cmp(s)).ok(),
                            None if self.refuse_missing => return Err(missing(name, r, file)),
                            None => missing_slot.then_some(categories.len()),
                        };
                        if let Some(j) = slot {
                            x[i * width + offset + j] = 1.0;
                        }
                    }
                }
                (ColumnPlan::Ids(p), RawColumn::Str(v)) => {
                    p.write(v, rows, x, width, offset, file)?;
                }
                _ => return Err(DataError::Config {
                    file: file.to_string(),
                    column: name.clone(),
                    message:
                        "column changed between numbers and strings since the pipeline was fitted"
                            .into(),
                }),
            }
            offset += plan.width();
        }
        Ok(())
    }
}

fn feature_names_of(plan: &ColumnPlan) -> Vec<String> {
    match plan {
        ColumnPlan::Numeric { name, .. } => vec![name.clone()],
        ColumnPlan::OneHot {
            name,
            categories,
            missing_slot,
            ..
        } => {
            let mut v: Vec<String> = categories.iter().map(|c| format!("{name}={c}")).collect();
            if *missing_slot {
                v.push(format!("{name}={MISSING_CATEGORY}"));
            }
            v
        }
        ColumnPlan::Ids(p) => p.feature_names(),
    }
}

pub(super) fn missing(column: &str, row: usize, file: &str) -> DataError {
    DataError::MissingValue {
        file: file.to_string(),
        column: column.to_string(),
        row,
    }
}

/// `Some(value)`, `None` for a missing one that may be imputed, or an error.
pub(super) fn check_number(
    value: f64,
    column: &str,
    row: usize,
    refuse: bool,
    file: &str,
) -> Result<Option<f64>, DataError> {
    if value.is_nan() {
        return if refuse {
            Err(missing(column, row, file))
        } else {
            Ok(None)
        };
    }
    if value.is_infinite() {
        return Err(DataError::NonFinite {
            file: file.to_string(),
            column: column.to_string(),
            row,
            value,
        });
    }
    Ok(Some(value))
}

fn fit_numeric(
    name: &str,
    v: &[f64],
    rows: &[usize],
    scaling: Scaling,
    refuse: bool,
    file: &str,
) -> Result<ColumnPlan, DataError> {
    let mut present = Vec::with_capacity(rows.len());
    for &r in rows {
        if let Some(x) = check_number(v[r], name, r, refuse, file)? {
            present.push(x);
        }
    }
    let fill = median(&mut present);
    let n = rows.len().max(1) as f64;
    let missing_count = rows.len() - present.len();
    let sum: f64 = present.iter().sum::<f64>() + fill * missing_count as f64;
    let mean = sum / n;
    let sq: f64 = present.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
        + (fill - mean).powi(2) * missing_count as f64;
    let std = (sq / n).sqrt();
    let lo = present.first().copied().unwrap_or(0.0).min(fill);
    let hi = present.last().copied().unwrap_or(0.0).max(fill);
    let nonzero = |s: f64| if s > 0.0 { s } else { 1.0 };
    let (shift, scale) = match scaling {
        Scaling::None => (0.0, 1.0),
        Scaling::Standard => (mean, nonzero(std)),
        Scaling::MinMax => (lo, nonzero(hi - lo)),
        Scaling::Divide(d) => (0.0, f64::from(d)),
    };
    Ok(ColumnPlan::Numeric {
        name: name.to_string(),
        fill,
        shift,
        scale,
    })
}

/// Median of `v` (sorted in place; mean of the middle two for an even count; 0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fit_strings(
    name: &str,
    v: &[Option<String>],
    rows: &[usize],
    mode: MissingStrings,
    refuse: bool,
    file: &str,
) -> Result<ColumnPlan, DataError> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut missing_count = 0;
    for &r in rows {
        match v[r].as_deref() {
            Some(s) => *counts.entry(s).or_default() += 1,
            None if refuse => return Err(missing(name, r, file)),
            None => missing_count += 1,
        }
    }
    // First maximum in sorted order: ties go to the smallest string.
    let most_frequent =
        counts
            .iter()
            .fold(None, |best: Option<(&str, usize)>, (s, c)| match best {
                Some((_, bc)) if bc >= *c => best,
                _ => Some((s, *c)),
            });
    let (fill, missing_slot) = match mode {
        MissingStrings::MostFrequent => (most_frequent.map(|(s, _)| s.to_string()), false),
        MissingStrings::Category => (None, missing_count > 0),
    };
    let categories = counts.keys().map(|s| s.to_string()).collect();
    Ok(ColumnPlan::OneHot {
        name: name.to_string(),
        categories,
        missing_slot,
        fill,
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
