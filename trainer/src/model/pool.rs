//! 2x2 max pooling and the layout permutations around a convolution stack.
//!
//! Pooling works plane by plane, so it is indifferent to whether planes are ordered NCHW or CNHW.
//! [`Permute`] moves between the data's per-row NCHW layout and the channel-major CNHW layout
//! that [`super::conv::Conv2d`] uses; the permutation back to per-row features is the network's
//! `flatten`.

use super::layer::Layer;
use super::ModelError;

/// 2x2 max pooling with stride 2 over `planes` planes of `h x w` per row (odd edges dropped).
#[derive(Debug, Clone)]
pub struct MaxPool2 {
    planes: usize,
    h: usize,
    w: usize,
    /// For each output value, the index of the input value it came from.
    argmax: Vec<u32>,
}

impl MaxPool2 {
    /// Pooling over `planes` planes (channels) of `h x w` per row.
    pub fn new(planes: usize, h: usize, w: usize) -> Self {
        MaxPool2 {
            planes,
            h,
            w,
            argmax: Vec::new(),
        }
    }
}

impl Layer for MaxPool2 {
    fn kind(&self) -> &'static str {
        "maxpool"
    }
    fn in_features(&self) -> usize {
        self.planes * self.h * self.w
    }
    fn out_features(&self) -> usize {
        self.planes * (self.h / 2) * (self.w / 2)
    }

    fn forward(
        &mut self,
        _p: &[f32],
        x: &[f32],
        _rows: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        let (h, w, ho, wo) = (self.h, self.w, self.h / 2, self.w / 2);
        self.argmax.resize(y.len(), 0);
        let planes = x.chunks_exact(h * w).zip(y.chunks_exact_mut(ho * wo));
        for (pi, (xp, yp)) in planes.enumerate() {
            let base = pi * h * w;
            for oy in 0..ho {
                for ox in 0..wo {
                    let i0 = 2 * oy * w + 2 * ox;
                    let mut best = i0;
                    for i in [i0 + 1, i0 + w, i0 + w + 1] {
                        if xp[i] > xp[best] {
                            best = i;
                        }
                    }
                    let o = oy * wo + ox;
                    yp[o] = xp[best];
                    self.argmax[pi * ho * wo + o] = (base + best) as u32;
                }
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _p: &[f32],
        _x: &[f32],
        _y: &[f32],
        dy: &[f32],
        _rows: usize,
        _g: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let Some(dx) = dx else { return Ok(()) };
        dx.fill(0.0);
        for (&i, &g) in self.argmax.iter().zip(dy) {
            dx[i as usize] += g;
        }
        Ok(())
    }
}

/// Reorders planes between per-row `[N][C][P]` and channel-major `[C][N][P]`.
#[derive(Debug, Clone)]
pub struct Permute {
    channels: usize,
    plane: usize,
    to_channel_major: bool,
}

impl Permute {
    /// NCHW rows to CNHW (into a convolution stack).
    pub fn to_channel_major(channels: usize, plane: usize) -> Self {
        Permute {
            channels,
            plane,
            to_channel_major: true,
        }
    }

    /// CNHW back to NCHW rows (`flatten`, out of a convolution stack).
    pub fn flatten(channels: usize, plane: usize) -> Self {
        Permute {
            channels,
            plane,
            to_channel_major: false,
        }
    }

    /// `[a][b][P]` to `[b][a][P]`.
    fn swap(&self, a: usize, b: usize, src: &[f32], dst: &mut [f32]) {
        let p = self.plane;
        for i in 0..a {
            for j in 0..b {
                dst[(j * a + i) * p..][..p].copy_from_slice(&src[(i * b + j) * p..][..p]);
            }
        }
    }
}

impl Layer for Permute {
    fn kind(&self) -> &'static str {
        if self.to_channel_major {
            "channel_major"
        } else {
            "flatten"
        }
    }
    fn in_features(&self) -> usize {
        self.channels * self.plane
    }
    fn out_features(&self) -> usize {
        self.channels * self.plane
    }

    fn forward(
        &mut self,
        _p: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        match self.to_channel_major {
            true => self.swap(rows, self.channels, x, y),
            false => self.swap(self.channels, rows, x, y),
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _p: &[f32],
        _x: &[f32],
        _y: &[f32],
        dy: &[f32],
        rows: usize,
        _g: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        if let Some(dx) = dx {
            match self.to_channel_major {
                true => self.swap(self.channels, rows, dy, dx),
                false => self.swap(rows, self.channels, dy, dx),
            }
        }
        Ok(())
    }
}
