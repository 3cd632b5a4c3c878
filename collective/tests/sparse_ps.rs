//! Sharded embedding tables over the in-process mesh (ranks as threads): pulls return the
//! owners' rows, pushes sum each row's gradients over the workers, shards co-located with the
//! workers or on ranks of their own, and two shards give the bits of one.

use lockstep_collective::{CollectiveConfig, Communicator, RowStore, SparseRows, SparseShards};
use lockstep_transport::local::mesh;
use std::collections::HashMap;
use std::time::Duration;

const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
const WIDTHS: [usize; 2] = [2, 3];

/// Rows start at `id + table / 2` in every value; gradients are subtracted.
#[derive(Default)]
struct Store {
    rows: HashMap<(usize, u64), Vec<f32>>,
}

impl Store {
    fn row(&mut self, t: usize, id: u64) -> &mut Vec<f32> {
        self.rows
            .entry((t, id))
            .or_insert_with(|| vec![id as f32 + t as f32 * 0.5; WIDTHS[t]])
    }
}

impl RowStore for Store {
    fn read(&mut self, t: usize, ids: &[u64], out: &mut Vec<f32>) {
        for &id in ids {
            out.extend_from_slice(&self.row(t, id).clone());
        }
    }
    fn apply(&mut self, t: usize, g: &SparseRows) {
        for (i, &id) in g.ids.iter().enumerate() {
            let row = self.row(t, id);
            row.iter_mut().zip(g.row(i)).for_each(|(w, d)| *w -= d);
        }
    }
}

/// Worker `w`'s ids per table: its own row, a shared one, a far one.
fn ids_of(w: usize) -> Vec<Vec<u64>> {
    let w = w as u64;
    vec![vec![w, 10, 1000 + w], vec![5]]
}

/// Gradients with values that make the order of additions visible in the bits.
fn grads_of(w: usize, ids: &[Vec<u64>]) -> Vec<SparseRows> {
    ids.iter()
        .zip(WIDTHS)
        .map(|(list, dim)| SparseRows {
            dim,
            ids: list.clone(),
            values: (0..list.len() * dim)
                .map(|k| 0.1 + (w as f32) * 1e-7 + (k % dim) as f32 * 1e7)
                .collect(),
        })
        .collect()
}

/// Three rounds of pull/push on `world` ranks; returns each worker's final pull.
fn run(world: usize, workers: Vec<usize>, shards: Vec<usize>) -> Vec<Vec<SparseRows>> {
    let groups = mesh(&NAMES[..world], Duration::from_secs(10));
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let (workers, shards) = (workers.clone(), shards.clone());
            std::thread::spawn(move || {
                let mut c = Communicator::new(g, CollectiveConfig::default());
                let me = c.rank();
                let mut layout =
                    SparseShards::new(WIDTHS.to_vec(), &shards, &workers, world).unwrap();
                let mut store = Store::default();
                let is_shard = shards.contains(&me);
                let ids = match workers.contains(&me) {
                    true => ids_of(me),
                    false => Vec::new(),
                };
                let mut last = Vec::new();
                for round in 0..3 {
                    c.set_round(round);
                    let st: Option<&mut dyn RowStore> = is_shard.then_some(&mut store as _);
                    last = layout.pull(&mut c, &ids, st).unwrap();
                    let g = if ids.is_empty() {
                        Vec::new()
                    } else {
                        grads_of(me, &ids)
                    };
                    let st: Option<&mut dyn RowStore> = is_shard.then_some(&mut store as _);
                    layout.push(&mut c, &g, 0.5, st).unwrap();
                }
                let st: Option<&mut dyn RowStore> = is_shard.then_some(&mut store as _);
                let fin = layout.pull(&mut c, &ids, st).unwrap();
                assert_eq!(last.len(), fin.len());
                fin
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank panicked"))
        .collect()
}

#[test]
fn pulls_read_the_owners_rows_and_pushes_sum_over_workers() {
    let out = run(3, vec![0, 1, 2], vec![0, 1, 2]);
    // Row 10 of table 0 was pushed by all three workers each round: 3 rounds x 3 x 0.5 x g.
    for (w, rows) in out.iter().enumerate() {
        assert_eq!(rows[0].ids, vec![w as u64, 10, 1000 + w as u64]);
        assert!(rows[0].is_valid() && rows[1].is_valid());
        let shared = rows[0].row(1)[0];
        assert!(
            (shared - (10.0 - 3.0 * 3.0 * 0.5 * 0.1)).abs() < 1e-4,
            "{shared}"
        );
        let own = rows[0].row(0)[0];
        assert!((own - (w as f32 - 3.0 * 0.5 * 0.1)).abs() < 1e-4, "{own}");
    }
    assert_eq!(
        out[0][0].row(1),
        out[2][0].row(1),
        "every worker sees the same row"
    );
}

#[test]
fn dedicated_shards_give_the_bits_of_one_shard() {
    let one = run(3, vec![0, 1], vec![2]);
    let two = run(4, vec![0, 1], vec![2, 3]);
    let colocated = run(2, vec![0, 1], vec![0, 1]);
    assert_eq!(one[..2], two[..2]);
    assert_eq!(one[..2], colocated[..2]);
    assert!(one[2].is_empty(), "a pure shard pulls nothing");
}

#[test]
fn bad_requests_are_refused_before_anything_is_sent() {
    let groups = mesh(&NAMES[..1], Duration::from_secs(5));
    let g = groups.into_iter().next().unwrap();
    let mut c = Communicator::new(g, CollectiveConfig::default());
    let mut layout = SparseShards::new(WIDTHS.to_vec(), &[0], &[0], 1).unwrap();
    let mut store = Store::default();
    let e = layout
        .pull(&mut c, &[vec![3, 1], vec![]], Some(&mut store))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ascending"), "{e}");
    let e = layout
        .pull(&mut c, &[vec![1], vec![]], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without its rows"), "{e}");
    assert!(SparseShards::new(vec![2, 0], &[0], &[0], 1).is_err());
}
