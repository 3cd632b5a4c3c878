//! The alpha-beta cost model: a message of `m` bytes over a link takes `alpha + m * beta`. Two
//! link classes are enough for the algorithms here: *local* (ranks on one host, shared memory)
//! and *remote* (the host's network link, whose `beta` is for the whole link: flows that leave a
//! host at the same time share it). [`predict`] gives each algorithm's time from the
//! [`Topology`] and the [`LinkCosts`]; [`choose`] picks the fastest, which is what
//! [`Algo::Auto`] does once the communicator has measured costs (see
//! [`Communicator::probe_links`](crate::Communicator::probe_links)); [`bucket_bytes`] sizes
//! gradient buckets so that the latency term stays a small share of each bucket's time.
//!
//! The formulas, for `n` ranks on `H` hosts with at most `L` ranks per host, `S` slices and
//! `f` flows per host link (the busiest host's count of ring edges that leave it):
//! - ring: `2(n-1)` steps of `m/n` bytes, each as slow as the slower of a local hop and a remote
//!   hop carrying `f` flows: `2(n-1) * max(a_l + m/n b_l, a_r + f m/n b_r)`;
//! - tree (recursive doubling): per step `a + f m b` of the step's class (`+2` whole-message
//!   steps to fold in a world that is not a power of two);
//! - hierarchical, in `K` pipeline chunks of `m_k = m/K` bytes (see
//!   [`hier::chunks`](crate::hier::chunks)): per chunk a local phase before the network
//!   (reduce-scatter, `(L-1)(a_l + m_k/L b_l)`; on uneven hosts a local allreduce, twice that),
//!   the rings across hosts `2(H-1)(a_r + m_k/H b_r)` (the `S` rings share the link) and a local
//!   phase after (allgather, as the reduce-scatter; on uneven hosts a broadcast
//!   `ceil(log2 L)(S a_l + m_k b_l)`). The chunks run in `K + 2` stages, stage `s` overlapping
//!   the network phase of chunk `s-1` with the local phases after chunk `s-2` and before chunk
//!   `s`, so the time is the sum over stages of the slower of the two: about
//!   `max(network, local) + ` one chunk's local phases (the pipeline's fill and drain). With
//!   `K = 1` it is the three phases one after the other.
//!
//! Where the work is CPU-bound rather than link-bound (the reduction, or copying through the
//! kernel, is slower than the link), the measured `beta` already includes it: the model fits
//! what the probe sees, it does not assume wire speed.

use super::{Algo, CollectiveConfig, Topology};

/// One link class: `alpha` seconds of latency per message, `beta` seconds per byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaBeta {
    /// Seconds per message.
    pub alpha: f64,
    /// Seconds per byte.
    pub beta: f64,
}

impl AlphaBeta {
    /// `alpha + bytes * beta`.
    pub fn time(&self, bytes: f64) -> f64 {
        self.alpha + bytes * self.beta
    }

    /// The bandwidth `1 / beta`, in Gbit/s.
    pub fn gbit(&self) -> f64 {
        8e-9 / self.beta.max(1e-30)
    }
}

/// The costs of the two link classes. A class nobody measured is `None`; the model then uses
/// the other one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkCosts {
    /// Between ranks of one host (per flow).
    pub local: Option<AlphaBeta>,
    /// A host's network link (`beta` for the whole link).
    pub remote: Option<AlphaBeta>,
}

impl LinkCosts {
    fn local(&self) -> AlphaBeta {
        self.local.or(self.remote).unwrap_or(AlphaBeta {
            alpha: 0.0,
            beta: 0.0,
        })
    }

    fn remote(&self) -> AlphaBeta {
        self.remote.or(self.local).unwrap_or(AlphaBeta {
            alpha: 0.0,
            beta: 0.0,
        })
    }
}

/// What [`choose`] picked and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The fastest algorithm.
    pub algo: Algo,
    /// Its predicted time in seconds.
    pub seconds: f64,
    /// Every candidate with its predicted time, fastest first.
    pub candidates: Vec<(Algo, f64)>,
}

/// Predicted time in seconds of one allreduce of `bytes` with `algo` (`Auto` is the choice).
pub fn predict(
    algo: Algo,
    bytes: usize,
    topo: &Topology,
    costs: &LinkCosts,
    config: &CollectiveConfig,
) -> f64 {
    let n = topo.world();
    if n <= 1 {
        return 0.0;
    }
    let m = bytes as f64;
    let (lo, re) = (costs.local(), costs.remote());
    match algo {
        Algo::Auto => choose(bytes, topo, costs, config).seconds,
        Algo::Ring => {
            let next: Vec<Option<usize>> = (0..n).map(|r| Some((r + 1) % n)).collect();
            let f = topo.flows_per_host(&next);
            let nf = n as f64;
            let local_step = if topo.max_local() > 1 {
                lo.time(m / nf)
            } else {
                0.0
            };
            let remote_step = if f > 0 {
                re.alpha + f as f64 * m / nf * re.beta
            } else {
                0.0
            };
            2.0 * (nf - 1.0) * local_step.max(remote_step)
        }
        Algo::Tree => tree_time(m, topo, lo, re),
        Algo::Hier => hier_time(
            m,
            topo,
            lo,
            re,
            super::hier::chunks(bytes, topo.max_local(), config),
        ),
    }
}

