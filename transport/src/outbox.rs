//! The send side shared by the byte-stream backends (tcp, shm): an inline, never-waiting write
//! when the wire has room, otherwise the frame's `Buffer` (a refcounted handle, no copy) goes to a
//! per-link writer thread through a bounded queue. This is what lets two ranks send to each other
//! before either receives without deadlocking (the `Link` contract). The writer thread also sends
//! heartbeats when the link is idle. Its first error is kept and returned by every later call.
//!
//! Lock order: a sender holds `state` and only *tries* the sink; the writer holds the sink and
//! then takes `state`. So a heartbeat can never land inside a frame that was half written inline.

use crate::error::{ConfigError, Context, Error, Result};
use crate::frame::{FrameHeader, Op, HEADER_LEN};
use crate::poison::Poison;
use lockstep_tensor::{Buffer, BufferPool};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where frame bytes go: a socket, a ring.
pub(crate) trait Sink: Send + 'static {
    /// Write as much of `parts` as fits now without waiting; the number of bytes written.
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize>;
    /// Write all of `parts`, waiting for room; give up when `stop` is set or the peer is gone.
    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()>;
    /// Send one heartbeat.
    fn heartbeat(&mut self, stop: &AtomicBool) -> io::Result<()>;
    /// Whether bytes that `try_write` counted as written still wait inside the sink (a TLS sink
    /// seals whole chunks and keeps what the socket did not take); the writer thread's next
    /// `write_all` hands them on first.
    fn backlog(&self) -> bool {
        false
    }
    /// End the byte stream in an orderly way once everything is written (a TLS sink sends
    /// `close_notify`); waits for room at most one send-timeout slice.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Item {
    header: [u8; HEADER_LEN],
    header_off: usize,
    payload: Buffer,
    round: u64,
    op: Op,
}

struct State {
    pending: usize,
    done_at: Instant,
    /// The first error of the writer or of a send; every later call returns it.
    error: Poison,
}

struct Shared<S> {
    sink: Mutex<S>,
    state: Mutex<State>,
    cv: Condvar,
    stop: AtomicBool,
}

/// A link's sending half.
pub(crate) struct Outbox<S: Sink> {
    shared: Arc<Shared<S>>,
    tx: Option<Sender<Item>>,
    thread: Option<JoinHandle<()>>,
    peer: String,
    timeout: Duration,
    max_queued: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turn a sink error into a typed link error.
pub(crate) fn io_error(ctx: Context, e: &io::Error, timeout: Duration) -> Error {
    use io::ErrorKind::*;
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected => {
            Error::PeerClosed { ctx }
        }
        TimedOut | WouldBlock => Error::PeerTimeout {
            ctx,
            waited_ms: timeout.as_millis() as u64,
        },
        _ => Error::io(ctx, "send", e),
    }
}

