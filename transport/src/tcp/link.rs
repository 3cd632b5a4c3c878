//! One TCP connection to one peer, after the handshake.
//!
//! Send: header + payload in one vectored `sendmsg`, inline and non-blocking when the socket has
//! room, otherwise the rest goes to the writer thread ([`crate::outbox`]); the payload `Buffer` is
//! never copied, and a borrowed payload (`send_from`) only for the part the socket did not take. Receive: a 64-byte header read with the peer-timeout deadline, validated (magic,
//! checksum, version, `len <= max_frame_len`) and checked against the caller's [`Expect`] before
//! a single payload byte is read; then the payload lands in a pooled buffer that becomes the
//! frame, or straight in the caller's slice (`recv_into`). Heartbeats are consumed silently. A
//! violation, EOF or silence poisons the link and shuts the socket down.
//!
//! Over TLS ([`crate::tls`]) only the two ends change: the reader decrypts what it reads and the
//! sink encrypts what it sends ([`crate::tls::io`]); everything above is this same code.

use crate::config::LinkConfig;
use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, FrameKind, Op, HEADER_LEN};
use crate::link::{admit_header, buffer_reservation, check_payload_len, Frame, Link, Reservation};
use crate::outbox::{Outbox, Sink};
use crate::tcp::Conn;
use crate::tls::io::{TlsReader, TlsSink};
use lockstep_tensor::{Buffer, BufferPool};
use socket2::Socket;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of idle receive buffers a link keeps for reuse.
const POOL_RETAINED: usize = 256 << 20;

use super::send::{send_all, send_now};

pub(crate) struct TcpSink {
    sock: Socket,
}

impl Sink for TcpSink {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        send_now(&self.sock, parts)
    }

    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        send_all(&self.sock, parts, stop)
    }

    fn heartbeat(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.write_all(&[&FrameHeader::heartbeat().encode()], stop)
    }
}

/// The receiving side: the socket itself, or a TLS session's reading half.
enum Reader {
    Plain(TcpStream),
    Tls(TlsReader),
}

impl Reader {
    fn socket(&self) -> &TcpStream {
        match self {
            Reader::Plain(s) => s,
            Reader::Tls(t) => &t.sock,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Reader::Plain(s) => s.read_exact(buf),
            Reader::Tls(t) => t.read_exact(buf),
        }
    }

    /// Whether bytes can be read within `wait`: already decrypted or held (TLS), or on the socket.
    fn ready(&self, wait: Duration) -> io::Result<bool> {
        match self {
            Reader::Tls(t) if t.buffered() => Ok(true),
            _ => readable(self.socket(), wait),
        }
    }
}

/// A link over one authenticated TCP connection.
pub struct TcpLink {
    me: String,
    peer: String,
    reader: Reader,
    outbox: Arc<Outbox<TcpSinkHandle>>,
    pool: BufferPool,
    cfg: LinkConfig,
    poisoned: crate::poison::Poison,
}

/// Opaque wrapper so the sink types stay private: the socket, or a TLS session's sending half.
pub(crate) enum TcpSinkHandle {
    Plain(TcpSink),
    Tls(TlsSink),
}

impl Sink for TcpSinkHandle {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        match self {
            TcpSinkHandle::Plain(s) => s.try_write(parts),
            TcpSinkHandle::Tls(s) => s.try_write(parts),
        }
    }
    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        match self {
            TcpSinkHandle::Plain(s) => s.write_all(parts, stop),
            TcpSinkHandle::Tls(s) => s.write_all(parts, stop),
        }
    }
    fn heartbeat(&mut self, stop: &AtomicBool) -> io::Result<()> {
        match self {
            TcpSinkHandle::Plain(s) => s.heartbeat(stop),
            TcpSinkHandle::Tls(s) => s.heartbeat(stop),
        }
    }
    fn backlog(&self) -> bool {
        match self {
            TcpSinkHandle::Plain(_) => false,
            TcpSinkHandle::Tls(s) => s.backlog(),
        }
    }
    fn close(&mut self) -> io::Result<()> {
        match self {
            TcpSinkHandle::Plain(s) => s.close(),
            TcpSinkHandle::Tls(s) => s.close(),
        }
    }
}

