//! `--tls` for `bench link` and `bench allreduce`: certificates made for the run (removed after
//! it), each process's TLS setup from them, and the plain twin of a TLS mesh that serves as the
//! same-run reference (so the ratio is TLS / plain over the same processes).

use crate::{BenchError, Result};
use lockstep_tensor::Buffer;
use lockstep_transport::tls::gen::generate;
use lockstep_transport::{
    connect_mesh, Expect, FrameHeader, Group, Link, Listener, MeshConfig, Op, PeerAddr, TlsConfig,
    TlsFiles,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Names a bench's processes have: `n0`.. and the rendezvous `coordinator`.
const MAX_WORLD: usize = 64;

/// A folder of certificates for one bench run, removed when dropped.
pub struct BenchCerts {
    dir: PathBuf,
}

impl BenchCerts {
    /// Make a CA and certificates for `coordinator` and `n0`..`n63`.
    ///
    /// # Errors
    /// When the folder cannot be written.
    pub fn make() -> Result<BenchCerts> {
        let dir = std::env::temp_dir().join(format!("lockstep-bench-tls-{}", std::process::id()));
        let mut names: Vec<String> = (0..MAX_WORLD).map(|r| format!("n{r}")).collect();
        names.push("coordinator".into());
        generate(&dir, &names)?;
        Ok(BenchCerts { dir })
    }

    /// The folder, as the workers' config carries it.
    pub fn dir(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for BenchCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The TLS setup of `node` from the run's certificates, if the run has any.
///
/// # Errors
/// A file that does not fit, named.
pub fn load(dir: &Option<String>, node: &str) -> Result<Option<Arc<TlsConfig>>> {
    let Some(d) = dir else { return Ok(None) };
    let d = PathBuf::from(d);
    let files = TlsFiles {
        ca: d.join("ca.pem"),
        cert: d.join(format!("{node}.pem")),
        key: d.join(format!("{node}.key")),
    };
    Ok(Some(Arc::new(TlsConfig::load(node, &files)?)))
}

/// A plain-TCP mesh between the same processes as `g` (whose links carry the addresses), for
/// the reference of a TLS run. `base` is `g`'s mesh configuration.
///
/// # Errors
/// A message naming what failed.
pub fn plain_twin_of(g: &mut Group, base: &MeshConfig, bind_ip: &str) -> Result<Group> {
    let me = g.rank();
    let l = Listener::bind(&format!("{bind_ip}:0"))?;
    let addr = l.local_addr()?.to_string();
    let mut addrs = vec![String::new(); g.world()];
    addrs[me] = addr.clone();
    for p in (0..g.world()).filter(|&p| p != me) {
        let h = FrameHeader::data(Op::Bench, 9, 0, 0, 0, addr.len() as u64);
        g.link(p)
            .send(h, Buffer::copy_from_slice(addr.as_bytes()))?;
    }
    for (p, slot) in addrs.iter_mut().enumerate().filter(|(p, _)| *p != me) {
        let f = g.link(p).recv(&Expect::op(Op::Bench, 9, 0))?;
        *slot = String::from_utf8(f.payload.to_vec())
            .map_err(|source| BenchError::PeerAddr { peer: p, source })?;
    }
    let mut m = base.clone();
    m.tls = None;
    m.cluster = format!("{}-plain", base.cluster);
    m.rank = me;
    m.peers = addrs
        .into_iter()
        .enumerate()
        .map(|(r, addr)| PeerAddr {
            name: g.name(r).to_string(),
            addr,
        })
        .collect();
    Ok(connect_mesh(&m, l)?)
}

/// [`plain_twin_of`] for `bench link` (loopback).
///
/// # Errors
/// A message naming what failed.
pub fn plain_twin(g: &mut Group, cfg: &super::link::WorkerConfig) -> Result<Group> {
    let m = super::link::mesh_config(cfg, g.my_name(), g.rank())?;
    plain_twin_of(g, &m, "127.0.0.1")
}

/// [`plain_twin_of`] for `bench allreduce`, as a communicator set up like the subject's (its
/// topology; no link probe: the twin runs the algorithm the subject resolved).
///
/// # Errors
/// A message naming what failed.
pub(crate) fn plain_communicator(
    g: &mut Group,
    base: &MeshConfig,
    bind_ip: &str,
    cfg: &super::allreduce::WorkerConfig,
    settings: lockstep_collective::CollectiveConfig,
) -> Result<lockstep_collective::Communicator> {
    let twin = plain_twin_of(g, base, bind_ip)?;
    let mut t = lockstep_collective::Communicator::new(twin, settings);
    let fixed = super::allreduce::WorkerConfig {
        algo: "ring".into(),
        ..cfg.clone()
    };
    super::allreduce_checks::prepare(&mut t, &fixed)?;
    Ok(t)
}

/// The reference of a TLS run: `iters` allreduces of `x` over the plain twin, each after a
/// barrier; the work is their bus bytes (busbw = work / secs, as the subject's).
pub(crate) fn plain_chunk(
    t: &mut lockstep_collective::Communicator,
    algo: &str,
    ps: &mut Option<lockstep_collective::ParameterServer>,
    x: &mut [f32],
    iters: usize,
) -> Result<super::repeat::Chunk> {
    let n = t.world() as f64;
    let mut secs = 0.0;
    for _ in 0..iters {
        t.barrier()?;
        let start = Instant::now();
        super::allreduce_checks::reduce_once(t, algo, ps, x)?;
        secs += start.elapsed().as_secs_f64();
        x.fill(1.0);
    }
    Ok(super::repeat::Chunk {
        work: (x.len() * 4 * iters) as f64 * 2.0 * (n - 1.0) / n,
        secs,
    })
}
