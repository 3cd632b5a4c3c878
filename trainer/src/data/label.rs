//! Labels: turning the label column into `Targets` for the task, refusing null/NaN/out-of-range
//! labels with the file, column and row.

use serde::{Deserialize, Serialize};

use super::columns::RawColumn;
use super::error::DataError;
use super::spec::Task;
use crate::batch::Targets;

/// How label values map to targets; fitted once and reused for every later batch (streams too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelPlan {
    /// Label column name.
    pub column: String,
    /// The task.
    pub task: Task,
    /// Binary: the value meaning class 1 (string labels, or a number written as text).
    pub positive: Option<String>,
    /// Class names: `[negative, positive]` for binary, `"0".."k-1"` for multiclass, empty for
    /// regression. The binary negative is the label's own other value when the fitted column has
    /// exactly one (`good` for good/bad labels with `positive = "bad"`), else `not <positive>`
    /// (which is also what models fitted by earlier versions store).
    pub classes: Vec<String>,
}

/// The negative class's own name for a binary label: the one value of the column other than
/// the positive one (`"good"` when `positive = "bad"` and the labels are good/bad; `"0"` for 0/1
/// labels without `positive`), or `None` when the column has several other values (then
/// [`LabelPlan::fit`] names it `not <positive>`).
fn negative_name(raw: &RawColumn, positive: Option<&str>) -> Option<String> {
    let mut others = std::collections::BTreeSet::new();
    match (raw, positive) {
        (RawColumn::Num(_), None) => return Some("0".into()),
        (RawColumn::Str(v), Some(p)) => {
            for s in v.iter().flatten().filter(|s| s.as_str() != p) {
                if others.insert(s.clone()) && others.len() > 1 {
                    return None;
                }
            }
        }
        (RawColumn::Num(v), Some(p)) => {
            let p: f64 = p.trim().parse().ok()?;
            for &x in v.iter().filter(|x| x.is_finite() && **x != p) {
                // Integral labels as integers (`1`, not `1.0`), as they are usually written.
                let name = if x.fract() == 0.0 && x.abs() < 1e15 {
                    format!("{}", x as i64)
                } else {
                    x.to_string()
                };
                if others.insert(name) && others.len() > 1 {
                    return None;
                }
            }
        }
        (RawColumn::Str(_), None) => return None,
    }
    others.pop_first()
}

impl LabelPlan {
    /// Checks the settings against the label column and fixes the class list.
    ///
    /// # Errors
    /// `Config` for settings that cannot apply; `BadLabel` for a label that is invalid.
    pub fn fit(
        column: &str,
        task: Task,
        positive: Option<&str>,
        classes: Option<usize>,
        raw: &RawColumn,
        file: &str,
    ) -> Result<Self, DataError> {
        let config = |message: String| DataError::Config {
            file: file.to_string(),
            column: column.to_string(),
            message,
        };
        let class_names = match (task, raw) {
            (Task::Regression, _) => Vec::new(),
            (Task::Binary, RawColumn::Str(_)) if positive.is_none() => {
                return Err(config(
                    "string labels with task = \"binary\" need `positive = \"<value>\"`".into(),
                ))
            }
            (Task::Binary, _) => {
                let p = positive.unwrap_or("1");
                let negative = negative_name(raw, positive).unwrap_or_else(|| format!("not {p}"));
                vec![negative, p.to_string()]
            }
            (Task::Multiclass, RawColumn::Str(_)) => {
                return Err(config(
                    "task = \"multiclass\" needs integer labels 0..k".into(),
                ))
            }
            (Task::Multiclass, RawColumn::Num(v)) => {
                let max = v
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .fold(0.0f64, f64::max);
                let k = classes.unwrap_or(max as usize + 1);
                if k < 2 {
                    return Err(config(format!(
                        "multiclass needs at least 2 classes, found {k}"
                    )));
                }
                (0..k).map(|c| c.to_string()).collect()
            }
        };
        let plan = LabelPlan {
            column: column.to_string(),
            task,
            positive: positive.map(str::to_string),
            classes: class_names,
        };
        Ok(plan)
    }

