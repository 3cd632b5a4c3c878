//! L-BFGS for convex objectives over the full batch, as a step rule: every call brings the
//! gradient at the current parameters (the mean over the whole training set, allreduced by the
//! runtime, with the weights-only L2 penalty added here) and moves the parameters to the next
//! point to evaluate.
//!
//! - **Direction**: the two-loop recursion over the last `history` pairs `(s, y)` (initial
//!   scaling `s·y / y·y`), or steepest descent when there is none or the result is not a descent
//!   direction.
//! - **Line search on the directional derivative only**: along `d` from `x0`,
//!   `φ'(α) = g(x0 + α d)·d`. A step is accepted when `c2 φ'(0) <= φ'(α) <= c1 φ'(0)`
//!   (`c1 = 1e-4`, `c2 = 0.9`). The right inequality is the curvature condition of Wolfe; for a
//!   convex objective it also gives the sufficient decrease (Armijo) condition, since convexity
//!   gives `φ(α) <= φ(0) + α φ'(α) <= φ(0) + c1 α φ'(0)`. So no loss value is needed: the round's
//!   gradient is all the search uses. A bracket `[lo, hi]` is grown by doubling and shrunk by the
//!   secant of `φ'`, kept within its middle 80%; after 20 evaluations the last point is taken.
//! - **Converged** when no component of the gradient exceeds `tolerance` times the largest
//!   component of the first gradient (at least 1: a relative test, since the gradient's scale
//!   follows the loss's, and f32 sums carry about 1e-7 of it); the parameters then stay where
//!   they are for the remaining rounds.
//!
//! Dot products are summed in f64 in index order, so every replica computes the same bits; the
//! state is not checkpointed (a resumed run starts a fresh history from the restored weights).

use std::collections::VecDeque;
use std::ops::Range;

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
/// Evaluations of one line search before its last point is taken.
const MAX_EVALS: u32 = 20;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// Progress, for logs and reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsProgress {
    /// Accepted steps (iterations).
    pub iterations: u64,
    /// Gradient evaluations (rounds) so far.
    pub evaluations: u64,
    /// The largest gradient component at the newest accepted point.
    pub grad_max: f64,
    /// Whether `grad_max <= tolerance` was reached.
    pub converged: bool,
}

/// The L-BFGS state.
#[derive(Debug, Clone)]
pub struct Lbfgs {
    history: usize,
    tolerance: f64,
    /// The largest component of the first gradient (at least 1): the scale of `tolerance`.
    scale: f64,
    s: VecDeque<Vec<f32>>,
    y: VecDeque<Vec<f32>>,
    x0: Vec<f32>,
    g0: Vec<f32>,
    d: Vec<f32>,
    dphi0: f64,
    alpha: f64,
    lo: (f64, f64),
    hi: Option<(f64, f64)>,
    evals_in_search: u32,
    searching: bool,
    progress: LbfgsProgress,
}

impl Lbfgs {
    /// A fresh state keeping `history` pairs, converged at `tolerance`.
    pub fn new(history: usize, tolerance: f32) -> Self {
        Lbfgs {
            history: history.max(1),
            tolerance: f64::from(tolerance),
            scale: 0.0,
            s: VecDeque::new(),
            y: VecDeque::new(),
            x0: Vec::new(),
            g0: Vec::new(),
            d: Vec::new(),
            dphi0: 0.0,
            alpha: 0.0,
            lo: (0.0, 0.0),
            hi: None,
            evals_in_search: 0,
            searching: false,
            progress: LbfgsProgress {
                iterations: 0,
                evaluations: 0,
                grad_max: f64::INFINITY,
                converged: false,
            },
        }
    }

    /// Progress so far.
    pub fn progress(&self) -> LbfgsProgress {
        self.progress
    }

