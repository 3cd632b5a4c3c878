//! The accepting side: a listener bound where the user says (a chosen interface, a fixed port or
//! port 0), and an acceptor that runs the handshake of each incoming connection on its own
//! thread, so a peer that sends garbage, a huge length or half a header (and then stalls) costs
//! only its own connection: it is logged and closed while good peers keep being served.
//!
//! Before authentication a connection gets little: the whole handshake has one deadline, and at
//! most [`MAX_PENDING_HANDSHAKES`] connections (or what [`Listener::set_max_pending`] says) may be
//! in their handshake at once. A connection beyond that is closed at once and logged, so a flood
//! of unauthenticated connections costs a bounded number of threads and sockets. With TLS the TLS
//! handshake is part of that: it runs on the same thread, inside the same deadline.

use crate::error::{Error, Result};
use crate::handshake::{handshake, Identity, Role};
use crate::tcp::Conn;
use crate::tls::TlsStream;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections that may be in their handshake at once, by default.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// A bound TCP listener.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    max_pending: usize,
}

impl Listener {
    /// Bind `addr` (e.g. `"10.0.0.5:7000"` or `"127.0.0.1:0"`).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad address, [`Error::Io`] when binding fails.
    pub fn bind(addr: &str) -> Result<Listener> {
        let sa = super::resolve(addr)?;
        let inner = TcpListener::bind(sa).map_err(|e| {
            let ctx = crate::Context {
                peer: format!("listener {sa}"),
                round: None,
                op: None,
            };
            Error::io(ctx, "bind", &e)
        })?;
        Ok(Listener {
            inner,
            max_pending: MAX_PENDING_HANDSHAKES,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    ///
    /// # Errors
    /// [`Error::Io`] from `getsockname`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner
            .local_addr()
            .map_err(|e| Error::io(Default::default(), "getsockname", &e))
    }

    /// Allow at most `n` (at least 1) connections in their handshake at once; the excess is
    /// closed at once and logged. Applies to acceptors started afterwards.
    pub fn set_max_pending(&mut self, n: usize) {
        self.max_pending = n.max(1);
    }

    /// Start accepting: each connection is tuned and handshaken on its own thread; those that
    /// pass (with a node name in `expect`, if given) come out of [`Acceptor::next`].
    ///
    /// # Errors
    /// [`Error::Io`] when the listener cannot be made non-blocking or cloned.
    pub fn start(
        &self,
        me: Identity,
        expect: Option<Vec<String>>,
        hs_timeout: Duration,
    ) -> Result<Acceptor> {
        let l = self
            .inner
            .try_clone()
            .map_err(|e| Error::io(Default::default(), "dup(listener)", &e))?;
        l.set_nonblocking(true)
            .map_err(|e| Error::io(Default::default(), "fcntl(O_NONBLOCK)", &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let st = stop.clone();
        let max_pending = self.max_pending;
        let pending = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("lockstep-accept".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, remote)) => {
                            if pending.fetch_add(1, Ordering::SeqCst) >= max_pending {
                                pending.fetch_sub(1, Ordering::SeqCst);
                                tracing::warn!(
                                    %remote,
                                    max_pending,
                                    "closing connection: too many handshakes in progress"
                                );
                                drop(s);
                                continue;
                            }
                            let (tx, me, expect) = (tx.clone(), me.clone(), expect.clone());
                            let held = pending.clone();
                            let spawned = std::thread::Builder::new()
                                .name("lockstep-hs".into())
                                .spawn(move || {
                                    let ok = admit(s, remote, &me, expect.as_deref(), hs_timeout);
                                    held.fetch_sub(1, Ordering::SeqCst);
                                    if let Some(ok) = ok {
                                        let _ = tx.send(ok);
                                    }
                                });
                            if let Err(e) = spawned {
                                pending.fetch_sub(1, Ordering::SeqCst);
                                tracing::warn!(%remote, error = %e, "cannot spawn a handshake thread");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            std::thread::sleep(Duration::from_millis(50))
                        }
                    }
                }
            })
            .map_err(|e| Error::io(Default::default(), "spawn(acceptor)", &e))?;
        Ok(Acceptor {
            rx,
            stop,
            thread: Some(thread),
        })
    }
}

fn admit(
    s: TcpStream,
    remote: SocketAddr,
    me: &Identity,
    expect: Option<&[String]>,
    timeout: Duration,
) -> Option<(String, Conn)> {
    let deadline = Instant::now() + timeout;
    if let Err(e) = s
        .set_nonblocking(false)
        .map_err(|e| e.to_string())
        .and_then(|_| super::tune(&s, &remote.to_string()).map_err(|e| e.to_string()))
    {
        tracing::warn!(%remote, error = %e, "dropping connection");
        return None;
    }
    // TLS first (its failures are logged by `TlsStream`), inside the same deadline.
    let mut conn = match &me.tls {
        Some(tls) => Conn::Tls(Box::new(TlsStream::accept(s, tls, deadline).ok()?)),
        None => Conn::Plain(s),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match handshake(&mut conn, Role::Acceptor, me, expect, left) {
        Ok(name) => Some((name, conn)),
        // `handshake` already logged the refusal with the remote address and reason.
        Err(_) => None,
    }
}

/// Connections that passed the handshake, in arrival order.
pub struct Acceptor {
    rx: Receiver<(String, Conn)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// The next authenticated connection: `(peer node name, stream)`, or `None` at the deadline.
    pub fn next(&self, deadline: Instant) -> Option<(String, Conn)> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx.recv_timeout(left).ok()
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
