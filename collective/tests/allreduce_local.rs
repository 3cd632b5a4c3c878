//! Collectives over the in-process mesh (ranks as threads): every algorithm, world sizes 1..=5,
//! lengths 0, 1, odd and large, f32/f16/bf16; results against an f64 sum, identical bits on
//! every rank and across runs; broadcast, barrier, the parameter server against allreduce SGD,
//! mismatch and failure errors.

use lockstep_collective::{
    Algo, AllReduce, CollectiveConfig, CollectiveError, Communicator, ParameterServer,
};
use lockstep_tensor::{bf16, f16};
use lockstep_transport::local::mesh;
use std::time::Duration;

const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];

/// Run `f(comm)` on every rank of a `world`-rank mesh, each in its own thread.
fn on_mesh<T: Send + 'static>(
    world: usize,
    config: CollectiveConfig,
    f: impl Fn(&mut Communicator) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let groups = mesh(&NAMES[..world], Duration::from_secs(10));
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let f = f.clone();
            std::thread::spawn(move || f(&mut Communicator::new(g, config)))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread panicked"))
        .collect()
}

/// Deterministic test input of rank `r`: mixed signs and magnitudes.
fn input(r: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + r * 13) % 101) as f32 * 0.37 - 17.0 + (r as f32) * 1e-3)
        .collect()
}

fn small_chunks() -> CollectiveConfig {
    CollectiveConfig {
        chunk_bytes: 64,
        ..CollectiveConfig::default()
    }
}

