//! From Arrow to plain columns: feature selection by name or glob, type checks, and extraction of
//! one column over many record batches as `f64` (missing = NaN) or optional strings.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};

use super::error::DataError;

/// One column's values over all rows.
#[derive(Debug, Clone, PartialEq)]
pub enum RawColumn {
    /// Numbers as f64; null and NaN are both "missing" (NaN).
    Num(Vec<f64>),
    /// Strings; `None` is missing.
    Str(Vec<Option<String>>),
}

impl RawColumn {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            RawColumn::Num(v) => v.len(),
            RawColumn::Str(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The kind of values a column holds, as far as the pipeline cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integers, floats, decimals, booleans.
    Numeric,
    /// UTF-8 strings (plain, large, view or dictionary-encoded).
    String,
}

/// The kind of `dtype`, or `None` if unsupported.
pub fn kind_of(dtype: &DataType) -> Option<Kind> {
    match dtype {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::String),
        DataType::Dictionary(_, v) if kind_of(v) == Some(Kind::String) => Some(Kind::String),
        DataType::Boolean | DataType::Null => Some(Kind::Numeric),
        d if d.is_numeric() => Some(Kind::Numeric),
        _ => None,
    }
}

/// The kind of `column` in `schema`, with errors naming `file` and the column.
///
/// # Errors
/// `MissingColumn` or `UnsupportedType`.
pub fn column_kind(schema: &Schema, file: &str, column: &str) -> Result<Kind, DataError> {
    let field = schema
        .field_with_name(column)
        .map_err(|_| missing_column(schema, file, column))?;
    kind_of(field.data_type()).ok_or_else(|| DataError::UnsupportedType {
        file: file.to_string(),
        column: column.to_string(),
        dtype: field.data_type().to_string(),
    })
}

/// `MissingColumn` listing (the start of) the schema's columns.
pub fn missing_column(schema: &Schema, file: &str, column: &str) -> DataError {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut available = names
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 12 {
        available.push_str(&format!(", ... ({} columns)", names.len()));
    }
    DataError::MissingColumn {
        file: file.to_string(),
        column: column.to_string(),
        available,
    }
}

/// Feature column names: `patterns` (names or globs, in order, duplicates dropped) or every column
/// but `label`. The label is never a feature.
///
/// # Errors
/// `MissingColumn` for a plain name that does not exist, `NoMatch` for a glob matching nothing.
pub fn select_features(
    schema: &Schema,
    file: &str,
    label: &str,
    patterns: Option<&[String]>,
) -> Result<Vec<String>, DataError> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let Some(patterns) = patterns else {
        return Ok(names
            .iter()
            .filter(|n| **n != label)
            .map(|n| n.to_string())
            .collect());
    };
    let mut out: Vec<String> = Vec::new();
    for pat in patterns {
        let is_glob = pat.contains(['*', '?']);
        let hits: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| glob_match(pat, n))
            .collect();
        if hits.is_empty() {
            return Err(if is_glob {
                DataError::NoMatch {
                    file: file.to_string(),
                    column: pat.clone(),
                }
            } else {
                missing_column(schema, file, pat)
            });
        }
        for h in hits {
            if h != label && !out.iter().any(|o| o == h) {
                out.push(h.to_string());
            }
        }
    }
    Ok(out)
}

/// Shell-style match of `text` against `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Column `column` of every batch, concatenated, as a `RawColumn` of `kind`.
///
/// # Errors
/// `MissingColumn` if a batch lacks it, `Decode` if a cast fails.
pub fn extract(
    batches: &[RecordBatch],
    file: &str,
    column: &str,
    kind: Kind,
) -> Result<RawColumn, DataError> {
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = match kind {
        Kind::Numeric => RawColumn::Num(Vec::with_capacity(rows)),
        Kind::String => RawColumn::Str(Vec::with_capacity(rows)),
    };
    for batch in batches {
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| missing_column(&batch.schema(), file, column))?;
        match (&mut out, extract_array(array, file, column, kind)?) {
            (RawColumn::Num(v), RawColumn::Num(a)) => v.extend(a),
            (RawColumn::Str(v), RawColumn::Str(a)) => v.extend(a),
            (o, a) => *o = a,
        }
    }
    Ok(out)
}

/// One column's values as a `RawColumn` of `kind`: numbers as `f64` (null = NaN), or strings.
///
/// # Errors
/// `Decode` naming `file` and `column` if the cast fails.
pub fn extract_array(
    array: &dyn Array,
    file: &str,
    column: &str,
    kind: Kind,
) -> Result<RawColumn, DataError> {
    let target = match kind {
        Kind::Numeric => DataType::Float64,
        Kind::String => DataType::Utf8,
    };
    let cast = arrow_cast::cast(array, &target).map_err(|e| DataError::Decode {
        file: file.to_string(),
        format: "arrow",
        message: format!("column '{column}': {e}"),
    })?;
    Ok(match kind {
        Kind::Numeric => {
            let a = cast.as_primitive::<arrow_array::types::Float64Type>();
            if a.null_count() == 0 {
                RawColumn::Num(a.values().to_vec())
            } else {
                RawColumn::Num(
                    (0..a.len())
                        .map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) })
                        .collect(),
                )
            }
        }
        Kind::String => {
            let a = cast.as_string::<i32>();
            RawColumn::Str(
                (0..a.len())
                    .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
                    .collect(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("px*", "px0"));
        assert!(glob_match("px*", "px"));
        assert!(!glob_match("px*", "label"));
        assert!(glob_match("s?", "s1"));
        assert!(!glob_match("s?", "s10"));
        assert!(glob_match("*a*b", "xxaxxb"));
        assert!(!glob_match("*a*b", "xxaxxbc"));
        assert!(glob_match("age", "age"));
    }
}
