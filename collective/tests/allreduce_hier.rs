//! The hierarchical allreduce against the flat algorithms: ranks as threads over the in-process
//! mesh (every topology shape up to 7 ranks: uniform, uneven, one rank per host, one host) and
//! over real links where ranks on one "host" (127.0.0.1) talk over shared memory and ranks on
//! another (127.0.0.2) over TCP (`TransportKind::Auto`). Checks: identical bits on every rank and
//! run after run, the f64 sum within rounding, exactly the flat ring's result for integer data
//! (where every order of addition is exact), the same bits over real links as over the mesh;
//! and the link probe gives every rank the same costs and a choice.

use lockstep_collective::{
    Algo, AllReduce, CollectiveConfig, Communicator, ProbeOptions, Topology,
};
use lockstep_transport::{connect_mesh, AnyLink, Listener, MeshConfig, PeerAddr, TransportKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const NAMES: [&str; 7] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"];

fn small_chunks() -> CollectiveConfig {
    CollectiveConfig {
        chunk_bytes: 256,
        ..CollectiveConfig::default()
    }
}

fn on_mesh<T: Send + 'static>(
    topo: Topology,
    f: impl Fn(&mut Communicator) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let groups = lockstep_transport::local::mesh(&NAMES[..topo.world()], Duration::from_secs(10));
    let hs: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let (f, topo) = (f.clone(), topo.clone());
            std::thread::spawn(move || {
                let mut c = Communicator::new(g, small_chunks());
                c.set_topology(topo).unwrap();
                f(&mut c)
            })
        })
        .collect();
    hs.into_iter()
        .map(|h| h.join().expect("rank panicked"))
        .collect()
}

fn input(r: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + r * 13) % 101) as f32 * 0.37 - 17.0 + (r as f32) * 1e-3)
        .collect()
}

fn integers(r: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 5 + r * 3) % 17) as f32 - 8.0)
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn topologies() -> Vec<Topology> {
    let mut v = Vec::new();
    for world in 1..=7 {
        v.push(Topology::uniform(world, 2));
        v.push(Topology::uniform(world, 3));
        v.push(Topology::one_per_host(world));
        v.push(Topology::single_host(world));
    }
    v.push(Topology::from_keys(&["a", "b", "a", "c", "b", "a"]));
    v.push(Topology::from_keys(&["x", "x", "x", "y", "y"]));
    v
}

#[test]
fn hierarchical_matches_the_f64_sum_with_identical_bits_on_every_rank() {
    for topo in topologies() {
        let n = topo.world();
        for len in [0usize, 1, 3, 65, 1001] {
            for mean in [false, true] {
                let out = on_mesh(topo.clone(), move |c| {
                    let mut x = input(c.rank(), len);
                    let how = if mean {
                        AllReduce::mean()
                    } else {
                        AllReduce::sum()
                    };
                    c.allreduce(&mut x, how.algo(Algo::Hier)).unwrap();
                    x
                });
                let inputs: Vec<Vec<f32>> = (0..n).map(|r| input(r, len)).collect();
                for (i, got) in out[0].iter().enumerate() {
                    let mut exact: f64 = inputs.iter().map(|x| f64::from(x[i])).sum();
                    if mean {
                        exact /= n as f64;
                    }
                    let got = f64::from(*got);
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "{topo:?} len={len} i={i}: {got} vs {exact}"
                    );
                }
                for r in &out[1..] {
                    assert_eq!(bits(r), bits(&out[0]), "{topo:?} len={len}: ranks differ");
                }
            }
        }
    }
}

#[test]
fn hierarchical_gives_the_flat_results_for_exact_sums_and_repeats_its_bits() {
    for topo in [
        Topology::uniform(6, 2),
        Topology::uniform(6, 3),
        Topology::from_keys(&["a", "b", "a", "c", "b", "a"]),
    ] {
        let len = 4099;
        let run = |algo: Algo| {
            on_mesh(topo.clone(), move |c| {
                let mut x = integers(c.rank(), len);
                c.allreduce(&mut x, AllReduce::sum().algo(algo)).unwrap();
                let mut y = input(c.rank(), len);
                c.allreduce(&mut y, AllReduce::mean().algo(algo)).unwrap();
                (bits(&x), bits(&y))
            })
        };
        let (hier, ring, tree) = (run(Algo::Hier), run(Algo::Ring), run(Algo::Tree));
        for r in 0..topo.world() {
            assert_eq!(
                hier[r].0, ring[r].0,
                "{topo:?}: integer sums differ from ring"
            );
            assert_eq!(
                hier[r].0, tree[r].0,
                "{topo:?}: integer sums differ from tree"
            );
        }
        assert_eq!(hier, run(Algo::Hier), "{topo:?}: not repeatable");
    }
}