/// The hierarchical allreduce in `k` pipelined chunks: stage `s` of `k + 2` overlaps the
/// network phase of chunk `s-1` with the local phases after chunk `s-2` and before chunk `s`,
/// and takes as long as the slower of the two; `k = 1` is the three phases one after the other.
fn hier_time(m: f64, topo: &Topology, lo: AlphaBeta, re: AlphaBeta, k: usize) -> f64 {
    let (h, l) = (topo.hosts() as f64, topo.max_local() as f64);
    let mk = m / k as f64;
    if topo.hosts() == 1 {
        return 2.0 * (l - 1.0) * lo.time(m / l);
    }
    let cross = 2.0 * (h - 1.0) * re.time(mk / h);
    let (before, after) = if topo.slices() == topo.max_local() {
        // Reduce-scatter and allgather within hosts: half the local ring each.
        let half = (l - 1.0) * lo.time(mk / l);
        (half, half)
    } else {
        let depth = l.log2().ceil().max(0.0);
        let bcast = depth * (topo.slices() as f64 * lo.alpha + mk * lo.beta);
        (2.0 * (l - 1.0) * lo.time(mk / l), bcast)
    };
    (0..k + 2)
        .map(|s| {
            let net = if (1..=k).contains(&s) { cross } else { 0.0 };
            let local = if s < k { before } else { 0.0 }
                + if (2..k + 2).contains(&s) { after } else { 0.0 };
            f64::max(net, local)
        })
        .sum()
}

fn tree_time(m: f64, topo: &Topology, lo: AlphaBeta, re: AlphaBeta) -> f64 {
    let n = topo.world();
    let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let step = |next: &[Option<usize>]| {
        let f = topo.flows_per_host(next);
        if f > 0 {
            re.alpha + f as f64 * m * re.beta
        } else {
            lo.time(m)
        }
    };
    let mut t = 0.0;
    let mut mask = 1;
    while mask < p {
        let next: Vec<Option<usize>> = (0..n).map(|r| (r < p).then_some(r ^ mask)).collect();
        t += step(&next);
        mask <<= 1;
    }
    if p < n {
        let fold: Vec<Option<usize>> = (0..n).map(|r| (r >= p).then(|| r - p)).collect();
        t += 2.0 * step(&fold);
    }
    t
}

/// The fastest of ring, tree and (on a hierarchical topology) hierarchical for `bytes`.
pub fn choose(
    bytes: usize,
    topo: &Topology,
    costs: &LinkCosts,
    config: &CollectiveConfig,
) -> Choice {
    let mut algos = vec![Algo::Ring, Algo::Tree];
    if topo.is_hierarchical() {
        algos.push(Algo::Hier);
    }
    let mut candidates: Vec<(Algo, f64)> = algos
        .into_iter()
        .map(|a| (a, predict(a, bytes, topo, costs, config)))
        .collect();
    candidates.sort_by(|a, b| a.1.total_cmp(&b.1));
    Choice {
        algo: candidates[0].0,
        seconds: candidates[0].1,
        candidates,
    }
}

