//! The two halves of a TLS link: the receiving side ([`TlsReader`], used by the thread that calls
//! `recv`) and the sending side ([`TlsSink`], behind the link's [`crate::outbox::Outbox`] like the
//! plain socket's). Everything else (frame headers, deadlines, pools, heartbeats, the writer
//! thread) is the TCP link's own code: TLS only changes how bytes meet the socket.
//!
//! # One session, two threads
//! A rustls connection holds the state of both directions and is not split across threads, so
//! the halves share it behind a mutex, held only for work in memory: the reader takes it to
//! decrypt ciphertext it has already read from the socket, the sink to encrypt one chunk (at most
//! [`CHUNK`] bytes) into its own buffer. No socket call is ever made under the lock, so a sender
//! blocked on a full socket never keeps its own side from receiving (which would deadlock two
//! ranks that send to each other before receiving), and encryption of a large frame is cut in
//! chunks so that the reader waits at most one chunk's encryption. Ciphertext leaves in the
//! order it was sealed because one sink writes at a time (the outbox's sink lock) and drains all
//! it sealed before sealing more.
//!
//! Like the plain sink, [`TlsSink::try_write`] never waits: it seals chunk after chunk while the
//! socket takes them, and when it takes only part of one, the rest of that chunk's ciphertext
//! stays in the sink (its backlog, which the outbox hands to the writer thread).

use crate::outbox::Sink;
use crate::tcp::send::{send_all, send_now};
use rustls::Connection;
use socket2::Socket;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most plaintext bytes sealed under one hold of the session lock.
pub const CHUNK: usize = 256 << 10;
/// Bytes of ciphertext the reader takes from the socket at once.
const READ_BLOCK: usize = 256 << 10;

type Session = Arc<Mutex<Connection>>;

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Split a TLS session whose handshake is done into its link halves.
pub(crate) fn split(
    mut conn: Connection,
    reader: TcpStream,
    writer: Socket,
) -> (TlsReader, TlsSink) {
    // The sink drains what it seals at once; rustls' own cap would only split its writes.
    conn.set_buffer_limit(None);
    let session = Arc::new(Mutex::new(conn));
    (
        TlsReader {
            sock: reader,
            session: session.clone(),
            buf: vec![0u8; READ_BLOCK],
            start: 0,
            end: 0,
        },
        TlsSink {
            sock: writer,
            session,
            out: Vec::with_capacity(CHUNK + (CHUNK >> 6) + 64),
            sent: 0,
        },
    )
}

/// The receiving half of a TLS link.
pub(crate) struct TlsReader {
    pub(crate) sock: TcpStream,
    session: Session,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl TlsReader {
    /// Whether plaintext or ciphertext is already held here (so the socket may stay quiet while
    /// a read would still return at once).
    pub(crate) fn buffered(&self) -> bool {
        if self.start < self.end {
            return true;
        }
        let mut c = lock(&self.session);
        c.process_new_packets()
            .map(|s| s.plaintext_bytes_to_read() > 0)
            .unwrap_or(true)
    }

    /// Fill `dst` with plaintext, reading the socket (with its receive timeout) as needed.
    pub(crate) fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < dst.len() {
            {
                let mut c = lock(&self.session);
                loop {
                    match c.reader().read(&mut dst[done..]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            done += n;
                            if done == dst.len() {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if self.start == self.end {
                        break;
                    }
                    let mut held = &self.buf[self.start..self.end];
                    let n = c.read_tls(&mut held)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS record too large",
                        ));
                    }
                    self.start += n;
                    c.process_new_packets().map_err(invalid)?;
                }
            }
            self.start = 0;
            self.end = loop {
                match self.sock.read(&mut self.buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
        }
        Ok(())
    }
}

/// The sending half of a TLS link.
pub(crate) struct TlsSink {
    sock: Socket,
    session: Session,
    /// Sealed ciphertext not yet handed to the socket: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
}

/// The next at most `max` bytes of `parts` after the first `skip`.
fn chunk<'a>(parts: &[&'a [u8]], skip: usize, max: usize) -> Vec<IoSlice<'a>> {
    let (mut skip, mut left) = (skip, max);
    let mut v = Vec::with_capacity(parts.len());
    for p in parts {
        if left == 0 {
            break;
        }
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        let piece = &p[skip..(skip + left).min(p.len())];
        skip = 0;
        left -= piece.len();
        v.push(IoSlice::new(piece));
    }
    v
}

impl TlsSink {
    /// Encrypt the next at most [`CHUNK`] bytes of `parts` after `skip` into `out`; the number
    /// of plaintext bytes sealed.
    fn seal(&mut self, parts: &[&[u8]], skip: usize) -> io::Result<usize> {
        let mut c = lock(&self.session);
        let mut done = 0;
        loop {
            let rest = chunk(parts, skip + done, CHUNK - done);
            if rest.is_empty() {
                break;
            }
            // Without a buffer limit rustls takes it all at once; loop for safety anyway.
            match c.writer().write_vectored(&rest)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => done += n,
            }
        }
        while c.wants_write() {
            c.write_tls(&mut self.out)?;
        }
        Ok(done)
    }

    fn backlog_empty(&mut self) -> bool {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            return true;
        }
        false
    }

    /// Hand the backlog to the socket without waiting; whether all of it went.
    fn drain_now(&mut self) -> io::Result<bool> {
        if self.backlog_empty() {
            return Ok(true);
        }
        self.sent += send_now(&self.sock, &[&self.out[self.sent..]])?;
        Ok(self.backlog_empty())
    }

    /// Hand the backlog to the socket, waiting for room (until `stop`).
    fn drain_all(&mut self, stop: &AtomicBool) -> io::Result<()> {
        if !self.backlog_empty() {
            send_all(&self.sock, &[&self.out[self.sent..]], stop)?;
            self.sent = self.out.len();
            self.backlog_empty();
        }
        Ok(())
    }
}

impl Sink for TlsSink {
    fn try_write(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        if !self.drain_now()? {
            return Ok(0);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            done += self.seal(parts, done)?;
            if !self.drain_now()? {
                break;
            }
        }
        Ok(done)
    }

    fn write_all(&mut self, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
        self.drain_all(stop)?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            done += self.seal(parts, done)?;
            self.drain_all(stop)?;
        }
        Ok(())
    }

    fn heartbeat(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.write_all(&[&crate::frame::FrameHeader::heartbeat().encode()], stop)
    }

    fn backlog(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Seal `close_notify` behind whatever is still held and hand it all to the socket, so the
    /// peer reads every frame and then a clean end of the session (not a truncated one).
    fn close(&mut self) -> io::Result<()> {
        {
            let mut c = lock(&self.session);
            c.send_close_notify();
            while c.wants_write() {
                c.write_tls(&mut self.out)?;
            }
        }
        // A stop already set: wait for room at most one send-timeout slice.
        self.drain_all(&AtomicBool::new(true))
    }
}
