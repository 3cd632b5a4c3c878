//! `lockstep bench allreduce`: allreduce latency and bandwidth over N local processes, next to a
//! reference measured in the same run (a memcpy loop of the same size for shm, raw loopback
//! socket throughput for tcp), with the ratio busbw/reference.
//!
//! The parent runs a rendezvous [`Coordinator`] on loopback and starts N `lockstep bench-worker
//! --kind allreduce` processes of this binary, which build the mesh through it. The same worker
//! serves the multi-process tests (`tests/aggregate_*.rs`): the `mode` field of the JSON config
//! picks `bench`, `check` (print a digest of every result) or `loop` (allreduce until a peer
//! dies, then print the error). Bandwidths are in GB/s (1e9 bytes per second); busbw is algbw x
//! 2(n-1)/n, NCCL's definition.

use crate::bench::link::parse_size;
use crate::cli::{AllreduceBenchArgs, BenchWorkerArgs};
use lockstep_collective::{Algo, AllReduce, CollectiveConfig, Communicator, ParameterServer};
use lockstep_transport::{connect_mesh_via_coordinator, Coordinator, Listener, MeshConfig};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Message size in bytes.
    pub bytes: usize,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// bytes / median time.
    pub algbw_gbps: f64,
    /// algbw x 2(n-1)/n.
    pub busbw_gbps: f64,
    /// memcpy (shm) or raw socket (tcp) throughput at this size, same run.
    pub reference_gbps: f64,
    /// busbw / reference.
    pub ratio: f64,
}

/// The whole result, as `--json` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Number of processes.
    pub world: usize,
    /// tcp or shm.
    pub transport: String,
    /// ring, tree, ps or auto.
    pub algo: String,
    /// One row per size.
    pub rows: Vec<Row>,
}

fn token() -> Vec<u8> {
    std::env::var("LOCKSTEP_TOKEN")
        .unwrap_or_else(|_| "lockstep-bench".into())
        .into_bytes()
}

/// Parent side.
///
/// # Errors
/// A message naming what failed.
pub fn run(args: &AllreduceBenchArgs) -> Result<(), String> {
    let sizes = args
        .sizes
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    if args.world == 0 || !["tcp", "shm"].contains(&args.transport.as_str()) {
        return Err(format!(
            "need --world >= 1 and --transport tcp|shm, got {} and {}",
            args.world, args.transport
        ));
    }
    if args.algo != "ps" {
        args.algo.parse::<Algo>().map_err(|e| e.to_string())?;
    }
    let cfg = WorkerConfig {
        mode: "bench".into(),
        coordinator: String::new(),
        cluster: format!("bench{}", std::process::id()),
        transport: args.transport.clone(),
        algo: args.algo.clone(),
        sizes: sizes.clone(),
        iters: args.iters.max(1),
        peer_timeout_ms: 10_000,
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let outs = spawn_workers(&exe, cfg, args.world)?;
    let line = outs[0]
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or("worker 0 gave no result")?;
    let mut rows: Vec<Row> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    for row in &mut rows {
        row.reference_gbps = reference(&args.transport, row.bytes)?;
        row.ratio = row.busbw_gbps / row.reference_gbps;
    }
    let report = Report {
        world: args.world,
        transport: args.transport.clone(),
        algo: args.algo.clone(),
        rows,
    };
    print_table(&report);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "allreduce: world {}, transport {}, algo {}",
        r.world, r.transport, r.algo
    );
    println!(
        "{:>12} {:>10} {:>10} {:>11} {:>11} {:>13} {:>7}",
        "bytes", "p50_us", "p99_us", "algbw_GB/s", "busbw_GB/s", "reference_GB/s", "ratio"
    );
    for w in &r.rows {
        println!(
            "{:>12} {:>10.1} {:>10.1} {:>11.3} {:>11.3} {:>13.3} {:>7.3}",
            w.bytes, w.p50_us, w.p99_us, w.algbw_gbps, w.busbw_gbps, w.reference_gbps, w.ratio
        );
    }
}

/// Run a coordinator and `world` workers of `exe` (this binary) with `cfg`; their stdout, by
/// rank. Every worker is waited for (and killed after a deadline), so none is left running.
///
/// # Errors
/// When a worker cannot start, fails, or the mesh does not form.
pub fn spawn_workers(
    exe: &Path,
    mut cfg: WorkerConfig,
    world: usize,
) -> Result<Vec<String>, String> {
    let mut kids = start_workers(exe, &mut cfg, world)?;
    let (coord, kids_ref) = (kids.0.take(), &mut kids.1);
    let served = coord.map(|c| {
        c.serve(world, Duration::from_secs(30))
            .map_err(|e| e.to_string())
    });
    let mut outs = Vec::new();
    let mut failed = None;
    for (rank, k) in kids_ref.drain(..).enumerate() {
        let (status, out) = wait_output(k, Duration::from_secs(300))?;
        if !status.success() {
            failed.get_or_insert(format!("worker {rank} failed: {status}"));
        }
        outs.push(out);
    }
    if let Some(Err(e)) = served {
        return Err(e);
    }
    failed.map_or(Ok(outs), Err)
}

