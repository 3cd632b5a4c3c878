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

use super::ring::{read_info, Ring, RING_HEADER};
use super::{remove_stale, segment_path};
use crate::config::LinkConfig;
use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, FrameKind, HEADER_LEN};
use crate::link::{check_frame_len, check_payload_len, Frame, Link, Reservation, Room};
use crate::liveness::Liveness;
use crate::outbox::{io_error, Outbox, Sink};
use crate::tcp::Conn;
use lockstep_tensor::{Buffer, BufferMut, BufferPool};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    poisoned: Option<Error>,
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

fn hs_io<'a>(peer: &'a str, what: &'static str) -> impl Fn(io::Error) -> Error + 'a {
    move |e| {
        Error::io(
            Context {
                peer: peer.to_string(),
                round: None,
                op: None,
            },
            what,
            &e,
        )
    }
}

impl ShmLink {
    /// Set up both rings of the pair over `stream` (already authenticated), see the module docs
    /// of [`crate::shm`]. `_lower` is whether this side has the lower rank (unused: the exchange
    /// is symmetric).
    ///
    /// # Errors
    /// [`Error::Config`] for a live foreign segment, [`Error::Protocol`] when the peer's segment
    /// does not match what it announced, [`Error::Io`] for file or socket errors.
    pub fn establish(
        mut stream: Conn,
        cluster: &str,
        me: &str,
        peer: &str,
        _lower: bool,
        cfg: LinkConfig,
    ) -> Result<ShmLink> {
        let cap = cfg.shm_ring_bytes.max(4096).next_power_of_two();
        let out_path = segment_path(cluster, me, peer);
        remove_stale(&out_path)?;
        let mut out_mem = lockstep_tensor::shm::create_shared(&out_path, RING_HEADER + cap)
            .map_err(|e| Error::Config(format!("shm ring {}: {e}", out_path.display())))?;
        let generation: u64 = rand::random();
        // SAFETY: `out_mem` is kept next to the ring in `Mapped` for the ring's whole life.
        let out_ring = unsafe { Ring::init(&mut out_mem, generation, cap) };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(hs_io(peer, "setsockopt"))?;
        let mut msg = *b"SHM1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        msg[4..12].copy_from_slice(&generation.to_le_bytes());
        msg[12..20].copy_from_slice(&(cap as u64).to_le_bytes());
        stream
            .write_all(&msg)
            .map_err(hs_io(peer, "write(shm setup)"))?;
        let mut theirs = [0u8; 20];
        stream
            .read_exact(&mut theirs)
            .map_err(hs_io(peer, "read(shm setup)"))?;
        let bad = |reason: String| Error::Protocol {
            ctx: Context {
                peer: peer.to_string(),
                round: None,
                op: None,
            },
            reason,
        };
        if &theirs[..4] != b"SHM1" {
            return Err(bad("bad shm setup message".into()));
        }
        let their_gen = u64::from_le_bytes(theirs[4..12].try_into().unwrap_or([0; 8]));
        let their_cap = u64::from_le_bytes(theirs[12..20].try_into().unwrap_or([0; 8])) as usize;
        let in_path = segment_path(cluster, peer, me);
        let mut in_mem = lockstep_tensor::shm::open_shared_mut(&in_path)
            .map_err(|e| bad(format!("cannot map {}: {e}", in_path.display())))?;
        match read_info(&in_mem) {
            Some(i)
                if i.generation == their_gen
                    && i.capacity as usize == their_cap
                    && their_cap.is_power_of_two()
                    && in_mem.len() == RING_HEADER + their_cap => {}
            _ => {
                return Err(bad(format!(
                    "segment {} is not the ring {peer} announced",
                    in_path.display()
                )))
            }
        }
        // SAFETY: checked above that the mapping holds a ring of `their_cap` bytes; kept in `Mapped`.
        let in_ring = unsafe { Ring::attach(&mut in_mem, their_cap) };
        stream
            .write_all(b"OPEN")
            .map_err(hs_io(peer, "write(shm setup)"))?;
        let mut ack = [0u8; 4];
        stream
            .read_exact(&mut ack)
            .map_err(hs_io(peer, "read(shm setup)"))?;
        if &ack != b"OPEN" {
            return Err(bad("bad shm setup acknowledgement".into()));
        }
        // Both sides have mapped: the name is no longer needed; nothing is left behind.
        let _ = std::fs::remove_file(&out_path);
        // Over TLS the setup above ran encrypted; the socket then carries only heartbeats and EOF
        // (no data), on this host.
        Self::assemble(
            stream.into_socket(),
            me,
            peer,
            cfg,
            Mapped {
                ring: out_ring,
                _mem: out_mem,
            },
            Mapped {
                ring: in_ring,
                _mem: in_mem,
            },
        )
    }

