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
        let argmax = self.argmax.chunks_exact_mut(ho * wo);
        for (pi, ((xp, yp), ap)) in planes.zip(argmax).enumerate() {
            let base = pi * h * w;
            let rows = yp.chunks_exact_mut(wo).zip(ap.chunks_exact_mut(wo));
            for (oy, (yr, ar)) in rows.enumerate() {
                let top = &xp[2 * oy * w..][..2 * wo];
                let bottom = &xp[(2 * oy + 1) * w..][..2 * wo];
                let row0 = (base + 2 * oy * w) as u32;
                let cells = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                for (ox, ((t, b), (yo, ao))) in cells.zip(yr.iter_mut().zip(ar)).enumerate() {
                    // The first of the four in reading order wins a tie, as `backward` expects.
                    let (mut best, mut at) = (t[0], 0u32);
                    if t[1] > best {
                        (best, at) = (t[1], 1);
                    }
                    if b[0] > best {
                        (best, at) = (b[0], w as u32);
                    }
                    if b[1] > best {
                        (best, at) = (b[1], w as u32 + 1);
                    }
                    *yo = best;
                    *ao = row0 + 2 * ox as u32 + at;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooling rule written plainly: the largest of each 2x2 window, the first in reading
    /// order on a tie.
    fn reference(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u32>) {
        let (ho, wo) = (h / 2, w / 2);
        let (mut y, mut arg) = (Vec::new(), Vec::new());
        for p in 0..planes {
            for oy in 0..ho {
                for ox in 0..wo {
                    let i0 = p * h * w + 2 * oy * w + 2 * ox;
                    let mut best = i0;
                    for i in [i0 + 1, i0 + w, i0 + w + 1] {
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                    y.push(x[best]);
                    arg.push(best as u32);
                }
            }
        }
        (y, arg)
    }

    #[test]
    fn pooling_matches_the_plain_rule_with_ties_and_odd_edges() {
        for (planes, h, w) in [(3, 7, 6), (2, 5, 5), (4, 28, 28), (1, 2, 2), (2, 3, 9)] {
            // Few distinct values, so most windows hold a tie.
            let x: Vec<f32> = (0..planes * h * w)
                .map(|i| ((i * 7919 + 13) % 5) as f32 - 2.0)
                .collect();
            let mut pool = MaxPool2::new(planes, h, w);
            let mut y = vec![0.0; pool.out_features()];
            pool.forward(&[], &x, 1, &mut y).unwrap();
            let (want_y, want_arg) = reference(&x, planes, h, w);
            assert_eq!(y, want_y, "{planes}x{h}x{w}");
            assert_eq!(pool.argmax, want_arg, "{planes}x{h}x{w}");
        }
    }
}
