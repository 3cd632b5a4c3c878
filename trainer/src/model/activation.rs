//! Elementwise activations, ReLU and tanh; their derivatives are taken from the output.

use super::layer::Layer;
use super::ModelError;

/// Which elementwise function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationKind {
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
}

/// An elementwise activation over `features` values per row.
#[derive(Debug, Clone)]
pub struct Activation {
    kind: ActivationKind,
    features: usize,
}

impl Activation {
    /// An activation over `features` values per row.
    pub fn new(kind: ActivationKind, features: usize) -> Self {
        Activation { kind, features }
    }
}

impl Layer for Activation {
    fn kind(&self) -> &'static str {
        match self.kind {
            ActivationKind::Relu => "relu",
            ActivationKind::Tanh => "tanh",
        }
    }
    fn in_features(&self) -> usize {
        self.features
    }
    fn out_features(&self) -> usize {
        self.features
    }

    fn forward(
        &mut self,
        _p: &[f32],
        x: &[f32],
        _rows: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        match self.kind {
            ActivationKind::Relu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.max(0.0)),
            ActivationKind::Tanh => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.tanh()),
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _p: &[f32],
        _x: &[f32],
        y: &[f32],
        dy: &[f32],
        _rows: usize,
        _g: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let Some(dx) = dx else { return Ok(()) };
        let it = dx.iter_mut().zip(y).zip(dy);
        match self.kind {
            ActivationKind::Relu => it.for_each(|((d, &y), &g)| *d = if y > 0.0 { g } else { 0.0 }),
            ActivationKind::Tanh => it.for_each(|((d, &y), &g)| *d = g * (1.0 - y * y)),
        }
        Ok(())
    }
}
