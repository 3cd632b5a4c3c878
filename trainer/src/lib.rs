//! # lockstep-trainer
//!
//! What gets trained and how gradients are averaged, as plain code (no actors): a training step
//! runs in a unit test.
//!
//! - [`batch`]: the `Batch` handed from data to model.

pub mod batch;
pub mod classic;
pub mod data;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;

pub use batch::{Batch, Targets};
