//! The start-up link probe: measure the latency and bandwidth of the links the allreduce
//! algorithms use, so that [`Algo::Auto`](crate::Algo::Auto) chooses from measurements (see
//! [`crate::cost`]) rather than from fixed thresholds.
//!
//! The probe runs a few *ring patterns*, every rank at once, because that is how the algorithms
//! load the links (and flows that leave a host together share its link): the flat ring
//! `r -> r+1`, and on a hierarchical topology the rings within hosts and the rings across hosts
//! of the hierarchical allreduce. In each pattern every member
//! - ping-pongs `pings` small frames with its successor (send a ping right, answer the left
//!   neighbour's ping, wait for the pong): `alpha` is half the fastest round trip;
//! - sends `bytes` to its successor twice (a warm-up, then the measured one) and waits for its
//!   acknowledgement: `beta` is `(t - 2 alpha) / bytes` for the faster transfer.
//!
//! Every rank then shares its samples with everyone (a tree allreduce of a table with one row
//! per rank and pattern), so every rank derives the same [`LinkCosts`] and makes the same
//! choice: the local class is the median of the links within hosts; the remote class the
//! median of the links across hosts, with `beta` divided by the number of flows that left the
//! host at once, i.e. `beta` of the whole host link.
//!
//! Time bound: per pattern `pings` round trips and `2 * bytes` per link; at 1 Gbit/s and the
//! default 4 MiB, about 70 ms per pattern.

use super::comm::{Call, Communicator};
use super::cost::{AlphaBeta, LinkCosts};
use super::{Algo, AllReduce, CollectiveError};
use lockstep_tensor::{fingerprint_dims, DType};
use lockstep_transport::Op;
use std::time::Instant;

/// How much the probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Round trips per pattern (the fastest counts).
    pub pings: usize,
    /// Bytes of the bandwidth transfer.
    pub bytes: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            pings: 8,
            bytes: 4 << 20,
        }
    }
}

/// One measured link: `rank -> next` in ring pattern `pattern`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    /// Pattern name: `ring`, `local` or `cross`.
    pub pattern: &'static str,
    /// The sender.
    pub rank: usize,
    /// Its successor in the pattern.
    pub next: usize,
    /// True when both are on one host.
    pub local: bool,
    /// Flows that left the sender's host at once in this pattern (0 for a local link).
    pub flows: usize,
    /// Seconds per message.
    pub alpha: f64,
    /// Seconds per byte of this one flow.
    pub beta: f64,
}

/// What [`Communicator::probe_links`] measured: every link, and the fitted classes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// Every measured link (identical on every rank).
    pub samples: Vec<LinkSample>,
    /// The fitted link classes (identical on every rank).
    pub costs: LinkCosts,
}

/// Values per rank and pattern in the shared table.
const FIELDS: usize = 2;