#[test]
fn one_rank_per_host_is_exactly_the_flat_ring() {
    let topo = Topology::one_per_host(5);
    let run = |algo: Algo| {
        on_mesh(topo.clone(), move |c| {
            let mut x = input(c.rank(), 777);
            c.allreduce(&mut x, AllReduce::mean().algo(algo)).unwrap();
            bits(&x)
        })
    };
    assert_eq!(run(Algo::Hier), run(Algo::Ring));
}

/// Ranks `0..world/2` on 127.0.0.1, the rest on 127.0.0.2, with per-peer link kinds.
fn two_host_groups(world: usize, ring_bytes: usize) -> Vec<lockstep_transport::Group> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let cluster = format!(
        "hier{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let listeners: Vec<Listener> = (0..world)
        .map(|r| {
            let ip = if r < world / 2 {
                "127.0.0.1"
            } else {
                "127.0.0.2"
            };
            Listener::bind(&format!("{ip}:0")).unwrap()
        })
        .collect();
    let peers: Vec<PeerAddr> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| PeerAddr {
            name: NAMES[i].to_string(),
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let hs: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let mut m = MeshConfig::new(&cluster, b"secret", NAMES[r], r, peers.clone());
            m.transport = TransportKind::Auto;
            m.shm_ring_bytes = ring_bytes;
            std::thread::spawn(move || connect_mesh(&m, l).unwrap())
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn over_shm_within_and_tcp_across_hosts_gives_the_mesh_bits() {
    let world = 4;
    let topo = Topology::uniform(world, 2);
    let lens = [1usize, 1001, 100_003];
    let work = move |c: &mut Communicator| {
        let mut out = Vec::new();
        for &len in &lens {
            let mut x = input(c.rank(), len);
            c.allreduce(&mut x, AllReduce::mean().algo(Algo::Hier))
                .unwrap();
            out.push(bits(&x));
        }
        out
    };
    let on_mesh_bits = on_mesh(topo.clone(), work);
    let mut groups = two_host_groups(world, 16 << 10);
    assert!(
        matches!(groups[0].link(1), AnyLink::Shm(_)),
        "same host: shm"
    );
    assert!(
        matches!(groups[0].link(2), AnyLink::Tcp(_)),
        "other host: tcp"
    );
    let hs: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let topo = topo.clone();
            std::thread::spawn(move || {
                let mut c = Communicator::new(g, small_chunks());
                c.set_topology(topo).unwrap();
                work(&mut c)
            })
        })
        .collect();
    let linked: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(linked, on_mesh_bits);
}

#[test]
fn probe_gives_every_rank_the_same_costs_and_choice() {
    let world = 4;
    let topo = Topology::uniform(world, 2);
    let hs: Vec<_> = two_host_groups(world, 1 << 20)
        .into_iter()
        .map(|g| {
            let topo = topo.clone();
            std::thread::spawn(move || {
                let mut c = Communicator::new(g, CollectiveConfig::default());
                c.set_topology(topo).unwrap();
                let report = c
                    .probe_links(ProbeOptions {
                        pings: 3,
                        bytes: 64 << 10,
                    })
                    .unwrap();
                let choice = c.resolve_algo(None, 8 << 20);
                // The choice is usable right away.
                let mut x = input(c.rank(), 5000);
                c.allreduce(&mut x, AllReduce::sum()).unwrap();
                (report, choice)
            })
        })
        .collect();
    let out: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let (report, choice) = &out[0];
    // ring (4 links) + local (2 hosts x 2) + cross (2 slices x 2 hosts).
    assert_eq!(report.samples.len(), 12);
    assert!(report.costs.local.is_some() && report.costs.remote.is_some());
    assert!(report.samples.iter().all(|s| s.alpha > 0.0 && s.beta > 0.0));
    for (r, c) in &out[1..] {
        assert_eq!(r, report);
        assert_eq!(c, choice);
    }
}
