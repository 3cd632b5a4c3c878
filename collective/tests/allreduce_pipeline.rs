//! The pipelined hierarchical allreduce (`CollectiveConfig::pipeline_bytes`): 1 to 16 chunks,
//! uneven lengths, uniform and uneven hosts; ranks as threads over the in-process mesh and over
//! real links (shared memory within a "host", TCP across, hosts on 127.0.0.1, .2 and .3).
//! Checks: identical bits on every rank and run after run, the f64 sum within rounding, exactly
//! the flat ring's result for integer data (where every order of addition is exact), and real
//! links give the mesh's bits (so the order of frames on every link is the same whatever
//! the transport's timing).

use lockstep_collective::hier::{chunks, MAX_CHUNKS};
use lockstep_collective::{Algo, AllReduce, CollectiveConfig, Communicator, Topology};
use lockstep_transport::{connect_mesh, Listener, MeshConfig, PeerAddr, TransportKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const NAMES: [&str; 7] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"];

/// Small frames (many pieces per ring) and a pipeline of `k` chunks for `len` f32s.
fn config(len: usize, k: usize) -> CollectiveConfig {
    CollectiveConfig {
        chunk_bytes: 64,
        pipeline_bytes: if k == 0 {
            0
        } else {
            (len * 4).div_ceil(k).max(1)
        },
        ..CollectiveConfig::default()
    }
}

fn run_all<T: Send + 'static>(
    groups: Vec<lockstep_transport::Group>,
    topo: &Topology,
    config: CollectiveConfig,
    f: impl Fn(&mut Communicator) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let hs: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let (f, topo) = (f.clone(), topo.clone());
            std::thread::spawn(move || {
                let mut c = Communicator::new(g, config);
                c.set_topology(topo).unwrap();
                f(&mut c)
            })
        })
        .collect();
    hs.into_iter()
        .map(|h| h.join().expect("rank panicked"))
        .collect()
}

fn on_mesh<T: Send + 'static>(
    topo: &Topology,
    config: CollectiveConfig,
    f: impl Fn(&mut Communicator) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let groups = lockstep_transport::local::mesh(&NAMES[..topo.world()], Duration::from_secs(10));
    run_all(groups, topo, config, f)
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

/// Multi-host topologies with several ranks on some host: uniform and uneven.
fn topologies() -> Vec<Topology> {
    vec![
        Topology::uniform(4, 2),
        Topology::uniform(6, 2),
        Topology::uniform(6, 3),
        Topology::uniform(7, 2),
        Topology::from_keys(&["a", "b", "a", "c", "b", "a"]),
        Topology::from_keys(&["x", "x", "x", "y", "y"]),
        Topology::from_keys(&["x", "y", "y", "y", "z", "z", "x"]),
    ]
}

fn mean_of(mean: bool) -> AllReduce<'static> {
    if mean {
        AllReduce::mean().algo(Algo::Hier)
    } else {
        AllReduce::sum().algo(Algo::Hier)
    }
}

#[test]
fn chunk_count_follows_pipeline_bytes() {
    let c = |p| CollectiveConfig {
        pipeline_bytes: p,
        ..CollectiveConfig::default()
    };
    assert_eq!(chunks(7_454_760, 2, &c(1 << 20)), 8);
    assert_eq!(chunks(7_454_760, 2, &c(0)), 1);
    assert_eq!(chunks(7_454_760, 1, &c(1 << 20)), 1, "one rank per host");
    assert_eq!(chunks(1 << 30, 2, &c(1 << 20)), MAX_CHUNKS);
    assert_eq!(chunks(12, 2, &c(1)), 3, "at most one chunk per element");
    assert_eq!(config(1001, 5).pipeline_bytes, 801);
    assert_eq!(chunks(4004, 2, &config(1001, 5)), 5);
}

