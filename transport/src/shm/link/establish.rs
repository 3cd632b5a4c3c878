//! Setting up a shared-memory link: create this side's ring, exchange generation and capacity
//! with the peer over the authenticated socket, map and check the peer's ring, then assemble the
//! link around both.

use super::{Mapped, OutRing, ShmLink, ShmSink, ShmSinkHandle};
use crate::config::LinkConfig;
use crate::error::{ConfigError, Context, Error, Result};
use crate::liveness::Liveness;
use crate::outbox::Outbox;
use crate::shm::ring::{read_info, Ring, RING_HEADER};
use crate::shm::{remove_stale, segment_path};
use crate::tcp::Conn;
use lockstep_tensor::BufferPool;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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

/// Removes a segment's name from /dev/shm when dropped (the mappings stay valid).
struct Unlink<'a>(&'a std::path::Path);

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
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
            .map_err(|e| ConfigError::ShmRing {
                path: out_path.clone(),
                message: e.to_string(),
            })?;
        // The name goes when the setup ends: once both sides have mapped it is no longer needed
        // (and on an error the mapping, dropped, unlinks it too).
        let _name = Unlink(&out_path);
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
        if let Err(e) = stream.read_exact(&mut theirs) {
            // The peer may have died after it created its ring: a dead owner's segment goes.
            let _ = remove_stale(&segment_path(cluster, peer, me));
            return Err(hs_io(peer, "read(shm setup)")(e));
        }
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
        // Mapped: the peer's name is not needed either (if the peer is killed before it removes
        // it, nobody else would).
        let _theirs = Unlink(&in_path);
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
            poisoned: crate::poison::Poison::default(),
        })
    }
}
