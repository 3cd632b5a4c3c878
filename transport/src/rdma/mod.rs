//! RDMA backend (Gloo's `ibverbs/` shape: `mod.rs` = the device, `link.rs` = one peer's queue
//! pair, `region.rs` = registered memory), behind the `rdma` cargo feature.
//!
//! Without the feature this is the "shell" backend (mio's pattern): it compiles everywhere and
//! [`open_device`] returns [`RdmaUnavailable::NotBuilt`] ("this lockstep was built without RDMA
//! support; rebuild with `--features rdma` ..."). With the feature it lists devices through the
//! `sideway` ibverbs binding. That binding links `rdma-core-mummy`, a small static shim that
//! `dlopen`s the system's `libibverbs.so.1` when the program starts (and libibverbs loads the
//! vendor's provider, e.g. `libmlx5-rdmav34.so`): building needs `cmake` and `libclang-dev`
//! but no rdma-core, and the binary runs on machines without libibverbs, where RDMA is simply
//! unavailable. Every reason RDMA cannot run is a [`RdmaUnavailable`] variant naming what is
//! missing. [`link::RdmaLink`] then runs a reliable-connected queue pair over registered
//! memory, bootstrapped over the pair's authenticated TCP connection like the shared-memory
//! backend.
//!
//! # Status
//! The verbs path compiles and is clippy-clean in CI, but it has **not been run on RDMA
//! hardware** (none is available to the project, and the development machine's kernel cannot
//! load Soft-RoCE or siw); its tests print `SKIPPED` with the reason when no device is present.
//! [`window`] (the send window and the plan of a large frame's SENDs), [`recv_queue`] (the
//! receive slots), [`choose`] (device and GID), [`select`] (choosing RDMA per link) and
//! [`unavailable`] (why not) are plain Rust, compiled and unit-tested without the feature.

pub mod choose;
#[cfg(feature = "rdma")]
pub mod link;
#[cfg(feature = "rdma")]
pub mod qp;
pub mod recv_queue;
#[cfg(feature = "rdma")]
pub mod region;
#[cfg(feature = "rdma")]
pub mod register;
pub(crate) mod select;
pub mod unavailable;
pub mod window;
#[cfg(feature = "rdma")]
pub use link::RdmaLink;
pub use unavailable::RdmaUnavailable;

/// An opened RDMA device (context), the factory of RDMA links.
pub struct RdmaDevice {
    /// The device's name, e.g. `mlx5_0`.
    pub name: String,
    /// The GID index of port 1 the links use ([`choose::GID_INDEX_VAR`]).
    pub gid_index: u8,
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

/// Open the RDMA device this node uses ([`choose`]: the one `LOCKSTEP_RDMA_DEVICE` names,
/// else the first whose port 1 is active) with the GID index of `LOCKSTEP_RDMA_GID_INDEX`.
///
/// # Errors
/// The first missing piece, in the order a user fixes them: [`RdmaUnavailable::NotBuilt`],
/// [`RdmaUnavailable::BadSetting`], [`RdmaUnavailable::NoLibrary`] (`libibverbs.so.1` not
/// loadable), [`RdmaUnavailable::NoKernelSupport`], [`RdmaUnavailable::NoDevice`],
/// [`RdmaUnavailable::DeviceNotFound`], then the chosen device's [`RdmaUnavailable::CannotOpen`],
/// [`RdmaUnavailable::PortQuery`] or [`RdmaUnavailable::PortNotActive`].
pub fn open_device() -> std::result::Result<RdmaDevice, RdmaUnavailable> {
    #[cfg(feature = "rdma")]
    {
        use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};
        let gid_index = choose::gid_index(std::env::var(choose::GID_INDEX_VAR).ok().as_deref())?;
        unavailable::check_library()?;
        let list = DeviceList::new().map_err(|e| match e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => unavailable::list_failed(&io),
            other => RdmaUnavailable::NoKernelSupport {
                reason: other.to_string(),
            },
        })?;
        let mut opened: Vec<(String, std::result::Result<_, RdmaUnavailable>)> = list
            .iter()
            .map(|dev| {
                let name = dev.name();
                let ctx = dev.open().map_err(|e| RdmaUnavailable::CannotOpen {
                    device: name.clone(),
                    reason: e.to_string(),
                });
                let ready = ctx.and_then(|ctx| active_port(&name, &ctx).map(|()| ctx));
                (name, ready)
            })
            .collect();
        let states: Vec<(String, std::result::Result<(), RdmaUnavailable>)> = opened
            .iter()
            .map(|(n, r)| (n.clone(), r.as_ref().map(|_| ()).map_err(Clone::clone)))
            .collect();
        let wanted = std::env::var(choose::DEVICE_VAR).ok();
        let i = choose::pick(&states, wanted.as_deref())?;
        let (name, ctx) = opened.swap_remove(i);
        Ok(RdmaDevice {
            name,
            gid_index,
            ctx: ctx?,
        })
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err(RdmaUnavailable::NotBuilt)
    }
}

/// Ok when port [`qp::PORT`] of `ctx` is active.
#[cfg(feature = "rdma")]
fn active_port(
    name: &str,
    ctx: &sideway::ibverbs::device_context::DeviceContext,
) -> std::result::Result<(), RdmaUnavailable> {
    let port = ctx
        .query_port(qp::PORT)
        .map_err(|e| RdmaUnavailable::PortQuery {
            device: name.to_string(),
            port: qp::PORT,
            reason: e.to_string(),
        })?;
    let state = port.port_state();
    if state != sideway::ibverbs::device_context::PortState::Active {
        return Err(RdmaUnavailable::PortNotActive {
            device: name.to_string(),
            port: qp::PORT,
            state: format!("{state:?}"),
        });
    }
    Ok(())
}

/// Whether this build can use RDMA at all (the feature is on and a device with an active port
/// exists).
pub fn available() -> bool {
    open_device().is_ok()
}

/// Whether this build was compiled with the `rdma` feature.
pub const BUILT_IN: bool = cfg!(feature = "rdma");
