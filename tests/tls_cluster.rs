//! `cluster.tls` with the real binary: `lockstep tls gen` makes the certificates, `lockstep
//! launch` runs the coordinator and workers as separate processes over TCP on loopback (ports
//! chosen by the system), and the weights come out the same as over plain TCP. Files that do not
//! fit stop the node at start-up with a message naming the file and the node.

mod common;
#[path = "common/stream.rs"]
mod stream;

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

#[test]
fn python_producers_stream_over_tls_and_one_without_a_certificate_is_refused() {
    let certs = run_dir("tls-stream-certs");
    let out = run(
        &[
            "tls",
            "gen",
            "--nodes",
            "coordinator,worker-0,worker-1,producer-0,producer-1",
            "--out",
            certs.path().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_ok(&out);
    let dir = run_dir("tls-stream");
    let sets = tls_sets(certs.path());
    let job = stream::spawn_launch(dir.path(), &args(&sets, &[]));
    let b = stream::bootstrap(dir.path());
    let d = certs.path().display().to_string();
    let tls = |id: u32| {
        vec![
            "--tls-ca".to_string(),
            format!("{d}/ca.pem"),
            "--tls-cert".into(),
            format!("{d}/producer-{id}.pem"),
            "--tls-key".into(),
            format!("{d}/producer-{id}.key"),
        ]
    };
    // Without TLS options the producer cannot get in: the bootstrap speaks TLS only.
    let plain = python_cmd()
        .args(["-m", "lockstep_client", "send", "--bootstrap", &b])
        .args(["--producer", "0", "--rows", "0:10"])
        .arg("examples/data/credit_data.parquet")
        .current_dir(root())
        .env("PYTHONPATH", root().join("python"))
        .env("LOCKSTEP_TOKEN", stream::TOKEN)
        .output_owned()
        .unwrap();
    assert!(!plain.status.success());
    let why = String::from_utf8_lossy(&plain.stderr);
    assert!(why.contains("expects TLS"), "{why}");
    let half = stream::ROWS / 2;
    let (b2, t0) = (b.clone(), tls(0));
    let p0 = std::thread::spawn(move || {
        let t: Vec<&str> = t0.iter().map(String::as_str).collect();
        stream::send_python_with(&b2, 0, &format!("0:{half}"), 100, &t)
    });
    let t1 = tls(1);
    let t: Vec<&str> = t1.iter().map(String::as_str).collect();
    stream::send_python_with(&b, 1, &format!("{half}:{}", stream::ROWS), 100, &t);
    p0.join().unwrap();
    let (_, r) = stream::finish(job, dir.path());
    assert_eq!(num(&r, &["stream", "rows_received"]) as usize, stream::ROWS);
    assert_eq!(num(&r, &["stream", "duplicates_dropped"]) as u64, 0);
    assert_eq!(r["stream"]["ended"], "producers closed");
    assert_eq!(logs(dir.path()).matches("TLS on every TCP link").count(), 3);
}

/// The Rust producer (`ingest::Producer::connect_tls`, the same CA, certificate and key files
/// as the Python client) streams into a TLS job; a producer without TLS is refused at once with
/// the reason, and so is one whose certificate names another producer.
#[test]
fn rust_producers_stream_over_tls_and_one_without_a_certificate_is_refused() {
    use lockstep_runtime::stream::Producer;
    use lockstep_transport::tls::TlsFiles;
    let certs = run_dir("tls-rust-stream-certs");
    let out = run(
        &[
            "tls",
            "gen",
            "--nodes",
            "coordinator,worker-0,worker-1,producer-0,producer-1",
            "--out",
            certs.path().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_ok(&out);
    let dir = run_dir("tls-rust-stream");
    let sets = tls_sets(certs.path());
    let job = stream::spawn_launch(dir.path(), &args(&sets, &[]));
    let b = stream::bootstrap(dir.path());
    let data = stream::credit();
    let files = |cert_of: &str| TlsFiles {
        ca: certs.path().join("ca.pem"),
        cert: certs.path().join(format!("{cert_of}.pem")),
        key: certs.path().join(format!("{cert_of}.key")),
    };
    let connect = |id: u32, f: Option<TlsFiles>| {
        let (c, t, s) = (stream::CLUSTER, stream::TOKEN.as_bytes(), data.schema());
        match f {
            Some(f) => Producer::connect_tls(&b, c, t, id, 0, &s, &f),
            None => Producer::connect(&b, c, t, id, 0, &s),
        }
    };
    // Without TLS: refused by the bootstrap with the reason, not retried or left hanging.
    let Err(e) = connect(0, None) else {
        panic!("a plain producer got into a TLS job")
    };
    assert!(e.to_string().contains("expects TLS"), "{e}");
    // producer-1's certificate for producer 0: it does not name the producer it claims to be.
    let Err(e) = connect(0, Some(files("producer-1"))) else {
        panic!("a producer with another producer's certificate got in")
    };
    assert!(e.to_string().contains("producer-0"), "{e}");
    let half = stream::ROWS / 2;
    for (id, range) in [(0u32, 0..half), (1, half..stream::ROWS)] {
        let mut p = connect(id, Some(files(&format!("producer-{id}")))).unwrap();
        for at in range.clone().step_by(100) {
            let n = 100.min(range.end - at);
            p.send(&data.slice(at, n)).unwrap();
        }
        let r = p.close().unwrap();
        assert_eq!(r.rows, Some(range.len() as u64), "producer {id}");
    }
    let (_, r) = stream::finish(job, dir.path());
    assert_eq!(num(&r, &["stream", "rows_received"]) as usize, stream::ROWS);
    assert_eq!(num(&r, &["stream", "duplicates_dropped"]) as u64, 0);
    assert_eq!(r["stream"]["ended"], "producers closed");
}
