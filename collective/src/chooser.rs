//! What `Algo::Auto` chooses by: the measured link costs, and the choice already made for each
//! message size. The cost model predicts every algorithm (allocating as it goes), which is more
//! than a small allreduce itself costs; a training job reduces the same bucket sizes round after
//! round, so each size is modelled once and then looked up.

use super::cost::{self, LinkCosts};
use super::{Algo, CollectiveConfig, Topology};

/// Sizes remembered before the list starts over (a job has a few bucket sizes).
const PICKS: usize = 64;

/// The link costs and the picks made from them.
#[derive(Debug, Default)]
pub(crate) struct Chooser {
    costs: Option<LinkCosts>,
    picks: Vec<(usize, Algo)>,
}

impl Chooser {
    pub(crate) fn costs(&self) -> Option<&LinkCosts> {
        self.costs.as_ref()
    }

    /// New costs: every pick is made again.
    pub(crate) fn set_costs(&mut self, costs: Option<LinkCosts>) {
        self.costs = costs;
        self.forget();
    }

    /// The topology or the settings changed: every pick is made again.
    pub(crate) fn forget(&mut self) {
        self.picks.clear();
    }

    /// The cost model's pick for `bytes`, or `None` without measured costs.
    pub(crate) fn pick(
        &mut self,
        bytes: usize,
        topo: &Topology,
        config: &CollectiveConfig,
    ) -> Option<Algo> {
        let costs = self.costs.as_ref()?;
        if let Some(&(_, algo)) = self.picks.iter().find(|(b, _)| *b == bytes) {
            return Some(algo);
        }
        let algo = cost::choose(bytes, topo, costs, config).algo;
        if self.picks.len() == PICKS {
            self.picks.clear();
        }
        self.picks.push((bytes, algo));
        Some(algo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(alpha_us: f64, gbit: f64) -> Option<LinkCosts> {
        let ab = cost::AlphaBeta {
            alpha: alpha_us * 1e-6,
            beta: 8.0 / (gbit * 1e9),
        };
        Some(LinkCosts {
            local: Some(ab),
            remote: Some(ab),
        })
    }

    #[test]
    fn a_pick_is_the_cost_model_s_and_new_costs_make_it_again() {
        let (topo, config) = (Topology::one_per_host(8), CollectiveConfig::default());
        let mut c = Chooser::default();
        assert_eq!(c.pick(1 << 20, &topo, &config), None, "no costs, no pick");
        // High latency, fast links: one tree step per doubling beats 14 ring steps at 64 KiB;
        // low latency, slow links: the ring's bandwidth wins at 8 MiB.
        let cases = [(costs(2000.0, 100.0), 64 << 10), (costs(1.0, 1.0), 8 << 20)];
        for (lc, bytes) in cases {
            c.set_costs(lc);
            let model = |b| cost::choose(b, &topo, lc.as_ref().unwrap(), &config).algo;
            for _ in 0..2 {
                assert_eq!(c.pick(bytes, &topo, &config), Some(model(bytes)));
            }
        }
        assert_eq!(c.picks.len(), 1, "each change of costs starts over");
        let high = costs(2000.0, 100.0);
        c.set_costs(high);
        let tree = cost::choose(64 << 10, &topo, high.as_ref().unwrap(), &config).algo;
        let ring = cost::choose(8 << 20, &topo, costs(1.0, 1.0).as_ref().unwrap(), &config).algo;
        assert_ne!(
            tree, ring,
            "the two cases must pick differently to test anything"
        );
    }
}
