//! One shared-memory link: an outgoing ring (written through the shared [`crate::outbox`], so a
//! frame larger than the free space never makes `send` wait for the peer), an incoming ring read
//! in place by [`Link::recv_with`], and the pair's TCP socket as a side channel for heartbeats
//! and for learning at once that the peer process died (EOF).
//!
//! [`Link::reserve`] hands out room in the outgoing ring itself ([`RingRoom`]): the caller writes
//! the payload where the peer will read it, and [`Link::commit`] writes the header in front and
//! publishes both at once, so the peer never sees part of a frame. While a reservation is open
//! the ring has no other writer: an inline write by the outbox writes nothing (the frame is
//! queued) and the writer thread waits until the reservation is committed or dropped. A
//! reservation is taken only when nothing is queued (so frames stay in order) and the frame is
//! at most a quarter of the ring (so an algorithm with at most three frames in flight per link
//! cannot fill every ring of a cycle and deadlock); otherwise it is a pooled buffer.

use super::ring::Ring;
use crate::config::LinkConfig;
use crate::error::{ConfigError, Context, Error, Result};
use crate::frame::{Expect, FrameHeader, HEADER_LEN};
use crate::link::{
    admit_header, check_frame_len, check_payload_len, Frame, Link, Reservation, Room,
};
use crate::liveness::Liveness;
use crate::outbox::{io_error, Outbox, Sink};
use lockstep_tensor::{Buffer, BufferMut, BufferPool};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod establish;

const PARK_SLICE: Duration = Duration::from_millis(5);

/// A mapped ring and the mapping that keeps it valid.
struct Mapped {
    ring: Ring,
    _mem: BufferMut,
}

/// The outgoing ring and whether a [`RingRoom`] is open in it.
struct OutRing {
    mapped: Mapped,
    reserved: AtomicBool,
}

impl OutRing {
    fn ring(&self) -> &Ring {
        &self.mapped.ring
    }
}

/// Room reserved in an outgoing ring: `len` payload bytes after a header, from position `pos`.
/// While it lives nobody else writes the ring; dropping it uncommitted publishes nothing.
pub(crate) struct RingRoom {
    out: Arc<OutRing>,
    pos: u64,
    len: usize,
    /// The link's send count when reserved: a send in between cancels the reservation.
    sends: u64,
}

impl RingRoom {
    pub(crate) fn pieces(&mut self) -> (&mut [u8], &mut [u8]) {
        // SAFETY: `[pos, pos + HEADER_LEN + len)` was free when reserved and nothing has been
        // published since (only `commit` publishes, consuming `self`); the `reserved` flag keeps
        // every other writer off the ring while `self` lives, and the slices borrow `self`.
        unsafe { self.out.ring().reserved(self.pos, HEADER_LEN, self.len) }
    }
}

impl Drop for RingRoom {
    fn drop(&mut self) {
        self.out.reserved.store(false, Ordering::SeqCst);
    }
}

struct ShmSink {
    out: Arc<OutRing>,
    live: Arc<Liveness>,
    hb: TcpStream,
}

/// How long the writer thread sleeps between looks at an open reservation.
const RESERVED_POLL: Duration = Duration::from_micros(200);

impl Sink for ShmSink {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        if self.out.reserved.load(Ordering::SeqCst) {
            return Ok(0);
        }
        Ok(self.out.ring().write_some(parts, 0))
    }

    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            if self.out.reserved.load(Ordering::SeqCst) {
                // A frame queued while a reservation is open goes out after it.
                self.live.check()?;
                if stop.load(Ordering::SeqCst) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                std::thread::sleep(RESERVED_POLL);
                continue;
            }
            let n = self.out.ring().write_some(parts, done);
            done += n;
            if n > 0 {
                self.live.saw();
                continue;
            }
            if !self.out.ring().wait_space(PARK_SLICE) {
                if let Some(why) = self.out.ring().corruption() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()));
                }
                self.live.check()?;
                if stop.load(Ordering::SeqCst) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
        Ok(())
    }

    fn heartbeat(&mut self, _stop: &AtomicBool) -> io::Result<()> {
        self.hb.write_all(&FrameHeader::heartbeat().encode())
    }
}

