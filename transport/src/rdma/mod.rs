//! RDMA backend (Gloo's `ibverbs/` shape), behind the `rdma` cargo feature.
//!
//! Without the feature this is the "shell" backend (mio's pattern): it compiles everywhere and
//! every constructor returns [`Error::Unsupported`]. With the feature it opens the first ibverbs
//! device through the `sideway` binding, or reports that no device was found.

#[cfg(feature = "rdma")]
pub mod link;
#[cfg(feature = "rdma")]
pub use link::RdmaLink;

use crate::error::{Error, Result};

/// An opened RDMA device (context), the factory of RDMA links.
#[derive(Debug)]
pub struct RdmaDevice {
    /// The device's name, e.g. `mlx5_0`.
    pub name: String,
}

/// Open the first RDMA device.
///
/// # Errors
/// [`Error::Unsupported`] when built without the `rdma` feature or when no device exists.
pub fn open_device() -> Result<RdmaDevice> {
    #[cfg(feature = "rdma")]
    {
        link::first_device()
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err(Error::Unsupported(
            "rdma: built without the `rdma` feature".into(),
        ))
    }
}

/// Whether this build can use RDMA at all (the feature is on and a device exists).
pub fn available() -> bool {
    open_device().is_ok()
}

#[allow(dead_code)]
fn no_device() -> Error {
    Error::Unsupported("rdma: no RDMA device found (ibv_get_device_list returned none)".into())
}
