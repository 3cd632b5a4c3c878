//! Soak: 10,000 rounds of a small model; the resident memory of every node must stay flat after
//! warm-up (growth under 5%). Ignored by default (it runs for a while); run it with
//! `cargo test --release --test soak -- --ignored --nocapture`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
#[ignore = "soak test: 10,000 rounds; run explicitly"]
fn ten_thousand_rounds_keep_memory_flat() {
    let dir = run_dir("soak");
    let d = dir.path().to_str().unwrap().to_string();
    let transport = std::env::var("SOAK_TRANSPORT").unwrap_or_else(|_| "shm".into());
    let child = Command::new(exe())
        .args([
            "launch",
            "examples/diabetes/cluster.toml",
            "--aggregation",
            "allreduce",
            "--transport",
            &transport,
            "--set",
            "job.rounds=10000",
            "--set",
            "job.eval_every=1000",
            "--run-dir",
            &d,
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_owned()
        .unwrap();
    let start = Instant::now();
    // pid -> (node name, samples of (seconds, rss KiB))
    let mut series: BTreeMap<String, (String, Vec<(f64, u64)>)> = BTreeMap::new();
    let child_pid = child.id().to_string();
    let mut child = Some(child);
    loop {
        if let Some(c) = child.as_mut() {
            if c.try_wait().unwrap().is_some() {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "soak run did not finish"
        );
        for p in processes_mentioning(&d) {
            let pid = p.split(':').next().unwrap().to_string();
            if pid == child_pid || !p.contains(" node ") {
                continue;
            }
            let name = p
                .split("--node ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            if let Some(kib) = rss_kib(&pid) {
                series
                    .entry(pid)
                    .or_insert_with(|| (name, Vec::new()))
                    .1
                    .push((start.elapsed().as_secs_f64(), kib));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.take().unwrap().wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!series.is_empty());
    let mut failures = Vec::new();
    for (pid, (name, s)) in &series {
        assert!(s.len() >= 10, "too few samples for {name}");
        // Warm-up: the first fifth of the samples.
        let after_warmup = s[s.len() / 5].1;
        let peak_late = s[s.len() / 5..].iter().map(|x| x.1).max().unwrap();
        let growth = (peak_late as f64 - after_warmup as f64) / after_warmup as f64;
        let pts: Vec<String> = (0..10)
            .map(|i| {
                let (t, k) = s[i * (s.len() - 1) / 9];
                format!("{t:.1}s:{k}")
            })
            .collect();
        println!("{name}: {}", pts.join(" "));
        println!("{name} (pid {pid}): RSS after warm-up {after_warmup} KiB, peak later {peak_late} KiB, growth {:.2}%", growth * 100.0);
        if growth >= 0.05 {
            failures.push(format!(
                "{name}: resident memory grew {:.1}% after warm-up",
                growth * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
