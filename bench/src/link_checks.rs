//! The test-only modes of the link bench worker (`exchange`, `stream`, `listen`, `listen3`) and
//! their payload helpers. The multi-process transport tests (`tests/transport_*.rs`) start
//! `lockstep bench-worker --kind link` with one of these modes; the benchmark itself lives in
//! [`super::link`].

use super::link::{mesh_config, WorkerConfig};
use crate::{BenchError, Result};
use lockstep_tensor::Buffer;
use lockstep_transport::{Expect, FrameHeader, Group, Link, Listener, Op, PeerAddr};
use std::io::Write;

/// Deterministic test payload: depends on sender, size and byte index.
pub fn pattern(from: usize, len: usize) -> Buffer {
    let mut x = (from as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64 | 1;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Buffer::copy_from_slice(&v)
}

/// Checksum of a payload: FNV-1a over 8-byte words (and the tail), folded to 32 bits.
pub fn crc(b: &[u8]) -> u32 {
    let step = |h: u64, x: u64| (h ^ x).wrapping_mul(0x100_0000_01b3);
    let mut chunks = b.chunks_exact(8);
    let mut h = (&mut chunks).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        step(
            h,
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        )
    });
    h = chunks
        .remainder()
        .iter()
        .fold(h, |h, &x| step(h, u64::from(x)));
    (h ^ (h >> 32) ^ b.len() as u64) as u32
}

/// Every size goes both ways at once; the received checksum must match the expected pattern's.
pub(crate) fn exchange(g: &mut Group, cfg: &WorkerConfig) -> Result<()> {
    let (me, peer) = (g.rank(), 1 - g.rank());
    for (i, &len) in cfg.sizes.iter().enumerate() {
        let h = FrameHeader::data(Op::P2p, 1, i as u64, 0, 0, len as u64);
        g.link(peer).send(h, pattern(me, len))?;
        let f = g.link(peer).recv(&Expect::op(Op::P2p, 1, i as u64))?;
        let (got, want) = (crc(&f.payload), crc(&pattern(peer, len)));
        if f.payload.len() != len || got != want {
            return Err(BenchError::Corrupt {
                size: len,
                got_bytes: f.payload.len(),
                got_crc: got,
                want_crc: want,
            });
        }
        println!("OK {len} {got:#010x}");
    }
    Ok(g.link(peer).flush()?)
}

/// Send and receive 1 MiB frames forever; on the first error print `ERR <message>` and exit 0.
pub(crate) fn stream(g: &mut Group, cfg: &WorkerConfig) -> Result<()> {
    let (me, peer) = (g.rank(), 1 - g.rank());
    let len = cfg.sizes.first().copied().unwrap_or(1 << 20);
    let data = pattern(me, len);
    println!("STARTED");
    let _ = std::io::stdout().flush();
    for seq in 0.. {
        let h = FrameHeader::data(Op::AllReduce, 7, seq, 0, 0, len as u64);
        let r = match g.link(peer).send(h, data.clone()) {
            Ok(()) => g.link(peer).recv(&Expect::op(Op::AllReduce, 7, seq)).err(),
            Err(e) => Some(e),
        };
        if let Some(e) = r {
            println!("ERR {e}");
            let _ = std::io::stdout().flush();
            return Ok(());
        }
    }
    Ok(())
}

/// Test helper: bind port 0, print `ADDR <addr>`, join a mesh as rank 1 (`n1`) expecting `n0`
/// to connect, then print `GOT <len> <crc>` for the first frame from `n0`.
///
/// Mode `listen3` (the malformed-header test): a three-node mesh whose `n2` listens at
/// `cfg.coordinator`; print `ERR0 <error>` for what arrives from `n0` (which sends a bad header),
/// then receive one frame from `n2`, print `GOT2 <len> <crc>` and send it back to `n2`.
pub(crate) fn listen(cfg: &WorkerConfig) -> Result<()> {
    let l = Listener::bind("127.0.0.1:0")?;
    println!("ADDR {}", l.local_addr()?);
    let _ = std::io::stdout().flush();
    let three = cfg.mode == "listen3";
    let mut m = mesh_config(cfg, "n1", 1)?;
    let addr = |name: &str, addr: &str| PeerAddr {
        name: name.into(),
        addr: addr.into(),
    };
    m.peers = vec![addr("n0", "127.0.0.1:1"), addr("n1", "")];
    if three {
        m.peers.push(addr("n2", &cfg.coordinator));
    }
    let mut g = lockstep_transport::connect_mesh(&m, l)?;
    let from0 = g.link(0).recv(&Expect::default());
    if !three {
        let f = from0?;
        println!("GOT {} {:#010x}", f.payload.len(), crc(&f.payload));
        return Ok(());
    }
    match from0 {
        Ok(f) => println!("GOT0 {}", f.payload.len()),
        Err(e) => println!("ERR0 {e}"),
    }
    let _ = std::io::stdout().flush();
    let f = g.link(2).recv(&Expect::default())?;
    println!("GOT2 {} {:#010x}", f.payload.len(), crc(&f.payload));
    g.link(2).send(f.header, f.payload)?;
    Ok(g.link(2).flush()?)
}
