//! The TCP side channel that shared-memory and RDMA links keep next to their data path: the
//! authenticated bootstrap socket carries heartbeats, and its EOF tells a survivor at once that
//! the peer process died (the kernel closes a dead process's sockets, but not its rings or queue
//! pairs). One implementation so both backends detect silence and death the same way.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Liveness of one peer, judged from its side-channel socket.
pub(crate) struct Liveness {
    pub(crate) stream: TcpStream,
    last_seen: Mutex<Instant>,
    timeout: Duration,
}

impl Liveness {
    /// Watch `stream`; a peer silent for longer than `timeout` is declared dead.
    pub(crate) fn new(stream: TcpStream, timeout: Duration) -> Liveness {
        Liveness {
            stream,
            last_seen: Mutex::new(Instant::now()),
            timeout,
        }
    }

    /// Note progress seen on the data path.
    pub(crate) fn saw(&self) {
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Drain heartbeats without blocking. EOF: `BrokenPipe`; silent past the timeout: `TimedOut`.
    pub(crate) fn check(&self) -> io::Result<()> {
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: recv into a valid stack buffer of the given length; MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return Err(io::ErrorKind::BrokenPipe.into()),
                n if n > 0 => *last = Instant::now(),
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
            }
        }
        if last.elapsed() > self.timeout {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(())
    }
}
