//! [`Topology`]: which host every rank runs on. The hierarchical allreduce reads it to form one
//! ring per host (shared memory) and rings across hosts (the network); the cost model reads it to
//! tell which links of an algorithm cross a host boundary and how many flows share a host's link.
//!
//! Hosts are numbered in the order their first rank appears, so every rank that builds the
//! topology from the same per-rank keys (the IP of each rank's data address, or a host count the
//! manifest forces) gets the same numbering.

/// Host membership of every rank. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    host_of: Vec<usize>,
    hosts: Vec<Vec<usize>>,
}

impl Topology {
    /// Every rank on a host of its own (what a communicator assumes until told otherwise): the
    /// hierarchical allreduce is then the flat ring.
    pub fn one_per_host(world: usize) -> Topology {
        Topology::from_keys(&(0..world).collect::<Vec<_>>())
    }

    /// All ranks on one host.
    pub fn single_host(world: usize) -> Topology {
        Topology::from_keys(&vec![0u8; world])
    }

    /// `per_host` consecutive ranks per host (host-major numbering, as cluster managers start
    /// them); the last host may have fewer.
    pub fn uniform(world: usize, per_host: usize) -> Topology {
        let per_host = per_host.max(1);
        Topology::from_keys(&(0..world).map(|r| r / per_host).collect::<Vec<_>>())
    }

    /// Ranks with equal keys share a host (`keys[r]` is rank `r`'s, e.g. the IP of its address).
    pub fn from_keys<K: PartialEq>(keys: &[K]) -> Topology {
        let mut firsts: Vec<&K> = Vec::new();
        let mut host_of = Vec::with_capacity(keys.len());
        let mut hosts: Vec<Vec<usize>> = Vec::new();
        for (r, k) in keys.iter().enumerate() {
            let h = match firsts.iter().position(|f| *f == k) {
                Some(h) => h,
                None => {
                    firsts.push(k);
                    hosts.push(Vec::new());
                    firsts.len() - 1
                }
            };
            host_of.push(h);
            hosts[h].push(r);
        }
        Topology { host_of, hosts }
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.host_of.len()
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// The host of `rank`.
    pub fn host_of(&self, rank: usize) -> usize {
        self.host_of[rank]
    }

    /// The ranks on `host`, in rank order.
    pub fn local(&self, host: usize) -> &[usize] {
        &self.hosts[host]
    }

    /// The most ranks on one host.
    pub fn max_local(&self) -> usize {
        self.hosts.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// How many slices the hierarchical allreduce cuts the data into: the fewest ranks on any
    /// host, so that local rank `i < slices` of every host carries slice `i` across hosts.
    pub fn slices(&self) -> usize {
        self.hosts.iter().map(Vec::len).min().unwrap_or(1).max(1)
    }

    /// True when a hierarchical allreduce differs from the flat ring: more than one host, and
    /// some host with more than one rank.
    pub fn is_hierarchical(&self) -> bool {
        self.hosts() > 1 && self.max_local() > 1
    }

    /// The ring across hosts of slice `i`: local rank `i` of every host, in host order.
    pub fn cross(&self, i: usize) -> Vec<usize> {
        self.hosts
            .iter()
            .filter_map(|h| h.get(i).copied())
            .collect()
    }

    /// How many of the edges `r -> next[r]` leave the busiest host: the flows that share one
    /// host's network link when every rank of a ring pattern sends at once.
    pub fn flows_per_host(&self, next: &[Option<usize>]) -> usize {
        let mut out = vec![0usize; self.hosts()];
        for (r, n) in next.iter().enumerate() {
            if let Some(n) = n {
                if self.host_of[r] != self.host_of[*n] {
                    out[self.host_of[r]] += 1;
                }
            }
        }
        out.into_iter().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_keys_in_order_of_appearance() {
        let t = Topology::from_keys(&["b", "a", "b", "c", "a"]);
        assert_eq!(t.hosts(), 3);
        assert_eq!(t.local(0), &[0, 2]);
        assert_eq!(t.local(1), &[1, 4]);
        assert_eq!(t.local(2), &[3]);
        assert_eq!(t.slices(), 1);
        assert_eq!(t.cross(0), vec![0, 1, 3]);
        assert!(t.is_hierarchical());
    }

    #[test]
    fn uniform_and_flows() {
        let t = Topology::uniform(8, 2);
        assert_eq!(t.hosts(), 4);
        assert_eq!(t.slices(), 2);
        assert_eq!(t.cross(1), vec![1, 3, 5, 7]);
        let ring: Vec<Option<usize>> = (0..8).map(|r| Some((r + 1) % 8)).collect();
        assert_eq!(t.flows_per_host(&ring), 1);
        let cross: Vec<Option<usize>> = (0..8).map(|r| Some((r + 2) % 8)).collect();
        assert_eq!(t.flows_per_host(&cross), 2);
        assert!(!Topology::one_per_host(4).is_hierarchical());
        assert!(!Topology::single_host(4).is_hierarchical());
    }
}
