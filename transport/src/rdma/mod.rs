//! RDMA backend (Gloo's `ibverbs/` shape: `mod.rs` = the device, `link.rs` = one peer's queue
//! pair, `region.rs` = registered memory), behind the `rdma` cargo feature.
//!
//! Without the feature this is the "shell" backend (mio's pattern): it compiles everywhere and
//! [`open_device`] returns [`Error::Unsupported`]`("rdma: built without the `rdma` feature")`.
//! With the feature it lists devices through the `sideway` ibverbs binding (which links a
//! vendored rdma-core statically and loads the vendor providers at run time, so building needs
//! only `cmake` and `libclang-dev`); no device gives `Unsupported("rdma: no RDMA device found
//! ...")`. [`link::RdmaLink`] then runs a reliable-connected queue pair over registered memory,
//! bootstrapped over the pair's authenticated TCP connection like the shared-memory backend.
//!
//! # Status
//! The verbs path compiles and is clippy-clean in CI, but it has **not been run on RDMA
//! hardware** (none is available to the project, and the development machine's kernel cannot
//! load Soft-RoCE or siw); its tests print `SKIPPED` with the reason when no device is present.
//! [`window`] (the send window's bookkeeping) is plain Rust and unit-tested everywhere.

#[cfg(feature = "rdma")]
pub mod link;
#[cfg(feature = "rdma")]
pub mod qp;
#[cfg(feature = "rdma")]
pub mod region;
#[cfg(feature = "rdma")]
pub mod register;
pub mod window;
#[cfg(feature = "rdma")]
pub use link::RdmaLink;

use crate::error::{Error, Result};

/// An opened RDMA device (context), the factory of RDMA links.
pub struct RdmaDevice {
    /// The device's name, e.g. `mlx5_0`.
    pub name: String,
    #[cfg(feature = "rdma")]
    pub(crate) ctx: std::sync::Arc<sideway::ibverbs::device_context::DeviceContext>,
}

impl std::fmt::Debug for RdmaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaDevice")
            .field("name", &self.name)
            .finish()
    }
}

/// Open the first RDMA device whose port 1 is active.
///
/// # Errors
/// [`Error::Unsupported`] when built without the `rdma` feature, when no device exists, when
/// the first device cannot be opened, or when its port is not active (the message names the
/// device and the port state).
pub fn open_device() -> Result<RdmaDevice> {
    #[cfg(feature = "rdma")]
    {
        use sideway::ibverbs::device::{DeviceInfo, DeviceList};
        let list = DeviceList::new().map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
            Error::Unsupported(format!(
                "rdma: no RDMA device found (ibv_get_device_list failed{})",
                cause.unwrap_or_default()
            ))
        })?;
        let dev = list.iter().next().ok_or_else(no_device)?;
        let name = dev.name();
        let ctx = dev
            .open()
            .map_err(|e| Error::Unsupported(format!("rdma: cannot open device {name}: {e}")))?;
        let port = ctx.query_port(qp::PORT).map_err(|e| {
            Error::Unsupported(format!(
                "rdma: cannot open device {name}: port {}: {e}",
                qp::PORT
            ))
        })?;
        let state = port.port_state();
        if state != sideway::ibverbs::device_context::PortState::Active {
            return Err(Error::Unsupported(format!(
                "rdma: device {name} port {} is not active ({state:?}; `ibv_devinfo -d {name}` shows it)",
                qp::PORT
            )));
        }
        Ok(RdmaDevice { name, ctx })
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err(Error::Unsupported(
            "rdma: built without the `rdma` feature".into(),
        ))
    }
}

/// Whether this build can use RDMA at all (the feature is on and a device with an active port
/// exists).
pub fn available() -> bool {
    open_device().is_ok()
}

/// Whether this build was compiled with the `rdma` feature.
pub const BUILT_IN: bool = cfg!(feature = "rdma");

#[cfg(feature = "rdma")]
fn no_device() -> Error {
    Error::Unsupported("rdma: no RDMA device found (ibv_get_device_list returned none)".into())
}
