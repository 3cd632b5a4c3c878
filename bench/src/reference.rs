//! The references the benches measure next to their subjects, in the same run: what the
//! hardware and the operating system give without Lockstep in the way.
//!
//! - [`PairReference`] (`bench link`): plain std sockets between the two worker processes
//!   (tcp), or a memcpy loop (shm).
//! - [`LocalReference`] (`bench allreduce`): a memcpy loop (shm), or loopback socket
//!   throughput between two threads of worker 0 (tcp).
//!
//! Both are set up and used once before the first sample (connection, TCP slow start, page
//! faults of fresh buffers), then every sample moves the same bytes as one subject sample.

use super::link::WorkerConfig;
use super::link_checks::pattern;
use super::repeat::Chunk;
use crate::{BenchError, Result};
use lockstep_tensor::Buffer;
use lockstep_transport::{Expect, FrameHeader, Group, Link, Op};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// A loopback listener whose accepted sockets have the links' buffer sizes
/// ([`lockstep_transport::tcp::SOCKET_BUFFER_BYTES`]) from their first segment: set on the
/// listener before any peer connects, as tcp(7) asks. Set only on the accepted socket once data
/// may already flow (what `tune` alone does), the receive window of the reading side stayed at
/// 126 KiB (two segments) for the connection's whole life in about half the connections on the
/// development machine (kernel 6.18; `ss -ti`: `rcv_ssthresh:129024`, the writer's
/// `snd_wnd:129024`) and at 8 MiB in the others, which made the reference itself jump between
/// two speeds from run to run (about 1.35 against 1.85 GB/s). The reading side is always the
/// accepted one here.
fn loopback_listener() -> std::io::Result<TcpListener> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let size = lockstep_transport::tcp::SOCKET_BUFFER_BYTES as libc::c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt(2) on the listener's open socket, with an int that outlives the call
        // and its size.
        let rc = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(l)
}

/// The same-run reference: plain std sockets between the two processes, one connection kept
/// open for every sample (tcp), or a memcpy loop at rank 0 (shm); `iters` transfers of `len`
/// bytes per chunk, like the subject. Set up and warmed once (connection, slow start, page
/// faults of fresh buffers) before the first sample.
pub(crate) enum PairReference {
    /// memcpy at rank 0.
    Copy {
        src: Vec<u8>,
        dst: Vec<u8>,
        iters: usize,
    },
    /// Rank 0 writes, rank 1 reads and answers one byte per sample.
    Tcp {
        s: TcpStream,
        rank: usize,
        buf: Vec<u8>,
        iters: usize,
    },
    /// Rank 1 with shm: nothing to do.
    Idle,
}

impl PairReference {
    /// Set up and warm; every chunk then moves `iters` transfers of `len` bytes.
    pub(crate) fn open(
        g: &mut Group,
        cfg: &WorkerConfig,
        len: usize,
        iters: usize,
    ) -> Result<PairReference> {
        let (rank, peer) = (g.rank(), 1 - g.rank());
        let io = BenchError::io("the reference connection");
        if cfg.transport == "shm" {
            if rank == 1 {
                return Ok(PairReference::Idle);
            }
            let src = pattern(3, len).to_vec();
            let mut dst = vec![0u8; len];
            dst.copy_from_slice(&src);
            return Ok(PairReference::Copy { src, dst, iters });
        }
        let mut s = if rank == 1 {
            let l = loopback_listener().map_err(io)?;
            let port = l.local_addr().map_err(io)?.port();
            let body = Buffer::copy_from_slice(&port.to_le_bytes());
            g.link(peer)
                .send(FrameHeader::data(Op::Bench, 1, 0, 0, 0, 2), body)?;
            l.accept().map_err(io)?.0
        } else {
            let f = g.link(peer).recv(&Expect::op(Op::Bench, 1, 0))?;
            let port = u16::from_le_bytes([f.payload[0], f.payload[1]]);
            TcpStream::connect(("127.0.0.1", port)).map_err(io)?
        };
        // Like for like: the same socket options as the links (buffers, no delay, congestion
        // control), so the ratio measures Lockstep's data path, not a kernel setting.
        lockstep_transport::tcp::tune(&s, "reference")?;
        let mut buf = if rank == 0 {
            pattern(0, len).to_vec()
        } else {
            vec![0u8; len]
        };
        let mut one = [0u8; 1];
        for _ in 0..2 {
            if rank == 0 {
                s.write_all(&buf).map_err(io)?;
            } else {
                s.read_exact(&mut buf).map_err(io)?;
            }
        }
        if rank == 0 {
            s.read_exact(&mut one).map_err(io)?;
        } else {
            s.write_all(&one).map_err(io)?;
        }
        Ok(PairReference::Tcp {
            s,
            rank,
            buf,
            iters,
        })
    }

