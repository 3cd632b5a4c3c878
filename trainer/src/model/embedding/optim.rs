//! Sparse optimizers: the update of one row from its summed gradient, with that row's own state.
//! Nothing here is proportional to the table: state exists for rows that were touched, and a
//! row's Adam step count advances only when the row is updated ("lazy" Adam).

use super::spec::TableOptimizerKind;

const ADAGRAD_EPS: f32 = 1e-8;
const ADAM_B1: f32 = 0.9;
const ADAM_B2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// One sparse optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOptimizer {
    kind: TableOptimizerKind,
}

impl RowOptimizer {
    /// The optimizer of `kind`.
    pub fn new(kind: TableOptimizerKind) -> Self {
        RowOptimizer { kind }
    }

    /// State values per row of `width` values (Adam: two moments and one step count).
    pub fn state_len(&self, width: usize) -> usize {
        match self.kind {
            TableOptimizerKind::Sgd => 0,
            TableOptimizerKind::Adagrad => width,
            TableOptimizerKind::Adam => 2 * width + 1,
        }
    }

    /// Update `row` by `grad` at `lr`, with this row's `state` (`state_len` values, zero for a
    /// fresh row).
    pub fn update(&self, lr: f32, row: &mut [f32], grad: &[f32], state: &mut [f32]) {
        match self.kind {
            TableOptimizerKind::Sgd => row.iter_mut().zip(grad).for_each(|(w, g)| *w -= lr * g),
            TableOptimizerKind::Adagrad => {
                for ((w, g), a) in row.iter_mut().zip(grad).zip(state.iter_mut()) {
                    *a += g * g;
                    *w -= lr * g / (a.sqrt() + ADAGRAD_EPS);
                }
            }
            TableOptimizerKind::Adam => {
                let n = row.len();
                let (moments, step) = state.split_at_mut(2 * n);
                step[0] += 1.0;
                let t = step[0];
                let c1 = 1.0 - ADAM_B1.powf(t);
                let c2 = 1.0 - ADAM_B2.powf(t);
                let (m, v) = moments.split_at_mut(n);
                for i in 0..n {
                    let g = grad[i];
                    m[i] = ADAM_B1 * m[i] + (1.0 - ADAM_B1) * g;
                    v[i] = ADAM_B2 * v[i] + (1.0 - ADAM_B2) * g * g;
                    row[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + ADAM_EPS);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_moves_against_the_gradient() {
        for kind in [
            TableOptimizerKind::Sgd,
            TableOptimizerKind::Adagrad,
            TableOptimizerKind::Adam,
        ] {
            let o = RowOptimizer::new(kind);
            let mut row = vec![1.0f32, -1.0];
            let mut state = vec![0.0; o.state_len(2)];
            o.update(0.1, &mut row, &[2.0, -2.0], &mut state);
            assert!(row[0] < 1.0 && row[1] > -1.0, "{kind:?}: {row:?}");
        }
        // Adagrad's first step is lr * sign(g); Adam's too (bias-corrected).
        let o = RowOptimizer::new(TableOptimizerKind::Adam);
        let mut row = vec![0.0f32];
        let mut state = vec![0.0; 3];
        o.update(0.1, &mut row, &[5.0], &mut state);
        assert!((row[0] + 0.1).abs() < 1e-5 && state[2] == 1.0);
    }
}
