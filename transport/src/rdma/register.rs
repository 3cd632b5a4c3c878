//! Registering the memory a message is sent from, so its SENDs are posted from the caller's own
//! bytes: nothing of a gradient-sized payload is copied on the RDMA send path.
//!
//! Two modes, chosen per device when the link is built:
//! - **On-demand paging** (the device reports ODP for RC SENDs, e.g. ConnectX): the memory is
//!   registered with `IBV_ACCESS_ON_DEMAND`, so the region follows the process's page tables
//!   instead of pinning pages, and the registration is **kept in a cache** keyed by address
//!   range. A gradient buffer is then registered once and reused every round; a range that was
//!   freed and mapped again is still read correctly, because an ODP region resolves addresses
//!   at DMA time.
//! - **Pinned** (every other device, Soft-RoCE included): the range is registered for the one
//!   call and deregistered once its SENDs have completed. Caching a pinned registration of memory
//!   the transport does not own is unsafe without allocator hooks (a range freed and mapped again
//!   keeps the old, pinned pages behind the old key and the NIC would send stale bytes; UCX and
//!   MPI libraries intercept `munmap` for this), so this mode pays one `ibv_reg_mr` per large
//!   message instead, still without copying.

use crate::error::{Error, Result};
use sideway::ibverbs::device_context::DeviceContext;
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::AccessFlags;
use std::sync::Arc;

/// Registrations kept by an ODP link (oldest dropped first).
pub const CACHE: usize = 64;

/// `IBV_ODP_SUPPORT` (enum ibv_odp_general_caps) and `IBV_ODP_SUPPORT_SEND`
/// (enum ibv_odp_transport_cap_bits), both bit 0 in rdma-core's verbs.h.
const ODP_SUPPORT: u64 = 1;
const ODP_SUPPORT_SEND: u32 = 1;

/// Whether `ctx` supports on-demand paging for SENDs on RC queue pairs.
pub fn odp_for_rc_send(ctx: &DeviceContext) -> bool {
    ctx.query_device().is_ok_and(|d| {
        d.attr.odp_caps.general_caps & ODP_SUPPORT != 0
            && d.attr.odp_caps.per_transport_caps.rc_odp_caps & ODP_SUPPORT_SEND != 0
    })
}

/// A registration that must outlive the SENDs posted with its key.
pub struct Registered {
    /// Local key for the scatter/gather entries.
    pub lkey: u32,
    _mr: Arc<MemoryRegion>,
}

/// Registers send memory for one link (see the module docs for the two modes).
pub struct Registrar {
    pd: Arc<ProtectionDomain>,
    odp: bool,
    dev: String,
    cache: Vec<(usize, usize, Arc<MemoryRegion>)>,
    /// Registrations made (`ibv_reg_mr` calls), for tests and logs.
    pub registrations: u64,
}

impl Registrar {
    /// For memory sent through `pd` on device `dev`; `odp` from [`odp_for_rc_send`].
    pub fn new(pd: Arc<ProtectionDomain>, odp: bool, dev: &str) -> Registrar {
        Registrar {
            pd,
            odp,
            dev: dev.to_string(),
            cache: Vec::new(),
            registrations: 0,
        }
    }

    /// Whether registrations are cached (ODP).
    pub fn caches(&self) -> bool {
        self.odp
    }

    /// A key for `bytes`, valid while the returned value lives (and, with ODP, while the link
    /// lives).
    ///
    /// # Errors
    /// [`Error::RdmaVerb`] naming the device and the size when `ibv_reg_mr` fails (a too
    /// small `ulimit -l` in pinned mode, typically).
    pub fn register(&mut self, bytes: &[u8]) -> Result<Registered> {
        let (addr, len) = (bytes.as_ptr() as usize, bytes.len());
        if self.odp {
            if let Some((_, _, mr)) = self
                .cache
                .iter()
                .find(|(a, l, _)| *a <= addr && addr + len <= a + l)
            {
                return Ok(Registered {
                    lkey: mr.lkey(),
                    _mr: mr.clone(),
                });
            }
        }
        let access = if self.odp {
            AccessFlags::OnDemand
        } else {
            // Local read is always granted; a send needs nothing more (and read-only memory,
            // such as a mapped checkpoint, could not be registered for writing).
            AccessFlags::none()
        };
        // SAFETY: `bytes` is live for this call. Pinned: the region is dropped (deregistered)
        // by the caller once the SENDs posted from it have completed, before `bytes` can go
        // away. ODP: the region does not pin or own pages; a cached key over a range that was
        // remapped resolves the new pages at DMA time, and the link only posts from ranges
        // its caller lends it for the duration of the send.
        let mr = unsafe { self.pd.reg_mr(addr, len.max(1), access) }.map_err(|e| {
            Error::RdmaVerb {
                device: self.dev.clone(),
                verb: "ibv_reg_mr",
                reason: format!(
                    "{len} B, {}: {e} (pinned registration needs `ulimit -l` above the largest message)",
                    if self.odp { "on demand" } else { "pinned" }
                ),
            }
        })?;
        self.registrations += 1;
        if self.odp {
            if self.cache.len() >= CACHE {
                self.cache.remove(0);
            }
            self.cache.push((addr, len, mr.clone()));
        }
        Ok(Registered {
            lkey: mr.lkey(),
            _mr: mr,
        })
    }
}
