//! The embedding API with a model type of the program's own: `examples/custom_model` (a "wide and
//! deep" model with hand-written backprop on the digits data) trains
//!
//! - as a whole cluster inside one process (`LocalCluster`, `custom_model local`), and
//! - as separate OS processes of the example binary, one node each (`EmbeddedNode`,
//!   `custom_model node MANIFEST ...`, exactly `lockstep node`'s flags), named in the manifest or
//!   described by torchrun's environment, or started by `lockstep_runtime::launch` with the
//!   example as the node executable (`custom_model launch`);
//!
//! every run reaches its held-out accuracy and ends with the in-process run's weights, bit for
//! bit, and the README's embedding snippet is checked to be the example's code. Feeding a
//! program's own rows is tests/embed_own_data.rs.
//!
//! Tests cannot name an example's binary (`CARGO_BIN_EXE_*` covers `[[bin]]`s only), so the
//! example is built here with the cargo that runs the tests, in the same profile, and its path
//! read from cargo's JSON messages. Every process a test starts is in its own process group,
//! killed on every exit path of the test.

mod common;

use common::{free_port, root, run_dir, Proc, SpawnOwned};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Held-out accuracy every run must reach (the digits set, 10 classes; the example reaches about
/// 0.97: a linear model alone gets about 0.95).
const MIN_ACCURACY: f64 = 0.9;

/// One training run on this slow machine takes seconds; building the example may take minutes.
const RUN_LIMIT: Duration = Duration::from_secs(300);

const TOKEN: &str = "embed-test-token";

/// The `custom_model` example binary, built once per test binary in the tests' own profile.
fn example() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        // target/<profile>/deps/embed-<hash>: the profile the tests were built in.
        let me = std::env::current_exe().expect("test executable");
        let profile = me
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|p| p.to_str())
            .expect("target/<profile>/deps")
            .to_string();
        let profile = if profile == "debug" {
            "dev".to_string()
        } else {
            profile
        };
        let cargo = std::env::var("CARGO")
            .ok()
            .or_else(|| option_env!("CARGO").map(String::from))
            .unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // What cargo set for this test's own run, not for a build: build scripts that watch
        // these (ring's watches CARGO_MANIFEST_DIR, CARGO_PKG_*, OUT_DIR) would rebuild.
        const RUN_ONLY: [&str; 8] = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ];
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_BIN_") || RUN_ONLY.contains(&&*k)
            {
                cmd.env_remove(&*k);
            }
        }
        let out = cmd
            .args(["build", "--example", "custom_model", "--profile", &profile])
            .args([
                "--message-format",
                "json-render-diagnostics",
                "--manifest-path",
            ])
            .arg(root().join("Cargo.toml"))
            .current_dir(root())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example custom_model");
        assert!(
            out.status.success(),
            "building the custom_model example failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "custom_model")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named no custom_model executable")
    })
}

/// Children of one test, each owned by a [`Proc`] guard (its own process group, killed when the
/// test ends, passes or panics), so no node outlives it.
#[derive(Default)]
struct Procs {
    kids: Vec<(String, Proc, PathBuf)>,
}

impl Procs {
    /// Start the example with `args` (and `env`), its output in `<log_dir>/<name>.log`.
    fn start(&mut self, name: &str, args: &[&str], env: &[(&str, String)], log_dir: &Path) {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut cmd = Command::new(example());
        cmd.args(args)
            .current_dir(root())
            .env("LOCKSTEP_TOKEN", TOKEN)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd.spawn_owned().expect("start the custom_model example");
        self.kids.push((name.to_string(), child, log_path));
    }

