//! `lockstep bench link`: throughput of one link between two OS processes, next to a reference
//! measured in the same run (plain std sockets with the same write size for tcp, a memcpy loop
//! of the same size for shm), with the ratio.
//!
//! The parent runs a rendezvous [`Coordinator`](lockstep_transport::Coordinator) on loopback
//! and starts two `lockstep bench-worker --kind link` processes of the `lockstep` binary; they build a two-node mesh through it.
//! The same worker entry point also serves the multi-process transport tests
//! (`tests/transport_*.rs`): the `mode` field of the JSON config picks what the worker does.
//! Throughputs are in GB/s (1e9 bytes per second).
//!
//! After the throughput run both workers play ping-pong with messages of the same size: the
//! half round trip of each exchange (send, then wait for the same-size reply, consumed in place
//! with `recv_with`) gives the small-message latency, reported as p50/p99 in microseconds
//! (`p50_us`, `p99_us` in `--json`). `LOCKSTEP_SHM_WAIT=spin` in the environment switches the
//! shared-memory rings from the adaptive spin -> yield -> futex wait to pure spinning, to
//! compare the two (benchmark knob only).

use super::placement::Placement;
use super::reference::PairReference;
use super::repeat::{interleave, print_table, write_json, Chunk, Load, Paired};
use super::tcpinfo::Remeasure;
use crate::cli::{BenchWorkerArgs, LinkBenchArgs};
use crate::{BenchError, Result};
use lockstep_tensor::Buffer;
use lockstep_transport::{
    connect_mesh_via_coordinator, Expect, FrameHeader, Group, Link, Listener, MeshConfig, Op,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

/// What the parent tells each worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// `bench`, `exchange`, `stream` (send until killed), `listen` or `listen3` (tests).
    pub mode: String,
    /// Coordinator address (all modes but `listen`; `listen3`: the address of node `n2`).
    pub coordinator: String,
    /// Cluster name.
    pub cluster: String,
    /// tcp or shm.
    pub transport: String,
    /// Message sizes in bytes.
    pub sizes: Vec<usize>,
    /// Timed messages (bench).
    pub iters: usize,
    /// Peer timeout in ms.
    pub peer_timeout_ms: u64,
    /// Folder of the certificates `--tls` made (`n0`, `n1`, `coordinator`); `None`: plain TCP.
    #[serde(default)]
    pub tls_dir: Option<String>,
}

/// Parse "64MiB", "4KiB", "1000", "2GiB", "1MB".
///
/// # Errors
/// [`BenchError::BadSize`] or [`BenchError::BadSizeUnit`], naming the size.
pub fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| BenchError::BadSize { value: s.into() })?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(BenchError::BadSizeUnit {
                unit: u.into(),
                value: s.into(),
            })
        }
    };
    Ok(n * mult)
}

