//! # lockstep-trainer
//!
//! What gets trained and how gradients are averaged, as plain code (no actors): a training step
//! runs in a unit test.
//!
//! - [`aggregate`]: allreduce, broadcast, barrier and the parameter server over a group of links.
//! - [`batch`]: the `Batch` handed from data to model.

pub mod aggregate;
pub mod batch;
pub mod data;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;

pub use batch::{Batch, Targets};