impl TcpLink {
    /// Build a link on a connection (plain or TLS) that has passed the handshake with `peer`.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be cloned or its timeouts set.
    pub fn new(conn: Conn, me: &str, peer: &str, cfg: LinkConfig) -> Result<TcpLink> {
        let ctx = || Context {
            peer: peer.to_string(),
            round: None,
            op: None,
        };
        let (stream, session) = match conn {
            Conn::Plain(s) => (s, None),
            Conn::Tls(t) => {
                let t = *t;
                (t.sock, Some(t.conn))
            }
        };
        let w = stream
            .try_clone()
            .map_err(|e| Error::io(ctx(), "dup(socket)", &e))?;
        stream
            .set_read_timeout(Some(cfg.peer_timeout))
            .map_err(|e| Error::io(ctx(), "setsockopt(SO_RCVTIMEO)", &e))?;
        let slice = cfg
            .heartbeat
            .clamp(Duration::from_millis(10), Duration::from_millis(200));
        w.set_write_timeout(Some(slice))
            .map_err(|e| Error::io(ctx(), "setsockopt(SO_SNDTIMEO)", &e))?;
        let (reader, sink) = match session {
            None => (
                Reader::Plain(stream),
                TcpSinkHandle::Plain(TcpSink {
                    sock: Socket::from(w),
                }),
            ),
            Some(session) => {
                let (r, s) = crate::tls::io::split(session, stream, Socket::from(w));
                (Reader::Tls(r), TcpSinkHandle::Tls(s))
            }
        };
        let outbox = Arc::new(Outbox::new(
            sink,
            peer,
            cfg.heartbeat,
            cfg.peer_timeout,
            cfg.max_queued,
        ));
        Ok(TcpLink {
            me: me.to_string(),
            peer: peer.to_string(),
            reader,
            outbox,
            pool: BufferPool::new(POOL_RETAINED),
            cfg,
            poisoned: crate::poison::Poison::default(),
        })
    }

    /// A second handle on this link's sending side, for another thread: it sends whole frames
    /// through the same outbox (frames never interleave), while this link keeps receiving.
    /// Used for control links, where a worker reports rounds while it waits for commands.
    pub fn sender(&self) -> TcpSender {
        TcpSender {
            outbox: self.outbox.clone(),
            peer: self.peer.clone(),
        }
    }

    fn ctx(&self, expect: &Expect) -> Context {
        Context::expecting(&self.peer, expect)
    }

    fn fail(&mut self, e: Error) -> Error {
        let e = self.poisoned.set(&self.peer, e);
        let _ = self.reader.socket().shutdown(Shutdown::Both);
        e
    }

    fn read_full(&mut self, buf: &mut [u8], expect: &Expect) -> Result<()> {
        match self.reader.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) => Err(crate::outbox::io_error(
                self.ctx(expect),
                &e,
                self.cfg.peer_timeout,
            )),
        }
    }

    fn next_data_header(&mut self, expect: &Expect) -> Result<FrameHeader> {
        loop {
            if let Some(h) = self.next_header(expect)? {
                return Ok(h);
            }
        }
    }

    /// The next frame header, checked; `None` for a heartbeat.
    fn next_header(&mut self, expect: &Expect) -> Result<Option<FrameHeader>> {
        let mut hb = [0u8; HEADER_LEN];
        self.read_full(&mut hb, expect)?;
        let ctx = || self.ctx(expect);
        admit_header(
            &hb,
            self.cfg.max_frame_len,
            expect,
            ctx,
            (&self.me, &self.peer),
        )
    }

    /// Like [`Link::recv`], but give up at `deadline` when no data frame has begun to arrive by
    /// then: `Ok(None)`, and the link stays usable (nothing of a frame was consumed but
    /// heartbeats). Liveness is judged as in `recv`: a peer silent for the peer timeout is
    /// [`Error::PeerTimeout`]. The coordinator's progress deadline (a peer alive but stuck).
    ///
    /// # Errors
    /// As [`Link::recv`].
    pub fn recv_before(&mut self, expect: &Expect, deadline: Instant) -> Result<Option<Frame>> {
        self.precheck(expect)?;
        let mut heard = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let silent_at = heard + self.cfg.peer_timeout;
            let wait = deadline.min(silent_at).saturating_duration_since(now);
            match self.reader.ready(wait) {
                Ok(true) => {}
                Ok(false) if Instant::now() >= silent_at => {
                    let e = io::Error::from(io::ErrorKind::TimedOut);
                    let e = crate::outbox::io_error(self.ctx(expect), &e, self.cfg.peer_timeout);
                    return Err(self.fail(e));
                }
                Ok(false) => continue,
                Err(e) => {
                    let e = Error::io(self.ctx(expect), "poll(socket)", &e);
                    return Err(self.fail(e));
                }
            }
            heard = Instant::now();
            let header = match self.next_header(expect) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => return Err(self.fail(e)),
            };
            let mut buf = self.pool.take(header.len as usize);
            if let Err(e) = self.read_full(&mut buf, expect) {
                return Err(self.fail(e));
            }
            return Ok(Some(Frame {
                header,
                payload: buf.freeze(),
            }));
        }
    }

    /// Before a receive: the sticky error, or a peer death the writer saw, reported with this
    /// receive's round and op.
    fn precheck(&mut self, expect: &Expect) -> Result<()> {
        self.poisoned.check()?;
        if let Some(Error::PeerClosed { .. }) = self.outbox.error() {
            return Err(self.fail(Error::PeerClosed {
                ctx: self.ctx(expect),
            }));
        }
        Ok(())
    }

    fn recv_into_inner(&mut self, expect: &Expect, dst: &mut [u8]) -> Result<FrameHeader> {
        let header = self.next_data_header(expect)?;
        let len = header.len as usize;
        if len == dst.len() {
            self.read_full(dst, expect)?;
        } else {
            let mut buf = self.pool.take(len);
            self.read_full(&mut buf, expect)?;
            let n = len.min(dst.len());
            dst[..n].copy_from_slice(&buf[..n]);
        }
        Ok(header)
    }

    fn recv_inner(&mut self, expect: &Expect) -> Result<Frame> {
        let header = self.next_data_header(expect)?;
        let mut buf = self.pool.take(header.len as usize);
        self.read_full(&mut buf, expect)?;
        Ok(Frame {
            header,
            payload: buf.freeze(),
        })
    }
}