/// Parent side: one row, subject (the mesh link) and reference interleaved `--repeat` times.
///
/// # Errors
/// What failed, naming the worker, size or CPU.
pub fn run(args: &LinkBenchArgs) -> Result<()> {
    let size = parse_size(&args.size)?;
    super::transport_arg(&args.transport)?;
    if args.tls && args.transport != "tcp" {
        return Err(BenchError::TlsNeedsTcp);
    }
    let certs = args.tls.then(super::tls::BenchCerts::make).transpose()?;
    let cfg = WorkerConfig {
        mode: "bench".into(),
        coordinator: String::new(),
        cluster: format!("bench{}", std::process::id()),
        transport: args.transport.clone(),
        sizes: vec![size],
        iters: args.iters.max(1),
        peer_timeout_ms: 10_000,
        tls_dir: certs.as_ref().map(|c| c.dir()),
    };
    let place = Placement::choose(&args.measure.cpus, 2)?;
    println!("{}", place.line(2));
    let samples = |r: &Map<String, Value>, k: &str| -> Vec<f64> {
        r.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let mut redo = Remeasure::new(args.measure.attempts);
    let (mut r, p, load) = loop {
        let mut load = Load::start();
        let outs = spawn_pair(cfg.clone(), args.measure.repeat.max(1), &place)?;
        load.finish();
        let line = outs[0]
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or(BenchError::NoResult { rank: 0 })?;
        let r: Map<String, Value> =
            serde_json::from_str(line).map_err(BenchError::json("worker 0's result"))?;
        let p = Paired::new(&samples(&r, "gbps"), &samples(&r, "reference_gbps"));
        let tcp = r.get("tcp").cloned().unwrap_or(Value::Null);
        if redo.again(&tcp, p.ratio.median) {
            continue;
        }
        break (r, p, load);
    };
    r.extend(p.json("gbps", "reference_gbps"));
    load.add_json(&mut r);
    r.insert("placement".into(), place.json(2));
    redo.add_json(&mut r);
    let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let transport = match args.tls {
        true => format!("{}+tls", args.transport),
        false => args.transport.clone(),
    };
    println!(
        "link: transport {transport}, {} messages of {size} bytes per sample in {CHUNKS} chunks, repeat {}{}",
        f("messages"),
        p.repeat,
        match args.tls {
            true => "; reference: a plain TCP link between the same processes (ratio = TLS / plain)",
            false => "",
        }
    );
    print_table(
        &[
            "transport",
            "bytes",
            "GB/s",
            "reference GB/s",
            "ratio",
            "p50 us",
            "p99 us",
            "",
        ],
        &[vec![
            transport,
            size.to_string(),
            p.subject.cell(3),
            p.reference.cell(3),
            p.ratio.cell(3),
            format!("{:.2}", f("p50_us")),
            format!("{:.2}", f("p99_us")),
            p.flag().to_string(),
        ]],
    );
    println!("{}", load.line());
    for w in super::tcpinfo::warnings(r.get("tcp").unwrap_or(&Value::Null)) {
        println!("{w}");
    }
    redo.print_summary();
    if let Some(path) = &args.measure.json {
        write_json(path, &Value::Object(r))?;
    }
    Ok(())
}

/// `cfg` as JSON with a `repeat` field added (the bench mode's repetitions; the test modes
/// ignore it, and configs without it mean 1) and, when `cpus` is set, a `cpus` field (rank `i`
/// pins itself to `cpus[i % len]`, see [`super::placement`]; absent: not pinned).
///
/// # Errors
/// When `cfg` cannot be serialised.
pub fn with_repeat(cfg: &impl Serialize, repeat: usize, cpus: Option<&[usize]>) -> Result<String> {
    let mut v = serde_json::to_value(cfg).map_err(BenchError::json("a worker config"))?;
    if let Value::Object(m) = &mut v {
        m.insert("repeat".into(), Value::from(repeat));
        if let Some(c) = cpus {
            m.insert("cpus".into(), Value::from(c.to_vec()));
        }
    }
    Ok(v.to_string())
}

/// The `repeat` field of a worker's JSON config (1 when absent).
pub fn repeat_of(config: &str) -> usize {
    serde_json::from_str::<Value>(config)
        .ok()
        .and_then(|v| v.get("repeat").and_then(Value::as_u64))
        .map_or(1, |r| (r as usize).max(1))
}

/// Run a coordinator and two workers with `cfg` (and `repeat`, each pinned to its CPU of
/// `place`); their stdout, by rank. Both are waited for (and killed after a deadline), so none
/// is left running.
///
/// # Errors
/// When a worker cannot start or fails.
pub fn spawn_pair(cfg: WorkerConfig, repeat: usize, place: &Placement) -> Result<Vec<String>> {
    let exe = std::env::current_exe().map_err(BenchError::io("finding the lockstep binary"))?;
    super::spawn::spawn_repeat(&exe, cfg, 2, repeat, place.cpus.as_deref())
}

/// Worker side.
///
/// # Errors
/// What failed, naming the peer, round and operation for a link.
pub fn worker(args: &BenchWorkerArgs) -> Result<()> {
    let cfg: WorkerConfig =
        serde_json::from_str(&args.config).map_err(|source| BenchError::WorkerConfig {
            kind: "link",
            source,
        })?;
    if cfg.mode == "listen" || cfg.mode == "listen3" {
        return listen(&cfg);
    }
    let mut g = join(&cfg, args.rank)?;
    match cfg.mode.as_str() {
        "bench" => bench(&mut g, &cfg, repeat_of(&args.config)),
        "exchange" => exchange(&mut g, &cfg),
        "stream" => stream(&mut g, &cfg),
        m => Err(BenchError::UnknownMode {
            kind: "link",
            mode: m.into(),
        }),
    }
}

pub(crate) fn mesh_config(cfg: &WorkerConfig, node: &str, rank: usize) -> Result<MeshConfig> {
    let mut m = MeshConfig::new(&cfg.cluster, super::token().as_bytes(), node, rank, vec![]);
    m.transport = cfg.transport.parse()?;
    m.peer_timeout_ms = cfg.peer_timeout_ms;
    m.heartbeat_ms = (cfg.peer_timeout_ms / 6).max(10);
    m.connect_timeout_ms = 30_000;
    m.tls = super::tls::load(&cfg.tls_dir, node)?;
    Ok(m)
}

fn join(cfg: &WorkerConfig, rank: usize) -> Result<Group> {
    let m = mesh_config(cfg, &format!("n{rank}"), rank)?;
    let l = Listener::bind("127.0.0.1:0")?;
    Ok(connect_mesh_via_coordinator(&cfg.coordinator, &m, l)?)
}

pub use super::link_checks::{crc, pattern};
use super::link_checks::{exchange, listen, stream};

/// Chunks per sample: subject and reference alternate this often within one repetition.
pub(crate) const CHUNKS: usize = 5;

/// The bench mode: `repeat` samples of the mesh link's throughput interleaved with samples of
/// the reference (each cut into [`CHUNKS`] alternating chunks of about `iters / CHUNKS`
/// messages), then ping-pong latency; rank 0 prints `RESULT {json}` with the sample lists.
fn bench(g: &mut Group, cfg: &WorkerConfig, repeat: usize) -> Result<()> {
    let len = cfg.sizes.first().copied().unwrap_or(64 << 20);
    let per_chunk = cfg.iters.max(1).div_ceil(CHUNKS);
    let mut link = Throughput {
        seq: 0,
        len,
        data: pattern(0, len),
    };
    link.chunk(g, 2)?; // untimed: first touch of the rings / socket buffers
                       // With TLS the reference is a plain TCP link between the same two processes (ratio = TLS /
                       // plain); otherwise plain sockets (tcp) or memcpy (shm).
    let mut twin = match cfg.tls_dir {
        Some(_) => Some(super::tls::plain_twin(g, cfg)?),
        None => None,
    };
    let mut twin_link = Throughput {
        seq: 0,
        len,
        data: pattern(0, len),
    };
    let mut reference = match twin.as_mut() {
        Some(t) => {
            twin_link.chunk(t, 2)?;
            None
        }
        None => Some(PairReference::open(g, cfg, len, per_chunk)?),
    };
    let s = interleave(repeat, 2, CHUNKS, |step, _| {
        match (step, twin.as_mut(), reference.as_mut()) {
            (0, _, _) => link.chunk(g, per_chunk),
            (_, Some(t), _) => twin_link.chunk(t, per_chunk),
            (_, None, Some(r)) => r.chunk(g),
            (_, None, None) => Err(BenchError::NoReference),
        }
    })?;
    let gbps = |v: &[f64]| v.iter().map(|b| b / 1e9).collect::<Vec<_>>();
    // The throughput connections as they were after the timed samples (before the peer closes).
    let tcp = (cfg.transport == "tcp" && g.rank() == 0)
        .then(|| super::tcpinfo::sockets(reference.as_ref().and_then(PairReference::fd)));
    let lat = ping_pong(g, len)?;
    if g.rank() == 0 {
        let out = serde_json::json!({
            "transport": cfg.transport, "tls": cfg.tls_dir.is_some(),
            "reference": if twin.is_some() { "plain tcp link" } else { "plain socket / memcpy" }, "bytes": len, "gbps": gbps(&s[0]), "reference_gbps": gbps(&s[1]),
            "messages": per_chunk * CHUNKS,
            "p50_us": lat.p50, "p99_us": lat.p99, "mean_us": lat.mean, "latency_rounds": lat.rounds,
            "shm_wait": if lockstep_transport::shm::ring::spin_only() { "spin" } else { "adaptive" },
            "tcp": tcp,
        });
        println!("RESULT {out}");
    }
    Ok(g.link(1 - g.rank()).flush()?)
}

/// The subject: back-to-back messages of `len` bytes from rank 0 to rank 1 over the mesh link,
/// timed at rank 0 from rank 1's "ready" to its "all received". Sequence numbers keep counting
/// from chunk to chunk.
struct Throughput {
    seq: u64,
    len: usize,
    data: Buffer,
}

impl Throughput {
    /// One chunk of `msgs` messages: bytes and seconds at rank 0, zeros at rank 1.
    fn chunk(&mut self, g: &mut Group, msgs: usize) -> Result<Chunk> {
        let (me, peer) = (g.rank(), 1 - g.rank());
        let (base, len) = (self.seq, self.len);
        let (ready, done) = (base + msgs as u64, base + msgs as u64 + 1);
        self.seq = done + 1;
        let ack = |g: &mut Group, seq: u64| {
            g.link(peer)
                .send(
                    FrameHeader::data(Op::Bench, 0, seq, 0, 0, 0),
                    Buffer::zeroed(0),
                )
                .map_err(BenchError::from)
        };
        if me == 0 {
            g.link(peer).recv(&Expect::op(Op::Bench, 0, ready))?;
            let start = Instant::now();
            for i in 0..msgs {
                let h = FrameHeader::data(Op::P2p, 0, base + i as u64, 0, 0, len as u64);
                g.link(peer).send(h, self.data.clone())?;
            }
            g.link(peer).recv(&Expect::op(Op::Bench, 0, done))?;
            return Ok(Chunk {
                work: (len * msgs) as f64,
                secs: start.elapsed().as_secs_f64(),
            });
        }
        ack(g, ready)?;
        for i in 0..msgs {
            let mut n = 0usize;
            g.link(peer)
                .recv_with(&Expect::op(Op::P2p, 0, base + i as u64), &mut |_, p| {
                    n += p.len()
                })?;
            if n != len {
                return Err(BenchError::ShortMessage {
                    op: "bench",
                    got: n,
                    want: len,
                });
            }
        }
        ack(g, done)?;
        Ok(Chunk::default())
    }
}

/// Ping-pong rounds for a message of `len` bytes: enough to be stable, bounded in bytes moved.
fn latency_rounds(len: usize) -> usize {
    ((256usize << 20) / len.max(1)).clamp(10, 20_000)
}

/// Half-round-trip statistics in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
    rounds: usize,
}

