//! One RDMA link (feature `rdma`): a reliable-connected queue pair with a registered header and
//! eager slot, a ring of registered receive slots, and the pair's TCP socket as the side channel
//! for heartbeats and for learning at once that the peer process died (as in [`crate::shm`]).
//!
//! Wire: a frame (64-byte header, then the payload) is a byte stream cut into two-sided SENDs
//! of at most `SLOT` bytes; the receiver reads the stream back across its receive slots, so the
//! header is validated (checksum, bounded length, [`Expect`]) before one payload byte is
//! consumed, and [`Link::recv_with`] hands the payload out straight from the registered slots.
//!
//! Send path: a payload of at most [`EAGER`] bytes is copied with its header into the eager slot
//! and goes as one SEND. A larger one is **not copied**: the header goes from the header slot,
//! then the payload's own memory, registered through [`Registrar`] (once per buffer with
//! on-demand paging, once per message otherwise), is posted in `SLOT`-byte SENDs with up to
//! [`WINDOW`] work requests in flight ([`SendWindow`]); completions are polled in batches and
//! each one lets the next piece go. `send` returns when every SEND of the frame has completed,
//! so the caller's memory is free again.
//!
//! Flow control: the receiver reposts a slot once it is consumed; the sender's NIC retries
//! (RNR) until one is posted. While a side is sending it keeps at least [`LOW_WATER`] slots
//! posted, copying the oldest waiting slots out (into pooled memory) only when fewer are
//! ([`RecvQueue::spill`]), so two sides that send to each other before receiving cannot
//! deadlock, and a message that fits the other slots is read straight from where it landed.
//!
//! Waiting spins, then yields, and checks the side channel every few hundred polls, so a dead
//! or silent peer becomes [`Error::PeerClosed`] / [`Error::PeerTimeout`] within the peer timeout.
//!
//! # Status
//! Compiled and linted in CI, **never run on RDMA hardware**: treat it as a starting point that
//! needs a bring-up on a real HCA (port 1 is fixed; the device and GID index come from
//! `LOCKSTEP_RDMA_DEVICE` / `LOCKSTEP_RDMA_GID_INDEX`, see [`super::choose`]).

use super::qp::{self, Verbs};
use super::recv_queue::{Front, RecvQueue};
use super::region::Region;
use super::register::{odp_for_rc_send, Registrar};
use super::RdmaDevice;
use crate::config::LinkConfig;
use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, FrameKind, HEADER_LEN};
use crate::link::{buffer_reservation, check_payload_len, Frame, Link, Reservation};
use crate::liveness::Liveness;
use crate::outbox::io_error;
use lockstep_tensor::{Buffer, BufferMut, BufferPool};
use sideway::ibverbs::completion::WorkCompletionStatus;
use sideway::ibverbs::queue_pair::{QueuePair, SetScatterGatherEntry};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

mod send;

/// Bytes per SEND (and per receive slot).
pub const SLOT: usize = 64 << 10;
/// Receive slots (4 MiB of registered memory per link).
pub const SLOTS: usize = 64;
/// Receive slots kept posted while this side sends ([`RecvQueue::spill`]): the peer's whole
/// window, so a peer sending at the same time never waits for a slot.
pub const LOW_WATER: usize = WINDOW;
/// SENDs in flight at most on one link.
pub const WINDOW: usize = 16;
/// Payloads up to this size are copied with their header into the eager slot (one SEND);
/// larger ones are sent from their own memory.
pub const EAGER: usize = 16 << 10;
const SEND_WR: u64 = u64::MAX;
/// Completion queue entries: every posted receive and every SEND in flight, plus slack.
const CQE: usize = SLOTS + WINDOW + 4;
const SPINS: u32 = 256;

/// A link over one RC queue pair. Field order is drop order: verbs before their memory.
pub struct RdmaLink {
    registrar: Registrar,
    verbs: Verbs,
    send: Region,
    recv: Region,
    sends_done: usize,
    me: String,
    peer: String,
    dev: String,
    queue: RecvQueue<BufferMut>,
    live: Liveness,
    hb_stop: Arc<AtomicBool>,
    hb: Option<JoinHandle<()>>,
    pool: BufferPool,
    cfg: LinkConfig,
    poisoned: crate::poison::Poison,
}