fn check_allreduce(world: usize, len: usize, algo: Algo, mean: bool, config: CollectiveConfig) {
    let results = on_mesh(world, config, move |c| {
        let mut x = input(c.rank(), len);
        let how = if mean {
            AllReduce::mean()
        } else {
            AllReduce::sum()
        };
        c.allreduce(&mut x, how.algo(algo)).unwrap();
        x
    });
    let inputs: Vec<Vec<f32>> = (0..world).map(|r| input(r, len)).collect();
    for i in 0..len {
        let mut exact: f64 = inputs.iter().map(|x| f64::from(x[i])).sum();
        if mean {
            exact /= world as f64;
        }
        let got = f64::from(results[0][i]);
        assert!(
            (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
            "{algo:?} n={world} len={len} i={i}: {got} vs {exact}"
        );
    }
    for r in &results[1..] {
        assert_eq!(
            bits(r),
            bits(&results[0]),
            "{algo:?} n={world} len={len}: ranks differ"
        );
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn allreduce_every_algorithm_world_and_length() {
    for world in 1..=5 {
        for len in [0usize, 1, 2, 7, 33, 1001] {
            for algo in [Algo::Ring, Algo::Tree, Algo::Auto] {
                check_allreduce(world, len, algo, false, small_chunks());
                check_allreduce(world, len, algo, true, CollectiveConfig::default());
            }
        }
    }
}

#[test]
fn allreduce_large_with_many_pieces() {
    for world in [2, 3, 4] {
        for algo in [Algo::Ring, Algo::Tree] {
            let config = CollectiveConfig {
                chunk_bytes: 16 * 1024,
                ..CollectiveConfig::default()
            };
            check_allreduce(world, 300_001, algo, true, config);
        }
    }
}

#[test]
fn allreduce_bits_repeat_across_runs() {
    for algo in [Algo::Ring, Algo::Tree] {
        let run = || {
            on_mesh(5, small_chunks(), move |c| {
                let mut x = input(c.rank(), 999);
                for _ in 0..3 {
                    c.allreduce(&mut x, AllReduce::mean().algo(algo)).unwrap();
                }
                bits(&x)
            })
        };
        assert_eq!(run(), run(), "{algo:?}");
    }
}

#[test]
fn allreduce_half_types_accumulate_in_f32() {
    for world in [1, 2, 3, 5] {
        let len = 257;
        let out = on_mesh(world, small_chunks(), move |c| {
            let base = input(c.rank(), len);
            let mut h: Vec<f16> = base.iter().map(|&v| f16::from_f32(v * 0.01)).collect();
            let mut b: Vec<bf16> = base.iter().map(|&v| bf16::from_f32(v)).collect();
            c.allreduce_f16(&mut h, AllReduce::sum().algo(Algo::Ring))
                .unwrap();
            c.allreduce_bf16(&mut b, AllReduce::mean().algo(Algo::Tree))
                .unwrap();
            (h, b)
        });
        for i in 0..len {
            let hs: f32 = (0..world)
                .map(|r| f16::from_f32(input(r, len)[i] * 0.01).to_f32())
                .sum();
            let bs: f32 = (0..world)
                .map(|r| bf16::from_f32(input(r, len)[i]).to_f32())
                .sum::<f32>()
                / world as f32;
            assert_eq!(out[0].0[i], f16::from_f32(hs), "f16 n={world} i={i}");
            assert!(
                (out[0].1[i].to_f32() - bs).abs() <= bs.abs() * 1e-2 + 1e-3,
                "bf16 n={world} i={i}"
            );
        }
        assert!(out.iter().all(|o| o == &out[0]));
    }
}

#[test]
fn broadcast_and_barrier() {
    for world in 1..=5 {
        for root in 0..world {
            let out = on_mesh(world, small_chunks(), move |c| {
                let mut x: Vec<i32> = if c.rank() == root {
                    (0..1000).collect()
                } else {
                    vec![0; 1000]
                };
                c.broadcast(&mut x, root).unwrap();
                c.barrier().unwrap();
                (x, c.next_seq())
            });
            for (x, seq) in out {
                assert_eq!(x, (0..1000).collect::<Vec<i32>>());
                assert_eq!(seq, 2);
            }
        }
    }
}

#[test]
fn shape_mismatch_names_both_ranks_and_values() {
    let out = on_mesh(2, CollectiveConfig::default(), |c| {
        let dims: &[usize] = if c.rank() == 0 { &[2, 3] } else { &[3, 2] };
        let mut x = vec![1.0f32; 6];
        c.allreduce(&mut x, AllReduce::sum().shape(dims).algo(Algo::Ring))
            .unwrap_err()
            .to_string()
    });
    for (r, msg) in out.iter().enumerate() {
        assert!(msg.contains("shape fingerprint"), "rank {r}: {msg}");
        assert!(msg.contains("n0") && msg.contains("n1"), "rank {r}: {msg}");
        let fp_a = format!("{:#018x}", lockstep_tensor::fingerprint_dims(&[2, 3]));
        let fp_b = format!("{:#018x}", lockstep_tensor::fingerprint_dims(&[3, 2]));
        assert!(
            msg.contains(&fp_a) && msg.contains(&fp_b),
            "rank {r}: {msg}"
        );
    }
}

#[test]
fn sequence_mismatch_fails_at_once() {
    let out = on_mesh(3, CollectiveConfig::default(), |c| {
        if c.rank() == 1 {
            c.barrier().unwrap_err();
        }
        let mut x = vec![1.0f32; 4];
        c.allreduce(&mut x, AllReduce::sum().algo(Algo::Ring))
            .map_err(|e| e.to_string())
    });
    let all: Vec<String> = out.into_iter().map(|r| r.unwrap_err()).collect();
    assert!(all.iter().any(|m| m.contains("expects")), "{all:?}");
}

#[test]
fn dead_rank_is_named_by_every_survivor() {
    for algo in [Algo::Ring, Algo::Tree] {
        // Survivors keep their links open until every survivor has its error, as a node does
        // until its supervisor stops it, so that abort notices reach everyone.
        let held = std::sync::Arc::new(std::sync::Barrier::new(4));
        let out = on_mesh(5, small_chunks(), move |c| {
            let mut x = input(c.rank(), 10_000);
            c.allreduce(&mut x, AllReduce::sum().algo(algo)).unwrap();
            if c.rank() == 2 {
                return None; // the thread ends, its links close: rank 2 "dies"
            }
            let e = c
                .allreduce(&mut x, AllReduce::sum().algo(algo))
                .unwrap_err();
            held.wait();
            Some((e.failed_rank(), e.to_string()))
        });
        for (r, o) in out.into_iter().enumerate() {
            if let Some((failed, msg)) = o {
                assert_eq!(failed, Some(2), "{algo:?} rank {r}: {msg}");
                assert!(msg.contains("n2"), "{algo:?} rank {r}: {msg}");
            }
        }
    }
}

#[test]
fn poisoned_communicator_returns_the_first_error() {
    let out = on_mesh(2, CollectiveConfig::default(), |c| {
        if c.rank() == 1 {
            return None;
        }
        let first = c.barrier().unwrap_err();
        let second = c.allreduce(&mut [1.0], AllReduce::sum()).unwrap_err();
        Some((first.to_string(), second.to_string()))
    });
    let (a, b) = out[0].clone().unwrap();
    assert_eq!(a, b);
}

fn sgd(lr: f32) -> impl FnMut(std::ops::Range<usize>, &mut [f32], &[f32]) {
    move |_, p: &mut [f32], g: &[f32]| {
        for (pi, gi) in p.iter_mut().zip(g) {
            *pi -= lr * gi;
        }
    }
}

fn grad(rank: usize, step: usize, params: &[f32]) -> Vec<f32> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| p * 0.1 + ((i + rank * 3 + step) % 11) as f32 * 0.01 - 0.05)
        .collect()
}

#[test]
fn ten_sgd_steps_parameter_server_match_allreduce() {
    let n = 1003;
    let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin()).collect();
    for (world, servers, workers) in [
        (4usize, vec![0usize], vec![0usize, 1, 2, 3]),
        (5, vec![3, 4], vec![0, 1, 2]),
        (3, vec![0, 1, 2], vec![0, 1, 2]),
        (1, vec![0], vec![0]),
    ] {
        let init = init.clone();
        let out = on_mesh(world, small_chunks(), move |c| {
            let me = c.rank();
            let mut ps = ParameterServer::new(n, &servers, &workers, c.world()).unwrap();
            let mut p_ps = init.clone();
            for step in 0..10 {
                let g = if workers.contains(&me) {
                    grad(me, step, &p_ps)
                } else {
                    Vec::new()
                };
                ps.step(c, &g, &mut p_ps, sgd(0.1)).unwrap();
            }
            // The same gradients averaged by allreduce over the workers (here: every rank with
            // zero gradient for non-workers, scaled to the worker count).
            let mut p_ar = init.clone();
            for step in 0..10 {
                let mut g = if workers.contains(&me) {
                    grad(me, step, &p_ar)
                } else {
                    vec![0.0; n]
                };
                c.allreduce(&mut g, AllReduce::sum()).unwrap();
                let scale = 1.0 / workers.len() as f32;
                sgd(0.1)(
                    0..n,
                    &mut p_ar,
                    &g.iter().map(|v| v * scale).collect::<Vec<_>>(),
                );
            }
            (workers.contains(&me), p_ps, p_ar)
        });
        for (is_worker, p_ps, p_ar) in out {
            if !is_worker {
                continue;
            }
            for i in 0..n {
                let d = (p_ps[i] - p_ar[i]).abs();
                assert!(
                    d <= 1e-6 * p_ar[i].abs().max(1.0),
                    "world {world} i={i}: {} vs {}",
                    p_ps[i],
                    p_ar[i]
                );
            }
        }
    }
}

