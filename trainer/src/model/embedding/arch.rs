//! The two architectures' forward and backward passes over pulled rows.
//!
//! - **`mf`**: biased matrix factorisation, generalised to any number of id fields as a
//!   factorization machine over fields: `y = b + w·x_dense + Σ_t bias_t + Σ_{s<t} <e_s, e_t>`.
//!   With two tables (user, item) it is the classic `b + b_u + b_i + <p_u, q_i>`.
//! - **`wide_deep`**: the deep part is an MLP over the concatenated vectors and the dense
//!   features; the wide part is the factorization machine of the ids (each id's bias and, when
//!   the tables have one `dim`, the pairwise dot products), as in DeepFM (Guo et al., 2017):
//!   `y = mlp([e_1..e_T, x_dense]) + Σ_t bias_t + Σ_{s<t} <e_s, e_t>`.
//!
//! Backward writes the dense gradient into the caller's slice and returns, per table, the
//! gradient of the rows this batch touched only (ids ascending, duplicates combined in row
//! order), sized by the pulled rows, never by the table.

use super::error::EmbeddingError;
use super::ids::IdColumn;
use crate::model::{Layer, ModelError};
use lockstep_tensor::SparseRows;
use std::ops::Range;

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Biased MF / factorization machine over fields.
    Mf,
    /// MLP over the vectors and dense features, plus per-id biases.
    WideDeep,
}

/// The parts a pass needs, borrowed from the model.
pub struct Parts<'a> {
    /// The architecture.
    pub arch: Arch,
    /// Id columns, one per table.
    pub ids: &'a [IdColumn],
    /// The dense feature columns.
    pub dense: &'a [usize],
    /// Vector width per table (the row width less the bias).
    pub dims: &'a [usize],
    /// The pulled rows per table.
    pub pulled: &'a [SparseRows],
    /// Flat dense parameters.
    pub params: &'a [f32],
    /// `wide_deep`: the layers and their parameter ranges.
    pub layers: &'a mut [(Box<dyn Layer>, Range<usize>)],
    /// L2 on the looked-up rows, per occurrence.
    pub l2: f32,
}

/// A forward pass's state: each row's index into the pulled rows per table, the activations.
pub struct Pass {
    pos: Vec<Vec<u32>>,
    acts: Vec<Vec<f32>>,
    /// One output per row.
    pub out: Vec<f32>,
}

