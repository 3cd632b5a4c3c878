//! Rounds, shards and resumption on the real mnist5k training table: 1 worker and N workers see
//! the same samples per round, epochs are seeded permutations, a cursor resumes exactly, and the
//! stream source cuts record batches the same way.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use lockstep_trainer::data::{
    epoch_permutation, load, BatchSource, DataCursor, DataError, DataSpec, FileRecords,
    RecordBatchSource, Scaling, Split, StreamSource, TableSource, Task,
};
use lockstep_trainer::Batch;

fn digits() -> (DataSpec, Split) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/digits.parquet");
    let mut spec = DataSpec::new(path, "label", Task::Multiclass);
    spec.scaling = Scaling::Divide(16.0);
    let split = load(&spec, 5).unwrap();
    (spec, split)
}

/// Concatenation of batches in order.
fn concat(parts: &[Batch]) -> (Vec<f32>, usize) {
    (
        parts.iter().flat_map(|b| b.x.iter().copied()).collect(),
        parts.iter().map(|b| b.rows).sum(),
    )
}

#[test]
fn every_world_size_sees_the_same_rows_per_round() {
    let (_, split) = digits();
    let table = Arc::new(split.train);
    let global = 64;
    let mut single = TableSource::new("digits", table.clone(), global, false, 11, 0, 1).unwrap();
    let rounds = single.plan().batches_per_epoch() * 2 + 3; // crosses two epoch boundaries
    for world in [2usize, 3, 5, 7] {
        let mut ranks: Vec<TableSource> = (0..world)
            .map(|r| {
                TableSource::new("digits", table.clone(), global, false, 11, r, world).unwrap()
            })
            .collect();
        let mut one = TableSource::new("digits", table.clone(), global, false, 11, 0, 1).unwrap();
        for round in 0..rounds {
            let whole = one.next_shard().unwrap().unwrap();
            let shares: Vec<_> = ranks
                .iter_mut()
                .map(|s| s.next_shard().unwrap().unwrap())
                .collect();
            let parts: Vec<Batch> = shares.iter().map(|s| s.batch.clone()).collect();
            let (x, rows) = concat(&parts);
            assert_eq!(
                (x, rows),
                (whole.batch.x.clone(), whole.batch.rows),
                "world {world} round {round}"
            );
            let sizes: Vec<usize> = parts.iter().map(|b| b.rows).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            assert!(shares
                .iter()
                .all(|s| s.cursor == whole.cursor && s.global_rows == whole.batch.rows));
        }
    }
    // Epoch 0 visits every training row once.
    let mut seen = vec![0u32; table.rows];
    let perm = epoch_permutation(table.rows, 11, 0);
    for c in 0..single.plan().batches_per_epoch() {
        let b = single.next_shard().unwrap().unwrap();
        assert_eq!(
            b.cursor,
            DataCursor {
                epoch: 0,
                batch_in_epoch: c
            }
        );
        for &i in single.plan().global_batch(&perm, b.cursor) {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|n| *n == 1));
}

#[test]
fn epochs_are_different_seeded_permutations() {
    let a = epoch_permutation(1000, 3, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_permutation(1000, 3, 0));
    assert_ne!(a, epoch_permutation(1000, 3, 1));
    assert_ne!(a, epoch_permutation(1000, 4, 0));
}

#[test]
fn a_saved_cursor_resumes_exactly() {
    let (_, split) = digits();
    let table = Arc::new(split.train);
    let mut straight = TableSource::new("digits", table.clone(), 100, true, 8, 1, 3).unwrap();
    let mut resumed = TableSource::new("digits", table, 100, true, 8, 1, 3).unwrap();
    let per = straight.plan().batches_per_epoch();
    for _ in 0..per + 2 {
        straight.next_shard().unwrap();
    }
    let saved = serde_json::to_string(&straight.cursor()).unwrap();
    let cursor: DataCursor = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        cursor,
        DataCursor {
            epoch: 1,
            batch_in_epoch: 2
        }
    );
    resumed.seek(cursor).unwrap();
    for _ in 0..per {
        assert_eq!(
            straight.next_shard().unwrap(),
            resumed.next_shard().unwrap()
        );
    }
    let past = DataCursor {
        epoch: 0,
        batch_in_epoch: per,
    };
    assert!(matches!(resumed.seek(past), Err(DataError::Source { .. })));
}