#[test]
fn parameter_server_rejects_bad_layouts() {
    assert!(matches!(
        ParameterServer::new(10, &[], &[0], 2),
        Err(CollectiveError::Config(_))
    ));
    assert!(matches!(
        ParameterServer::new(10, &[0, 0], &[0], 2),
        Err(CollectiveError::Config(_))
    ));
    assert!(matches!(
        ParameterServer::new(10, &[2], &[0], 2),
        Err(CollectiveError::Config(_))
    ));
}

#[test]
fn gather_state_brings_every_server_shard_to_the_root() {
    let n = 1003;
    // (world, servers, workers): dedicated servers, and a root that also serves.
    for (world, servers, workers) in [
        (5usize, vec![3usize, 4], vec![0usize, 1, 2]),
        (4, vec![1, 2, 3], vec![0, 1]),
        (3, vec![0, 2], vec![0, 1]),
    ] {
        let out = on_mesh(world, small_chunks(), move |c| {
            let me = c.rank();
            let mut ps = ParameterServer::new(n, &servers, &workers, c.world()).unwrap();
            let value = |b: usize, i: usize| (b * 10_000 + i) as f32;
            let own: Vec<Vec<f32>> = match servers.iter().position(|&s| s == me) {
                Some(i) => (0..2)
                    .map(|b| ps.shard(i).map(|x| value(b, x)).collect())
                    .collect(),
                None => Vec::new(),
            };
            let mine: Vec<&[f32]> = own.iter().map(Vec::as_slice).collect();
            let mut full = if me == 0 {
                vec![vec![0.0; n]; 2]
            } else {
                Vec::new()
            };
            let step = ps.gather_state(c, 0, 7, &mine, &mut full).unwrap();
            // The group is still in step: a barrier afterwards completes.
            c.barrier().unwrap();
            (me, step, full)
        });
        let (_, step, full) = &out[0];
        assert_eq!(*step, 7, "world {world}");
        for (b, buf) in full.iter().enumerate() {
            for (i, v) in buf.iter().enumerate() {
                assert_eq!(
                    *v,
                    (b * 10_000 + i) as f32,
                    "world {world} buffer {b} index {i}"
                );
            }
        }
    }
}

#[test]
fn gather_state_names_a_server_whose_step_differs() {
    let n = 64;
    let out = on_mesh(4, small_chunks(), move |c| {
        let me = c.rank();
        let mut ps = ParameterServer::new(n, &[2, 3], &[0, 1], c.world()).unwrap();
        let own: Vec<Vec<f32>> = match me {
            2 => vec![vec![0.0; ps.shard(0).len()]],
            3 => vec![vec![0.0; ps.shard(1).len()]],
            _ => Vec::new(),
        };
        let mine: Vec<&[f32]> = own.iter().map(Vec::as_slice).collect();
        let mut full = if me == 0 {
            vec![vec![0.0; n]]
        } else {
            Vec::new()
        };
        let step = if me == 3 { 6 } else { 5 };
        ps.gather_state(c, 0, step, &mine, &mut full)
            .err()
            .map(|e| e.to_string())
    });
    let err = out[0]
        .clone()
        .expect("the root must refuse differing step counts");
    assert!(err.contains("n3") && err.contains("step 6"), "{err}");
}