impl Parts<'_> {
    fn row(&self, t: usize, p: u32) -> &[f32] {
        self.pulled[t].row(p as usize)
    }

    fn positions(&self, x: &[f32], rows: usize, cols: usize) -> Result<Vec<Vec<u32>>, ModelError> {
        let mut all = Vec::with_capacity(self.ids.len());
        for (t, c) in self.ids.iter().enumerate() {
            let ids = c.ids(x, rows, cols)?;
            let have = &self.pulled[t].ids;
            let pos = ids
                .iter()
                .map(|id| {
                    have.binary_search(id).map(|p| p as u32).map_err(|_| {
                        EmbeddingError::NotPulled {
                            column: c.name.clone(),
                            id: *id,
                        }
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?;
            all.push(pos);
        }
        Ok(all)
    }

    /// Forward `rows` rows of `x` (`cols` wide).
    ///
    /// # Errors
    /// A bad id, a row not pulled, or a layer's kernel error.
    pub fn forward(&mut self, x: &[f32], rows: usize, cols: usize) -> Result<Pass, ModelError> {
        let pos = self.positions(x, rows, cols)?;
        let mut out = vec![0.0f32; rows];
        let mut acts = Vec::new();
        let nt = self.ids.len();
        if self.arch == Arch::WideDeep {
            let width: usize = self.dims.iter().sum::<usize>() + self.dense.len();
            let mut z = Vec::with_capacity(rows * width);
            for r in 0..rows {
                for (t, p) in pos.iter().enumerate() {
                    z.extend_from_slice(&self.row(t, p[r])[..self.dims[t]]);
                }
                z.extend(self.dense.iter().map(|&j| x[r * cols + j]));
            }
            acts.push(z);
            for (layer, range) in self.layers.iter_mut() {
                let mut y = vec![0.0; rows * layer.out_features()];
                let input = acts.last().expect("the input is pushed first");
                layer.forward(&self.params[range.clone()], input, rows, &mut y)?;
                acts.push(y);
            }
            out.copy_from_slice(acts.last().expect("at least the output layer"));
        }
        for (r, o) in out.iter_mut().enumerate() {
            let mut s = 0.0f32;
            if self.arch == Arch::Mf {
                s = self.params[0];
                for (k, &j) in self.dense.iter().enumerate() {
                    s += self.params[1 + k] * x[r * cols + j];
                }
            }
            if nt > 1 && self.dims.iter().all(|&d| d == self.dims[0]) {
                for a in 0..nt {
                    for b in a + 1..nt {
                        let (ea, eb) = (self.row(a, pos[a][r]), self.row(b, pos[b][r]));
                        s += dot(&ea[..self.dims[a]], &eb[..self.dims[b]]);
                    }
                }
            }
            for (t, p) in pos.iter().enumerate() {
                s += self.row(t, p[r])[self.dims[t]];
            }
            *o += s;
        }
        Ok(Pass { pos, acts, out })
    }

    /// Backward from `dout` (one value per row, already divided by `divisor`): the dense
    /// gradient into `grads`, the touched rows' gradients returned per table (with the `l2`
    /// term `2 * l2 * row / divisor` per occurrence).
    ///
    /// # Errors
    /// A layer's kernel error.
    pub fn backward(
        &mut self,
        pass: &Pass,
        x: &[f32],
        cols: usize,
        dout: &[f32],
        divisor: f32,
        grads: &mut [f32],
    ) -> Result<Vec<SparseRows>, ModelError> {
        let rows = dout.len();
        let reg = 2.0 * self.l2 / divisor;
        let nt = self.ids.len();
        let mut acc: Vec<Vec<f32>> = (0..nt)
            .map(|t| vec![0.0; self.pulled[t].values.len()])
            .collect();
        let mut touched: Vec<Vec<bool>> =
            (0..nt).map(|t| vec![false; self.pulled[t].len()]).collect();
        grads.fill(0.0);
        let dz = match self.arch {
            Arch::Mf => None,
            Arch::WideDeep => Some(self.backward_layers(pass, dout, grads)?),
        };
        let zw: usize = self.dims.iter().sum::<usize>() + self.dense.len();
        let fm = nt > 1 && self.dims.iter().all(|&d| d == self.dims[0]);
        for r in 0..rows {
            let d = dout[r];
            if self.arch == Arch::Mf {
                grads[0] += d;
                for (k, &j) in self.dense.iter().enumerate() {
                    grads[1 + k] += d * x[r * cols + j];
                }
            }
            let mut off = 0;
            for t in 0..nt {
                let (p, w) = (pass.pos[t][r] as usize, self.dims[t] + 1);
                touched[t][p] = true;
                let g = &mut acc[t][p * w..(p + 1) * w];
                g[w - 1] += d;
                if reg != 0.0 {
                    let row = self.pulled[t].row(p);
                    g.iter_mut().zip(row).for_each(|(a, v)| *a += reg * v);
                }
                if let Some(dz) = &dz {
                    let src = &dz[r * zw + off..r * zw + off + w - 1];
                    g[..w - 1].iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
                if fm {
                    for s in (0..nt).filter(|&s| s != t) {
                        let e = &self.pulled[s].row(pass.pos[s][r] as usize)[..w - 1];
                        g[..w - 1].iter_mut().zip(e).for_each(|(a, b)| *a += d * b);
                    }
                }
                off += w - 1;
            }
        }
        Ok((0..nt)
            .map(|t| {
                let w = self.dims[t] + 1;
                let mut out = SparseRows::empty(w);
                for (p, _) in touched[t].iter().enumerate().filter(|(_, &on)| on) {
                    out.ids.push(self.pulled[t].ids[p]);
                    out.values.extend_from_slice(&acc[t][p * w..(p + 1) * w]);
                }
                out
            })
            .collect())
    }

    /// `wide_deep`: backprop through the layers; returns `dL/dz` of the concatenated input.
    fn backward_layers(
        &mut self,
        pass: &Pass,
        dout: &[f32],
        grads: &mut [f32],
    ) -> Result<Vec<f32>, ModelError> {
        let rows = dout.len();
        let mut dy = dout.to_vec();
        for (i, (layer, range)) in self.layers.iter_mut().enumerate().rev() {
            let mut dx = vec![0.0; rows * layer.in_features()];
            let (x, y) = (&pass.acts[i], &pass.acts[i + 1]);
            let p = &self.params[range.clone()];
            layer.backward(p, x, y, &dy, rows, &mut grads[range.clone()], Some(&mut dx))?;
            dy = dx;
        }
        Ok(dy)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
