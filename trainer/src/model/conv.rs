//! 2-D convolution (stride 1, square kernel, zero padding) as im2col + one GEMM per batch.
//!
//! Layout: inside a convolution stack activations are *channel-major*, `[C][N][H][W]` (CNHW),
//! so that the whole batch is one GEMM: `Y[F x N*P] = W[F x C*k*k] * col[C*k*k x N*P]`, with the
//! output already in CNHW. [`super::pool::Permute`] converts from the data's NCHW rows on the
//! way in and back to per-row features before the dense head (`flatten`).

use super::layer::{Layer, ParamSpec};
use super::ModelError;
use crate::init::Init;
use lockstep_tensor::kernels::{gemm, Transpose};

/// Geometry of a convolution's input and output planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl ConvGeom {
    /// Output height (`h + 2 pad - k + 1`); 0 when the kernel does not fit.
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad + 1).saturating_sub(self.k)
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad + 1).saturating_sub(self.k)
    }
    /// Rows of the im2col matrix, `c_in * k * k`.
    pub fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }
}

/// A convolution with `c_out` filters; CNHW in, CNHW out.
#[derive(Debug, Clone)]
pub struct Conv2d {
    g: ConvGeom,
    c_out: usize,
    /// im2col of the last forward's input, reused for `dcol` in backward.
    col: Vec<f32>,
}

