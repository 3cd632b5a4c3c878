//! The test-only modes of the allreduce bench worker (`check`: print a digest of every result;
//! `loop`: allreduce until a peer dies, then print the error) and the one-collective helper the
//! bench shares. The multi-process tests (`tests/aggregate_*.rs`) start `lockstep bench-worker
//! --kind allreduce` with one of these modes; the benchmark itself lives in [`super::allreduce`].

use super::allreduce::WorkerConfig;
use crate::Result;
use lockstep_collective::{Algo, AllReduce, Communicator, ParameterServer};
use std::io::Write;
use std::time::{Duration, Instant};

/// One allreduce (or parameter-server round trip) of `x` with `algo`.
pub(crate) fn reduce_once(
    c: &mut Communicator,
    algo: &str,
    ps: &mut Option<ParameterServer>,
    x: &mut [f32],
) -> Result<()> {
    if algo == "ps" {
        let ps = match ps {
            Some(p) => p,
            None => ps.insert(ParameterServer::new(
                x.len(),
                &[0],
                &(0..c.world()).collect::<Vec<_>>(),
                c.world(),
            )?),
        };
        // The server's update turns the mean back into a sum, so ps is compared like the others.
        let (grads, n) = (x.to_vec(), c.world() as f32);
        let update =
            |_, p: &mut [f32], g: &[f32]| p.iter_mut().zip(g).for_each(|(p, g)| *p = g * n);
        return Ok(ps.step(c, &grads, x, update)?);
    }
    let algo: Algo = algo.parse()?;
    Ok(c.allreduce(x, AllReduce::sum().algo(algo))?)
}

/// Deterministic input of `rank` (the tests recompute it).
pub fn input(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 13) % 101) as f32 * 0.37 - 17.0 + rank as f32 * 1e-3)
        .collect()
}

/// For every size (element count): `CHECK <len> <fnv of result bits> <max relative error>`.
pub(crate) fn check(c: &mut Communicator, cfg: &WorkerConfig) -> Result<()> {
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
    Ok(c.barrier()?)
}

/// Allreduce `sizes[0]` elements until a collective fails; print `STARTED` once the first one
/// is done, then `ERR <failed rank> <ms since the last success> <message>` and exit 0.
pub(crate) fn run_loop(c: &mut Communicator, cfg: &WorkerConfig) -> Result<()> {
    let len = cfg.sizes.first().copied().unwrap_or(1 << 20);
    let algo: Algo = cfg.algo.parse()?;
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

/// Before the first collective: the hosts (`ranks_per_host`, else all on one) and, for
/// `auto`, the link probe, whose fitted costs rank 0 prints.
pub(crate) fn prepare(c: &mut Communicator, cfg: &WorkerConfig) -> Result<()> {
    let topo = if cfg.ranks_per_host > 0 {
        lockstep_collective::Topology::uniform(c.world(), cfg.ranks_per_host)
    } else {
        lockstep_collective::Topology::single_host(c.world())
    };
    c.set_topology(topo)?;
    // Only the bench mode probes: the checks compare auto's bits between runs, and a measured
    // choice may differ from run to run.
    if cfg.algo == "auto" && cfg.mode == "bench" && c.world() > 1 {
        let report = c.probe_links(lockstep_collective::ProbeOptions::default())?;
        if c.rank() == 0 {
            eprintln!("link probe: {:?}", report.costs);
        }
    }
    Ok(())
}