    /// Wait until every child exited successfully; panics with the logs of the first one that
    /// fails, or of all of them when the deadline passes.
    fn wait_all(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut done = vec![false; self.kids.len()];
        while done.iter().any(|d| !d) {
            for (i, (name, child, log)) in self.kids.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(
                        status.success(),
                        "{name} failed ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                    done[i] = true;
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .kids
                    .iter()
                    .map(|(n, _, l)| {
                        format!(
                            "--- {n}:\n{}",
                            std::fs::read_to_string(l).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!("not finished within {limit:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("report is JSON")
}

fn accuracy(report: &serde_json::Value) -> f64 {
    common::num(report, &["eval", "accuracy"])
}

/// The line in `path` once it is complete (the coordinator's bound control address).
fn wait_for_line(path: &Path, procs: &mut Procs, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        let (name, child, log) = &mut procs.kids[0];
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "{name} exited ({status}) before announcing its address:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole cluster in one process of the example (`LocalCluster`, `custom_model local`, two
/// workers over shared memory): its report, run once for every test that compares with it.
fn in_process_report() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = run_dir("embed-local");
        let d = dir.path().to_str().unwrap();
        let mut procs = Procs::default();
        procs.start(
            "local",
            &["local", "--workers", "2", "--run-dir", d],
            &[],
            dir.path(),
        );
        procs.wait_all(RUN_LIMIT);
        let r = read_report(&dir.path().join("report.json"));
        assert_eq!(r["world_size"], 2);
        assert!(
            accuracy(&r) >= MIN_ACCURACY,
            "in-process run: accuracy {} below {MIN_ACCURACY}: {r}",
            accuracy(&r)
        );
        r
    })
}

/// `report` reached the score and ended with the in-process cluster's weights.
fn check_against_in_process(what: &str, report: &serde_json::Value) {
    let local = in_process_report();
    assert_eq!(report["world_size"], 2, "{what}: {report}");
    assert_eq!(report["status"], "completed", "{what}: {report}");
    assert!(
        accuracy(report) >= MIN_ACCURACY,
        "{what}: accuracy {} below {MIN_ACCURACY}: {report}",
        accuracy(report)
    );
    assert_eq!(report["rounds"], local["rounds"], "{what}");
    assert_eq!(
        report["weights_sha256"], local["weights_sha256"],
        "{what} must end with the in-process cluster's weights"
    );
}

fn manifest() -> String {
    let m = root().join("examples/custom_model/cluster.toml");
    m.to_str().unwrap().to_string()
}

#[test]
fn custom_model_nodes_as_separate_processes_match_the_in_process_cluster() {
    // Every node its own process of the example, started by hand as on separate machines: the
    // coordinator (port 0, its bound address announced in a file) and two workers.
    let dir = run_dir("embed-nodes");
    let d = dir.path().to_str().unwrap();
    let manifest = manifest();
    let announce = dir.path().join("coordinator.addr");
    let report = dir.path().join("report.json");
    let base = ["node", &manifest, "--workers", "2", "--run-dir", d];
    let mut procs = Procs::default();
    let mut args = base.to_vec();
    args.extend([
        "--node",
        "coordinator",
        "--announce",
        announce.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    procs.start("coordinator", &args, &[], dir.path());
    let addr = wait_for_line(&announce, &mut procs, Duration::from_secs(60));
    for w in ["worker-0", "worker-1"] {
        let mut args = base.to_vec();
        args.extend(["--node", w, "--coordinator", &addr]);
        procs.start(w, &args, &[], dir.path());
    }
    procs.wait_all(RUN_LIMIT);
    check_against_in_process("nodes as processes", &read_report(&report));
    assert!(dir.path().join("model.safetensors").is_file());
}

#[test]
fn custom_model_nodes_from_the_torchrun_environment_match_the_in_process_cluster() {
    // Two ranks as a cluster manager starts them on two machines: no --node, no per-node
    // manifest entries; rank 0 is the coordinator and a worker.
    let dir = run_dir("embed-env");
    let manifest = manifest();
    let port = free_port();
    let report = dir.path().join("report.json");
    let mut procs = Procs::default();
    for rank in 0..2 {
        let rank_dir = dir.path().join(format!("rank-{rank}"));
        let mut args = vec!["node", &manifest, "--run-dir", rank_dir.to_str().unwrap()];
        if rank == 0 {
            args.extend(["--report", report.to_str().unwrap()]);
        }
        let env = [
            ("RANK", rank.to_string()),
            ("WORLD_SIZE", "2".to_string()),
            ("MASTER_ADDR", "127.0.0.1".to_string()),
            ("MASTER_PORT", port.clone()),
        ];
        procs.start(&format!("rank-{rank}"), &args, &env, dir.path());
    }
    procs.wait_all(RUN_LIMIT);
    check_against_in_process("torchrun-style ranks", &read_report(&report));
}

#[test]
fn custom_model_launched_as_processes_over_tcp_matches_the_in_process_cluster() {
    // `custom_model launch`: `lockstep_runtime::launch` starts every node as a process of the
    // example itself (`LaunchOptions::exe`), here over TCP.
    let dir = run_dir("embed-launch");
    let d = dir.path().to_str().unwrap();
    let mut procs = Procs::default();
    procs.start(
        "launch",
        &[
            "launch",
            "--workers",
            "2",
            "--transport",
            "tcp",
            "--run-dir",
            d,
        ],
        &[],
        dir.path(),
    );
    procs.wait_all(RUN_LIMIT);
    let report = read_report(&dir.path().join("report.json"));
    assert_eq!(report["transport"], "tcp");
    check_against_in_process("launched nodes over tcp", &report);
    for node in ["coordinator", "worker-0", "worker-1"] {
        assert!(
            dir.path().join(format!("logs/{node}.log")).is_file(),
            "{node}'s log"
        );
    }
}

/// The README's embedding snippet is the example's code: its lines (comments and blank lines
/// aside) appear in examples/custom_model/main.rs in the same order.
#[test]
fn readme_embedding_snippet_is_the_examples_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let main = std::fs::read_to_string(root().join("examples/custom_model/main.rs")).unwrap();
    let start = readme
        .find("```rust\n// examples/custom_model/main.rs")
        .expect("README has the embedding snippet (```rust // examples/custom_model/main.rs)");
    let body = &readme[start + "```rust\n".len()..];
    let snippet = &body[..body.find("```").expect("snippet ends")];
    let code = |l: &&str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with("//") && t != "..."
    };
    let mut lines = main.lines().map(str::trim);
    for want in snippet.lines().filter(code).map(str::trim) {
        assert!(
            lines.any(|l| l == want),
            "README snippet line {want:?} is not in examples/custom_model/main.rs (in this order)"
        );
    }
}
