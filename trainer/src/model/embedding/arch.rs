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
use super::pool::Lookup;
use super::spec::Pooling;
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

/// A forward pass's state: per table each row's lookups and pooled rows, the activations.
pub struct Pass {
    looks: Vec<Lookup>,
    pooled: Vec<Vec<f32>>,
    acts: Vec<Vec<f32>>,
    /// One output per row.
    pub out: Vec<f32>,
}

impl Pass {
    /// Row `r`'s pooled vector and bias of table `t` (`w` wide).
    fn row(&self, t: usize, r: usize, w: usize) -> &[f32] {
        &self.pooled[t][r * w..(r + 1) * w]
    }
}

impl Parts<'_> {
    fn lookups(&self, x: &[f32], rows: usize, cols: usize) -> Result<Vec<Lookup>, ModelError> {
        let mut all = Vec::with_capacity(self.ids.len());
        for (t, c) in self.ids.iter().enumerate() {
            let bags = c.bags(x, rows, cols)?;
            let have = &self.pulled[t].ids;
            let pos = bags
                .ids
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
            all.push(Lookup::new(
                pos,
                bags.start,
                c.pooling == Some(Pooling::Mean),
            ));
        }
        Ok(all)
    }

    /// Forward `rows` rows of `x` (`cols` wide).
    ///
    /// # Errors
    /// A bad id, a row not pulled, or a layer's kernel error.
    pub fn forward(&mut self, x: &[f32], rows: usize, cols: usize) -> Result<Pass, ModelError> {
        let looks = self.lookups(x, rows, cols)?;
        let pooled: Vec<Vec<f32>> = looks
            .iter()
            .zip(self.pulled)
            .map(|(l, p)| l.pool(p, rows))
            .collect();
        let mut pass = Pass {
            looks,
            pooled,
            acts: Vec::new(),
            out: vec![0.0f32; rows],
        };
        let nt = self.ids.len();
        if self.arch == Arch::WideDeep {
            let width: usize = self.dims.iter().sum::<usize>() + self.dense.len();
            let mut z = Vec::with_capacity(rows * width);
            for r in 0..rows {
                for (t, &d) in self.dims.iter().enumerate() {
                    z.extend_from_slice(&pass.row(t, r, d + 1)[..d]);
                }
                z.extend(self.dense.iter().map(|&j| x[r * cols + j]));
            }
            pass.acts.push(z);
            for (layer, range) in self.layers.iter_mut() {
                let mut y = vec![0.0; rows * layer.out_features()];
                let input = pass.acts.last().expect("the input is pushed first");
                layer.forward(&self.params[range.clone()], input, rows, &mut y)?;
                pass.acts.push(y);
            }
            let last = pass.acts.last().expect("at least the output layer");
            pass.out.copy_from_slice(last);
        }
        for r in 0..rows {
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
                        let (da, db) = (self.dims[a], self.dims[b]);
                        let (ea, eb) = (pass.row(a, r, da + 1), pass.row(b, r, db + 1));
                        s += dot(&ea[..da], &eb[..db]);
                    }
                }
            }
            for (t, &d) in self.dims.iter().enumerate() {
                s += pass.row(t, r, d + 1)[d];
            }
            pass.out[r] += s;
        }
        Ok(pass)
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
                let (look, w) = (&pass.looks[t], self.dims[t] + 1);
                // Each member gets the pooled value's gradient times its share (exactly the
                // gradient for one member: `x * 1.0 == x`).
                let (share, ds) = (look.scale(r), d * look.scale(r));
                for &p in look.members(r) {
                    let p = p as usize;
                    touched[t][p] = true;
                    let g = &mut acc[t][p * w..(p + 1) * w];
                    g[w - 1] += ds;
                    if reg != 0.0 {
                        let row = self.pulled[t].row(p);
                        g.iter_mut().zip(row).for_each(|(a, v)| *a += reg * v);
                    }
                    if let Some(dz) = &dz {
                        let src = &dz[r * zw + off..r * zw + off + w - 1];
                        g[..w - 1]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(a, b)| *a += b * share);
                    }
                    if fm {
                        for s in (0..nt).filter(|&s| s != t) {
                            let e = &pass.row(s, r, self.dims[s] + 1)[..w - 1];
                            g[..w - 1].iter_mut().zip(e).for_each(|(a, b)| *a += ds * b);
                        }
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
