//! The manifest keys of embedding models: `[[job.model.embeddings]]` (one table per id column)
//! and `[job.model.table_optimizer]` (how the tables' rows are updated).
//!
//! ```toml
//! [job.model]
//! kind = "mf"                 # mf (biased MF / factorization machine) | wide_deep
//! [[job.model.embeddings]]
//! column = "userId"           # an integer feature column holding ids
//! dim = 32
//! buckets = 100000            # optional: hash ids into this many rows
//! [job.model.table_optimizer]
//! kind = "adagrad"            # sgd | adagrad | adam (lazy, per row)
//! lr = 0.05                   # default: the job's learning rate
//! init_std = 0.05             # rows start N(0, init_std^2), biases 0
//! l2 = 0.03                   # per occurrence of a row in a batch
//! decay = 1e-4                # whole-table L2, applied lazily when a row is updated
//! ```

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
