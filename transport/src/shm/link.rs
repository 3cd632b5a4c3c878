//! One shared-memory link: an outgoing ring (written through the shared [`crate::outbox`], so a
//! frame larger than the free space never makes `send` wait for the peer), an incoming ring read
//! in place by [`Link::recv_with`], and the pair's TCP socket as a side channel for heartbeats
//! and for learning at once that the peer process died (EOF).

use super::ring::{read_info, Ring, RING_HEADER};
use super::{remove_stale, segment_path};
use crate::config::LinkConfig;
use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, FrameKind, HEADER_LEN};
use crate::link::{Frame, Link};
use crate::liveness::Liveness;
use crate::outbox::{io_error, Outbox, Sink};
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

struct ShmSink {
    out: Arc<Mapped>,
    live: Arc<Liveness>,
    hb: TcpStream,
}

impl Sink for ShmSink {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        Ok(self.out.ring.write_some(parts, 0))
    }

    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            let n = self.out.ring.write_some(parts, done);
            done += n;
            if n > 0 {
                self.live.saw();
                continue;
            }
            if !self.out.ring.wait_space(PARK_SLICE) {
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
        mut stream: TcpStream,
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
        Self::assemble(
            stream,
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
        let sink = ShmSinkHandle(ShmSink {
            out: Arc::new(out),
            live: live.clone(),
            hb,
        });
        Ok(ShmLink {
            me: me.to_string(),
            peer: peer.to_string(),
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

    /// Wait until `n` bytes are readable, checking the side channel while parked.
    fn wait_bytes(&self, n: usize, expect: &Expect) -> Result<()> {
        let ring = &self.inbound.ring;
        loop {
            if ring.wait_data(|r| r.available() >= n, PARK_SLICE) {
                self.live.saw();
                return Ok(());
            }
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
        if header.len != payload.len() as u64 {
            return Err(Error::Config(format!(
                "send to {}: header.len {} != payload length {}",
                self.peer,
                header.len,
                payload.len()
            )));
        }
        self.outbox.send(&header, payload).map_err(|e| self.fail(e))
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
