//! Which RDMA device, and which GID of its port, this node uses: pure choices over what the
//! verbs report, so they are unit-tested without a device and compiled without the feature.
//!
//! - `LOCKSTEP_RDMA_DEVICE=mlx5_1` names the device (as `ibv_devices` lists it). Unset: the
//!   first device whose port 1 is active, so a node with a disconnected first NIC still finds
//!   its working one; with none active, the first device's reason.
//! - `LOCKSTEP_RDMA_GID_INDEX=3` picks the GID (as `show_gids` lists them; RoCE v2 over IPv4
//!   is often index 1 or 3). Unset: 0, which on InfiniBand and Soft-RoCE is the port's
//!   default GID.

use super::RdmaUnavailable;

/// The variable naming the device.
pub const DEVICE_VAR: &str = "LOCKSTEP_RDMA_DEVICE";
/// The variable naming the GID index.
pub const GID_INDEX_VAR: &str = "LOCKSTEP_RDMA_GID_INDEX";

/// The GID index from the variable's value (`None`: unset, index 0).
///
/// # Errors
/// [`RdmaUnavailable::BadSetting`] for anything but a number from 0 to 255.
pub fn gid_index(value: Option<&str>) -> Result<u8, RdmaUnavailable> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| RdmaUnavailable::BadSetting {
            var: GID_INDEX_VAR,
            value: v.to_string(),
            expected: "a GID index from 0 to 255",
        }),
    }
}

/// Which of `devices` (name, and whether its port is usable or why not, in list order) to
/// use, given the wanted name (`None`: the first usable one).
///
/// # Errors
/// [`RdmaUnavailable::NoDevice`] for an empty list, [`RdmaUnavailable::DeviceNotFound`]
/// for a wanted name not in the list, the wanted device's own reason, or with no wanted name
/// and no usable device the first device's reason.
pub fn pick(
    devices: &[(String, Result<(), RdmaUnavailable>)],
    wanted: Option<&str>,
) -> Result<usize, RdmaUnavailable> {
    let wanted = wanted.map(str::trim).filter(|w| !w.is_empty());
    if let Some(w) = wanted {
        let i = devices.iter().position(|(n, _)| n == w).ok_or_else(|| {
            RdmaUnavailable::DeviceNotFound {
                wanted: w.to_string(),
                found: devices
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;
        return devices[i].1.clone().map(|()| i);
    }
    if let Some(i) = devices.iter().position(|(_, ok)| ok.is_ok()) {
        return Ok(i);
    }
    match devices.first() {
        Some((_, why)) => Err(why.clone().err().unwrap_or(RdmaUnavailable::NoDevice)),
        None => Err(RdmaUnavailable::NoDevice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(d: &str) -> Result<(), RdmaUnavailable> {
        Err(RdmaUnavailable::PortNotActive {
            device: d.into(),
            port: 1,
            state: "Down".into(),
        })
    }

    #[test]
    fn the_first_active_device_unless_one_is_named() {
        let devs = vec![
            ("mlx5_0".to_string(), down("mlx5_0")),
            ("mlx5_1".to_string(), Ok(())),
            ("rxe0".to_string(), Ok(())),
        ];
        assert_eq!(pick(&devs, None), Ok(1), "skips the inactive first device");
        assert_eq!(pick(&devs, Some("rxe0")), Ok(2));
        assert_eq!(pick(&devs, Some(" ")), Ok(1), "blank is unset");
        assert_eq!(pick(&devs, Some("mlx5_0")), down("mlx5_0").map(|()| 0));
        let e = pick(&devs, Some("mlx5_9")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RDMA device mlx5_9 (LOCKSTEP_RDMA_DEVICE) not found; this node has: mlx5_0, mlx5_1, rxe0"
        );
        let none_active = vec![
            ("mlx5_0".to_string(), down("mlx5_0")),
            ("mlx5_1".to_string(), down("mlx5_1")),
        ];
        assert_eq!(pick(&none_active, None), down("mlx5_0").map(|()| 0));
        assert_eq!(pick(&[], None), Err(RdmaUnavailable::NoDevice));
    }

    #[test]
    fn gid_index_is_a_byte_or_a_named_error() {
        assert_eq!(gid_index(None), Ok(0));
        assert_eq!(gid_index(Some("3")), Ok(3));
        let e = gid_index(Some("three")).unwrap_err().to_string();
        assert!(
            e.contains("LOCKSTEP_RDMA_GID_INDEX=\"three\"") && e.contains("0 to 255"),
            "{e}"
        );
        assert!(gid_index(Some("256")).is_err());
    }
}
