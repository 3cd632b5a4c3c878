//! [`CliError`]: why a `lockstep` subcommand failed. One variant per failure of the command
//! layer itself (an argument, a model file that does not fit), and the errors of the layers it
//! calls (the runtime, manifests, tensors, TLS, the benchmarks) kept whole. `main` prints its
//! `Display` after `lockstep: error: `; the layers' errors render as they always have.

use lockstep_runtime::job::split_export::ExportError;
use lockstep_runtime::manifest::ManifestError;
use lockstep_runtime::RuntimeError;
use lockstep_trainer::model::ModelError;
use lockstep_transport::rdma::RdmaUnavailable;
use lockstep_transport::tls::gen::GenError;
use std::path::PathBuf;

/// A subcommand's failure. The large errors of the layers below are boxed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--elastic` that is neither `MIN` nor `MIN:MAX`.
    #[error("--elastic {value}: expected MIN or MIN:MAX (worker counts)")]
    ElasticArg {
        /// The value as given.
        value: String,
    },
    /// The path of the running `lockstep` (launch starts its nodes from it) is unknown.
    #[error("cannot find the lockstep executable: {source}")]
    CurrentExe {
        /// The system's reason.
        source: std::io::Error,
    },
    /// `cluster.transport = "rdma"` on a machine or build without RDMA: the missing piece.
    #[error("cluster.transport = \"rdma\": {source}")]
    Rdma {
        /// What is missing (the build feature, libibverbs, kernel support, a device, a port).
        source: RdmaUnavailable,
    },
    /// A model file without a tensor the model has.
    #[error("{}: no tensor {name}", .path.display())]
    MissingTensor {
        /// The model file.
        path: PathBuf,
        /// The parameter's name.
        name: String,
    },
    /// A model file whose tensor has another shape than the model's parameter.
    #[error("{}: tensor {name} has shape {got}, the model wants {want:?}", .path.display())]
    TensorShape {
        /// The model file.
        path: PathBuf,
        /// The parameter's name.
        name: String,
        /// The file's shape, as the tensor shows it.
        got: String,
        /// The model's shape.
        want: Vec<usize>,
    },
    /// `lockstep predict --output` without `--input` or `--top-k`.
    #[error("--output needs --input FILE (predict a file) or --top-k K --users FILE (recommend)")]
    OutputWithout,
    /// A model failed to predict.
    #[error("{0}")]
    Model(Box<ModelError>),
    /// A manifest that does not load (key and line).
    #[error("{0}")]
    Manifest(Box<ManifestError>),
    /// The runtime failed: a node, a launch, a job's data, a run directory.
    #[error("{0}")]
    Runtime(Box<RuntimeError>),
    /// A safetensors file that cannot be read.
    #[error("{0}")]
    Tensor(Box<lockstep_tensor::Error>),
    /// `lockstep split` could not write the split.
    #[error("{0}")]
    Export(Box<ExportError>),
    /// `lockstep tls gen` could not make or write a certificate.
    #[error("{0}")]
    TlsGen(Box<GenError>),
    /// A benchmark failed.
    #[cfg(feature = "bench")]
    #[error("{0}")]
    Bench(Box<lockstep_bench::BenchError>),
}

/// `From` for the boxed errors of the layers below, so `?` works on their results.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for CliError {
            fn from(e: $ty) -> Self {
                CliError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Model(ModelError),
    Manifest(ManifestError),
    Runtime(RuntimeError),
    Tensor(lockstep_tensor::Error),
    Export(ExportError),
    TlsGen(GenError),
);

#[cfg(feature = "bench")]
boxed_from!(Bench(lockstep_bench::BenchError));
