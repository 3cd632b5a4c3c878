//! RDMA link (feature `rdma`). Device discovery is implemented; the verbs data path on the
//! `sideway` binding is not wired yet, so with a device present construction still reports
//! `Unsupported` with that reason rather than pretending to work.

use super::RdmaDevice;
use crate::config::LinkConfig;
use crate::error::{Error, Result};
use crate::frame::{Expect, FrameHeader};
use crate::link::{Frame, Link};
use lockstep_tensor::Buffer;

/// Find the first device under `/sys/class/infiniband` (what `ibv_get_device_list` reads).
pub(crate) fn first_device() -> Result<RdmaDevice> {
    let dir = std::fs::read_dir("/sys/class/infiniband").map_err(|_| super::no_device())?;
    let name = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .min()
        .ok_or_else(super::no_device)?;
    Ok(RdmaDevice { name })
}

/// One RDMA queue pair to one peer.
pub struct RdmaLink {
    peer: String,
}

impl RdmaLink {
    /// Connect to `peer` on `device`.
    ///
    /// # Errors
    /// [`Error::Unsupported`]: the verbs data path is not built yet.
    pub fn connect(device: &RdmaDevice, peer: &str, _cfg: LinkConfig) -> Result<RdmaLink> {
        let _ = RdmaLink {
            peer: peer.to_string(),
        };
        Err(Error::Unsupported(format!(
            "rdma: device {} found, but the verbs data path is not implemented",
            device.name
        )))
    }
}

impl Link for RdmaLink {
    fn peer_name(&self) -> &str {
        &self.peer
    }
    fn send(&mut self, _h: FrameHeader, _p: Buffer) -> Result<()> {
        Err(Error::Unsupported("rdma: data path not implemented".into()))
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn recv(&mut self, _e: &Expect) -> Result<Frame> {
        Err(Error::Unsupported("rdma: data path not implemented".into()))
    }
}