/// A link over a pair of shared-memory rings.
pub struct ShmLink {
    me: String,
    peer: String,
    out: Arc<OutRing>,
    /// Frames handed to the outbox (a reservation remembers it to notice a send in between).
    sends: u64,
    inbound: Arc<Mapped>,
    live: Arc<Liveness>,
    outbox: Outbox<ShmSinkHandle>,
    pool: BufferPool,
    cfg: LinkConfig,
    poisoned: crate::poison::Poison,
}

/// Opaque wrapper so the sink type stays private.
pub(crate) struct ShmSinkHandle(ShmSink);

impl Sink for ShmSinkHandle {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        self.0.try_write(parts)
    }
    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        self.0.write_all(parts, stop)
    }
    fn heartbeat(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.0.heartbeat(stop)
    }
}

impl ShmLink {
    fn ctx(&self, expect: &Expect) -> Context {
        Context::expecting(&self.peer, expect)
    }

    fn fail(&mut self, e: Error) -> Error {
        let e = self.poisoned.set(&self.peer, e);
        let _ = self.live.stream.shutdown(Shutdown::Both);
        e
    }

    /// A ring whose shared header broke the protocol is the peer's fault: a protocol error.
    fn check_ring(&self, ring: &Ring, ctx: Context) -> Result<()> {
        match ring.corruption() {
            Some(why) => Err(Error::Protocol {
                ctx,
                reason: why.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Wait until `n` bytes are readable, checking the side channel while parked.
    fn wait_bytes(&self, n: usize, expect: &Expect) -> Result<()> {
        let ring = &self.inbound.ring;
        loop {
            if ring.wait_data(|r| r.available() >= n, PARK_SLICE) {
                self.live.saw();
                return Ok(());
            }
            self.check_ring(ring, Context::expecting(&self.peer, expect))?;
            if let Err(e) = self.live.check() {
                if ring.available() >= n {
                    return Ok(());
                }
                return Err(io_error(self.ctx(expect), &e, self.cfg.peer_timeout));
            }
        }
    }

    fn next_header(&mut self, expect: &Expect) -> Result<FrameHeader> {
        loop {
            self.wait_bytes(HEADER_LEN, expect)?;
            let mut hb = [0u8; HEADER_LEN];
            let mut got = 0;
            while got < HEADER_LEN {
                let piece = self.inbound.ring.readable(HEADER_LEN - got);
                hb[got..got + piece.len()].copy_from_slice(piece);
                got += piece.len();
                self.inbound.ring.consume(piece.len());
            }
            let ctx = || self.ctx(expect);
            let admitted = admit_header(
                &hb,
                self.cfg.max_frame_len,
                expect,
                ctx,
                (&self.me, &self.peer),
            );
            if let Some(h) = admitted? {
                return Ok(h);
            }
        }
    }

    /// Wait until `need` bytes of the outgoing ring are free, checking the side channel while
    /// parked (the deadline of a receive: the peer silent for the peer timeout, or gone).
    fn wait_room(&self, need: usize, header: &FrameHeader) -> Result<u64> {
        let ring = self.out.ring();
        loop {
            if let Some(pos) = ring.try_reserve(need) {
                return Ok(pos);
            }
            if ring.wait_space_for(need, PARK_SLICE) {
                self.live.saw();
                continue;
            }
            self.check_ring(
                ring,
                Context {
                    peer: self.peer.clone(),
                    round: Some(header.round),
                    op: Some(header.op),
                },
            )?;
            if let Err(e) = self.live.check() {
                if let Some(pos) = ring.try_reserve(need) {
                    return Ok(pos);
                }
                let ctx = Context {
                    peer: self.peer.clone(),
                    round: Some(header.round),
                    op: Some(header.op),
                };
                return Err(io_error(ctx, &e, self.cfg.peer_timeout));
            }
        }
    }

    fn reserve_inner(&mut self, header: FrameHeader) -> Result<Reservation> {
        let len = header.len as usize;
        check_frame_len(&self.peer, header.len, self.cfg.max_frame_len)?;
        let need = HEADER_LEN + len;
        let buffered = |link: &Self| Ok(Reservation::buffer(header, link.pool.take(len)));
        if need.saturating_mul(4) > self.out.ring().capacity() {
            return buffered(self);
        }
        if self.out.reserved.swap(true, Ordering::SeqCst) {
            return Err(ConfigError::ReservationOpen {
                peer: self.peer.clone(),
            }
            .into());
        }
        // The flag is up: from here a queued frame waits for it, so an idle outbox stays idle.
        let mut room = RingRoom {
            out: self.out.clone(),
            pos: 0,
            len,
            sends: self.sends,
        };
        if !self.outbox.idle()? {
            return buffered(self); // dropping `room` lowers the flag
        }
        room.pos = self.wait_room(need, &header)?;
        Ok(Reservation {
            header,
            room: Room::Ring(room),
        })
    }

    fn commit_inner(&mut self, header: FrameHeader, room: RingRoom) -> Result<()> {
        if !Arc::ptr_eq(&room.out, &self.out) {
            return Err(ConfigError::ReservationForeign {
                peer: self.peer.clone(),
            }
            .into());
        }
        if room.sends != self.sends {
            return Err(ConfigError::ReservationCancelled {
                peer: self.peer.clone(),
            }
            .into());
        }
        let ring = self.out.ring();
        let hb = header.encode();
        // SAFETY: the header bytes `[pos, pos + HEADER_LEN)` belong to `room`, which is open
        // (flag up, nothing published since) and whose payload slices are no longer borrowed.
        let (a, b) = unsafe { ring.reserved(room.pos, 0, HEADER_LEN) };
        a.copy_from_slice(&hb[..a.len()]);
        b.copy_from_slice(&hb[a.len()..]);
        ring.publish(room.pos + (HEADER_LEN + room.len) as u64);
        self.live.saw();
        Ok(())
    }

    fn recv_with_inner(
        &mut self,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<FrameHeader> {
        let h = self.next_header(expect)?;
        self.read_payload(h.len as usize, expect, consume)?;
        Ok(h)
    }

    fn read_payload(
        &self,
        len: usize,
        expect: &Expect,
        consume: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let mut off = 0;
        while off < len {
            self.wait_bytes(1, expect)?;
            let piece = self.inbound.ring.readable(len - off);
            consume(off, piece);
            off += piece.len();
            self.inbound.ring.consume(piece.len());
        }
        Ok(())
    }
}

impl Link for ShmLink {
    fn peer_name(&self) -> &str {
        &self.peer
    }

    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.sends += 1;
        self.outbox.send(&header, payload).map_err(|e| self.fail(e))
    }

    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.sends += 1;
        self.outbox
            .send_from(&header, payload, &self.pool)
            .map_err(|e| self.fail(e))
    }

    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        self.poisoned.check()?;
        match self.reserve_inner(header) {
            Err(e @ Error::Config(_)) => Err(e),
            Err(e) => Err(self.fail(e)),
            ok => ok,
        }
    }

    fn commit(&mut self, reservation: Reservation) -> Result<()> {
        let Reservation { header, room } = reservation;
        match room {
            Room::Buffer(b) => self.send(header, b.freeze()),
            Room::Ring(r) => {
                self.poisoned.check()?;
                self.commit_inner(header, r)
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.poisoned.check()?;
        self.outbox.flush().map_err(|e| self.fail(e))
    }

    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        self.poisoned.check()?;
        let r = self.next_header(expect).and_then(|h| {
            let mut buf = self.pool.take(h.len as usize);
            self.read_payload(h.len as usize, expect, &mut |off, piece| {
                lockstep_tensor::kernels::copy(&mut buf[off..off + piece.len()], piece)
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
        self.recv_with_inner(expect, consume)
            .map_err(|e| self.fail(e))
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        let _ = self.outbox.flush();
        let _ = self.live.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests;
