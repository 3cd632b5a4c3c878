//! Seeded random number generation and weight initialisation.
//!
//! Every random choice in training flows from one `u64` seed: [`rng`] derives an independent
//! ChaCha8 stream per purpose (weights, shuffling, dropout, ...) from `(seed, stream)`, so adding
//! a new consumer of randomness never shifts the numbers another consumer sees. ChaCha8 output is
//! specified bit for bit, so the same seed gives bit-identical parameters on every platform.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// Stream used for parameter initialisation.
pub const STREAM_INIT: u64 = 1;
/// Stream used for shuffling data (the data pipeline's).
pub const STREAM_SHUFFLE: u64 = 2;
/// Stream used for splitting data into train and test (the data pipeline's).
pub const STREAM_SPLIT: u64 = 3;

/// A ChaCha8 generator for `(seed, stream)`; distinct streams are independent sequences.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// How a parameter tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases).
    Zeros,
    /// He (Kaiming) normal: `N(0, 2 / fan_in)`, for layers followed by ReLU.
    He {
        /// Inputs feeding one output.
        fan_in: usize,
    },
    /// Xavier (Glorot) uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))`, for tanh and
    /// linear outputs.
    Xavier {
        /// Inputs feeding one output.
        fan_in: usize,
        /// Outputs fed by one input.
        fan_out: usize,
    },
}

impl Init {
    /// Fill `out` from `rng` according to this scheme.
    pub fn fill<R: Rng>(&self, rng: &mut R, out: &mut [f32]) {
        match *self {
            Init::Zeros => out.fill(0.0),
            Init::He { fan_in } => {
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                // A finite, positive std never fails; fall back to zeros rather than panic.
                match Normal::new(0.0f64, std) {
                    Ok(d) => out.iter_mut().for_each(|v| *v = d.sample(rng) as f32),
                    Err(_) => out.fill(0.0),
                }
            }
            Init::Xavier { fan_in, fan_out } => {
                let a = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                let d = Uniform::new_inclusive(-a, a);
                out.iter_mut().for_each(|v| *v = d.sample(rng) as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bits_and_streams_differ() {
        let mut a = vec![0.0; 64];
        let mut b = vec![0.0; 64];
        let mut c = vec![0.0; 64];
        Init::He { fan_in: 10 }.fill(&mut rng(7, STREAM_INIT), &mut a);
        Init::He { fan_in: 10 }.fill(&mut rng(7, STREAM_INIT), &mut b);
        Init::He { fan_in: 10 }.fill(&mut rng(7, STREAM_SHUFFLE), &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn scales_match_the_schemes() {
        let mut w = vec![0.0f32; 20_000];
        Init::He { fan_in: 50 }.fill(&mut rng(1, STREAM_INIT), &mut w);
        let var = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var - 2.0 / 50.0).abs() < 0.004, "He variance {var}");
        Init::Xavier {
            fan_in: 30,
            fan_out: 20,
        }
        .fill(&mut rng(1, STREAM_INIT), &mut w);
        let a = (6.0f32 / 50.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a));
        let var = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var - 2.0 / 50.0).abs() < 0.004, "Xavier variance {var}");
    }
}
