//! Choosing RDMA in real processes, on a machine without RDMA (any machine the tests run on
//! that has no active RDMA device; with one, `auto` would rightly pick RDMA and these tests
//! return early, saying so):
//! - `auto` with the two workers on different hosts trains over TCP, each worker logs why its
//!   link is not RDMA, and the weights equal a `--transport tcp` run's. "Different hosts" is
//!   one worker on 127.0.0.1 and the other on this machine's own network address (the runtime
//!   treats a cluster whose addresses are all loopback as one host and uses shared memory);
//!   a machine with no network address but loopback skips this test, saying so;
//! - `bench link` and `bench allreduce` with `--transport rdma` stop before measuring, naming
//!   what is missing.

mod common;
use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// The reason this build on this machine gives for not running RDMA (the default build:
/// no RDMA support compiled in).
fn missing() -> &'static str {
    if cfg!(feature = "rdma") {
        "RDMA"
    } else {
        "this lockstep was built without RDMA support; rebuild with"
    }
}

fn rdma_here() -> bool {
    let here = lockstep_transport::rdma::available();
    if here {
        eprintln!("SKIPPED: this machine has an active RDMA device; auto picks rdma here");
    }
    here
}

/// This machine's address on its default route (a UDP `connect` sends nothing), when it has one
/// other than loopback.
fn host_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn manifest(dir: &std::path::Path, other_host: std::net::IpAddr) -> String {
    let data = root().join("examples/data/diabetes.parquet");
    let text = format!(
        r#"[cluster]
name = "rdma-select"
transport = "auto"

[[nodes]]
name = "coordinator"
roles = ["coordinator"]

[[nodes]]
name = "worker-0"
addr = "127.0.0.1:0"
roles = ["worker"]

[[nodes]]
name = "worker-1"
addr = "{other_host}:0"
roles = ["worker"]

[job]
rounds = 6
global_batch = 32
seed = 7

[job.data]
path = "{}"
label = "target"
task = "regression"

[job.model]
kind = "linear"

[job.optimizer]
kind = "sgd"
lr = 0.05
"#,
        data.display()
    );
    let p = dir.join("cluster.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn auto_between_hosts_without_rdma_falls_back_to_tcp_logs_why_and_trains_like_tcp() {
    if rdma_here() {
        return;
    }
    let Some(ip) = host_ip() else {
        eprintln!("SKIPPED: this machine has no network address but loopback (one host only)");
        return;
    };
    let auto = run_dir("rdma-auto");
    let m = manifest(auto.path(), ip);
    let (out, report) = launch(&m, auto.path(), &[], LIMIT);
    assert_ok(&out);
    for w in ["worker-0", "worker-1"] {
        let log = std::fs::read_to_string(auto.path().join(format!("logs/{w}.log"))).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("auto: link between hosts uses tcp"))
            .unwrap_or_else(|| panic!("{w} logged no transport choice:\n{log}"));
        assert!(
            line.contains("reason=this node cannot run RDMA: ") && line.contains(missing()),
            "{w}: {line}"
        );
        let other = if w == "worker-0" {
            "worker-1"
        } else {
            "worker-0"
        };
        assert!(
            line.contains(&format!("peer=\"{other}\"")) || line.contains(&format!("peer={other}")),
            "{line}"
        );
    }
    let tcp = run_dir("rdma-tcp");
    let (out_t, report_t) = launch(&m, tcp.path(), &["--transport", "tcp"], LIMIT);
    assert_ok(&out_t);
    let (a, t) = (report.unwrap(), report_t.unwrap());
    assert_eq!(a["world_size"], 2);
    assert_eq!(
        a["weights_sha256"], t["weights_sha256"],
        "auto (over tcp) and tcp differ"
    );
}

#[test]
fn bench_with_rdma_on_a_machine_without_it_names_what_is_missing() {
    if rdma_here() {
        return;
    }
    for args in [
        &["bench", "link", "--transport", "rdma", "--size", "64KiB"][..],
        &[
            "bench",
            "allreduce",
            "--world",
            "2",
            "--transport",
            "rdma",
            "--sizes",
            "64KiB",
        ][..],
    ] {
        let out = run(args, LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded:\n{err}");
        assert!(
            err.contains("--transport rdma: ") && err.contains(missing()),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