    /// Take the gradient `grads` of the data term at `params`, add `l2 * w` on `penalized`, and
    /// move `params` to the next point to evaluate.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], penalized: &[Range<usize>], l2: f32) {
        if self.progress.converged {
            return;
        }
        self.progress.evaluations += 1;
        let mut g = grads.to_vec();
        if l2 != 0.0 {
            for r in penalized {
                for i in r.clone() {
                    g[i] += l2 * params[i];
                }
            }
        }
        if self.searching {
            let dphi = dot(&g, &self.d);
            self.evals_in_search += 1;
            let ok = (C2 * self.dphi0..=C1 * self.dphi0).contains(&dphi);
            if !ok && self.evals_in_search < MAX_EVALS {
                if dphi > C1 * self.dphi0 {
                    self.hi = Some((self.alpha, dphi)); // past the useful part of the line
                } else {
                    self.lo = (self.alpha, dphi); // still steep: further
                }
                self.alpha = match self.hi {
                    None => self.alpha * 2.0,
                    Some((b, fb)) => {
                        let (a, fa) = self.lo;
                        let secant = if fb != fa {
                            a - fa * (b - a) / (fb - fa)
                        } else {
                            0.5 * (a + b)
                        };
                        secant.clamp(a + 0.1 * (b - a), b - 0.1 * (b - a))
                    }
                };
                self.move_to(params);
                return;
            }
            // Accepted (or the search is spent): remember the curvature pair.
            let s: Vec<f32> = params.iter().zip(&self.x0).map(|(p, x)| p - x).collect();
            let y: Vec<f32> = g.iter().zip(&self.g0).map(|(a, b)| a - b).collect();
            if dot(&s, &y) > 1e-12 {
                if self.s.len() == self.history {
                    self.s.pop_front();
                    self.y.pop_front();
                }
                self.s.push_back(s);
                self.y.push_back(y);
            }
            self.progress.iterations += 1;
            self.searching = false;
        }
        self.progress.grad_max = g.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        if self.scale == 0.0 {
            self.scale = self.progress.grad_max.max(1.0);
        }
        if self.progress.grad_max <= self.tolerance * self.scale {
            self.progress.converged = true;
            return;
        }
        let mut d = self.direction(&g);
        let mut dphi0 = dot(&g, &d);
        if dphi0 >= 0.0 || !dphi0.is_finite() {
            self.s.clear();
            self.y.clear();
            d = g.iter().map(|v| -v).collect();
            dphi0 = dot(&g, &d);
        }
        self.alpha = if self.s.is_empty() {
            (1.0 / dphi0.abs().sqrt()).min(1.0)
        } else {
            1.0
        };
        self.x0 = params.to_vec();
        self.g0 = g;
        self.d = d;
        self.dphi0 = dphi0;
        self.lo = (0.0, dphi0);
        self.hi = None;
        self.evals_in_search = 0;
        self.searching = true;
        self.move_to(params);
    }

    fn move_to(&self, params: &mut [f32]) {
        let a = self.alpha as f32;
        for ((p, x), d) in params.iter_mut().zip(&self.x0).zip(&self.d) {
            *p = x + a * d;
        }
    }

    /// `-H g` by the two-loop recursion.
    fn direction(&self, g: &[f32]) -> Vec<f32> {
        let mut q: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
        let k = self.s.len();
        let mut a = vec![0.0f64; k];
        let rho: Vec<f64> = (0..k).map(|i| 1.0 / dot(&self.s[i], &self.y[i])).collect();
        for i in (0..k).rev() {
            let sq: f64 = self.s[i]
                .iter()
                .zip(&q)
                .map(|(&s, q)| f64::from(s) * q)
                .sum();
            a[i] = rho[i] * sq;
            for (q, &y) in q.iter_mut().zip(&self.y[i]) {
                *q -= a[i] * f64::from(y);
            }
        }
        if k > 0 {
            let (s, y) = (&self.s[k - 1], &self.y[k - 1]);
            let gamma = dot(s, y) / dot(y, y);
            for q in &mut q {
                *q *= gamma;
            }
        }
        for i in 0..k {
            let yr: f64 = self.y[i]
                .iter()
                .zip(&q)
                .map(|(&y, r)| f64::from(y) * r)
                .sum();
            let b = rho[i] * yr;
            for (r, &s) in q.iter_mut().zip(&self.s[i]) {
                *r += (a[i] - b) * f64::from(s);
            }
        }
        q.iter().map(|v| -*v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean logistic loss gradient of a separable-with-noise toy set, plus the L2 term outside.
    fn grad(w: &[f32], xs: &[[f32; 2]], ys: &[f32]) -> Vec<f32> {
        let mut g = vec![0.0f32; 3];
        for (x, &y) in xs.iter().zip(ys) {
            let z = w[0] * x[0] + w[1] * x[1] + w[2];
            let p = 1.0 / (1.0 + (-z).exp());
            let e = (p - y) / xs.len() as f32;
            g[0] += e * x[0];
            g[1] += e * x[1];
            g[2] += e;
        }
        g
    }

    #[test]
    fn converges_on_a_quadratic_and_on_l2_logistic_regression() {
        // f(w) = sum_i c_i (w_i - t_i)^2 / 2: gradient c_i (w_i - t_i).
        let (c, t) = ([1.0f32, 10.0, 100.0], [3.0f32, -2.0, 0.5]);
        let mut w = vec![0.0f32; 3];
        let mut o = Lbfgs::new(5, 1e-5);
        for _ in 0..200 {
            let g: Vec<f32> = (0..3).map(|i| c[i] * (w[i] - t[i])).collect();
            o.step(&mut w, &g, &[], 0.0);
        }
        let p = o.progress();
        assert!(p.converged, "{p:?}");
        for i in 0..3 {
            assert!((w[i] - t[i]).abs() < 1e-4, "{w:?}");
        }
        assert!(p.iterations < 30, "{p:?}");

        let xs: Vec<[f32; 2]> = (0..40)
            .map(|i| [(i % 7) as f32 - 3.0, (i % 5) as f32 * 0.5 - 1.0])
            .collect();
        let ys: Vec<f32> = (0..40)
            .map(|i| ((i * 7 + 3) % 3 == 0) as u8 as f32)
            .collect();
        let mut w = vec![0.0f32; 3];
        let mut o = Lbfgs::new(10, 1e-6);
        for _ in 0..300 {
            let g = grad(&w, &xs, &ys);
            o.step(&mut w, &g, std::slice::from_ref(&(0..2)), 0.1);
        }
        assert!(o.progress().converged, "{:?}", o.progress());
        // At the optimum the penalised gradient vanishes.
        let g = grad(&w, &xs, &ys);
        let full = [g[0] + 0.1 * w[0], g[1] + 0.1 * w[1], g[2]];
        assert!(full.iter().all(|v| v.abs() < 1e-5), "{full:?}");
    }
}
