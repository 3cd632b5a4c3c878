//! `lockstep bench allreduce`: allreduce latency and bandwidth over N local processes, next to a
//! reference measured in the same run (a memcpy loop of the same size for shm, raw loopback
//! socket throughput for tcp), with the ratio busbw/reference.
//!
//! The parent runs a rendezvous coordinator on loopback and starts N `lockstep bench-worker
//! --kind allreduce` processes of the `lockstep` binary, which build the mesh through it. The same worker
//! serves the multi-process tests (`tests/aggregate_*.rs`): the `mode` field of the JSON config
//! picks `bench`, `check` (print a digest of every result) or `loop` (allreduce until a peer
//! dies, then print the error; both in [`super::allreduce_checks`]). Bandwidths are in GB/s
//! (1e9 bytes per second); busbw is algbw x 2(n-1)/n, NCCL's definition.
//!
//! Each size is measured `--repeat` times, a sample of the collective then a sample of the
//! reference, so the ratio of each pair compares the two under the same machine load.

pub use super::allreduce_checks::input;

use super::allreduce_checks::{check, reduce_once, run_loop};
use super::link::CHUNKS;
use super::link::{parse_size, repeat_of};
use super::placement::{peer_cpu, Placement};
use super::reference::LocalReference;
use super::repeat::{interleave, print_table, write_json, Chunk, Load, Paired, Spread};
use super::spawn::spawn_repeat;
pub use super::spawn::{spawn_workers, start_workers, wait_output, Started};
use super::tcpinfo::Remeasure;
use crate::cli::{AllreduceBenchArgs, BenchWorkerArgs};
use crate::{BenchError, Result};
use lockstep_collective::{cost, Algo, AllReduce, CollectiveConfig, Communicator};
use lockstep_transport::{connect_mesh_via_coordinator, Listener, MeshConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use std::time::Instant;

/// What the parent tells each worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// `bench`, `check` or `loop`.
    pub mode: String,
    /// Coordinator address (filled in by [`spawn_workers`]).
    pub coordinator: String,
    /// Cluster name.
    pub cluster: String,
    /// tcp or shm.
    pub transport: String,
    /// ring, tree, ps or auto.
    pub algo: String,
    /// Message sizes in bytes (bench) or element counts (check, loop).
    pub sizes: Vec<usize>,
    /// Timed iterations per size (bench).
    pub iters: usize,
    /// Peer timeout in ms.
    pub peer_timeout_ms: u64,
    /// Workers per host (0: hosts from the workers' IPs).
    #[serde(default)]
    pub ranks_per_host: usize,
    /// Namespace prefix the workers run in (`ip netns exec`), when set.
    #[serde(default)]
    pub netns: Option<String>,
    /// The IP the coordinator binds; workers in namespaces bind every address.
    #[serde(default)]
    pub bind: Option<String>,
    /// Folder of the certificates `--tls` made; `None`: plain links.
    #[serde(default)]
    pub tls_dir: Option<String>,
}

/// One size's samples, as worker 0 sends them to the parent (one entry per repetition).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Samples {
    /// Message size in bytes.
    pub bytes: usize,
    /// Timed allreduces per sample.
    pub iters: usize,
    /// Median latency of each sample (us, mean over ranks per iteration).
    pub p50_us: Vec<f64>,
    /// 99th percentile latency of each sample (us).
    pub p99_us: Vec<f64>,
    /// bytes / p50 (GB/s).
    pub algbw_gbps: Vec<f64>,
    /// algbw x 2(n-1)/n (GB/s).
    pub busbw_gbps: Vec<f64>,
    /// The reference sample next to each (GB/s).
    pub reference_gbps: Vec<f64>,
    /// The algorithm that ran (what `auto` chose).
    #[serde(default)]
    pub algo: String,
    /// The cost model's prediction for it (us), when the links were probed.
    #[serde(default)]
    pub predicted_us: Option<f64>,
    /// `TCP_INFO` of rank 0's sending sockets at the end of this size (the reference's, and the
    /// links', counted from the start of the run); see `tcpinfo`.
    #[serde(default)]
    pub tcp: Option<Value>,
}

impl Samples {
    /// One repetition's figures from its allreduce times `t` (us, sorted here) over `n` ranks.
    fn add_repetition(&mut self, t: &mut [f32], n: usize) {
        t.sort_by(f32::total_cmp);
        let pct = |p: f64| f64::from(t[((t.len() - 1) as f64 * p).round() as usize]);
        let algbw = self.bytes as f64 / (pct(0.5) * 1e-6) / 1e9;
        self.p50_us.push(pct(0.5));
        self.p99_us.push(pct(0.99));
        self.algbw_gbps.push(algbw);
        self.busbw_gbps
            .push(algbw * 2.0 * (n - 1) as f64 / n as f64);
    }
}

