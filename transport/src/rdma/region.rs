//! Registered memory: a heap block pinned and registered with a protection domain, handed out
//! as a [`lockstep_tensor::Buffer`] through [`ExternalMemory`], so the registration lives exactly
//! as long as the last buffer handle over it (the `bytes::Bytes::from_owner` idea) and registered
//! memory flows upward as an ordinary buffer.

use crate::error::{Error, Result};
use lockstep_tensor::{Buffer, ExternalMemory};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::AccessFlags;
use std::sync::Arc;

/// A registered heap block (the owner behind a [`Buffer`]).
struct RegisteredMemory {
    // Field order matters: the region is deregistered before the memory is freed.
    _mr: Arc<MemoryRegion>,
    mem: Vec<u64>,
}

impl ExternalMemory for RegisteredMemory {
    fn bytes(&self) -> &[u8] {
        as_bytes(&self.mem)
    }
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        let len = self.mem.len() * 8;
        // SAFETY: a `Vec<u64>` is `len` initialised bytes, 8-aligned; u8 has no invalid values.
        Some(unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr().cast::<u8>(), len) })
    }
}

fn as_bytes(v: &[u64]) -> &[u8] {
    // SAFETY: as in `bytes_mut`, read-only.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 8) }
}

/// A buffer over registered memory plus the keys the NIC needs.
pub struct Region {
    /// The memory, as a buffer (unique while the link owns it, so it stays writable).
    pub buf: Buffer,
    /// Local key for scatter/gather entries.
    pub lkey: u32,
    /// Remote key, for one-sided operations by the peer.
    pub rkey: u32,
}

impl Region {
    /// Allocate `len` zeroed bytes (rounded up to 8) and register them for local write and
    /// remote write.
    ///
    /// # Errors
    /// [`Error::RdmaVerb`] naming the device and size when registration fails (e.g. a too small
    /// `ulimit -l`).
    pub fn new(pd: &Arc<ProtectionDomain>, len: usize, device: &str) -> Result<Region> {
        let mem = vec![0u64; len.div_ceil(8)];
        // SAFETY: the block is registered for exactly its own length and `RegisteredMemory`
        // keeps it alive (and unmoved: a Vec's heap block never moves) until the region is
        // deregistered, which its field order guarantees happens first.
        let mr = unsafe {
            pd.reg_mr(
                mem.as_ptr() as usize,
                mem.len() * 8,
                AccessFlags::LocalWrite | AccessFlags::RemoteWrite,
            )
        }
        .map_err(|e| Error::RdmaVerb {
            device: device.to_string(),
            verb: "ibv_reg_mr",
            reason: format!("{len} B: {e} (registered memory is locked: raise `ulimit -l`)"),
        })?;
        let (lkey, rkey) = (mr.lkey(), mr.rkey());
        Ok(Region {
            buf: Buffer::from_external(RegisteredMemory { _mr: mr, mem }),
            lkey,
            rkey,
        })
    }

    /// Address of byte `off` (for a scatter/gather entry).
    pub fn addr(&self, off: usize) -> u64 {
        self.buf.as_ptr() as u64 + off as u64
    }

    /// The bytes for writing (the link holds the only handle).
    ///
    /// # Panics
    /// When a clone of the buffer escaped: a bug in the link.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self.buf.get_mut() {
            Some(b) => b,
            None => panic!("registered send region is shared"),
        }
    }
}
