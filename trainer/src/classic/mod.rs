//! Classic models fitted in closed form from full-batch statistics rather than by an
//! optimizer: k-means ([`KMeans`], Lloyd iterations) and PCA ([`Pca`], the covariance's leading
//! eigenvectors).
//!
//! They ride on the same round as every other model: a round's "gradient" buffer carries the
//! statistics (per-cluster sums and counts; the first and second moments), each divided by the
//! global batch as the runtime divides gradients, so the allreduce sums them over the workers in
//! the same fixed order that makes gradients bit-identical for any worker count. Instead of an
//! optimizer step, [`Model::closed_form_update`](crate::model::Model::closed_form_update) turns
//! the summed statistics into the new parameters. Every round sees the whole training split
//! (as with L-BFGS); the rows carry no label the model uses (the held-out `loss` is the
//! inertia or the reconstruction error per row).

mod eigen;
mod kmeans;
mod pca;

pub use eigen::top_eigen;
pub use kmeans::{kmeans_plus_plus, KMeans};
pub use pca::Pca;