impl Communicator {
    /// Measure the links (see the module docs), set the fitted costs on this communicator (so
    /// that `Algo::Auto` uses them) and return them. Every rank must call it at the same point,
    /// after [`Communicator::set_topology`].
    ///
    /// # Errors
    /// As [`Communicator::allreduce`].
    pub fn probe_links(&mut self, opts: ProbeOptions) -> Result<ProbeReport, CollectiveError> {
        let n = self.world();
        let topo = self.topology().clone();
        let mut patterns: Vec<(&'static str, Vec<Option<usize>>)> = vec![(
            "ring",
            (0..n).map(|r| (n > 1).then_some((r + 1) % n)).collect(),
        )];
        if topo.is_hierarchical() {
            let mut local = vec![None; n];
            for h in 0..topo.hosts() {
                let l = topo.local(h);
                for (i, &r) in l.iter().enumerate() {
                    local[r] = (l.len() > 1).then(|| l[(i + 1) % l.len()]);
                }
            }
            let mut cross = vec![None; n];
            for i in 0..topo.slices() {
                let c = topo.cross(i);
                for (j, &r) in c.iter().enumerate() {
                    cross[r] = Some(c[(j + 1) % c.len()]);
                }
            }
            patterns.push(("local", local));
            patterns.push(("cross", cross));
        }
        let mut table = vec![0f32; n * patterns.len() * FIELDS];
        let me = self.rank();
        for (k, (_, next)) in patterns.iter().enumerate() {
            if let Some(nx) = next[me] {
                let prev = next.iter().position(|x| *x == Some(me)).unwrap_or(nx);
                let (alpha, beta) = self.probe_pair(nx, prev, opts)?;
                let at = (me * patterns.len() + k) * FIELDS;
                table[at] = alpha as f32;
                table[at + 1] = beta as f32;
            } else {
                self.probe_idle(next, opts)?;
            }
        }
        self.allreduce(&mut table, AllReduce::sum().algo(Algo::Tree))?;
        let mut samples = Vec::new();
        for (k, (name, next)) in patterns.iter().enumerate() {
            for r in 0..n {
                let Some(nx) = next[r] else { continue };
                let local = topo.host_of(r) == topo.host_of(nx);
                let at = (r * patterns.len() + k) * FIELDS;
                samples.push(LinkSample {
                    pattern: name,
                    rank: r,
                    next: nx,
                    local,
                    flows: if local { 0 } else { flows_from(&topo, next, r) },
                    alpha: f64::from(table[at]),
                    beta: f64::from(table[at + 1]),
                });
            }
        }
        let costs = fit(&samples);
        self.set_costs(Some(costs));
        Ok(ProbeReport { samples, costs })
    }

    /// Ping-pong with `next` (answering `prev`), then two timed transfers.
    fn probe_pair(
        &mut self,
        next: usize,
        prev: usize,
        opts: ProbeOptions,
    ) -> Result<(f64, f64), CollectiveError> {
        let small = self.begin(Op::Bench, fingerprint_dims(&[8]), DType::U8.to_wire())?;
        let mut buf = [0u8; 8];
        let mut rtt = f64::INFINITY;
        for _ in 0..opts.pings.max(1) {
            let t0 = Instant::now();
            self.round_trip(&small, next, prev, &mut buf)?;
            rtt = rtt.min(t0.elapsed().as_secs_f64());
        }
        let alpha = rtt / 2.0;
        let big = self.begin(
            Op::Bench,
            fingerprint_dims(&[opts.bytes]),
            DType::U8.to_wire(),
        )?;
        let out = vec![0u8; opts.bytes];
        let mut inb = vec![0u8; opts.bytes];
        let mut best = f64::INFINITY;
        for _ in 0..2 {
            let t0 = Instant::now();
            self.send_from(&big, next, &out)?;
            self.recv_slice(&big, prev, &mut inb)?;
            self.send_from(&small, prev, &buf)?;
            self.recv_slice(&small, next, &mut buf)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let beta = ((best - 2.0 * alpha).max(best * 0.05)) / opts.bytes.max(1) as f64;
        Ok((alpha, beta))
    }

    fn round_trip(
        &mut self,
        call: &Call,
        next: usize,
        prev: usize,
        buf: &mut [u8; 8],
    ) -> Result<(), CollectiveError> {
        let ping = *buf;
        self.send_from(call, next, &ping)?;
        self.recv_slice(call, prev, buf)?;
        self.send_from(call, prev, &ping)?;
        self.recv_slice(call, next, buf)
    }

    /// A rank outside a pattern still takes its sequence numbers, so every rank agrees on them.
    fn probe_idle(
        &mut self,
        _next: &[Option<usize>],
        _opts: ProbeOptions,
    ) -> Result<(), CollectiveError> {
        self.begin(Op::Bench, 0, 0)?;
        self.begin(Op::Bench, 0, 0)?;
        Ok(())
    }
}

/// Edges of `next` that leave `r`'s host.
fn flows_from(topo: &super::Topology, next: &[Option<usize>], r: usize) -> usize {
    let h = topo.host_of(r);
    (0..next.len())
        .filter(|&q| topo.host_of(q) == h)
        .filter(|&q| next[q].is_some_and(|x| topo.host_of(x) != h))
        .count()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The link classes from the samples: medians of the local links, and of the remote ones with
/// `beta` per whole host link.
pub(crate) fn fit(samples: &[LinkSample]) -> LinkCosts {
    let class = |local: bool| {
        let s: Vec<&LinkSample> = samples.iter().filter(|s| s.local == local).collect();
        let alpha = median(s.iter().map(|s| s.alpha).collect())?;
        let beta = median(s.iter().map(|s| s.beta / s.flows.max(1) as f64).collect())?;
        Some(AlphaBeta { alpha, beta })
    };
    LinkCosts {
        local: class(true),
        remote: class(false),
    }
}
