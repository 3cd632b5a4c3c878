//! `cluster.tls` with the real binary: `lockstep tls gen` makes the certificates, `lockstep
//! launch` runs the coordinator and workers as separate processes over TCP on loopback (ports
//! chosen by the system), and the weights come out the same as over plain TCP. Files that do not
//! fit stop the node at start-up with a message naming the file and the node.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);
const NODES: &str = "coordinator,worker-0,worker-1";

fn gen(dir: &Path) {
    let out = run(
        &[
            "tls",
            "gen",
            "--nodes",
            NODES,
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_ok(&out);
}

/// `--set` overrides turning TLS on with the files in `dir` (`{node}` per node).
fn tls_sets(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("cluster.tls.ca=\"{d}/ca.pem\""),
        format!("cluster.tls.cert=\"{d}/{{node}}.pem\""),
        format!("cluster.tls.key=\"{d}/{{node}}.key\""),
    ]
}

fn args<'a>(sets: &'a [String], base: &[&'a str]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    for s in sets {
        v.push("--set");
        v.push(s);
    }
    v
}

fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir.join("logs")).unwrap().flatten() {
        all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    all
}

const BASE: &[&str] = &[
    "--transport",
    "tcp",
    "--set",
    "job.rounds=40",
    "--set",
    "cluster.allreduce=\"ring\"",
];

#[test]
fn credit_over_tls_gives_the_same_weights_as_plain_tcp() {
    let certs = run_dir("tls-certs");
    gen(certs.path());
    for f in ["ca.pem", "ca.key", "worker-0.pem", "worker-0.key"] {
        assert!(certs.path().join(f).exists(), "tls gen did not write {f}");
    }
    let plain = run_dir("tls-plain");
    let (out, rp) = launch("examples/credit/cluster.toml", plain.path(), BASE, LIMIT);
    assert_ok(&out);
    let secure = run_dir("tls-on");
    let sets = tls_sets(certs.path());
    let (out, rt) = launch(
        "examples/credit/cluster.toml",
        secure.path(),
        &args(&sets, BASE),
        LIMIT,
    );
    assert_ok(&out);
    let (rp, rt) = (rp.expect("plain report"), rt.expect("tls report"));
    assert_eq!(rt["transport"], "tcp");
    assert_eq!(rp["weights_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(rp["weights_sha256"], rt["weights_sha256"]);
    let l = logs(secure.path());
    for node in ["coordinator", "worker-0", "worker-1"] {
        assert!(
            l.contains(&format!("node=\"{node}\"")) || l.contains(node),
            "no log of {node}"
        );
    }
    assert_eq!(
        l.matches("TLS on every TCP link").count(),
        3,
        "every node must run TLS:\n{l}"
    );
    assert!(!logs(plain.path()).contains("TLS on every TCP link"));
}

#[test]
fn files_that_do_not_fit_stop_the_node_at_start_up_naming_them() {
    let certs = run_dir("tls-bad");
    gen(certs.path());
    // worker-1's key is missing.
    std::fs::remove_file(certs.path().join("worker-1.key")).unwrap();
    let dir = run_dir("tls-nokey");
    let sets = tls_sets(certs.path());
    let (out, report) = launch(
        "examples/credit/cluster.toml",
        dir.path(),
        &args(&sets, BASE),
        LIMIT,
    );
    assert!(!out.status.success() && report.is_none());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        logs(dir.path())
    );
    assert!(
        text.contains("worker-1.key") && text.contains("node worker-1"),
        "the missing key file and its node must be named:\n{text}"
    );
    // worker-1's certificate comes from another CA.
    let other = run_dir("tls-other");
    gen(other.path());
    for f in ["worker-1.pem", "worker-1.key"] {
        std::fs::copy(other.path().join(f), certs.path().join(f)).unwrap();
    }
    let dir = run_dir("tls-otherca");
    let (out, _) = launch(
        "examples/credit/cluster.toml",
        dir.path(),
        &args(&sets, BASE),
        LIMIT,
    );
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        logs(dir.path())
    );
    assert!(
        text.contains("worker-1.pem") && text.contains("is not signed by the CA"),
        "{text}"
    );
    assert!(processes_mentioning(dir.path().to_str().unwrap()).is_empty());
}