/// The file's record batches handed out `rows` rows at a time, as a stream would.
struct Chunked {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl RecordBatchSource for Chunked {
    fn name(&self) -> &str {
        "chunked-digits"
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, DataError> {
        Ok((!self.batches.is_empty()).then(|| self.batches.remove(0)))
    }
}

fn chunked(spec: &DataSpec, rows: usize) -> Chunked {
    let (schema, batches) = FileRecords::open(&spec.path, spec.format, &spec.label)
        .unwrap()
        .read_all()
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let mut off = 0;
        while off < b.num_rows() {
            let n = rows.min(b.num_rows() - off);
            out.push(b.slice(off, n));
            off += n;
        }
    }
    Chunked {
        schema,
        batches: out,
    }
}

#[test]
fn stream_source_shards_arrival_order_like_the_file() {
    let (spec, split) = digits();
    let whole_file = chunked(&spec, usize::MAX).batches.remove(0);
    let all = split.fitted.table(&whole_file, "digits").unwrap();
    assert_eq!(all.rows, 1797);
    let global = 50;
    let world = 3;
    let mut ranks: Vec<_> = (0..world)
        .map(|r| {
            StreamSource::new(chunked(&spec, 37), split.fitted.clone(), global, r, world).unwrap()
        })
        .collect();
    let mut round = 0;
    loop {
        let shares: Vec<_> = ranks.iter_mut().map(|s| s.next_shard().unwrap()).collect();
        if shares[0].is_none() {
            assert!(shares.iter().all(Option::is_none));
            break;
        }
        let parts: Vec<Batch> = shares.into_iter().map(|s| s.unwrap().batch).collect();
        let start = round * global;
        let expect: Vec<usize> = (start..(start + global).min(all.rows)).collect();
        assert_eq!(
            concat(&parts),
            concat(&[all.batch(&expect)]),
            "round {round}"
        );
        round += 1;
    }
    assert_eq!(round, 1797usize.div_ceil(global));
    // A stream resumes forward from a cursor, and refuses to go back.
    let mut s = StreamSource::new(chunked(&spec, 37), split.fitted.clone(), global, 0, 1).unwrap();
    s.seek(DataCursor {
        epoch: 0,
        batch_in_epoch: 4,
    })
    .unwrap();
    let b = s.next_shard().unwrap().unwrap();
    assert_eq!(b.batch, all.batch(&(200..250).collect::<Vec<_>>()));
    assert!(s
        .seek(DataCursor {
            epoch: 0,
            batch_in_epoch: 1
        })
        .is_err());
}

#[test]
fn scaled_shard_gradients_average_to_the_one_worker_gradient() {
    use lockstep_trainer::model::{build_model, ModelKind, ModelSpec};
    let (_, split) = digits();
    let table = Arc::new(split.train);
    let mut model = build_model(
        &ModelSpec::new(ModelKind::Logistic),
        table.cols,
        split.classes.len(),
        3,
    )
    .unwrap();
    let n = model.params().len();
    let mut one = TableSource::new("digits", table.clone(), 64, false, 11, 0, 1).unwrap();
    let whole = one.next_shard().unwrap().unwrap();
    let mut expect = vec![0.0f32; n];
    model
        .forward_backward(&whole.batch, &mut expect, &mut |_, _| {})
        .unwrap();
    for world in [3usize, 5, 100] {
        let mut avg = vec![0.0f32; n];
        for rank in 0..world {
            let mut src =
                TableSource::new("digits", table.clone(), 64, false, 11, rank, world).unwrap();
            let share = src.next_shard().unwrap().unwrap();
            let mut g = vec![0.0f32; n];
            if share.batch.rows > 0 {
                model
                    .forward_backward(&share.batch, &mut g, &mut |_, _| {})
                    .unwrap();
            }
            for (a, v) in avg.iter_mut().zip(&g) {
                *a += v * share.scale / world as f32;
            }
        }
        let worst = avg
            .iter()
            .zip(&expect)
            .map(|(a, e)| (a - e).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "world {world}: max difference {worst}");
    }
}

/// A streamed dataset (`memory_mb` set): `lanes` fixes the batches, so every world size sees the
/// same rows per round, across window and epoch boundaries, whether or not it divides the lanes;
/// seeking to a cursor resumes the same rows.
#[test]
fn a_streamed_dataset_gives_every_world_size_the_same_rows_per_round() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/digits.parquet");
    let mut spec = DataSpec::new(path, "label", Task::Multiclass);
    spec.scaling = Scaling::Divide(16.0);
    spec.memory_mb = Some(1);
    spec.block_rows = Some(50);
    let split = load(&spec, 5).unwrap();
    assert!(
        split.dataset.is_some(),
        "memory_mb takes the streamed route"
    );
    let (global, lanes) = (60, 4);
    let source = |rank, world| {
        lockstep_trainer::data::train_source(
            &split, "digits", global, false, 5, lanes, rank, world, false,
        )
        .unwrap()
    };
    let mut one = source(0, 1);
    let rows = split.dataset.as_ref().unwrap().layout.train_rows;
    let rounds = 2 * rows.div_ceil(global as u64) + 5; // two epoch boundaries
    let mut whole = Vec::new();
    for _ in 0..rounds {
        whole.push(one.next_shard().unwrap().unwrap());
    }
    // Every training row once per epoch.
    let per_epoch: usize = whole
        .iter()
        .filter(|s| s.cursor.epoch == 0)
        .map(|s| s.batch.rows)
        .sum();
    assert_eq!(per_epoch as u64, rows);
    for world in [2usize, 3, 4] {
        let mut ranks: Vec<_> = (0..world).map(|r| source(r, world)).collect();
        for (round, w) in whole.iter().enumerate() {
            let parts: Vec<Batch> = ranks
                .iter_mut()
                .map(|s| s.next_shard().unwrap().unwrap().batch)
                .collect();
            assert_eq!(
                concat(&parts),
                (w.batch.x.clone(), w.batch.rows),
                "world {world} round {round}"
            );
        }
    }
    let mut resumed = source(1, 2);
    resumed.seek(whole[40].cursor).unwrap();
    let mut fresh = source(1, 2);
    for _ in 0..40 {
        fresh.next_shard().unwrap();
    }
    for round in 40..50 {
        let (a, b) = (
            resumed.next_shard().unwrap().unwrap(),
            fresh.next_shard().unwrap().unwrap(),
        );
        assert_eq!(a.batch.x, b.batch.x, "round {round} after seek");
    }
}
