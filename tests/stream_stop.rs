//! Stopping and resuming streams over real processes: a graceful stop (SIGINT to `lockstep
//! launch`) of an unbounded stream whose producers keep sending, and `--resume` of an
//! arrival-order stream, each with producers replaying from the start.

mod common;
#[path = "common/stream.rs"]
mod stream;

use common::*;
use std::time::{Duration, Instant};
use stream::*;

/// Rows each producer sends per round (`global_batch = 32`, 2 producers).
const PER_ROUND: u64 = 16;

fn offsets(meta: &serde_json::Value) -> (u64, u64) {
    let o = &meta["stream_offsets"];
    (
        o["0"].as_u64().expect("offset of producer 0"),
        o["1"].as_u64().expect("offset of producer 1"),
    )
}

#[test]
fn sigint_stops_an_unbounded_stream_with_a_checkpoint_and_resume_continues_it_exactly() {
    let data = credit();
    let unbounded = [
        "--set",
        "job.data.stream.bounded=false",
        "--set",
        "job.data.stream.buffer_rows=512",
    ];

    // Producers that keep sending; SIGINT to the launcher after the checkpoint of round 20.
    let dir = run_dir("stream-stop");
    let job = spawn_launch(dir.path(), &unbounded);
    let b = bootstrap(dir.path());
    let producers: Vec<_> = (0..2u32)
        .map(|id| {
            let (b, d) = (b.clone(), data.clone());
            std::thread::spawn(move || send_endless(&b, id, &d, u64::MAX, 100))
        })
        .collect();
    wait_for_checkpoint(dir.path(), 20, Duration::from_secs(120));
    let asked = Instant::now();
    signal(job.id(), libc::SIGINT);
    let out = wait_with_deadline(job, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "a graceful stop is not a failure: {:?}\n{log}",
        out.status
    );
    println!(
        "stopped {:.2} s after SIGINT",
        asked.elapsed().as_secs_f64()
    );
    for p in producers {
        // The job ended under them: their connection fails.
        assert!(
            p.join().unwrap().is_err(),
            "an endless producer ended cleanly"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "stopped", "{report}");
    assert_eq!(report["stopped_by"], "SIGINT");
    assert_eq!(report["stream"]["ended"], "stopped");
    let n = num(&report, &["rounds"]) as u64;
    assert!(
        n >= 20,
        "stopped at round {n}, before the checkpoint of round 20"
    );
    assert_eq!(num(&report, &["samples"]) as u64, n * 32);
    assert!(
        log.contains("SIGINT received"),
        "the log does not tell the stop"
    );
    assert!(dir.path().join("model.safetensors").exists());
    assert!(dir
        .path()
        .join(format!("checkpoints/round-{n:09}/prequential.json"))
        .exists());
    let (o0, o1) = offsets(&meta(dir.path(), n));
    assert_eq!((o0, o1), (n * PER_ROUND, n * PER_ROUND));
    let _ = std::fs::remove_file(dir.path().join("endpoints.json"));

    // Resume up to round n + 30; both producers replay their endless stream from offset 0.
    let total = n + 30;
    let rounds = format!("job.rounds={total}");
    let mut args = unbounded.to_vec();
    args.extend(["--set", &rounds, "--resume"]);
    let job = spawn_launch(dir.path(), &args);
    let b = bootstrap(dir.path());
    let rows = total * PER_ROUND;
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_endless(&b2, 1, &d2, rows, 100));
    let r0 = send_endless(&b, 0, &data, rows, 100).expect("producer 0");
    let r1 = p1.join().unwrap().expect("producer 1");
    assert_eq!(
        r0,
        (30 * PER_ROUND, n * PER_ROUND),
        "producer 0: (new, dropped)"
    );
    assert_eq!(
        r1,
        (30 * PER_ROUND, n * PER_ROUND),
        "producer 1: (new, dropped)"
    );
    let (_, resumed) = finish(job, dir.path());
    assert_eq!(resumed["status"], "completed");
    assert_eq!(num(&resumed, &["rounds"]) as u64, total);
    assert_eq!(
        num(&resumed, &["stream", "duplicates_dropped"]) as u64,
        2 * n * PER_ROUND
    );

    // A run that never stopped gives the same weights.
    let full = run_dir("stream-nostop");
    let mut args = unbounded.to_vec();
    args.extend(["--set", &rounds]);
    let job = spawn_launch(full.path(), &args);
    let b = bootstrap(full.path());
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_endless(&b2, 1, &d2, rows, 64));
    send_endless(&b, 0, &data, rows, 64).expect("producer 0");
    p1.join().unwrap().expect("producer 1");
    let (_, uninterrupted) = finish(job, full.path());
    assert_eq!(
        sha(&resumed),
        sha(&uninterrupted),
        "stopped and resumed: the weights differ from the uninterrupted run's"
    );
}