    /// The socket of the tcp reference (`None` for memcpy).
    pub(crate) fn fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            PairReference::Tcp { s, .. } => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    /// One chunk of `iters` transfers: bytes and seconds at rank 0, zeros at rank 1. Over tcp,
    /// rank 1 first sends one "ready" byte, as it does for the subject.
    pub(crate) fn chunk(&mut self, _g: &mut Group) -> Result<Chunk> {
        let io = BenchError::io("the reference connection");
        let (bytes, t) = match self {
            PairReference::Idle => return Ok(Chunk::default()),
            PairReference::Copy { src, dst, iters } => {
                let t = Instant::now();
                for _ in 0..*iters {
                    dst.copy_from_slice(std::hint::black_box(src));
                    std::hint::black_box(&mut *dst);
                }
                (src.len() * *iters, t)
            }
            PairReference::Tcp {
                s,
                rank,
                buf,
                iters,
            } => {
                let mut one = [0u8; 1];
                if *rank == 1 {
                    s.write_all(&one).map_err(io)?;
                    for _ in 0..*iters {
                        s.read_exact(buf).map_err(io)?;
                    }
                    s.write_all(&one).map_err(io)?;
                    return Ok(Chunk::default());
                }
                s.read_exact(&mut one).map_err(io)?;
                let t = Instant::now();
                for _ in 0..*iters {
                    s.write_all(buf).map_err(io)?;
                }
                s.read_exact(&mut one).map_err(io)?;
                (buf.len() * *iters, t)
            }
        };
        Ok(Chunk {
            work: bytes as f64,
            secs: t.elapsed().as_secs_f64(),
        })
    }
}

/// The same-run reference at `bytes`: a memcpy loop (shm) or loopback socket throughput
/// between two threads of this process (tcp), `iters` transfers of `bytes` per sample, the
/// same data as one subject sample. Buffers and the connection are made and used once before
/// the first sample, so page faults of fresh buffers and TCP slow start are not counted (the
/// collective is timed warm too).
pub struct LocalReference {
    src: Vec<u8>,
    dst: Vec<u8>,
    iters: usize,
    tcp: Option<(TcpStream, std::thread::JoinHandle<()>)>,
}

impl LocalReference {
    /// Set up and warm. With `peer_cpu` (tcp), the reading thread pins itself to that CPU (rank
    /// 1's, where the subject's reader runs) while the writer stays on the caller's (rank 0's), so
    /// the reference runs in the same placement as the subject (see [`super::placement`]).
    ///
    /// # Errors
    /// Socket errors (tcp), or a refused pinning.
    pub fn new(
        transport: &str,
        bytes: usize,
        iters: usize,
        peer_cpu: Option<usize>,
    ) -> Result<LocalReference> {
        let (bytes, iters) = (bytes.max(1), iters.max(1));
        let io = BenchError::io("the reference connection");
        let src = vec![1u8; bytes];
        if transport == "shm" {
            let mut r = LocalReference {
                dst: vec![0u8; bytes],
                src,
                iters: 1,
                tcp: None,
            };
            r.chunk()?;
            r.iters = iters;
            return Ok(r);
        }
        let l = loopback_listener().map_err(io)?;
        let addr = l.local_addr().map_err(io)?;
        // The reader, on rank 1's CPU when pinned: `iters` messages then one byte back, until the
        // writer closes. A refused pinning closes the listener: the writer's connect fails.
        let reader = std::thread::spawn(move || {
            if let Some(cpu) = peer_cpu {
                if let Err(e) = super::placement::pin_thread(cpu) {
                    eprintln!("reference reader: {e}");
                    return;
                }
            }
            let Ok((mut s, _)) = l.accept() else { return };
            let _ = lockstep_transport::tcp::tune(&s, "reference");
            let mut buf = vec![0u8; bytes];
            let mut first = true;
            loop {
                for _ in 0..if first { 1 } else { iters } {
                    if s.read_exact(&mut buf).is_err() {
                        return;
                    }
                }
                first = false;
                if s.write_all(&[1]).is_err() {
                    return;
                }
            }
        });
        let s = TcpStream::connect(addr).map_err(io)?;
        // The same socket options as the links (see `PairReference`).
        lockstep_transport::tcp::tune(&s, "reference")?;
        let mut r = LocalReference {
            src,
            dst: Vec::new(),
            iters: 1,
            tcp: Some((s, reader)),
        };
        r.chunk()?;
        r.iters = iters;
        Ok(r)
    }

    /// The writing socket of the tcp reference (`None` for memcpy).
    pub(crate) fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.tcp.as_ref().map(|(s, _)| s.as_raw_fd())
    }

    /// One chunk of `iters` transfers: bytes and seconds.
    ///
    /// # Errors
    /// Socket errors (tcp).
    pub fn chunk(&mut self) -> Result<Chunk> {
        let io = BenchError::io("the reference connection");
        let t = Instant::now();
        match &mut self.tcp {
            None => {
                for _ in 0..self.iters {
                    self.dst.copy_from_slice(std::hint::black_box(&self.src));
                    std::hint::black_box(&mut self.dst);
                }
            }
            Some((s, _)) => {
                for _ in 0..self.iters {
                    s.write_all(&self.src).map_err(io)?;
                }
                s.read_exact(&mut [0u8; 1]).map_err(io)?;
            }
        }
        Ok(Chunk {
            work: (self.src.len() * self.iters) as f64,
            secs: t.elapsed().as_secs_f64(),
        })
    }
}

impl Drop for LocalReference {
    fn drop(&mut self) {
        if let Some((s, reader)) = self.tcp.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = reader.join();
        }
    }
}