impl Link for TcpLink {
    fn peer_name(&self) -> &str {
        &self.peer
    }

    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.outbox.send(&header, payload).map_err(|e| self.fail(e))
    }

    fn send_from(&mut self, header: FrameHeader, payload: &[u8]) -> Result<()> {
        self.poisoned.check()?;
        check_payload_len(&self.peer, &header, payload.len())?;
        self.outbox
            .send_from(&header, payload, &self.pool)
            .map_err(|e| self.fail(e))
    }

    fn reserve(&mut self, header: FrameHeader) -> Result<Reservation> {
        self.poisoned.check()?;
        buffer_reservation(&self.peer, header, self.cfg.max_frame_len, &self.pool)
    }

    fn flush(&mut self) -> Result<()> {
        self.poisoned.check()?;
        self.outbox.flush().map_err(|e| self.fail(e))
    }

    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        self.precheck(expect)?;
        self.recv_inner(expect).map_err(|e| self.fail(e))
    }

    fn recv_into(&mut self, expect: &Expect, dst: &mut [u8]) -> Result<FrameHeader> {
        self.precheck(expect)?;
        self.recv_into_inner(expect, dst).map_err(|e| self.fail(e))
    }
}

/// Whether `stream` has bytes to read (or EOF) within `wait`.
fn readable(stream: &TcpStream, wait: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: poll(2) on one valid pollfd that lives for the call.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The sending side of a [`TcpLink`], usable from another thread. See [`TcpLink::sender`].
#[derive(Clone)]
pub struct TcpSender {
    outbox: Arc<Outbox<TcpSinkHandle>>,
    peer: String,
}

impl TcpSender {
    /// The peer's node name.
    pub fn peer_name(&self) -> &str {
        &self.peer
    }

    /// Send one frame and flush it; never waits for the peer to receive (the `Link` contract).
    ///
    /// # Errors
    /// As [`Link::send`] and [`Link::flush`]: the link's first error.
    pub fn send(&self, header: FrameHeader, payload: Buffer) -> Result<()> {
        check_payload_len(&self.peer, &header, payload.len())?;
        self.outbox.send(&header, payload)?;
        self.outbox.flush()
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        if !self.poisoned.is_set() {
            let close = FrameHeader {
                kind: FrameKind::Close,
                ..FrameHeader::data(Op::Control, 0, 0, 0, 0, 0)
            };
            let _ = self.outbox.send(&close, Buffer::zeroed(0));
            if self.outbox.flush().is_ok() {
                // TLS: close_notify after the Close frame (plain TCP: nothing to add).
                let _ = self.outbox.close_sink();
            }
        }
        let _ = self.reader.socket().shutdown(Shutdown::Write);
    }
}
