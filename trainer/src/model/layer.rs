//! The `Layer` trait: one batched forward/backward step over a layer's slice of the flat
//! parameter and gradient vectors.
//!
//! A layer never owns its parameters: the network hands it its contiguous block of the flat
//! parameter vector (in [`Layer::param_specs`] order) and the matching block of the gradient
//! vector. Layers keep only scratch state between forward and backward (im2col buffers, pooling
//! argmaxes). Activations are row-major `rows x features`; convolution stacks use a
//! channel-major layout internally (see [`super::conv`]).

use crate::init::Init;
use crate::model::ModelError;

/// One named parameter tensor of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Name within the layer (`weight`, `bias`).
    pub name: &'static str,
    /// Shape, outermost first (dense weight `[out, in]`, conv weight `[out, in, k, k]`).
    pub shape: Vec<usize>,
    /// How it is initialised.
    pub init: Init,
}

impl ParamSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-element parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A differentiable, batched layer.
pub trait Layer: Send {
    /// Kind, used in parameter names and messages (`dense`, `conv`, `relu`, ...).
    fn kind(&self) -> &'static str;
    /// Input values per row.
    fn in_features(&self) -> usize;
    /// Output values per row.
    fn out_features(&self) -> usize;
    /// Parameter tensors, in the order they lie in this layer's block. Default: none.
    fn param_specs(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// `y = f(x)` for `rows` rows; `params` is this layer's block, `y` has
    /// `rows * out_features` values.
    ///
    /// # Errors
    /// Only a kernel's shape error, which would be a bug in the layer.
    fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError>;
    /// Given `dy = dL/dy`, overwrite `grads` (this layer's block) with `dL/dparams` and, when
    /// `dx` is given, overwrite it with `dL/dx`. `x` and `y` are the last forward's input and
    /// output.
    ///
    /// # Errors
    /// Only a kernel's shape error, which would be a bug in the layer.
    fn backward(
        &mut self,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        rows: usize,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError>;
}