impl RdmaLink {
    /// Build the link to `peer` on `device` over `stream`, which has passed the handshake.
    ///
    /// # Errors
    /// [`Error::RdmaVerb`] when a verb fails (naming it and the device), [`Error::Io`] /
    /// [`Error::Protocol`] when the connection data cannot be exchanged.
    pub fn establish(
        mut stream: TcpStream,
        device: &RdmaDevice,
        me: &str,
        peer: &str,
        cfg: LinkConfig,
    ) -> Result<RdmaLink> {
        let mut verbs = qp::create(device, SLOTS as u32, WINDOW as u32)?;
        let send = Region::new(&verbs.pd, SLOT, &device.name)?;
        let registrar =
            Registrar::new(verbs.pd.clone(), odp_for_rc_send(&device.ctx), &device.name);
        let recv = Region::new(&verbs.pd, SLOT * SLOTS, &device.name)?;
        for idx in 0..SLOTS {
            post_recv(&mut verbs, &recv, idx, peer)?;
        }
        let mine = qp::local_endpoint(device, &verbs.qp, SLOT as u32, SLOTS as u32)?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let theirs = qp::exchange(&mut stream, &mine, peer)?;
        if theirs.slot as usize != SLOT {
            return Err(Error::Protocol {
                ctx: Context::expecting(peer, &Expect::default()),
                reason: format!("rdma slot size {} != {SLOT}", theirs.slot),
            });
        }
        qp::connect(device, &mut verbs, &mine, &theirs)?;
        let hb_stop = Arc::new(AtomicBool::new(false));
        let hb = spawn_heartbeats(&stream, cfg.heartbeat, hb_stop.clone(), peer)?;
        tracing::debug!(peer, device = %device.name, odp = registrar.caches(), "rdma link up");
        Ok(RdmaLink {
            registrar,
            verbs,
            send,
            recv,
            sends_done: 0,
            me: me.to_string(),
            peer: peer.to_string(),
            dev: device.name.clone(),
            queue: RecvQueue::new(SLOTS, LOW_WATER),
            live: Liveness::new(stream, cfg.peer_timeout),
            hb_stop,
            hb: Some(hb),
            pool: BufferPool::new(256 << 20),
            cfg,
            poisoned: crate::poison::Poison::default(),
        })
    }

    fn fail(&mut self, e: Error) -> Error {
        let e = self.poisoned.set(&self.peer, e);
        let _ = self.live.stream.shutdown(Shutdown::Both);
        e
    }

    /// Drain the completion queue: completed receives join the queue (and while `sending`,
    /// the oldest waiting slots are copied out if fewer than [`LOW_WATER`] are posted);
    /// completed SENDs are added to `sends_done`.
    fn poll(&mut self, sending: bool, expect: &Expect) -> Result<()> {
        // The CQ holds at most CQE entries (its size in `qp::create`), so one poll can never
        // return more: every completion polled is kept.
        let mut done = [(0u64, 0u32, 0u32); CQE];
        let mut n = 0;
        if let Ok(poller) = self.verbs.cq.start_poll() {
            for wc in poller {
                if n < done.len() {
                    done[n] = (wc.wr_id(), wc.status(), wc.byte_len());
                }
                n += 1;
            }
        }
        if n > done.len() {
            return Err(Error::Protocol {
                ctx: Context::expecting(&self.peer, expect),
                reason: format!("rdma {}: {n} completions overflow the CQ", self.dev),
            });
        }
        for &(wr, status, len) in &done[..n] {
            if status != WorkCompletionStatus::Success as u32 {
                return Err(Error::Protocol {
                    ctx: Context::expecting(&self.peer, expect),
                    reason: format!(
                        "rdma {}: work completion {wr} failed with status {status}",
                        self.dev
                    ),
                });
            }
            if wr == SEND_WR {
                self.sends_done += 1;
            } else {
                self.queue.arrived(wr as usize, len as usize);
            }
        }
        if n > 0 {
            self.live.saw();
        }
        if sending {
            let (recv, pool, verbs, peer) = (&self.recv, &self.pool, &mut self.verbs, &self.peer);
            self.queue.spill(
                |idx, len| {
                    let mut b = pool.take(len);
                    b.copy_from_slice(&recv.buf[idx * SLOT..idx * SLOT + len]);
                    b
                },
                |idx| post_recv(verbs, recv, idx, peer),
            )?;
        }
        Ok(())
    }