impl<S: Sink> Outbox<S> {
    /// Start the writer thread for `sink`.
    pub(crate) fn new(
        sink: S,
        peer: &str,
        heartbeat: Duration,
        timeout: Duration,
        max_queued: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            sink: Mutex::new(sink),
            state: Mutex::new(State {
                pending: 0,
                done_at: Instant::now(),
                error: Poison::default(),
            }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = channel::<Item>();
        let sh = shared.clone();
        let peer_s = peer.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("lockstep-tx-{peer}"))
            .spawn(move || loop {
                match rx.recv_timeout(heartbeat) {
                    Ok(item) => {
                        let mut sink = lock(&sh.sink);
                        let r = sink
                            .write_all(&[&item.header[item.header_off..], &item.payload], &sh.stop);
                        drop(sink);
                        let mut st = lock(&sh.state);
                        st.pending -= 1;
                        st.done_at = Instant::now();
                        if let Err(e) = r {
                            let ctx = Context {
                                peer: peer_s.clone(),
                                round: Some(item.round),
                                op: Some(item.op),
                            };
                            st.error.set_quiet(io_error(ctx, &e, timeout));
                        }
                        sh.cv.notify_all();
                        if st.error.is_set() {
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let mut sink = lock(&sh.sink);
                        let idle = lock(&sh.state).pending == 0;
                        if idle && sink.heartbeat(&sh.stop).is_err() {
                            // The reader reports a dead peer with round and op; nothing to add.
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok();
        Outbox {
            shared,
            tx: Some(tx),
            thread,
            peer: peer.to_string(),
            timeout,
            max_queued,
        }
    }

    /// The sticky error, if any.
    pub(crate) fn error(&self) -> Option<Error> {
        lock(&self.shared.state).error.check().err()
    }

    /// Whether nothing is queued (the sticky error, if any).
    pub(crate) fn idle(&self) -> Result<bool> {
        let st = lock(&self.shared.state);
        st.error.check()?;
        Ok(st.pending == 0)
    }

    /// Send one frame without waiting for the peer to receive it.
    pub(crate) fn send(&self, header: &FrameHeader, payload: Buffer) -> Result<()> {
        let hb = header.encode();
        let mut st = lock(&self.shared.state);
        let (off, backlog) = self.try_inline(&mut st, header, &hb, &payload)?;
        if off == HEADER_LEN + payload.len() {
            return self.settle(st, header, hb, backlog);
        }
        let payload = if off > HEADER_LEN {
            let written = off - HEADER_LEN;
            payload
                .slice(written..)
                .map_err(|_| ConfigError::InlineOverrun {
                    peer: self.peer.clone(),
                    written,
                    payload_len: payload.len(),
                })?
        } else {
            payload
        };
        self.enqueue(st, header, hb, off, payload)
    }

    /// Send one frame whose payload the caller keeps: what the sink takes now is written
    /// straight from `payload`, only the rest is copied (into a buffer of `pool`) and queued.
    pub(crate) fn send_from(
        &self,
        header: &FrameHeader,
        payload: &[u8],
        pool: &BufferPool,
    ) -> Result<()> {
        let hb = header.encode();
        let mut st = lock(&self.shared.state);
        let (off, backlog) = self.try_inline(&mut st, header, &hb, payload)?;
        if off == HEADER_LEN + payload.len() {
            return self.settle(st, header, hb, backlog);
        }
        let rest = &payload[off.saturating_sub(HEADER_LEN)..];
        let mut b = pool.take(rest.len());
        lockstep_tensor::kernels::copy(&mut b, rest);
        self.enqueue(st, header, hb, off, b.freeze())
    }

    fn ctx(&self, header: &FrameHeader) -> Context {
        Context {
            peer: self.peer.clone(),
            round: Some(header.round),
            op: Some(header.op),
        }
    }

    /// A frame written inline whose last bytes the sink still holds ([`Sink::backlog`]): queue
    /// an empty item, so the writer thread hands them on and `flush` waits for that.
    fn settle(
        &self,
        st: MutexGuard<'_, State>,
        header: &FrameHeader,
        hb: [u8; HEADER_LEN],
        backlog: bool,
    ) -> Result<()> {
        if !backlog {
            return Ok(());
        }
        self.enqueue(st, header, hb, HEADER_LEN, Buffer::zeroed(0))
    }

    /// Write what the sink takes now, if nothing is queued and the writer is not busy; the
    /// number of frame bytes written, and whether the sink holds some of them back.
    fn try_inline(
        &self,
        st: &mut MutexGuard<'_, State>,
        header: &FrameHeader,
        hb: &[u8; HEADER_LEN],
        payload: &[u8],
    ) -> Result<(usize, bool)> {
        st.error.check()?;
        if st.pending != 0 {
            return Ok((0, false));
        }
        let Ok(mut sink) = self.shared.sink.try_lock() else {
            return Ok((0, false));
        };
        match sink.try_write(&[hb, payload]) {
            Ok(n) => Ok((n, sink.backlog())),
            Err(e) => Err(st
                .error
                .set_quiet(io_error(self.ctx(header), &e, self.timeout))),
        }
    }

    /// Queue the rest of a frame of which `off` bytes were written inline; `payload` is what is
    /// left of the payload. A frame not started inline waits for room in the queue.
    fn enqueue(
        &self,
        mut st: MutexGuard<'_, State>,
        header: &FrameHeader,
        hb: [u8; HEADER_LEN],
        off: usize,
        payload: Buffer,
    ) -> Result<()> {
        if off == 0 {
            st = self.wait(st, |s| s.pending < self.max_queued, || self.ctx(header))?;
        }
        st.pending += 1;
        let item = Item {
            header: hb,
            header_off: off.min(HEADER_LEN),
            payload,
            round: header.round,
            op: header.op,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(item).is_ok());
        if !sent {
            st.pending -= 1;
            return Err(st.error.set_quiet(Error::PeerClosed {
                ctx: self.ctx(header),
            }));
        }
        Ok(())
    }

    /// Wait until every queued frame is written (no progress for the peer timeout: error).
    pub(crate) fn flush(&self) -> Result<()> {
        let st = lock(&self.shared.state);
        let ctx = || Context {
            peer: self.peer.clone(),
            round: None,
            op: None,
        };
        self.wait(st, |s| s.pending == 0, ctx)?.error.check()
    }

    /// After a [`Outbox::flush`]: end the sink's stream ([`Sink::close`]).
    pub(crate) fn close_sink(&self) -> io::Result<()> {
        lock(&self.shared.sink).close()
    }

    fn wait<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        ready: impl Fn(&State) -> bool,
        ctx: impl Fn() -> Context,
    ) -> Result<MutexGuard<'a, State>> {
        let since = Instant::now();
        loop {
            st.error.check()?;
            if ready(&st) {
                return Ok(st);
            }
            let stalled = Instant::now().duration_since(st.done_at.max(since));
            if stalled >= self.timeout {
                let e = Error::PeerTimeout {
                    ctx: ctx(),
                    waited_ms: stalled.as_millis() as u64,
                };
                return Err(st.error.set_quiet(e));
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, self.timeout - stalled)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl<S: Sink> Drop for Outbox<S> {
    fn drop(&mut self) {
        let _ = self.flush();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
