//! One table's lookups in a batch: each row's positions among the pulled rows, and per row the
//! pooled vector and bias the architectures read: the row itself for a single-valued column, the
//! sum or mean of a multi-valued cell's rows, zeros for an empty cell.

use lockstep_tensor::SparseRows;

/// A batch's lookups of one table.
pub(super) struct Lookup {
    /// Positions among the pulled rows, row after row.
    pos: Vec<u32>,
    /// Where each row's positions start, and the end.
    start: Vec<usize>,
    /// Mean pooling (else sum).
    mean: bool,
}

impl Lookup {
    /// Lookups at `pos`, row `r` owning `pos[start[r]..start[r + 1]]`.
    pub(super) fn new(pos: Vec<u32>, start: Vec<usize>, mean: bool) -> Self {
        Lookup { pos, start, mean }
    }

    /// Row `r`'s positions.
    pub(super) fn members(&self, r: usize) -> &[u32] {
        &self.pos[self.start[r]..self.start[r + 1]]
    }

    /// Each member's share of row `r`'s pooled value: 1 (sum, or one member), `1/n` (mean).
    pub(super) fn scale(&self, r: usize) -> f32 {
        let n = self.start[r + 1] - self.start[r];
        if self.mean && n > 1 {
            1.0 / n as f32
        } else {
            1.0
        }
    }

    /// The pooled rows (vector and bias), `rows` of them, `pulled.dim` wide. One member is
    /// copied as it is, so a single-valued column reads exactly its row.
    pub(super) fn pool(&self, pulled: &SparseRows, rows: usize) -> Vec<f32> {
        let w = pulled.dim;
        let mut out = vec![0.0f32; rows * w];
        for r in 0..rows {
            let o = &mut out[r * w..(r + 1) * w];
            let Some((first, rest)) = self.members(r).split_first() else {
                continue;
            };
            o.copy_from_slice(pulled.row(*first as usize));
            for &p in rest {
                o.iter_mut()
                    .zip(pulled.row(p as usize))
                    .for_each(|(a, b)| *a += b);
            }
            let s = self.scale(r);
            if s != 1.0 {
                o.iter_mut().for_each(|a| *a *= s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_rows_are_copied_bags_summed_or_averaged_and_empty_bags_zero() {
        let pulled = SparseRows {
            dim: 2,
            ids: vec![3, 8],
            values: vec![1.0, 0.5, 3.0, -1.5],
        };
        let rows = 3;
        let pos = vec![1, 0, 1];
        let start = vec![0, 1, 3, 3];
        let sum = Lookup::new(pos.clone(), start.clone(), false).pool(&pulled, rows);
        assert_eq!(sum, vec![3.0, -1.5, 4.0, -1.0, 0.0, 0.0]);
        let mean = Lookup::new(pos, start, true);
        assert_eq!(
            mean.pool(&pulled, rows),
            vec![3.0, -1.5, 2.0, -0.5, 0.0, 0.0]
        );
        assert_eq!(
            (mean.scale(0), mean.scale(1), mean.scale(2)),
            (1.0, 0.5, 1.0)
        );
        assert_eq!(mean.members(1), &[0, 1]);
    }
}