#[test]
fn pipelined_matches_the_f64_sum_with_identical_bits_on_every_rank_for_1_to_16_chunks() {
    for topo in topologies() {
        let n = topo.world();
        for len in [1usize, 3, 65, 1001] {
            for k in [1usize, 2, 3, 5, 8, 16] {
                let mean = k % 2 == 1;
                let cfg = config(len, k);
                let got = chunks(len * 4, topo.max_local(), &cfg);
                assert_eq!(got, k.min(len), "{topo:?} len={len}");
                let work = move |c: &mut Communicator| {
                    let mut x = input(c.rank(), len);
                    c.allreduce(&mut x, mean_of(mean)).unwrap();
                    bits(&x)
                };
                let out = on_mesh(&topo, cfg, work);
                let inputs: Vec<Vec<f32>> = (0..n).map(|r| input(r, len)).collect();
                for (i, got) in out[0].iter().enumerate() {
                    let mut exact: f64 = inputs.iter().map(|x| f64::from(x[i])).sum();
                    if mean {
                        exact /= n as f64;
                    }
                    let got = f64::from(f32::from_bits(*got));
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "{topo:?} len={len} k={k} i={i}: {got} vs {exact}"
                    );
                }
                for r in &out[1..] {
                    assert_eq!(r, &out[0], "{topo:?} len={len} k={k}: ranks differ");
                }
                assert_eq!(on_mesh(&topo, cfg, work), out, "{topo:?} len={len} k={k}");
            }
        }
    }
}

#[test]
fn integer_sums_are_the_flat_ring_s_for_any_chunk_count() {
    for topo in topologies() {
        let len = 4099;
        let run = |k: usize, algo: Algo| {
            on_mesh(&topo, config(len, k), move |c| {
                let mut x = integers(c.rank(), len);
                c.allreduce(&mut x, AllReduce::sum().algo(algo)).unwrap();
                bits(&x)
            })
        };
        let ring = run(0, Algo::Ring);
        for k in [0, 1, 2, 7, 16] {
            assert_eq!(run(k, Algo::Hier), ring, "{topo:?} k={k}");
        }
    }
}

/// Rank `r` on 127.0.0.`host[r]+1`, links by `TransportKind::Auto`: shared memory to ranks on
/// the same IP (a 16 KiB ring: 16 frames of the tests' 1 KiB pieces, so that senders wait for room
/// at times; with 4 frames even the plain ring of two ranks stalls, both waiting for room), TCP
/// to others.
fn linked_groups(hosts: &[usize]) -> Vec<lockstep_transport::Group> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let cluster = format!(
        "pipe{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let listeners: Vec<Listener> = hosts
        .iter()
        .map(|h| Listener::bind(&format!("127.0.0.{}:0", h + 1)).unwrap())
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
            m.shm_ring_bytes = 16 << 10;
            std::thread::spawn(move || connect_mesh(&m, l).unwrap())
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn over_shm_within_and_tcp_across_hosts_gives_the_mesh_bits() {
    // 3 hosts x 2 ranks, and uneven hosts of 2, 3 and 1 ranks.
    for hosts in [vec![0, 0, 1, 1, 2, 2], vec![0, 1, 1, 0, 1, 2]] {
        let topo = Topology::from_keys(&hosts);
        for (len, k) in [(1001usize, 4usize), (100_003, 16), (100_003, 3)] {
            let cfg = CollectiveConfig {
                chunk_bytes: 1024,
                ..config(len, k)
            };
            let work = move |c: &mut Communicator| {
                let mut out = Vec::new();
                for mean in [true, false] {
                    let mut x = input(c.rank(), len);
                    c.allreduce(&mut x, mean_of(mean)).unwrap();
                    out.push(bits(&x));
                }
                out
            };
            let want = on_mesh(&topo, cfg, work);
            let got = run_all(linked_groups(&hosts), &topo, cfg, work);
            assert_eq!(got, want, "hosts {hosts:?} len={len} k={k}");
            for r in &got[1..] {
                assert_eq!(r, &got[0], "hosts {hosts:?} len={len} k={k}: ranks differ");
            }
        }
    }
}