/// Parent side: one row per size; busbw and the reference interleaved `--repeat` times.
///
/// # Errors
/// What failed, naming the worker, size or CPU.
pub fn run(args: &AllreduceBenchArgs) -> Result<()> {
    let sizes = checked_sizes(args)?;
    let certs = args.tls.then(super::tls::BenchCerts::make).transpose()?;
    let cfg = WorkerConfig {
        mode: "bench".into(),
        coordinator: String::new(),
        cluster: format!("bench{}", std::process::id()),
        transport: args.transport.clone(),
        algo: args.algo.clone(),
        sizes: sizes.clone(),
        iters: args.iters.max(1),
        peer_timeout_ms: 10_000,
        ranks_per_host: args.ranks_per_host,
        netns: args.netns.clone(),
        bind: Some(args.bind.clone()),
        tls_dir: certs.as_ref().map(|c| c.dir()),
    };
    if args.tls {
        println!("allreduce over TLS; reference: the same allreduce over plain TCP links between the same processes (ratio = TLS / plain)");
    }
    let place = Placement::choose(&args.measure.cpus, args.world)?;
    println!("{}", place.line(args.world));
    let (samples, load, redo) = measure(args, &cfg, &place)?;
    println!(
        "allreduce: world {}, transport {}, algo {}, repeat {}",
        args.world,
        args.transport,
        args.algo,
        args.measure.repeat.max(1)
    );
    let (mut rows, mut cells, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    for s in &samples {
        let (row, cell) = size_row(s, &mut warnings);
        rows.push(row);
        cells.push(cell);
    }
    print_table(
        &[
            "bytes",
            "p50_us",
            "p99_us",
            "algbw_GB/s",
            "busbw_GB/s",
            "reference_GB/s",
            "ratio",
            "algo",
            "model_us",
            "",
        ],
        &cells,
    );
    println!("{}", load.line());
    for w in &warnings {
        println!("{w}");
    }
    redo.print_summary();
    if let Some(p) = &args.measure.json {
        let mut report = Map::new();
        report.insert("world".into(), Value::from(args.world));
        report.insert("transport".into(), Value::from(args.transport.clone()));
        report.insert("ranks_per_host".into(), Value::from(args.ranks_per_host));
        report.insert("algo".into(), Value::from(args.algo.clone()));
        report.insert("repeat".into(), Value::from(args.measure.repeat.max(1)));
        load.add_json(&mut report);
        report.insert("placement".into(), place.json(args.world));
        redo.add_json(&mut report);
        report.insert("rows".into(), Value::Array(rows));
        write_json(p, &Value::Object(report))?;
    }
    Ok(())
}

/// Run the workers until a run is not slowed by spurious retransmissions (at most
/// `--attempts` runs): worker 0's samples, the machine's load meanwhile, and the runs set aside.
fn measure(
    args: &AllreduceBenchArgs,
    cfg: &WorkerConfig,
    place: &Placement,
) -> Result<(Vec<Samples>, Load, Remeasure)> {
    let exe = std::env::current_exe().map_err(BenchError::io("finding the lockstep binary"))?;
    let mut redo = Remeasure::new(args.measure.attempts);
    loop {
        let mut load = Load::start();
        let outs = spawn_repeat(
            &exe,
            cfg.clone(),
            args.world,
            args.measure.repeat.max(1),
            place.cpus.as_deref(),
        )?;
        load.finish();
        let line = outs[0]
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or(BenchError::NoResult { rank: 0 })?;
        let samples: Vec<Samples> =
            serde_json::from_str(line).map_err(BenchError::json("worker 0's result"))?;
        // Every size's connections (each size has its own reference connection).
        let tcp: Vec<Value> = samples
            .iter()
            .filter_map(|s| s.tcp.as_ref().and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        let tcp = Value::Array(tcp);
        let ratios: Vec<f64> = samples
            .iter()
            .map(|s| Paired::new(&s.busbw_gbps, &s.reference_gbps).ratio.median)
            .collect();
        if redo.again(&tcp, ratios) {
            continue;
        }
        return Ok((samples, load, redo));
    }
}

/// The `--sizes` in bytes, after checking the other arguments.
fn checked_sizes(args: &AllreduceBenchArgs) -> Result<Vec<usize>> {
    let sizes = args
        .sizes
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    if args.world == 0 {
        return Err(BenchError::NoWorld);
    }
    super::transport_arg(&args.transport)?;
    if args.netns.is_some() && args.ranks_per_host == 0 {
        return Err(BenchError::NetnsNeedsRanksPerHost);
    }
    if args.algo != "ps" {
        args.algo.parse::<Algo>()?;
    }
    if args.tls && args.transport != "tcp" {
        return Err(BenchError::TlsNeedsTcp);
    }
    Ok(sizes)
}

/// One size's JSON row and table cells; its `TCP_INFO` warnings go to `warnings`.
fn size_row(s: &Samples, warnings: &mut Vec<String>) -> (Value, Vec<String>) {
    let p = Paired::new(&s.busbw_gbps, &s.reference_gbps);
    let (p50, p99, algbw) = (
        Spread::of(&s.p50_us),
        Spread::of(&s.p99_us),
        Spread::of(&s.algbw_gbps),
    );
    let mut row = Map::new();
    row.insert("bytes".into(), Value::from(s.bytes));
    row.insert("p50_us".into(), Value::from(p50.median));
    row.insert("p99_us".into(), Value::from(p99.median));
    row.insert("algbw_gbps".into(), Value::from(algbw.median));
    row.extend(p.json("busbw_gbps", "reference_gbps"));
    row.insert("iters".into(), Value::from(s.iters));
    row.insert("algo".into(), Value::from(s.algo.clone()));
    if let Some(p) = s.predicted_us {
        row.insert("predicted_us".into(), Value::from(p));
    }
    if let Some(t) = &s.tcp {
        warnings.extend(
            super::tcpinfo::warnings(t)
                .into_iter()
                .map(|w| format!("{} bytes: {w}", s.bytes)),
        );
        row.insert("tcp".into(), t.clone());
    }
    let cells = vec![
        s.bytes.to_string(),
        p50.cell(1),
        p99.cell(1),
        algbw.cell(3),
        p.subject.cell(3),
        p.reference.cell(3),
        p.ratio.cell(3),
        s.algo.clone(),
        s.predicted_us.map_or("-".into(), |p| format!("{p:.1}")),
        p.flag().to_string(),
    ];
    (Value::Object(row), cells)
}

/// Worker side.
///
/// # Errors
/// What failed, naming the peer, round and operation for a link or collective.
pub fn worker(args: &BenchWorkerArgs) -> Result<()> {
    let cfg: WorkerConfig =
        serde_json::from_str(&args.config).map_err(|source| BenchError::WorkerConfig {
            kind: "allreduce",
            source,
        })?;
    let mut m = MeshConfig::new(
        &cfg.cluster,
        super::token().as_bytes(),
        &format!("n{}", args.rank),
        args.rank,
        vec![],
    );
    m.transport = cfg.transport.parse()?;
    m.peer_timeout_ms = cfg.peer_timeout_ms;
    m.heartbeat_ms = (cfg.peer_timeout_ms / 6).max(10);
    m.tls = super::tls::load(&cfg.tls_dir, &format!("n{}", args.rank))?;
    let ip = if cfg.netns.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let l = Listener::bind(&format!("{ip}:0"))?;
    let mut g = connect_mesh_via_coordinator(&cfg.coordinator, &m, l)?;
    // With TLS, the same allreduce over plain links between the same processes is the reference.
    let mut twin = match &cfg.tls_dir {
        Some(_) => Some(super::tls::plain_communicator(
            &mut g,
            &m,
            ip,
            &cfg,
            aggregate_config()?,
        )?),
        None => None,
    };
    let mut c = Communicator::new(g, aggregate_config()?);
    super::allreduce_checks::prepare(&mut c, &cfg)?;
    match cfg.mode.as_str() {
        "bench" => bench(
            &mut c,
            twin.as_mut(),
            &cfg,
            repeat_of(&args.config),
            peer_cpu(&args.config),
        ),
        "check" => check(&mut c, &cfg),
        "loop" => run_loop(&mut c, &cfg),
        m => Err(BenchError::UnknownMode {
            kind: "allreduce",
            mode: m.into(),
        }),
    }
}

/// The default settings, with `LOCKSTEP_CHUNK_BYTES`, `LOCKSTEP_SMALL_BYTES` and
/// `LOCKSTEP_PIPELINE_BYTES` (sizes such as `1MiB`) overriding `chunk_bytes`, `small_bytes` and
/// `pipeline_bytes` when set (to measure other settings).
fn aggregate_config() -> Result<CollectiveConfig> {
    let mut a = CollectiveConfig::default();
    let var = |name: &str| std::env::var(name).ok().map(|v| parse_size(&v)).transpose();
    if let Some(b) = var("LOCKSTEP_CHUNK_BYTES")? {
        a.chunk_bytes = b.max(4);
    }
    if let Some(b) = var("LOCKSTEP_SMALL_BYTES")? {
        a.small_bytes = b;
    }
    if let Some(b) = var("LOCKSTEP_PIPELINE_BYTES")? {
        a.pipeline_bytes = b;
    }
    Ok(a)
}

/// The bench mode: per size, `repeat` samples of the collective interleaved with samples of
/// the reference, each cut into [`CHUNKS`] alternating chunks (ABBA order) of about
/// `iters / CHUNKS` timed allreduces (each after a barrier) or reference transfers. Rank 0
/// measures the reference while the others wait at the next barrier. A sample's latency
/// percentiles are over all its allreduces (each iteration's time is the mean over ranks).
/// Worker 0 prints `RESULT [Samples, ...]`. With a `peer_cpu` (the CPU of rank 1), the tcp
/// reference's reading thread runs there, as rank 1 reads the subject's bytes.
fn bench(
    c: &mut Communicator,
    mut twin: Option<&mut Communicator>,
    cfg: &WorkerConfig,
    repeat: usize,
    peer_cpu: Option<usize>,
) -> Result<()> {
    let n = c.world();
    let mut out = Vec::new();
    for &bytes in &cfg.sizes {
        let mut x = vec![1.0f32; bytes / 4];
        let mut ps = None;
        let iters = cfg
            .iters
            .max((cfg.iters * (8 << 20) / bytes.max(1)).min(2000));
        let per_chunk = iters.div_ceil(CHUNKS);
        let mut reference = if c.rank() == 0 && twin.is_none() {
            Some(LocalReference::new(
                &cfg.transport,
                bytes,
                per_chunk,
                peer_cpu,
            )?)
        } else {
            None
        };
        for _ in 0..3 {
            reduce_once(c, &cfg.algo, &mut ps, &mut x)?;
        }
        // The plain twin runs the algorithm the subject runs at this size.
        let twin_algo = match cfg.algo.as_str() {
            "ps" => "ps".to_string(),
            a => c.resolve_algo(a.parse().ok(), bytes).to_string(),
        };
        let mut twin_ps = None;
        if let Some(t) = twin.as_deref_mut() {
            for _ in 0..3 {
                reduce_once(t, &twin_algo, &mut twin_ps, &mut x)?;
            }
            x.fill(1.0);
        }
        let mut times: Vec<Vec<f32>> = vec![Vec::new(); repeat];
        let refs = interleave(repeat, 2, CHUNKS, |step, rep| -> Result<Chunk> {
            if let (1, Some(t)) = (step, twin.as_deref_mut()) {
                return super::tls::plain_chunk(t, &twin_algo, &mut twin_ps, &mut x, per_chunk);
            }
            if step == 1 {
                return reference
                    .as_mut()
                    .map_or(Ok(Chunk::default()), LocalReference::chunk);
            }
            let mut chunk = vec![0f32; per_chunk];
            for t in chunk.iter_mut() {
                c.barrier()?;
                let start = Instant::now();
                reduce_once(c, &cfg.algo, &mut ps, &mut x)?;
                *t = start.elapsed().as_secs_f32() * 1e6;
                x.fill(1.0);
            }
            c.allreduce(&mut chunk, AllReduce::mean())?;
            times[rep].extend_from_slice(&chunk);
            Ok(Chunk::default())
        })?;
        let ran = if cfg.algo == "ps" {
            Algo::Auto
        } else {
            c.resolve_algo(cfg.algo.parse().ok(), bytes)
        };
        let mut s = Samples {
            bytes,
            iters: per_chunk * CHUNKS,
            algo: if cfg.algo == "ps" {
                "ps".into()
            } else {
                ran.to_string()
            },
            predicted_us: c
                .costs()
                .filter(|_| cfg.algo != "ps")
                .map(|k| cost::predict(ran, bytes, c.topology(), k, c.config()) * 1e6),
            reference_gbps: refs[1].iter().map(|g| g / 1e9).collect(),
            tcp: (c.rank() == 0 && cfg.transport != "shm")
                .then(|| super::tcpinfo::sockets(reference.as_ref().and_then(LocalReference::fd))),
            ..Samples::default()
        };
        for t in &mut times {
            s.add_repetition(t, n);
        }
        out.push(s);
    }
    if c.rank() == 0 {
        let json = serde_json::to_string(&out).map_err(BenchError::json("the result"))?;
        println!("RESULT {json}");
    }
    Ok(c.barrier()?)
}
