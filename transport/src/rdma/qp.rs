//! Setting up one reliable-connected queue pair: protection domain, completion queue, the QP
//! walked through INIT -> RTR -> RTS, and the exchange of connection data (LID, QP number,
//! packet sequence number, GID, slot geometry) over the pair's authenticated TCP connection,
//! the same way the shared-memory backend exchanges its ring generations.

use super::RdmaDevice;
use crate::error::{Context, Error, Result};
use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::BasicCompletionQueue;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{BasicQueuePair, QueuePair, QueuePairAttribute, QueuePairState};
use sideway::ibverbs::AccessFlags;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::sync::Arc;

/// The HCA port every link uses.
pub const PORT: u8 = 1;
const MSG_LEN: usize = 40;

/// What each side tells the other to connect its QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Queue pair number.
    pub qpn: u32,
    /// Initial packet sequence number (24 bits).
    pub psn: u32,
    /// Global identifier (RoCE, or IB across subnets).
    pub gid: [u8; 16],
    /// Bytes per receive slot.
    pub slot: u32,
    /// Receive slots posted.
    pub slots: u32,
}

impl Endpoint {
    /// Fixed 40-byte wire form: `RDM1`, lid, qpn, psn, gid, slot, slots, padding.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut m = [0u8; MSG_LEN];
        m[..4].copy_from_slice(b"RDM1");
        m[4..6].copy_from_slice(&self.lid.to_le_bytes());
        m[6..10].copy_from_slice(&self.qpn.to_le_bytes());
        m[10..14].copy_from_slice(&self.psn.to_le_bytes());
        m[14..30].copy_from_slice(&self.gid);
        m[30..34].copy_from_slice(&self.slot.to_le_bytes());
        m[34..38].copy_from_slice(&self.slots.to_le_bytes());
        m
    }

    /// Parse the wire form; `None` when it is not one.
    pub fn decode(m: &[u8; MSG_LEN]) -> Option<Endpoint> {
        let u32_at = |o: usize| u32::from_le_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
        if &m[..4] != b"RDM1" {
            return None;
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&m[14..30]);
        Some(Endpoint {
            lid: u16::from_le_bytes([m[4], m[5]]),
            qpn: u32_at(6),
            psn: u32_at(10),
            gid,
            slot: u32_at(30),
            slots: u32_at(34),
        })
    }
}

/// The verbs objects of one link. Field order is drop order: QP, then CQ, then PD.
pub struct Verbs {
    /// The queue pair.
    pub qp: BasicQueuePair,
    /// One completion queue for sends and receives.
    pub cq: Arc<BasicCompletionQueue>,
    /// The protection domain the link's regions are registered with.
    pub pd: Arc<ProtectionDomain>,
}

fn verbs_err(dev: &str, verb: &'static str, e: impl std::fmt::Display) -> Error {
    Error::RdmaVerb {
        device: dev.to_string(),
        verb,
        reason: e.to_string(),
    }
}

/// Create PD, CQ and an RC QP in state INIT, sized for `slots` receives and `window` SENDs in
/// flight.
///
/// # Errors
/// [`Error::RdmaVerb`] naming the device and the verb that failed.
pub fn create(dev: &RdmaDevice, slots: u32, window: u32) -> Result<Verbs> {
    let d = dev.name.as_str();
    let pd = dev
        .ctx
        .alloc_pd()
        .map_err(|e| verbs_err(d, "ibv_alloc_pd", e))?;
    let cq = dev
        .ctx
        .create_cq_builder()
        .setup_cqe(slots + window + 4)
        .build()
        .map_err(|e| verbs_err(d, "ibv_create_cq", e))?;
    let mut qp = pd
        .create_qp_builder()
        .setup_send_cq(cq.clone())
        .setup_recv_cq(cq.clone())
        .setup_max_send_wr(window)
        .setup_max_recv_wr(slots)
        .build()
        .map_err(|e| verbs_err(d, "ibv_create_qp", e))?;
    let mut attr = QueuePairAttribute::new();
    attr.setup_state(QueuePairState::Init)
        .setup_pkey_index(0)
        .setup_port(PORT)
        .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteWrite);
    qp.modify(&attr)
        .map_err(|e| verbs_err(d, "ibv_modify_qp(INIT)", e))?;
    Ok(Verbs { qp, cq, pd })
}

