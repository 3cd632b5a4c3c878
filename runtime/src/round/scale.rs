//! Many workers per host: before the first round a worker tells its [`Communicator`] which host
//! every rank runs on, and with `cluster.allreduce = "auto"` measures the links (a bounded probe,
//! see [`Communicator::probe_links`]) so that each allreduce picks ring, tree or hierarchical
//! from the alpha-beta cost model. The measured costs, the choice for the model's gradient and the
//! bucket size the model recommends are logged.
//!
//! Hosts come from the IP of each rank's data address (workers on one host register with the
//! same IP), unless the manifest forces `cluster.ranks_per_host`.

use crate::error::RuntimeError;
use crate::manifest::Manifest;
use lockstep_collective::{cost, Algo, Communicator, ProbeOptions, Topology};

/// The hosts of the mesh members `peers` (name, data address), by rank.
pub(crate) fn topology(m: &Manifest, peers: &[(String, String)]) -> Topology {
    if m.cluster.ranks_per_host > 0 {
        return Topology::uniform(peers.len(), m.cluster.ranks_per_host);
    }
    let ips: Vec<Option<std::net::IpAddr>> = peers
        .iter()
        .map(|(_, a)| a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .collect();
    Topology::from_keys(&ips)
}

/// Set the topology and the algorithm on `comm`; with `auto` on more than one rank, probe the
/// links and log what was measured and chosen for `grad_bytes` of gradients. Returns the
/// smallest gradient bucket (bytes) the cost model recommends for the measured links, 0 when
/// nothing was measured (every model bucket is then reduced on its own).
///
/// # Errors
/// When the probe fails (a peer died or sent mismatching frames).
pub(crate) fn prepare(
    m: &Manifest,
    comm: &mut Communicator,
    peers: &[(String, String)],
    grad_bytes: usize,
) -> Result<usize, RuntimeError> {
    let topo = topology(m, peers);
    comm.set_topology(topo.clone())?;
    let algo: Algo = m.cluster.allreduce.parse()?;
    comm.config_mut().algo = algo;
    if algo != Algo::Auto || comm.world() < 2 {
        tracing::info!(algo = %algo, hosts = topo.hosts(), "allreduce algorithm set by the manifest");
        return Ok(0);
    }
    if topo.hosts() == 1 {
        // One host: every link is shared memory, where the fixed crossover (tree below
        // `small_bytes`, ring above, measured with `bench allreduce`) beats the probe's choice
        // for training buckets: on the MLP bench the probe picked tree and 2 workers trained at
        // 1.11x one worker, against 1.34x with the ring. The probe is for links between hosts.
        tracing::info!(
            hosts = 1,
            "one host: allreduce by the shared-memory crossover (tree below 32 KiB, ring above)"
        );
        return Ok(0);
    }
    let report = comm.probe_links(ProbeOptions::default())?;
    for s in &report.samples {
        tracing::debug!(
            pattern = s.pattern,
            rank = s.rank,
            next = s.next,
            local = s.local,
            flows = s.flows,
            alpha_us = s.alpha * 1e6,
            gbit = 8e-9 / s.beta,
            "link probe"
        );
    }
    let show = |c: Option<lockstep_collective::AlphaBeta>| {
        c.map_or("-".to_string(), |c| {
            format!("alpha {:.1} us, {:.2} Gbit/s", c.alpha * 1e6, c.gbit())
        })
    };
    let choice = cost::choose(grad_bytes, &topo, &report.costs, comm.config());
    let bucket = cost::bucket_bytes(grad_bytes, &topo, &report.costs, comm.config(), 0.1);
    if comm.rank() == 0 {
        let others: Vec<String> = choice
            .candidates
            .iter()
            .map(|(a, t)| format!("{a} {:.2} ms", t * 1e3))
            .collect();
        tracing::info!(
            hosts = topo.hosts(),
            ranks_per_host = topo.max_local(),
            local = %show(report.costs.local),
            remote = %show(report.costs.remote),
            grad_bytes,
            chosen = %choice.algo,
            predicted = %others.join(", "),
            bucket_bytes = bucket,
            hier_chunks = lockstep_collective::hier::chunks(grad_bytes, topo.max_local(), comm.config()),
            "allreduce chosen from the link probe; model buckets are joined up to bucket_bytes"
        );
    }
    Ok(bucket)
}
