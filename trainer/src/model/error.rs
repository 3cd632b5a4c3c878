//! `ModelError`: what can go wrong building a model or running a step, with the model, the
//! parameter, the row or the field named so a user can act on the message.

/// Errors from model construction, forward/backward passes and losses.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The `[job.model]` spec is invalid or does not fit the data.
    #[error("[job.model] {0}")]
    Spec(#[from] super::SpecError),
    /// A batch's feature width does not match the model's input width.
    #[error("{model} model expects {expected} features per row, the batch has {actual}")]
    InputWidth {
        /// Model kind.
        model: String,
        /// The model's input width.
        expected: usize,
        /// The batch's column count.
        actual: usize,
    },
    /// A batch whose buffers disagree with its declared shape.
    #[error("batch shape: {what}")]
    BatchShape {
        /// What disagrees.
        what: String,
    },
    /// Targets that do not fit the loss (kind, count or value).
    #[error("targets for {loss} loss: {what}")]
    Targets {
        /// The loss that rejected them.
        loss: &'static str,
        /// What is wrong, naming the row where there is one.
        what: String,
    },
    /// The loss came out NaN or infinite (the runtime adds the round).
    #[error("non-finite training loss {loss} over a batch of {rows} rows")]
    NonFiniteLoss {
        /// The loss value (mean over the batch).
        loss: f64,
        /// Rows in the batch.
        rows: usize,
    },
    /// A gradient or parameter buffer of the wrong length.
    #[error("{what} buffer has {actual} values, the model has {expected} parameters")]
    BufferLen {
        /// Which buffer.
        what: &'static str,
        /// The parameter count.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// Adjacent layers whose widths do not chain (a bug in a hand-built network).
    #[error(
        "layer {index} ({kind}) takes {expected} inputs per row, the previous layer gives {actual}"
    )]
    LayerChain {
        /// Index of the layer in forward order.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// Its input width.
        expected: usize,
        /// The previous layer's output width.
        actual: usize,
    },
    /// An embedding model's error (ids, tables, rows).
    #[error(transparent)]
    Embedding(#[from] super::embedding::EmbeddingError),
    /// A kernel rejected its operands (a broken invariant inside a layer).
    #[error("kernel: {0}")]
    Tensor(#[from] lockstep_tensor::Error),
}

impl ModelError {
    /// `Ok` when the `what` buffer has `actual` values for a model of `expected` parameters,
    /// else [`ModelError::BufferLen`].
    pub fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), ModelError> {
        if actual == expected {
            return Ok(());
        }
        Err(ModelError::BufferLen {
            what,
            expected,
            actual,
        })
    }
}