/// This side's endpoint for `qp`.
///
/// # Errors
/// [`Error::RdmaVerb`] when the port or GID cannot be queried.
pub fn local_endpoint(
    dev: &RdmaDevice,
    qp: &BasicQueuePair,
    slot: u32,
    slots: u32,
) -> Result<Endpoint> {
    let d = dev.name.as_str();
    let port = dev
        .ctx
        .query_port(PORT)
        .map_err(|e| verbs_err(d, "ibv_query_port", e))?;
    let gid = dev
        .ctx
        .query_gid(PORT, dev.gid_index.into())
        .map_err(|e| verbs_err(d, "ibv_query_gid", e))?;
    Ok(Endpoint {
        lid: port.lid(),
        qpn: qp.qp_number(),
        psn: rand::random::<u32>() & 0x00ff_ffff,
        gid: Ipv6Addr::from(gid).octets(),
        slot,
        slots,
    })
}

/// Swap endpoints with the peer over the authenticated bootstrap stream.
///
/// # Errors
/// [`Error::Io`] for socket errors, [`Error::Protocol`] for a malformed reply.
pub fn exchange(stream: &mut TcpStream, mine: &Endpoint, peer: &str) -> Result<Endpoint> {
    let ctx = || Context {
        peer: peer.to_string(),
        round: None,
        op: None,
    };
    stream
        .write_all(&mine.encode())
        .map_err(|e| Error::io(ctx(), "write(rdma setup)", &e))?;
    let mut m = [0u8; MSG_LEN];
    stream
        .read_exact(&mut m)
        .map_err(|e| Error::io(ctx(), "read(rdma setup)", &e))?;
    Endpoint::decode(&m).ok_or_else(|| Error::Protocol {
        ctx: ctx(),
        reason: "malformed rdma setup message".into(),
    })
}

/// Move the QP to RTR then RTS towards `remote`.
///
/// # Errors
/// [`Error::RdmaVerb`] naming the transition that failed.
pub fn connect(dev: &RdmaDevice, v: &mut Verbs, mine: &Endpoint, remote: &Endpoint) -> Result<()> {
    let d = dev.name.as_str();
    let mtu = dev
        .ctx
        .query_port(PORT)
        .map_err(|e| verbs_err(d, "ibv_query_port", e))?
        .active_mtu();
    let mut ah = AddressHandleAttribute::new();
    ah.setup_dest_lid(remote.lid)
        .setup_port(PORT)
        .setup_service_level(0);
    if remote.gid != [0; 16] {
        ah.setup_grh_src_gid_index(dev.gid_index)
            .setup_grh_dest_gid(&Gid::from(Ipv6Addr::from(remote.gid)))
            .setup_grh_hop_limit(1);
    }
    let mut rtr = QueuePairAttribute::new();
    rtr.setup_state(QueuePairState::ReadyToReceive)
        .setup_path_mtu(mtu)
        .setup_dest_qp_num(remote.qpn)
        .setup_rq_psn(mine.psn)
        .setup_max_dest_read_atomic(0)
        .setup_min_rnr_timer(1)
        .setup_address_vector(&ah);
    v.qp.modify(&rtr)
        .map_err(|e| verbs_err(d, "ibv_modify_qp(RTR)", e))?;
    let mut rts = QueuePairAttribute::new();
    // rnr_retry 7 = retry forever while the peer has no receive posted: flow control is the
    // receiver reposting slots; liveness is the TCP side channel, not the NIC's retry count.
    rts.setup_state(QueuePairState::ReadyToSend)
        .setup_sq_psn(remote.psn)
        .setup_timeout(14)
        .setup_retry_cnt(7)
        .setup_rnr_retry(7)
        .setup_max_read_atomic(0);
    v.qp.modify(&rts)
        .map_err(|e| verbs_err(d, "ibv_modify_qp(RTS)", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trips_and_rejects_garbage() {
        let e = Endpoint {
            lid: 7,
            qpn: 0x12345,
            psn: 0xabcdef,
            gid: [9; 16],
            slot: 65536,
            slots: 32,
        };
        assert_eq!(Endpoint::decode(&e.encode()), Some(e));
        let mut bad = e.encode();
        bad[0] = b'X';
        assert_eq!(Endpoint::decode(&bad), None);
    }
}