    /// Targets for `rows` of `raw`.
    ///
    /// # Errors
    /// `BadLabel` naming the row for a null, NaN or infinite label, a binary number other than
    /// 0/1 (without `positive`), or a class outside `0..k`.
    pub fn targets(
        &self,
        raw: &RawColumn,
        rows: &[usize],
        file: &str,
    ) -> Result<Targets, DataError> {
        let bad = |row: usize, reason: String| DataError::BadLabel {
            file: file.to_string(),
            column: self.column.clone(),
            row,
            reason,
        };
        match raw {
            RawColumn::Str(v) => {
                let pos = self.positive.as_deref().unwrap_or_default();
                let mut out = Vec::with_capacity(rows.len());
                for &r in rows {
                    let s = v[r]
                        .as_deref()
                        .ok_or_else(|| bad(r, "missing (null) label".into()))?;
                    out.push(if s == pos { 1.0 } else { 0.0 });
                }
                match self.task {
                    Task::Binary => Ok(Targets::Real(out)),
                    _ => Err(bad(
                        rows.first().copied().unwrap_or(0),
                        "string label for a numeric task".into(),
                    )),
                }
            }
            RawColumn::Num(v) => {
                for &r in rows {
                    if v[r].is_nan() {
                        return Err(bad(r, "NaN (or null) label".into()));
                    }
                    if !v[r].is_finite() {
                        return Err(bad(r, format!("non-finite label {}", v[r])));
                    }
                }
                self.numeric_targets(v, rows, &bad)
            }
        }
    }

    fn numeric_targets(
        &self,
        v: &[f64],
        rows: &[usize],
        bad: &dyn Fn(usize, String) -> DataError,
    ) -> Result<Targets, DataError> {
        match self.task {
            Task::Regression => Ok(Targets::Real(rows.iter().map(|&r| v[r] as f32).collect())),
            Task::Binary => {
                let pos: Option<f64> = self.positive.as_deref().and_then(|p| p.parse().ok());
                let mut out = Vec::with_capacity(rows.len());
                for &r in rows {
                    out.push(match (pos, v[r]) {
                        (Some(p), x) => f32::from(x == p),
                        (None, x) if x == 0.0 || x == 1.0 => x as f32,
                        (None, x) => {
                            return Err(bad(
                                r,
                                format!("binary label {x} is not 0 or 1 (set `positive`)"),
                            ))
                        }
                    });
                }
                Ok(Targets::Real(out))
            }
            Task::Multiclass => {
                let k = self.classes.len();
                let mut out = Vec::with_capacity(rows.len());
                for &r in rows {
                    let x = v[r];
                    if x < 0.0 || x.fract() != 0.0 || x >= k as f64 {
                        return Err(bad(
                            r,
                            format!(
                                "class label {x} is not an integer in 0..{k} (without \
                                 [job.data] classes, the classes are the labels seen when the \
                                 transform was fitted: for a streamed dataset, its sample; \
                                 set classes)"
                            ),
                        ));
                    }
                    out.push(x as u32);
                }
                Ok(Targets::Class(out))
            }
        }
    }

    /// Class index of each row for stratification (binary: 0/1; multiclass: the class), or `None`
    /// for regression.
    pub fn strata(&self, targets: &Targets) -> Option<Vec<u32>> {
        match (self.task, targets) {
            (Task::Regression, _) => None,
            (_, Targets::Real(v)) => Some(v.iter().map(|x| *x as u32).collect()),
            (_, Targets::Class(v)) => Some(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> RawColumn {
        RawColumn::Str(v.iter().map(|s| Some(s.to_string())).collect())
    }

    fn classes(raw: &RawColumn, positive: Option<&str>) -> Vec<String> {
        LabelPlan::fit("y", Task::Binary, positive, None, raw, "f")
            .unwrap()
            .classes
    }

    #[test]
    fn the_binary_negative_is_the_labels_own_other_value() {
        let good_bad = strings(&["good", "bad", "good"]);
        assert_eq!(classes(&good_bad, Some("bad")), ["good", "bad"]);
        let mut with_null = strings(&["good", "bad"]);
        if let RawColumn::Str(v) = &mut with_null {
            v.push(None);
        }
        assert_eq!(classes(&with_null, Some("bad")), ["good", "bad"]);
        assert_eq!(
            classes(&RawColumn::Num(vec![0.0, 1.0, 1.0]), None),
            ["0", "1"]
        );
        assert_eq!(
            classes(&RawColumn::Num(vec![1.0, 2.0, f64::NAN]), Some("2")),
            ["1", "2"]
        );
    }

    #[test]
    fn several_other_values_keep_not_positive() {
        let three = strings(&["good", "fair", "bad"]);
        assert_eq!(classes(&three, Some("bad")), ["not bad", "bad"]);
        assert_eq!(
            classes(&RawColumn::Num(vec![1.0, 2.0, 3.0]), Some("3")),
            ["not 3", "3"]
        );
        // Only positives seen: nothing to name the negative by.
        assert_eq!(classes(&strings(&["bad"]), Some("bad")), ["not bad", "bad"]);
    }
}