/// Bound coordinator (to be served) and the started children.
pub type Started = (Option<Coordinator>, Vec<Child>);

/// Bind a coordinator and start `world` workers; the caller serves the coordinator.
///
/// # Errors
/// When the coordinator cannot bind or a worker cannot start (started ones are killed).
pub fn start_workers(exe: &Path, cfg: &mut WorkerConfig, world: usize) -> Result<Started, String> {
    let coord =
        Coordinator::bind("127.0.0.1:0", &cfg.cluster, &token()).map_err(|e| e.to_string())?;
    cfg.coordinator = coord.local_addr().map_err(|e| e.to_string())?.to_string();
    let json = serde_json::to_string(&cfg).map_err(|e| e.to_string())?;
    let mut kids: Vec<Child> = Vec::new();
    for rank in 0..world {
        let child = Command::new(exe)
            .args([
                "bench-worker",
                "--kind",
                "allreduce",
                "--rank",
                &rank.to_string(),
                "--config",
                &json,
            ])
            .stdout(Stdio::piped())
            .spawn();
        match child {
            Ok(c) => kids.push(c),
            Err(e) => {
                for mut k in kids {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                return Err(format!("spawning worker {rank}: {e}"));
            }
        }
    }
    Ok((Some(coord), kids))
}

/// Wait for `child` at most `limit` (then kill it); its status and stdout.
///
/// # Errors
/// When waiting fails.
pub fn wait_output(
    mut child: Child,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok((status, reader.join().unwrap_or_default()))
}

/// Worker side.
///
/// # Errors
/// A message naming what failed.
pub fn worker(args: &BenchWorkerArgs) -> Result<(), String> {
    let cfg: WorkerConfig =
        serde_json::from_str(&args.config).map_err(|e| format!("bad worker config: {e}"))?;
    let mut m = MeshConfig::new(
        &cfg.cluster,
        &token(),
        &format!("n{}", args.rank),
        args.rank,
        vec![],
    );
    m.transport = cfg
        .transport
        .parse()
        .map_err(|e: lockstep_transport::Error| e.to_string())?;
    m.peer_timeout_ms = cfg.peer_timeout_ms;
    m.heartbeat_ms = (cfg.peer_timeout_ms / 6).max(10);
    let l = Listener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let g = connect_mesh_via_coordinator(&cfg.coordinator, &m, l).map_err(|e| e.to_string())?;
    let mut c = Communicator::new(g, aggregate_config()?);
    match cfg.mode.as_str() {
        "bench" => bench(&mut c, &cfg),
        "check" => check(&mut c, &cfg),
        "loop" => run_loop(&mut c, &cfg),
        m => Err(format!("unknown allreduce worker mode {m:?}")),
    }
}

/// The default settings, with `LOCKSTEP_CHUNK_BYTES` and `LOCKSTEP_SMALL_BYTES` (sizes such as
/// `1MiB`) overriding `chunk_bytes` and `small_bytes` when set (to measure other settings).
fn aggregate_config() -> Result<CollectiveConfig, String> {
    let mut a = CollectiveConfig::default();
    let var = |name: &str| std::env::var(name).ok().map(|v| parse_size(&v)).transpose();
    if let Some(b) = var("LOCKSTEP_CHUNK_BYTES")? {
        a.chunk_bytes = b.max(4);
    }
    if let Some(b) = var("LOCKSTEP_SMALL_BYTES")? {
        a.small_bytes = b;
    }
    Ok(a)
}

/// One allreduce (or parameter-server round trip) of `x` with `algo`.
fn reduce_once(
    c: &mut Communicator,
    algo: &str,
    ps: &mut Option<ParameterServer>,
    x: &mut [f32],
) -> Result<(), String> {
    if algo == "ps" {
        let ps = match ps {
            Some(p) => p,
            None => ps.insert(
                ParameterServer::new(
                    x.len(),
                    &[0],
                    &(0..c.world()).collect::<Vec<_>>(),
                    c.world(),
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        // The server's update turns the mean back into a sum, so ps is compared like the others.
        let (grads, n) = (x.to_vec(), c.world() as f32);
        let update =
            |_, p: &mut [f32], g: &[f32]| p.iter_mut().zip(g).for_each(|(p, g)| *p = g * n);
        return ps.step(c, &grads, x, update).map_err(|e| e.to_string());
    }
    let algo: Algo = algo
        .parse()
        .map_err(|e: lockstep_collective::CollectiveError| e.to_string())?;
    c.allreduce(x, AllReduce::sum().algo(algo))
        .map_err(|e| e.to_string())
}

fn bench(c: &mut Communicator, cfg: &WorkerConfig) -> Result<(), String> {
    let n = c.world();
    let mut rows = Vec::new();
    for &bytes in &cfg.sizes {
        let len = bytes / 4;
        let mut x = vec![1.0f32; len];
        let mut ps = None;
        let iters = cfg
            .iters
            .max((cfg.iters * (8 << 20) / bytes.max(1)).min(2000));
        let mut times = vec![0f32; iters];
        for i in 0..iters + 3 {
            c.barrier().map_err(|e| e.to_string())?;
            let t = Instant::now();
            reduce_once(c, &cfg.algo, &mut ps, &mut x)?;
            if i >= 3 {
                times[i - 3] = t.elapsed().as_secs_f32() * 1e6;
            }
            x.fill(1.0);
        }
        c.allreduce(&mut times, AllReduce::mean())
            .map_err(|e| e.to_string())?;
        times.sort_by(f32::total_cmp);
        let pct = |p: f64| f64::from(times[((times.len() - 1) as f64 * p).round() as usize]);
        let (p50, p99) = (pct(0.5), pct(0.99));
        let algbw = bytes as f64 / (p50 * 1e-6) / 1e9;
        let busbw = algbw * 2.0 * (n - 1) as f64 / n as f64;
        rows.push(Row {
            bytes,
            p50_us: p50,
            p99_us: p99,
            algbw_gbps: algbw,
            busbw_gbps: busbw,
            reference_gbps: 0.0,
            ratio: 0.0,
        });
    }
    if c.rank() == 0 {
        println!(
            "RESULT {}",
            serde_json::to_string(&rows).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

/// Deterministic input of `rank` (the tests recompute it).
pub fn input(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 13) % 101) as f32 * 0.37 - 17.0 + rank as f32 * 1e-3)
        .collect()
}

/// For every size (element count): `CHECK <len> <fnv of result bits> <max relative error>`.
fn check(c: &mut Communicator, cfg: &WorkerConfig) -> Result<(), String> {
    let n = c.world();
    for &len in &cfg.sizes {
        let mut x = input(c.rank(), len);
        let mut ps = None;
        reduce_once(c, &cfg.algo, &mut ps, &mut x)?;
        let mut err = 0f64;
        let inputs: Vec<Vec<f32>> = (0..n).map(|r| input(r, len)).collect();
        for (i, &v) in x.iter().enumerate() {
            let exact: f64 = inputs.iter().map(|v| f64::from(v[i])).sum();
            err = err.max((f64::from(v) - exact).abs() / (1.0 + exact.abs()));
        }
        let digest = x.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
            (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
        });
        println!("CHECK {len} {digest:016x} {err:e}");
    }
    c.barrier().map_err(|e| e.to_string())
}

/// Allreduce `sizes[0]` elements until a collective fails; print `STARTED` once the first one
/// is done, then `ERR <failed rank> <ms since the last success> <message>` and exit 0.
fn run_loop(c: &mut Communicator, cfg: &WorkerConfig) -> Result<(), String> {
    let len = cfg.sizes.first().copied().unwrap_or(1 << 20);
    let algo: Algo = cfg
        .algo
        .parse()
        .map_err(|e: lockstep_collective::CollectiveError| e.to_string())?;
    let mut x = input(c.rank(), len);
    let mut last = Instant::now();
    for i in 0u64.. {
        if let Err(e) = c.allreduce(&mut x, AllReduce::mean().algo(algo)) {
            let failed = e.failed_rank().map_or("?".to_string(), |r| r.to_string());
            println!("ERR {failed} {} {e}", last.elapsed().as_millis());
            let _ = std::io::stdout().flush();
            // Keep the links open a moment so the abort notice reaches every survivor.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(());
        }
        last = Instant::now();
        if i == 0 {
            println!("STARTED");
            let _ = std::io::stdout().flush();
        }
    }
    Ok(())
}

/// The same-run reference at `bytes`: memcpy (shm) or loopback socket throughput (tcp), GB/s.
/// One untimed pass first, so page faults of fresh buffers and TCP slow start are not counted
/// (the collective is timed warm too).
///
/// # Errors
/// Socket errors (tcp).
pub fn reference(transport: &str, bytes: usize) -> Result<f64, String> {
    let bytes = bytes.max(1);
    let iters = ((256 << 20) / bytes).clamp(5, 20_000);
    let src = vec![1u8; bytes];
    if transport == "shm" {
        let mut dst = vec![0u8; bytes];
        dst.copy_from_slice(&src);
        let t = Instant::now();
        for _ in 0..iters {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        return Ok((bytes * iters) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; bytes];
        s.read_exact(&mut buf)?;
        s.write_all(&[1])?;
        for _ in 0..iters {
            s.read_exact(&mut buf)?;
        }
        s.write_all(&[1])
    });
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let mut one = [0u8; 1];
    s.write_all(&src).map_err(|e| e.to_string())?;
    s.read_exact(&mut one).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..iters {
        s.write_all(&src).map_err(|e| e.to_string())?;
    }
    s.read_exact(&mut one).map_err(|e| e.to_string())?;
    let gbps = (bytes * iters) as f64 / t.elapsed().as_secs_f64() / 1e9;
    reader
        .join()
        .map_err(|_| "reference reader panicked".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(gbps)
}