    fn assemble(
        stream: TcpStream,
        me: &str,
        peer: &str,
        cfg: LinkConfig,
        out: Mapped,
        inbound: Mapped,
    ) -> Result<ShmLink> {
        let hb = stream.try_clone().map_err(hs_io(peer, "dup(socket)"))?;
        let _ = hb.set_write_timeout(Some(cfg.peer_timeout));
        let live = Arc::new(Liveness::new(stream, cfg.peer_timeout));
        let out = Arc::new(OutRing {
            mapped: out,
            reserved: AtomicBool::new(false),
        });
        let sink = ShmSinkHandle(ShmSink {
            out: out.clone(),
            live: live.clone(),
            hb,
        });
        Ok(ShmLink {
            me: me.to_string(),
            peer: peer.to_string(),
            out,
            sends: 0,
            inbound: Arc::new(inbound),
            live,
            outbox: Outbox::new(sink, peer, cfg.heartbeat, cfg.peer_timeout, cfg.max_queued),
            pool: BufferPool::new(256 << 20),
            cfg,
            poisoned: None,
        })
    }

    fn ctx(&self, expect: &Expect) -> Context {
        Context {
            peer: self.peer.clone(),
            round: expect.round,
            op: expect.op,
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        if self.poisoned.is_none() {
            tracing::warn!(peer = %self.peer, error = %e, "closing link");
        }
        let _ = self.live.stream.shutdown(Shutdown::Both);
        self.poisoned.get_or_insert(e).clone()
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
            self.check_ring(
                ring,
                Context {
                    round: expect.round,
                    op: expect.op,
                    peer: self.peer.clone(),
                },
            )?;
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
            let h = FrameHeader::try_read(&hb, self.cfg.max_frame_len).map_err(|e| {
                Error::Protocol {
                    ctx: self.ctx(expect),
                    reason: e.to_string(),
                }
            })?;
            match h.kind {
                FrameKind::Heartbeat => continue,
                FrameKind::Close => {
                    return Err(Error::PeerClosed {
                        ctx: self.ctx(expect),
                    })
                }
                FrameKind::Data | FrameKind::Control => {}
            }
            if let Some((field, expected, actual)) = expect.check(&h) {
                return Err(Error::Mismatch {
                    ctx: self.ctx(expect),
                    field,
                    local_node: self.me.clone(),
                    remote_node: self.peer.clone(),
                    expected,
                    actual,
                });
            }
            return Ok(h);
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
            return Err(Error::Config(format!(
                "a reservation on the link to {} is still open",
                self.peer
            )));
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
            return Err(Error::Config(format!(
                "reservation committed on the link to {}, which did not make it",
                self.peer
            )));
        }
        if room.sends != self.sends {
            return Err(Error::Config(format!(
                "reservation on the link to {} was cancelled by a send",
                self.peer
            )));
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
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        check_payload_len(&self.peer, &header, payload.len())?;
        self.sends += 1;
        self.outbox.send(&header, payload).map_err(|e| self.fail(e))
    }

    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        check_payload_len(&self.peer, &header, payload.len())?;
        self.sends += 1;
        self.outbox
            .send_from(&header, payload, &self.pool)
            .map_err(|e| self.fail(e))
    }

    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
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
                if let Some(e) = &self.poisoned {
                    return Err(e.clone());
                }
                self.commit_inner(header, r)
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        self.outbox.flush().map_err(|e| self.fail(e))
    }

    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
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
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
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
mod tests {
    use super::*;
    use crate::frame::Op;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A linked pair `a` <-> `b` over real segments (removed once both sides have mapped).
    fn pair(a_cfg: LinkConfig, b_cfg: LinkConfig) -> (ShmLink, ShmLink) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let cluster = format!(
            "unit{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = cluster.clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            ShmLink::establish(s.into(), &c, "b", "a", false, b_cfg).unwrap()
        });
        let s = TcpStream::connect(addr).unwrap();
        let a = ShmLink::establish(s.into(), &cluster, "a", "b", true, a_cfg).unwrap();
        (a, t.join().unwrap())
    }

    fn small() -> LinkConfig {
        LinkConfig {
            shm_ring_bytes: 4096,
            ..LinkConfig::default()
        }
    }

    fn header(seq: u64, len: usize) -> FrameHeader {
        FrameHeader::data(Op::P2p, 1, seq, 0, 0, len as u64)
    }

    fn pattern(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u64 * 7 + seq * 31) as u8).collect()
    }

    #[test]
    fn reserved_frames_wrap_around_the_ring_and_arrive_whole() {
        let (mut a, mut b) = pair(small(), small());
        let cap = a.out.ring().capacity();
        let (mut payload_split, mut header_split) = (0, 0);
        for seq in 0..60u64 {
            // Odd lengths too, so frames start at every alignment.
            let len = (seq as usize * 149) % (cap / 4 - HEADER_LEN + 1);
            let mut r = a.reserve(header(seq, len)).unwrap();
            assert!(
                r.in_place(),
                "a frame of {len} bytes fits a quarter of the ring"
            );
            let Room::Ring(room) = &r.room else {
                unreachable!()
            };
            let at = room.pos as usize % cap;
            header_split += usize::from(at + HEADER_LEN > cap);
            let want = pattern(seq, len);
            let (p, q) = r.pieces();
            assert_eq!(p.len() + q.len(), len);
            payload_split += usize::from(!q.is_empty());
            p.copy_from_slice(&want[..p.len()]);
            q.copy_from_slice(&want[p.len()..]);
            assert_eq!(b.inbound.ring.available(), 0, "visible before commit");
            a.commit(r).unwrap();
            let f = b.recv(&Expect::op(Op::P2p, 1, seq)).unwrap();
            assert_eq!(&f.payload[..], &want[..], "frame {seq}");
        }
        assert!(
            payload_split > 0 && header_split > 0,
            "{payload_split} {header_split}"
        );
    }

    #[test]
    fn reservation_waits_for_room_until_the_peer_reads() {
        let (mut a, mut b) = pair(small(), small());
        let len = 1024 - HEADER_LEN; // four fill the ring
        for seq in 0..4 {
            let r = a.reserve(header(seq, len)).unwrap();
            a.commit(r).unwrap();
        }
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            b.recv(&Expect::op(Op::P2p, 1, 0)).unwrap();
            b
        });
        let t = Instant::now();
        let r = a.reserve(header(4, len)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        assert!(r.in_place());
        a.commit(r).unwrap();
        let mut b = reader.join().unwrap();
        for seq in 1..5 {
            assert_eq!(
                b.recv(&Expect::op(Op::P2p, 1, seq)).unwrap().payload.len(),
                len
            );
        }
    }

    #[test]
    fn reservation_larger_than_the_free_space_times_out_naming_the_peer() {
        let a_cfg = LinkConfig {
            peer_timeout: Duration::from_millis(300),
            ..small()
        };
        // `b` sends no heartbeat in time and reads nothing: silent.
        let b_cfg = LinkConfig {
            heartbeat: Duration::from_secs(60),
            ..small()
        };
        let (mut a, _b) = pair(a_cfg, b_cfg);
        // Beyond a quarter of the ring: a pooled buffer, which never waits.
        let r = a.reserve(header(0, 1025 - HEADER_LEN)).unwrap();
        assert!(!r.in_place());
        drop(r);
        for seq in 0..4 {
            let r = a.reserve(header(seq, 900)).unwrap();
            assert!(r.in_place());
            a.commit(r).unwrap();
        }
        let t = Instant::now();
        let e = a.reserve(header(2, 900)).unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        match &e {
            Error::PeerTimeout { ctx, .. } => {
                assert_eq!(
                    (ctx.peer.as_str(), ctx.round, ctx.op),
                    ("b", Some(1), Some(Op::P2p))
                )
            }
            other => panic!("expected a peer timeout, got {other}"),
        }
        assert!(e.to_string().contains("peer b"), "{e}");
        // The link is poisoned with that error.
        assert_eq!(
            a.send_from(header(3, 4), &[0; 4]).unwrap_err().to_string(),
            e.to_string()
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_the_payload_is_touched() {
        let cfg = LinkConfig {
            max_frame_len: 1000,
            ..small()
        };
        let (mut a, mut b) = pair(cfg, cfg);
        // The sender refuses to reserve one, without poisoning the link.
        assert!(matches!(a.reserve(header(0, 1001)), Err(Error::Config(_))));
        // A forged one in the ring is refused by the receiver from its header alone.
        let forged = header(0, 1001).encode();
        assert_eq!(a.out.ring().write_some(&[&forged, &[9u8; 100]], 0), 164);
        let mut touched = false;
        let e = b
            .recv_with(&Expect::default(), &mut |_, _| touched = true)
            .unwrap_err();
        assert!(
            !touched,
            "a reduction kernel saw payload of a refused frame"
        );
        assert!(
            matches!(&e, Error::Protocol { ctx, reason } if ctx.peer == "a" && reason.contains("exceeds")),
            "{e}"
        );
    }

    #[test]
    fn a_send_while_reserved_cancels_the_reservation_and_goes_out_after_it() {
        let (mut a, mut b) = pair(small(), small());
        let mut r = a.reserve(header(0, 100)).unwrap();
        r.pieces().0.fill(1);
        a.send_from(header(1, 3), &[1, 2, 3]).unwrap();
        assert!(matches!(a.commit(r), Err(Error::Config(_))));
        let f = b.recv(&Expect::default()).unwrap();
        assert_eq!((f.header.seq, &f.payload[..]), (1, &[1u8, 2, 3][..]));
        a.flush().unwrap();
        assert_eq!(
            b.inbound.ring.available(),
            0,
            "the cancelled frame never went out"
        );
        // A second reservation while one is open is refused.
        let r = a.reserve(header(2, 8)).unwrap();
        assert!(matches!(a.reserve(header(3, 8)), Err(Error::Config(_))));
        a.commit(r).unwrap();
        assert_eq!(b.recv(&Expect::default()).unwrap().header.seq, 2);
    }
}