impl Conv2d {
    /// A convolution over `g` with `c_out` filters (He init: it is followed by ReLU).
    pub fn new(g: ConvGeom, c_out: usize) -> Self {
        Conv2d {
            g,
            c_out,
            col: Vec::new(),
        }
    }
}

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        "conv"
    }
    fn in_features(&self) -> usize {
        self.g.c_in * self.g.h * self.g.w
    }
    fn out_features(&self) -> usize {
        self.c_out * self.g.ho() * self.g.wo()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let g = self.g;
        vec![
            ParamSpec {
                name: "weight",
                shape: vec![self.c_out, g.c_in, g.k, g.k],
                init: Init::He { fan_in: g.ckk() },
            },
            ParamSpec {
                name: "bias",
                shape: vec![self.c_out],
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
        let (ckk, np) = (self.g.ckk(), rows * self.g.ho() * self.g.wo());
        self.col.resize(ckk * np, 0.0);
        im2col(&self.g, x, rows, &mut self.col);
        let (w, b) = params.split_at(self.c_out * ckk);
        for (row, &bias) in y.chunks_exact_mut(np.max(1)).zip(b) {
            row.fill(bias);
        }
        gemm(
            Transpose::No,
            Transpose::No,
            self.c_out,
            np,
            ckk,
            1.0,
            w,
            &self.col,
            1.0,
            y,
        )?;
        Ok(())
    }

    fn backward(
        &mut self,
        params: &[f32],
        _x: &[f32],
        _y: &[f32],
        dy: &[f32],
        rows: usize,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let (f, ckk, np) = (self.c_out, self.g.ckk(), rows * self.g.ho() * self.g.wo());
        let (gw, gb) = grads.split_at_mut(f * ckk);
        // dW = dY col^T ([f x np] [np x ckk]).
        gemm(
            Transpose::No,
            Transpose::Yes,
            f,
            ckk,
            np,
            1.0,
            dy,
            &self.col,
            0.0,
            gw,
        )?;
        for (g, row) in gb.iter_mut().zip(dy.chunks_exact(np.max(1))) {
            *g = row.iter().sum();
        }
        if let Some(dx) = dx {
            // dcol = W^T dY ([ckk x f] [f x np]), written over col, which is no longer needed.
            gemm(
                Transpose::Yes,
                Transpose::No,
                ckk,
                np,
                f,
                1.0,
                &params[..f * ckk],
                dy,
                0.0,
                &mut self.col,
            )?;
            col2im(&self.g, &self.col, rows, dx);
        }
        Ok(())
    }
}

/// Valid output columns `[lo, hi)` for kernel column `kx`, and the input column of `lo`.
fn col_span(g: &ConvGeom, kx: usize) -> (usize, usize, usize) {
    let shift = kx as isize - g.pad as isize; // ix = ox + shift
    let lo = (-shift).max(0) as usize;
    let hi = (g.w as isize - shift).clamp(0, g.wo() as isize) as usize;
    let lo = lo.min(hi);
    (lo, hi, (lo as isize + shift).max(0) as usize)
}

/// Input row for output row `oy` and kernel row `ky`, if inside the image.
fn src_row(g: &ConvGeom, oy: usize, ky: usize) -> Option<usize> {
    let iy = (oy + ky).checked_sub(g.pad)?;
    (iy < g.h).then_some(iy)
}

/// `col[(c, ky, kx)][(n, oy, ox)] = x[c][n][oy + ky - pad][ox + kx - pad]` (0 outside).
pub fn im2col(g: &ConvGeom, x: &[f32], rows: usize, col: &mut [f32]) {
    let (ho, wo, hw) = (g.ho(), g.wo(), g.h * g.w);
    let np = rows * ho * wo;
    for c in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let r = (c * g.k + ky) * g.k + kx;
                let dst = &mut col[r * np..(r + 1) * np];
                let (lo, hi, ix0) = col_span(g, kx);
                for n in 0..rows {
                    let src = &x[(c * rows + n) * hw..][..hw];
                    for oy in 0..ho {
                        let d = &mut dst[(n * ho + oy) * wo..][..wo];
                        match src_row(g, oy, ky) {
                            None => d.fill(0.0),
                            Some(iy) => {
                                d[..lo].fill(0.0);
                                d[hi..].fill(0.0);
                                d[lo..hi].copy_from_slice(&src[iy * g.w + ix0..][..hi - lo]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx = 0`, then every `col` entry is added back to its pixel.
pub fn col2im(g: &ConvGeom, col: &[f32], rows: usize, dx: &mut [f32]) {
    let (ho, wo, hw) = (g.ho(), g.wo(), g.h * g.w);
    let np = rows * ho * wo;
    dx.fill(0.0);
    for c in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let r = (c * g.k + ky) * g.k + kx;
                let srow = &col[r * np..(r + 1) * np];
                let (lo, hi, ix0) = col_span(g, kx);
                for n in 0..rows {
                    let dst = &mut dx[(c * rows + n) * hw..][..hw];
                    for oy in 0..ho {
                        let Some(iy) = src_row(g, oy, ky) else {
                            continue;
                        };
                        let s = &srow[(n * ho + oy) * wo..][lo..hi];
                        for (d, &v) in dst[iy * g.w + ix0..][..hi - lo].iter_mut().zip(s) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, for comparison.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32], f: usize, ho: usize, wo: usize) -> Vec<f32> {
        let mut y = vec![0.0; f * ho * wo];
        for o in 0..f {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0.0;
                    for c in 0..g.c_in {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let (iy, ix) = (
                                    (oy + ky) as isize - g.pad as isize,
                                    (ox + kx) as isize - g.pad as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w
                                {
                                    s += x[(c * g.h + iy as usize) * g.w + ix as usize]
                                        * w[((o * g.c_in + c) * g.k + ky) * g.k + kx];
                                }
                            }
                        }
                    }
                    y[(o * ho + oy) * wo + ox] = s;
                }
            }
        }
        y
    }

    #[test]
    fn matches_direct_convolution() {
        for (pad, k) in [(0, 3), (1, 3), (2, 5), (2, 3)] {
            let g = ConvGeom {
                c_in: 2,
                h: 5,
                w: 4,
                k,
                pad,
            };
            let f = 3;
            let x: Vec<f32> = (0..g.c_in * 20).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut p: Vec<f32> = (0..f * g.ckk() + f)
                .map(|i| (i as f32 * 0.11).cos())
                .collect();
            p[f * g.ckk()..].fill(0.0);
            let mut conv = Conv2d::new(g, f);
            let mut y = vec![0.0; conv.out_features()];
            conv.forward(&p, &x, 1, &mut y).unwrap();
            let want = naive(&g, &x, &p, f, g.ho(), g.wo());
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "pad {pad} k {k}: {a} vs {b}");
            }
        }
    }
}