#[test]
fn arrival_order_resumes_exactly_once_from_the_offsets_each_producer_trained() {
    let data = credit();
    let half = ROWS / 2;
    // One worker takes rows from both producers as they arrive.
    let arrival = [
        "--workers",
        "1",
        "--set",
        "job.data.stream.order=\"arrival\"",
    ];
    let dir = run_dir("stream-arrival-kill");
    let mut job = spawn_launch(dir.path(), &arrival);
    let b = bootstrap(dir.path());
    // 2 x 1200 rows: 75 rounds of 32, checkpoints at 20, 40, 60; then training waits.
    let mut held = Vec::new();
    for id in 0..2u32 {
        let mut p = lockstep_runtime::stream::Producer::connect(
            &b,
            CLUSTER,
            TOKEN.as_bytes(),
            id,
            0,
            &data.schema(),
        )
        .expect("connect");
        held.push(p.send(&data.slice(id as usize * half, 600)).map(|_| p));
    }
    let mut held: Vec<_> = held.into_iter().map(|p| p.expect("send")).collect();
    for (id, p) in held.iter_mut().enumerate() {
        p.send(&data.slice(id * half + 600, 600)).expect("send");
    }
    wait_for_checkpoint(dir.path(), 60, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));
    job.kill().expect("kill the launcher");
    let _ = job.wait();
    drop(held);
    let t = Instant::now();
    while !processes_mentioning(&dir.path().display().to_string()).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "nodes outlived the launcher"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!meta_exists(dir.path(), 80));
    let (o0, o1) = offsets(&meta(dir.path(), 60));
    println!("arrival-order offsets after round 60: {o0} + {o1}");
    assert_eq!(
        o0 + o1,
        60 * 32,
        "the checkpoint commits exactly 60 rounds of rows"
    );
    let _ = std::fs::remove_file(dir.path().join("endpoints.json"));

    // Resume; both producers replay their whole stream from the start.
    let mut args = arrival.to_vec();
    args.push("--resume");
    let job = spawn_launch(dir.path(), &args);
    let b = bootstrap(dir.path());
    let (b2, d2) = (b.clone(), data.clone());
    let p1 = std::thread::spawn(move || send_rust(&b2, 1, &d2, half..ROWS, 100));
    let r0 = send_rust(&b, 0, &data, 0..half, 100).expect("producer 0");
    let r1 = p1.join().unwrap().expect("producer 1");
    assert_eq!(r0, (half as u64 - o0, o0), "producer 0: (new, dropped)");
    assert_eq!(r1, (half as u64 - o1, o1), "producer 1: (new, dropped)");
    let (_, resumed) = finish(job, dir.path());
    assert_eq!(
        num(&resumed, &["stream", "duplicates_dropped"]) as u64,
        1920
    );
    // 4454 rows in all, 1920 trained before: 79 more rounds of 32 (6 rows left over).
    assert_eq!(num(&resumed, &["rounds"]) as u64, 139);
    assert_eq!(num(&resumed, &["stream", "rows_trained"]) as u64, 79 * 32);
    assert_eq!(resumed["stream"]["order"], "arrival");
}