    /// Spin, then yield, until `ready`; check the side channel every `SPINS` polls.
    fn wait(&mut self, expect: &Expect, sending: bool, ready: fn(&RdmaLink) -> bool) -> Result<()> {
        let mut i = 0u32;
        loop {
            self.poll(sending, expect)?;
            if ready(self) {
                return Ok(());
            }
            i += 1;
            if i.is_multiple_of(SPINS) {
                if let Err(e) = self.live.check() {
                    return Err(io_error(
                        Context::expecting(&self.peer, expect),
                        &e,
                        self.cfg.peer_timeout,
                    ));
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Hand the next at most `max` received bytes to `f` (straight out of the registered
    /// slot, unless it was spilled); bytes handed.
    fn next_piece(
        &mut self,
        max: usize,
        expect: &Expect,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        if self.queue.is_empty() {
            self.wait(expect, false, |l| !l.queue.is_empty())?;
        }
        let n = match self.queue.front(max) {
            Some(Front::Slot { idx, range }) => {
                let at = idx * SLOT;
                f(&self.recv.buf[at + range.start..at + range.end]);
                range.len()
            }
            Some(Front::Owned(b)) => {
                f(b);
                b.len()
            }
            None => 0,
        };
        if let Some(idx) = self.queue.consume(n) {
            post_recv(&mut self.verbs, &self.recv, idx, &self.peer)?;
        }
        Ok(n)
    }

    fn next_header(&mut self, expect: &Expect) -> Result<FrameHeader> {
        let mut hb = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            got += self.next_piece(HEADER_LEN - got, expect, &mut |p| {
                hb[got..got + p.len()].copy_from_slice(p)
            })?;
        }
        let h =
            FrameHeader::try_read(&hb, self.cfg.max_frame_len).map_err(|e| Error::Protocol {
                ctx: Context::expecting(&self.peer, expect),
                reason: e.to_string(),
            })?;
        if h.kind == FrameKind::Close {
            return Err(Error::PeerClosed {
                ctx: Context::expecting(&self.peer, expect),
            });
        }
        if let Some((field, expected, actual)) = expect.check(&h) {
            return Err(Error::Mismatch {
                ctx: Context::expecting(&self.peer, expect),
                field,
                local_node: self.me.clone(),
                remote_node: self.peer.clone(),
                expected,
                actual,
            });
        }
        Ok(h)
    }

    fn read_payload(
        &mut self,
        len: usize,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let mut off = 0;
        while off < len {
            off += self.next_piece(len - off, expect, &mut |p| consume(off, p))?;
        }
        Ok(())
    }
}

fn post_recv(v: &mut Verbs, recv: &Region, idx: usize, peer: &str) -> Result<()> {
    let mut guard = v.qp.start_post_recv();
    let wr = guard.construct_wr(idx as u64);
    // SAFETY: slot `idx` lies inside the registered receive region, which outlives the QP
    // (field order of `RdmaLink`); it is not read until its completion is polled.
    unsafe { wr.setup_sge(recv.lkey, recv.addr(idx * SLOT), SLOT as u32) };
    guard.post().map_err(|e| Error::Protocol {
        ctx: Context::expecting(peer, &Expect::default()),
        reason: format!("rdma: ibv_post_recv: {e}"),
    })
}

/// Write a heartbeat on the side channel every `every` until `stop`.
fn spawn_heartbeats(
    stream: &TcpStream,
    every: Duration,
    stop: Arc<AtomicBool>,
    peer: &str,
) -> Result<JoinHandle<()>> {
    let io =
        |e: std::io::Error, what| Error::io(Context::expecting(peer, &Expect::default()), what, &e);
    let mut s = stream.try_clone().map_err(|e| io(e, "dup(socket)"))?;
    let _ = s.set_write_timeout(Some(every.max(Duration::from_millis(10))));
    std::thread::Builder::new()
        .name("lockstep-rdma-hb".into())
        .spawn(move || {
            let slice = every
                .min(Duration::from_millis(50))
                .max(Duration::from_millis(1));
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(slice);
                waited += slice;
                if waited >= every {
                    waited = Duration::ZERO;
                    if s.write_all(&FrameHeader::heartbeat().encode()).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| io(e, "spawn(heartbeat)"))
}

impl Link for RdmaLink {
    fn peer_name(&self) -> &str {
        &self.peer
    }

    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.send_inner(&header, &payload).map_err(|e| self.fail(e))
    }

    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.send_inner(&header, payload).map_err(|e| self.fail(e))
    }

    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        self.poisoned.check()?;
        buffer_reservation(&self.peer, header, self.cfg.max_frame_len, &self.pool)
    }

    fn flush(&mut self) -> Result<()> {
        // `send` returns only once every SEND has completed.
        self.poisoned.check()
    }

    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        self.poisoned.check()?;
        let r = self.next_header(expect).and_then(|h| {
            let mut buf = self.pool.take(h.len as usize);
            self.read_payload(h.len as usize, expect, &mut |off, p| {
                buf[off..off + p.len()].copy_from_slice(p)
            })?;
            Ok(Frame {
                header: h,
                payload: buf.freeze(),
            })
        });
        r.map_err(|e| self.fail(e))
    }

    fn recv_with(
        &mut self,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<FrameHeader> {
        self.poisoned.check()?;
        let r = self.next_header(expect).and_then(|h| {
            self.read_payload(h.len as usize, expect, consume)?;
            Ok(h)
        });
        r.map_err(|e| self.fail(e))
    }
}

impl Drop for RdmaLink {
    fn drop(&mut self) {
        self.hb_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.hb.take() {
            let _ = t.join();
        }
        let _ = self.live.stream.shutdown(Shutdown::Both);
    }
}
