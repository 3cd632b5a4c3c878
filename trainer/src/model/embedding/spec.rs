//! The manifest keys of embedding models: `[[job.model.embeddings]]` (one table per id column)
//! and `[job.model.table_optimizer]` (how the tables' rows are updated).
//!
//! ```toml
//! [job.model]
//! kind = "mf"                 # mf (biased MF / factorization machine) | wide_deep
//! [[job.model.embeddings]]
//! column = "userId"           # a feature column holding ids (integers or strings)
//! dim = 32
//! buckets = 100000            # optional: hash ids into this many rows
//! [[job.model.embeddings]]
//! column = "genres"           # a text column of several ids per row, "Comedy|Drama"
//! dim = 32
//! pooling = "mean"            # sum | mean: one vector (and bias) per row
//! separator = "|"             # default "|"
//! max_values = 10             # optional: slots per row (default: the most in a cell when fitted)
//! [job.model.table_optimizer]
//! kind = "adagrad"            # sgd | adagrad | adam (lazy, per row)
//! lr = 0.05                   # default: the job's learning rate
//! init_std = 0.05             # rows start N(0, init_std^2), biases 0
//! l2 = 0.03                   # per occurrence of a row in a batch
//! decay = 1e-4                # whole-table L2, applied lazily when a row is updated
//! ```

use crate::data::IdSpec;
use crate::model::spec::{ModelKind, ModelSpec};
use serde::{Deserialize, Serialize};

/// One embedding table: the id column it embeds and its width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSpec {
    /// The feature column holding the ids.
    pub column: String,
    /// Vector width (each stored row also holds one bias, so `dim + 1` values).
    pub dim: usize,
    /// Hash ids into this many rows (for unbounded ids); without it the id is the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u64>,
    /// A multi-valued column (`"A|B|C"`): its values' rows pooled into one vector (and one bias)
    /// per row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// Multi-valued: the separator of the values (default `|`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Multi-valued: values per row at most (default: the most values of a cell among the rows
    /// read when the transform is fitted, held-out rows included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_values: Option<usize>,
}

/// How a multi-valued column's rows become one vector: their sum or their mean (an empty cell
/// gives zeros either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The sum of the rows.
    Sum,
    /// The mean of the rows.
    Mean,
}

/// The separator of a multi-valued column when none is set.
pub const DEFAULT_SEPARATOR: &str = "|";

impl EmbeddingSpec {
    /// A single-valued table of `column`, `dim` wide.
    pub fn new(column: impl Into<String>, dim: usize) -> Self {
        EmbeddingSpec {
            column: column.into(),
            dim,
            buckets: None,
            pooling: None,
            separator: None,
            max_values: None,
        }
    }

    /// How the data layer reads this table's column (see [`crate::data::ids`]).
    pub fn id_spec(&self) -> IdSpec {
        IdSpec {
            column: self.column.clone(),
            separator: self.pooling.map(|_| {
                self.separator
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SEPARATOR.to_string())
            }),
            hashed: self.buckets.is_some(),
            max_values: self.max_values,
        }
    }
}

/// The id columns of `spec`'s tables as the data layer reads them (none unless the kind is an
/// embedding model): set them as [`DataSpec::ids`](crate::data::DataSpec::ids) before loading.
pub fn id_specs(spec: &ModelSpec) -> Vec<IdSpec> {
    match spec.kind {
        ModelKind::Mf | ModelKind::WideDeep => {
            spec.embeddings.iter().map(EmbeddingSpec::id_spec).collect()
        }
        _ => Vec::new(),
    }
}

/// The sparse optimizers: each updates only the rows a round touched, with per-row state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableOptimizerKind {
    /// `w -= lr * g`.
    Sgd,
    /// Per-value accumulated squares: `a += g^2; w -= lr * g / (sqrt(a) + 1e-8)`.
    Adagrad,
    /// Adam with moments and a step count per row, advanced only when the row is touched.
    Adam,
}

/// `[job.model.table_optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableOptimizerSpec {
    /// Which update.
    pub kind: TableOptimizerKind,
    /// Learning rate of the rows; default the round's learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f32>,
    /// Standard deviation of the rows' initial vectors, default 0.05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f32>,
    /// L2 on the looked-up rows, per occurrence in the batch: adds `2 * l2 * w / batch` to a
    /// row's gradient for each row of the batch that looks it up. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<f32>,
    /// L2 on the whole table, applied lazily: when a row is updated, its gradient gains
    /// `decay * w * (rounds since its last update)`, so a rarely seen row is pulled towards zero
    /// as if it had been decayed every round. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f32>,
}

// Validated finite where used, so equality is an equivalence.
impl Eq for TableOptimizerSpec {}

impl TableOptimizerSpec {
    /// Plain SGD at the round's learning rate.
    pub fn sgd() -> Self {
        TableOptimizerSpec {
            kind: TableOptimizerKind::Sgd,
            lr: None,
            init_std: None,
            l2: None,
            decay: None,
        }
    }
}
