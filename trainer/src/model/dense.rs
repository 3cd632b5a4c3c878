//! Fully connected layer `y = x W^T + b` over GEMM, with `W` stored `[out, in]` (the PyTorch
//! convention, so checkpoints read naturally elsewhere).

use super::layer::{Layer, ParamSpec};
use super::ModelError;
use crate::init::Init;
use lockstep_tensor::kernels::{gemm, Transpose};

/// A dense (fully connected) layer.
#[derive(Debug, Clone)]
pub struct Dense {
    inputs: usize,
    outputs: usize,
    init: Init,
}

impl Dense {
    /// `inputs -> outputs`, weights initialised with `init` (biases start at zero).
    pub fn new(inputs: usize, outputs: usize, init: Init) -> Self {
        Dense {
            inputs,
            outputs,
            init,
        }
    }

    /// He init (for a layer followed by ReLU).
    pub fn he(inputs: usize, outputs: usize) -> Self {
        Self::new(inputs, outputs, Init::He { fan_in: inputs })
    }

    /// Xavier init (for a layer followed by tanh, or an output layer).
    pub fn xavier(inputs: usize, outputs: usize) -> Self {
        Self::new(
            inputs,
            outputs,
            Init::Xavier {
                fan_in: inputs,
                fan_out: outputs,
            },
        )
    }
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "dense"
    }
    fn in_features(&self) -> usize {
        self.inputs
    }
    fn out_features(&self) -> usize {
        self.outputs
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec {
                name: "weight",
                shape: vec![self.outputs, self.inputs],
                init: self.init,
            },
            ParamSpec {
                name: "bias",
                shape: vec![self.outputs],
                init: Init::Zeros,
            },
        ]
    }

    fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        let (w, b) = params.split_at(self.inputs * self.outputs);
        for row in y.chunks_exact_mut(self.outputs) {
            row.copy_from_slice(b);
        }
        gemm(
            Transpose::No,
            Transpose::Yes,
            rows,
            self.outputs,
            self.inputs,
            1.0,
            x,
            w,
            1.0,
            y,
        )?;
        Ok(())
    }

    fn backward(
        &mut self,
        params: &[f32],
        x: &[f32],
        _y: &[f32],
        dy: &[f32],
        rows: usize,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let (o, i) = (self.outputs, self.inputs);
        let (gw, gb) = grads.split_at_mut(i * o);
        // dW = dY^T X  ([o x rows] [rows x i]).
        gemm(
            Transpose::Yes,
            Transpose::No,
            o,
            i,
            rows,
            1.0,
            dy,
            x,
            0.0,
            gw,
        )?;
        gb.fill(0.0);
        for row in dy.chunks_exact(o) {
            for (g, &d) in gb.iter_mut().zip(row) {
                *g += d;
            }
        }
        if let Some(dx) = dx {
            // dX = dY W  ([rows x o] [o x i]).
            gemm(
                Transpose::No,
                Transpose::No,
                rows,
                i,
                o,
                1.0,
                dy,
                &params[..i * o],
                0.0,
                dx,
            )?;
        }
        Ok(())
    }
}
