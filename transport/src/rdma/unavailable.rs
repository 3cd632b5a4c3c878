//! Why this node cannot run RDMA links, as data: one variant per missing piece, each message
//! naming exactly what is missing and how to get it. Compiled with and without the `rdma`
//! feature, because the answer "this build has no RDMA support" is itself one of the reasons.
//!
//! The checks run in the order a user would fix them (see [`super::open_device`]): the build
//! (feature), the user-space library (`libibverbs.so.1`, loaded at run time), the kernel (an
//! RDMA core and a driver), a device, the device's port. `cluster.transport = "rdma"` turns the
//! first failing one into [`crate::Error::RdmaUnavailable`] at start; `auto` logs it as the
//! reason a link between hosts uses TCP.

/// The one thing missing for RDMA on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdmaUnavailable {
    /// The binary was compiled without the `rdma` cargo feature.
    #[error(
        "this lockstep was built without RDMA support; rebuild with \
         `cargo build --release --features rdma` (needs cmake and libclang-dev) or use the \
         container image, which has it"
    )]
    NotBuilt,
    /// The RDMA user-space library could not be loaded at run time.
    #[error(
        "libibverbs.so.1 cannot be loaded ({reason}); install the RDMA user space: \
         `apt-get install libibverbs1 ibverbs-providers` (Debian, Ubuntu) or \
         `dnf install libibverbs` (RHEL)"
    )]
    NoLibrary {
        /// The dynamic loader's message.
        reason: String,
    },
    /// libibverbs is there but the kernel offers no RDMA (no RDMA core, no driver loaded).
    #[error(
        "the kernel offers no RDMA devices (ibv_get_device_list: {reason}; \
         /sys/class/infiniband_verbs is missing): load the NIC's RDMA driver (e.g. mlx5_ib), \
         or for a software device `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0`"
    )]
    NoKernelSupport {
        /// The error `ibv_get_device_list` gave.
        reason: String,
    },
    /// The kernel has RDMA support and lists no device.
    #[error(
        "no RDMA device found (ibv_get_device_list returned none; `ibv_devices` lists them, \
         `rdma link show` shows RoCE devices and their net devices)"
    )]
    NoDevice,
    /// `LOCKSTEP_RDMA_DEVICE` names a device this node does not have.
    #[error("RDMA device {wanted} (LOCKSTEP_RDMA_DEVICE) not found; this node has: {found}")]
    DeviceNotFound {
        /// The name asked for.
        wanted: String,
        /// The devices the node has, comma-separated.
        found: String,
    },
    /// An RDMA setting in the environment is not valid.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    BadSetting {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The first device exists and could not be opened (permissions on /dev/infiniband, a
    /// missing provider library for its driver).
    #[error(
        "cannot open RDMA device {device}: {reason} (check /dev/infiniband permissions and that \
         the provider package, ibverbs-providers, has the driver's library)"
    )]
    CannotOpen {
        /// The device's name, e.g. `mlx5_0`.
        device: String,
        /// The verbs error.
        reason: String,
    },
    /// The device's port could not be queried.
    #[error("cannot query port {port} of RDMA device {device}: {reason}")]
    PortQuery {
        /// The device's name.
        device: String,
        /// The port number.
        port: u8,
        /// The verbs error.
        reason: String,
    },
    /// The device's port is not `PORT_ACTIVE` (cable, subnet manager, link down).
    #[error(
        "RDMA device {device} port {port} is not active ({state}; `ibv_devinfo -d {device}` \
         shows it)"
    )]
    PortNotActive {
        /// The device's name.
        device: String,
        /// The port number.
        port: u8,
        /// The state the port reports (`Down`, `Init`, ...).
        state: String,
    },
    /// `cluster.tls` is configured: RDMA would move data unencrypted.
    #[error(
        "TLS is configured and RDMA moves data unencrypted (use tcp with TLS, or rdma without it)"
    )]
    Tls,
}

/// Whether `libibverbs.so.1` can be loaded; the loader's message when not.
#[cfg(feature = "rdma")]
pub(crate) fn check_library() -> Result<(), RdmaUnavailable> {
    const LIB: &std::ffi::CStr = c"libibverbs.so.1";
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is closed right after (the
    // binding keeps its own handle, opened at load time, so the library stays mapped).
    let handle = unsafe { libc::dlopen(LIB.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
        let msg = unsafe { libc::dlerror() };
        let reason = if msg.is_null() {
            "not found".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated (above).
            unsafe { std::ffi::CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(RdmaUnavailable::NoLibrary { reason });
    }
    // SAFETY: `handle` came from dlopen above and is closed once.
    unsafe { libc::dlclose(handle) };
    Ok(())
}

/// Classify a failed `ibv_get_device_list`: `ENOSYS` is libibverbs' answer when the kernel has
/// no RDMA core (`/sys/class/infiniband_verbs` missing); anything else is reported as is.
#[cfg(feature = "rdma")]
pub(crate) fn list_failed(e: &std::io::Error) -> RdmaUnavailable {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => RdmaUnavailable::NoKernelSupport {
            reason: e.to_string(),
        },
        // The binding answers EOPNOTSUPP for every verb when the library did not load.
        Some(libc::EOPNOTSUPP) => RdmaUnavailable::NoLibrary {
            reason: e.to_string(),
        },
        _ => RdmaUnavailable::NoKernelSupport {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_names_what_is_missing_and_the_fix() {
        let cases = [
            (
                RdmaUnavailable::NotBuilt,
                vec!["built without RDMA support", "--features rdma"],
            ),
            (
                RdmaUnavailable::NoLibrary {
                    reason: "libibverbs.so.1: cannot open shared object file".into(),
                },
                vec!["libibverbs.so.1 cannot be loaded", "ibverbs-providers"],
            ),
            (
                RdmaUnavailable::NoKernelSupport {
                    reason: "Function not implemented (os error 38)".into(),
                },
                vec!["kernel offers no RDMA", "os error 38", "rdma_rxe"],
            ),
            (
                RdmaUnavailable::NoDevice,
                vec!["no RDMA device found", "ibv_devices"],
            ),
            (
                RdmaUnavailable::PortNotActive {
                    device: "mlx5_0".into(),
                    port: 1,
                    state: "Down".into(),
                },
                vec!["mlx5_0 port 1 is not active (Down", "ibv_devinfo -d mlx5_0"],
            ),
        ];
        for (reason, needles) in cases {
            let text = reason.to_string();
            for n in needles {
                assert!(text.contains(n), "{text:?} lacks {n:?}");
            }
        }
    }

    #[cfg(feature = "rdma")]
    #[test]
    fn enosys_from_the_device_list_means_no_kernel_rdma() {
        let e = std::io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(matches!(
            list_failed(&e),
            RdmaUnavailable::NoKernelSupport { .. }
        ));
        let e = std::io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        assert!(matches!(list_failed(&e), RdmaUnavailable::NoLibrary { .. }));
    }
}
