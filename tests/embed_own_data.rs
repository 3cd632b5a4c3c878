//! A program's own rows (docs/embedding.md, "Your own data"): rows held in memory train through
//! a Parquet file the program writes, or stream into a running `LocalCluster` from the same
//! process with `lockstep_runtime::stream::Producer`.

mod common;

use common::parquet_fixtures::write_parquet;
use common::run_dir;
use std::path::Path;
use std::time::{Duration, Instant};

/// One training run on this slow machine takes seconds.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// `batch` as the Parquet file `path`.
fn write_rows(path: &Path, batch: &arrow_array::RecordBatch) {
    write_parquet(path, batch, Default::default());
}

/// Rows a program holds in memory: two features; the label is 1 above the line a + 2b = 0, with
/// 5% of the labels flipped (so 0.95 is the best accuracy any model can reach).
fn rows_in_memory(n: usize, seed: u64) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let a: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y: Vec<i64> = (0..n)
        .map(|i| i64::from((a[i] + 2.0 * b[i] > 0.0) != rng.gen_bool(0.05)))
        .collect();
    RecordBatch::try_from_iter([
        ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
        ("b", Arc::new(Float64Array::from(b)) as ArrayRef),
        ("label", Arc::new(Int64Array::from(y)) as ArrayRef),
    ])
    .unwrap()
}

/// The manifest of the own-data tests (as in docs/embedding.md); `data` is the `[job.data]`
/// table's source-specific part.
fn own_data_manifest(name: &str, data: &str) -> String {
    format!(
        r#"
[cluster]
name = "{name}"
token = "literal:own-data-token"

[[nodes]]
name = "coordinator"
roles = ["coordinator"]

[[nodes]]
name = "worker-0"
roles = ["worker"]

[job]
seed = 1
global_batch = 32

[job.data]
label = "label"
features = ["a", "b"]
task = "binary"
{data}

[job.model]
kind = "logistic"

[job.optimizer]
kind = "adam"
lr = 0.05
"#
    )
}

fn sets(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Rows a program holds in memory train through a Parquet file it writes (docs/embedding.md,
/// "Your own data", files): a manifest written next to it, a `LocalCluster` in this process.
#[test]
fn rows_from_memory_train_through_a_parquet_file() {
    use lockstep::runtime::embed::LocalCluster;
    let dir = run_dir("embed-own-data");
    write_rows(&dir.path().join("rows.parquet"), &rows_in_memory(1000, 3));
    let manifest = own_data_manifest("own-data", r#"path = "rows.parquet""#);
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();

    let report =
        LocalCluster::from_manifest(&dir.path().join("job.toml"), &sets(&["job.epochs=5"]))
            .unwrap()
            .workers(2)
            .run_dir(dir.path())
            .run()
            .unwrap();
    assert_eq!(report.world_size, 2);
    let accuracy = report.eval["accuracy"];
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {}", report.summary());
}

/// Rows a program holds in memory stream into a running `LocalCluster` from this process with
/// `lockstep_runtime::stream::Producer` (docs/embedding.md, "Your own data", streams): the
/// bootstrap address from `<run dir>/endpoints.json`, two producers, every row trained on.
#[test]
fn rows_from_memory_stream_into_a_running_local_cluster() {
    use lockstep::runtime::embed::LocalCluster;
    use lockstep::runtime::stream::Producer;
    let dir = run_dir("embed-own-stream");
    // The warm-up sample: schema, scaling statistics and the held-out rows the report scores.
    write_rows(&dir.path().join("warmup.parquet"), &rows_in_memory(300, 4));
    let data = r#"source = "stream"
path = "warmup.parquet"

[job.data.stream]
producers = 2
connect_timeout_ms = 60000"#;
    let manifest = own_data_manifest("own-stream", data);
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();

    let run_dir = dir.path().to_path_buf();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = LocalCluster::from_manifest(&run_dir.join("job.toml"), &[])
            .and_then(|c| c.workers(2).run_dir(&run_dir).run());
        let _ = done_tx.send(r);
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let bootstrap = loop {
        if let Ok(e) = lockstep::runtime::observe::endpoints::read(dir.path()) {
            if let Some(b) = e.get("bootstrap") {
                break b.clone();
            }
        }
        if let Ok(r) = done.try_recv() {
            panic!("the stream job ended before its producers connected: {r:?}");
        }
        assert!(Instant::now() < deadline, "no bootstrap in endpoints.json");
        std::thread::sleep(Duration::from_millis(20));
    };
    let rows = rows_in_memory(1600, 5);
    for id in 0..2u32 {
        let mine = rows.slice(id as usize * 800, 800);
        let mut p = Producer::connect(
            &bootstrap,
            "own-stream",
            b"own-data-token",
            id,
            0,
            &rows.schema(),
        )
        .unwrap();
        for start in (0..800).step_by(100) {
            p.send(&mine.slice(start, 100)).unwrap();
        }
        let reply = p.close().unwrap();
        assert_eq!(reply.rows, Some(800), "producer {id}: {reply:?}");
    }
    let report = done
        .recv_timeout(RUN_LIMIT)
        .expect("the stream job did not end")
        .unwrap();
    let stream = report.stream.as_ref().expect("a stream report");
    assert_eq!(stream.rows_received, 1600, "{report:?}");
    assert_eq!(stream.rows_trained, 1600, "{report:?}");
    let accuracy = report.eval["accuracy"];
    assert!(
        accuracy >= 0.85,
        "accuracy {accuracy}: {}",
        report.summary()
    );
}
