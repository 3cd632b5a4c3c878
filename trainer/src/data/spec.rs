//! `DataSpec`: the manifest's `[job.data]` table, and the small enums it is made of.
//!
//! ```toml
//! [job.data]
//! path = "data/credit_data.parquet"   # relative to the manifest's directory
//! label = "Status"
//! task = "binary"
//! positive = "bad"
//! scaling = "standard"                # or "none", "minmax", { divide = 255.0 }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ids::IdSpec;
use super::stream_spec::{Source, StreamSpec};

/// How to read the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// From the extension: `.parquet`/`.pq` or `.csv`.
    #[default]
    Auto,
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row; types inferred from the whole file; empty fields are missing.
    Csv,
}

/// What the label means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// A real-valued label (`Targets::Real`).
    Regression,
    /// Two classes as `Targets::Real` 0/1: numeric 0/1 labels, or any labels with `positive`.
    Binary,
    /// Integer labels `0..k` (`Targets::Class`).
    Multiclass,
}

/// What to do with string feature columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Categorical {
    /// One 0/1 column per category seen in the training split (unseen categories: all zeros).
    #[default]
    OneHot,
    /// A string feature is an error that names the file and column.
    Error,
}

/// Scaling of numeric features, with statistics from the training split only.
/// One-hot columns are never scaled.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Values as they are (cast to f32).
    #[default]
    None,
    /// `(x - mean) / std` (population std; a constant column is only centred).
    Standard,
    /// `(x - min) / (max - min)` (a constant column becomes 0).
    MinMax,
    /// `x / d`, e.g. `{ divide = 255.0 }` for 8-bit pixels.
    Divide(f32),
}

/// What to do with missing feature values (null, NaN, empty CSV field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Numbers: the training median. Strings: see [`MissingStrings`].
    #[default]
    Impute,
    /// Refuse: an error naming the column and row.
    Error,
}

/// How a missing string is imputed when `missing = "impute"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingStrings {
    /// A category of its own (column `name=<missing>`), as scikit-learn's `OneHotEncoder` does.
    #[default]
    Category,
    /// The most frequent training value (ties: the smallest string).
    MostFrequent,
}

/// What to do with a Parquet file of a dataset that cannot be read (corrupt or truncated footer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadFile {
    /// Stop with an error naming the file.
    #[default]
    Error,
    /// Leave the file out of the dataset (logged with the reason).
    Skip,
}

/// The `[job.data]` table of a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// `file` (default) or `stream` (producers push Arrow IPC; see [`StreamSpec`]).
    #[serde(default)]
    pub source: Source,
    /// `[job.data.stream]`, required with `source = "stream"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSpec>,
    /// Data file; a relative path is resolved by the caller (see [`DataSpec::resolved`]). With
    /// `source = "stream"` it is the warm-up sample: schema, feature statistics, held-out rows.
    pub path: PathBuf,
    /// File format (default: from the extension).
    #[serde(default)]
    pub format: Format,
    /// Label column.
    pub label: String,
    /// Feature columns by name or glob (`*`, `?`), in this order; default: every column but the label.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// What the label means.
    pub task: Task,
    /// Binary task: the label value that means class 1 (e.g. `"bad"`); required for string labels.
    #[serde(default)]
    pub positive: Option<String>,
    /// Multiclass task: number of classes (default: largest label + 1).
    #[serde(default)]
    pub classes: Option<usize>,
    /// String features: one-hot (default) or error.
    #[serde(default)]
    pub categorical: Categorical,
    /// Scaling of numeric features (default none).
    #[serde(default)]
    pub scaling: Scaling,
    /// Missing feature values: impute (default) or error.
    #[serde(default)]
    pub missing: Missing,
    /// Missing strings under `missing = "impute"`: own category (default) or most frequent.
    #[serde(default)]
    pub missing_strings: MissingStrings,
    /// Share of rows held out for evaluation (default 0.2), in `[0, 1)`.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Split each class in the same proportion (classification only; default true).
    #[serde(default = "default_stratify")]
    pub stratify: bool,
    /// Memory budget of the data pipeline per process, in MiB. Setting it (or a `path` that is a
    /// directory, glob or URL) selects the streaming dataset reader; see `docs/data.md`.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Streaming reader: rows per shuffle block (default 4096).
    #[serde(default)]
    pub block_rows: Option<u64>,
    /// Streaming reader: a dataset file whose footer cannot be read is an error (default) or skipped.
    #[serde(default)]
    pub on_bad_file: OnBadFile,
    /// Object storage: timeout of one request in milliseconds (default 30000).
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// Object storage: retries of a failed or timed-out request, with exponential backoff (default 3).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// The id columns of an embedding model (from `[[job.model.embeddings]]`, set by whoever
    /// builds the model, never read from `[job.data]`): text and multi-valued id columns become
    /// integer ids (see [`ids`](super::ids)); numeric single-valued ones stay numeric features.
    #[serde(skip)]
    pub ids: Vec<IdSpec>,
}

fn default_test_fraction() -> f64 {
    0.2
}

fn default_stratify() -> bool {
    true
}

impl DataSpec {
    /// A spec with defaults for everything but path, label and task.
    pub fn new(path: impl Into<PathBuf>, label: impl Into<String>, task: Task) -> Self {
        DataSpec {
            source: Source::File,
            stream: None,
            path: path.into(),
            format: Format::Auto,
            label: label.into(),
            features: None,
            task,
            positive: None,
            classes: None,
            categorical: Categorical::OneHot,
            scaling: Scaling::None,
            missing: Missing::Impute,
            missing_strings: MissingStrings::Category,
            test_fraction: default_test_fraction(),
            stratify: default_stratify(),
            memory_mb: None,
            block_rows: None,
            on_bad_file: OnBadFile::Error,
            request_timeout_ms: None,
            max_retries: None,
            ids: Vec::new(),
        }
    }

    /// Whether `path` is a URL (`s3://`, `gs://`, `az://`, `http(s)://`, `file://`, ...).
    pub fn is_url(&self) -> bool {
        self.path.to_str().is_some_and(|p| p.contains("://"))
    }

    /// Whether the streaming dataset reader serves this spec: `memory_mb` is set, or `path` is a
    /// URL, a glob or a directory. Otherwise the file is read whole into memory.
    pub fn is_dataset(&self) -> bool {
        let p = self.path.to_string_lossy();
        self.memory_mb.is_some()
            || self.is_url()
            || p.contains(['*', '?', '['])
            || self.path.is_dir()
    }

    /// The id spec of `column`, if the model reads it as ids.
    pub fn id(&self, column: &str) -> Option<&IdSpec> {
        self.ids.iter().find(|i| i.column == column)
    }

    /// This spec with a relative `path` joined onto `base` (the manifest's directory).
    pub fn resolved(&self, base: &Path) -> DataSpec {
        let mut spec = self.clone();
        if spec.path.is_relative() && !spec.is_url() {
            spec.path = base.join(&self.path);
        }
        spec
    }
}