/// The smallest gradient bucket (bytes, a multiple of 4 KiB, at least 64 KiB, at most
/// `total`) whose allreduce spends at most `overhead` (e.g. 0.1) of its time on the latency
/// term: with `T(m) = A + m B` fitted from the chosen algorithm's predictions at two sizes,
/// `A / T(m) <= overhead` gives `m >= A (1 - overhead) / (overhead B)`.
pub fn bucket_bytes(
    total: usize,
    topo: &Topology,
    costs: &LinkCosts,
    config: &CollectiveConfig,
    overhead: f64,
) -> usize {
    let (m1, m2) = (1usize << 20, 64usize << 20);
    let (t1, t2) = (
        choose(m1, topo, costs, config).seconds,
        choose(m2, topo, costs, config).seconds,
    );
    let b = ((t2 - t1) / (m2 - m1) as f64).max(1e-15);
    let a = (t1 - m1 as f64 * b).max(0.0);
    let o = overhead.clamp(1e-3, 0.999);
    let m = (a * (1.0 - o) / (o * b)).ceil() as usize;
    m.next_multiple_of(4096)
        .clamp(64 << 10, total.max(64 << 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gbit(g: f64, alpha_us: f64) -> AlphaBeta {
        AlphaBeta {
            alpha: alpha_us * 1e-6,
            beta: 8.0 / (g * 1e9),
        }
    }

    fn cfg() -> CollectiveConfig {
        CollectiveConfig::default()
    }

    fn cluster() -> LinkCosts {
        LinkCosts {
            local: Some(gbit(40.0, 5.0)),
            remote: Some(gbit(1.0, 60.0)),
        }
    }

    #[test]
    fn hierarchical_wins_large_messages_on_a_multi_host_topology() {
        let t = Topology::uniform(8, 2);
        let c = choose(7_400_000, &t, &cluster(), &cfg());
        assert_eq!(c.algo, Algo::Hier, "{c:?}");
        let ring = predict(Algo::Ring, 7_400_000, &t, &cluster(), &cfg());
        // 2(n-1)/n vs 2(H-1)/H of the data over a host link: 1.75 / 1.5.
        assert!(ring / c.seconds > 1.1, "{ring} vs {}", c.seconds);
        // The hierarchical bound: 2(H-1)/H * bytes / rate = 88.8 ms at 1 Gbit/s.
        let bound = 1.5 * 7_400_000.0 * 8.0 / 1e9;
        assert!((c.seconds / bound - 1.0).abs() < 0.1, "{}", c.seconds);
    }

    #[test]
    fn tree_wins_small_messages_and_ring_wins_large_ones_on_one_host() {
        let t = Topology::single_host(4);
        let costs = LinkCosts {
            local: Some(gbit(40.0, 5.0)),
            remote: None,
        };
        assert_eq!(choose(1024, &t, &costs, &cfg()).algo, Algo::Tree);
        assert_eq!(choose(64 << 20, &t, &costs, &cfg()).algo, Algo::Ring);
        // One host: nothing hierarchical to choose.
        assert!(choose(64 << 20, &t, &costs, &cfg())
            .candidates
            .iter()
            .all(|(a, _)| *a != Algo::Hier));
    }

    #[test]
    fn one_rank_per_host_is_the_flat_ring() {
        let t = Topology::one_per_host(4);
        let c = choose(16 << 20, &t, &cluster(), &cfg());
        assert_eq!(c.algo, Algo::Ring);
        let expect = 2.0 * 3.0 * gbit(1.0, 60.0).time((16 << 20) as f64 / 4.0);
        assert!((c.seconds / expect - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bucket_size_grows_with_latency() {
        let t = Topology::uniform(8, 2);
        let fast = bucket_bytes(100 << 20, &t, &cluster(), &cfg(), 0.1);
        let slow = LinkCosts {
            remote: Some(gbit(1.0, 600.0)),
            ..cluster()
        };
        let slow = bucket_bytes(100 << 20, &t, &slow, &cfg(), 0.1);
        assert!(slow > fast, "{slow} vs {fast}");
        assert_eq!(fast % 4096, 0);
    }

    #[test]
    fn pipelining_hides_slow_local_phases_behind_the_network() {
        // What the probe measured on 4 hosts x 2 workers at 1 Gbit/s with 8 processes on 2
        // cores: shared memory at 3.2 Gbit/s, the host link at 1.04 Gbit/s.
        let t = Topology::uniform(8, 2);
        let costs = LinkCosts {
            local: Some(gbit(3.2, 5.9)),
            remote: Some(gbit(1.04, 47.3)),
        };
        let m = 7_454_760;
        let flat = CollectiveConfig {
            pipeline_bytes: 0,
            ..cfg()
        };
        let (ring, hier1) = (
            predict(Algo::Ring, m, &t, &costs, &cfg()),
            predict(Algo::Hier, m, &t, &costs, &flat),
        );
        let hier = predict(Algo::Hier, m, &t, &costs, &cfg());
        // Unpipelined, the local phases (2 x 9.3 ms) add to the network's 86 ms and the flat
        // ring wins; in 8 chunks they hide behind it but for the fill and the drain.
        assert_eq!(
            choose(m, &t, &costs, &flat).algo,
            Algo::Ring,
            "{ring} vs {hier1}"
        );
        assert_eq!(
            choose(m, &t, &costs, &cfg()).algo,
            Algo::Hier,
            "{ring} vs {hier}"
        );
        let network = 2.0 * 3.0 * gbit(1.04, 47.3).time(m as f64 / 4.0);
        let local = 2.0 * gbit(3.2, 5.9).time(m as f64 / 2.0);
        assert!((hier1 - (network + local)).abs() < 1e-9, "{hier1}");
        let fill = local / 8.0;
        assert!(
            hier > network && hier < network + fill + 8.0 * 6.0 * 47.3e-6,
            "{hier}"
        );
    }
}