/// Rank 0 sends, rank 1 answers with a message of the same size; rank 0 returns the statistics
/// of half the round trip (rank 1 returns zeros).
fn ping_pong(g: &mut Group, len: usize) -> Result<Latency> {
    let (me, peer) = (g.rank(), 1 - g.rank());
    let rounds = latency_rounds(len);
    let warm = (rounds / 10).clamp(2, 1000);
    let data = pattern(me, len);
    let mut half_rtt_us = Vec::with_capacity(rounds);
    for i in 0..warm + rounds {
        let h = FrameHeader::data(Op::P2p, 2, i as u64, 0, 0, len as u64);
        let expect = Expect::op(Op::P2p, 2, i as u64);
        let mut n = 0usize;
        let t = Instant::now();
        if me == 0 {
            g.link(peer).send(h, data.clone())?;
        }
        g.link(peer).recv_with(&expect, &mut |_, p| n += p.len())?;
        if me == 1 {
            g.link(peer).send(h, data.clone())?;
        } else if i >= warm {
            half_rtt_us.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
        }
        if n != len {
            return Err(BenchError::ShortMessage {
                op: "ping-pong",
                got: n,
                want: len,
            });
        }
    }
    if me == 1 {
        return Ok(Latency::default());
    }
    half_rtt_us.sort_by(f64::total_cmp);
    let pct = |q: f64| half_rtt_us[((half_rtt_us.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        p50: pct(0.50),
        p99: pct(0.99),
        mean: half_rtt_us.iter().sum::<f64>() / rounds as f64,
        rounds,
    })
}

/// Read lines of a child's stdout until one starts with `prefix` (tests); `None` at EOF.
pub fn read_until(r: &mut BufReader<impl Read>, prefix: &str) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return Some(rest.to_string());
        }
    }
}
