//! The Python binding (`python/lockstep`, native module from `python/native`) in real Python
//! processes on loopback: collectives on NumPy arrays over tcp and shm for 1, 2 and 3 ranks, bad
//! inputs, and a frozen peer named within the peer timeout. The PyTorch side is in
//! `tests/python_torch.rs`.

mod common;
use common::python::lockstep_package;
use common::python_run::{lockstep_run_in, ranks};
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn collectives_on_numpy_arrays_over_tcp_and_shm() {
    let py = python();
    for transport in ["tcp", "shm"] {
        for world in [1, 2, 3] {
            let procs = ranks(
                &py,
                "collectives.py",
                &["collectives"],
                world,
                &[("LOCKSTEP_TRANSPORT", transport)],
            );
            for (r, p) in procs.into_iter().enumerate() {
                let out = p.wait_with_deadline(LIMIT);
                let t = text(&out);
                assert!(
                    out.status.success() && t.contains(&format!("ok rank {r} of {world}")),
                    "{transport}, world {world}, rank {r}:\n{t}"
                );
            }
        }
    }
}

#[test]
fn a_frozen_peer_is_named_within_the_peer_timeout() {
    let py = python();
    let mut procs = ranks(
        &py,
        "collectives.py",
        &["frozen-peer"],
        2,
        &[
            ("LOCKSTEP_PEER_TIMEOUT_MS", "1500"),
            ("LOCKSTEP_TRANSPORT", "tcp"),
        ],
    );
    let frozen = procs.pop().unwrap();
    let out = procs.pop().unwrap().wait_with_deadline(LIMIT);
    drop(frozen); // SIGKILL (a stopped process dies of it too)
    let t = text(&out);
    eprintln!("{t}");
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("PeerError") && t.contains("rank-1"),
        "the error does not name rank-1:\n{t}"
    );
}

#[test]
fn bad_settings_are_named_before_joining() {
    let py = python();
    let run = |env: &[(&str, &str)], want: &str| {
        let mut c = Command::new(&py);
        c.args(["-c", "import lockstep; lockstep.init()"])
            .env("PYTHONPATH", lockstep_package())
            .env_remove("RANK")
            .env_remove("WORLD_SIZE")
            .env_remove("MASTER_ADDR")
            .env_remove("MASTER_PORT")
            .env_remove("LOCKSTEP_TOKEN");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("python");
        let t = text(&out);
        assert!(
            !out.status.success() && t.contains(want),
            "{env:?}: want {want:?}:\n{t}"
        );
    };
    run(&[], "RANK is not set");
    let base = [
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "1"),
    ];
    run(&base, "LOCKSTEP_TOKEN is not set");
    let mut bad = base.to_vec();
    bad[1] = ("WORLD_SIZE", "two");
    run(&bad, "WORLD_SIZE=\"two\" is not a number");
    let mut wrong = base.to_vec();
    wrong.push(("LOCKSTEP_TOKEN", "t"));
    wrong.push(("LOCKSTEP_TRANSPORT", "carrier-pigeon"));
    run(&wrong, "unknown transport \"carrier-pigeon\"");
    let mut high = base.to_vec();
    high[0] = ("RANK", "2");
    high.push(("LOCKSTEP_TOKEN", "t"));
    run(&high, "rank 2 is not below world size 2");
}

/// `lockstep run -n N -- python3 SCRIPT`: torchrun's variables and a token for every rank, output
/// prefixed with the rank, and a failing rank stops the job with its name and status.
#[test]
fn lockstep_run_starts_the_ranks_and_names_a_failing_one() {
    let py = python();
    let d = run_dir("py-run");
    let script = root().join("tests/python/collectives.py");
    let (out, t, _) = lockstep_run_in(
        d.path(),
        &py,
        &["-n", "3"],
        &script,
        &["collectives"],
        LIMIT,
    );
    assert!(out.status.success(), "{t}");
    for r in 0..3 {
        assert!(t.contains(&format!("[rank-{r}] ok rank {r} of 3")), "{t}");
        assert!(d.path().join(format!("logs/rank-{r}.log")).exists());
    }
    let exit3 = "import os, lockstep; lockstep.init(); os._exit(3 if lockstep.rank() == 1 else 0)";
    let (out, t, _) = lockstep_run_in(
        d.path(),
        &py,
        &["-n", "2"],
        Path::new("-c"),
        &[exit3],
        LIMIT,
    );
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("rank-1 exited with status 3"), "{t}");
}

/// `lockstep.init(manifest=..., node=...)`: the manifest's workers are the ranks, its token
/// (`env:VAR`) and cluster name apply, rank 0 serves the rendezvous at the coordinator's address;
/// a node that is not a worker and a coordinator without a fixed port are named.
#[test]
fn a_manifest_names_the_group() {
    let py = python();
    let d = run_dir("py-manifest");
    let write = |name: &str, addr: &str| {
        let path = d.path().join(name);
        let text = format!(
            "[cluster]\nname = \"py-manifest\"\ntoken = \"env:PY_MANIFEST_TOKEN\"\ntransport = \"tcp\"\n\n\
             [[nodes]]\nname = \"coordinator\"\naddr = \"{addr}\"\nroles = [\"coordinator\"]\n\n\
             [[nodes]]\nname = \"worker-0\"\nroles = [\"worker\"]\n\n\
             [[nodes]]\nname = \"worker-1\"\nroles = [\"worker\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = write("good.toml", &format!("127.0.0.1:{}", free_port()));
    let script = root().join("tests/python/collectives.py");
    let procs: Vec<Proc> = ["worker-0", "worker-1"]
        .iter()
        .map(|node| {
            Command::new(&py)
                .arg(&script)
                .args(["manifest", good.to_str().unwrap(), node])
                .env("PYTHONPATH", lockstep_package())
                .env("PY_MANIFEST_TOKEN", "from-the-environment")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn_owned()
                .expect("python")
        })
        .collect();
    for (r, p) in procs.into_iter().enumerate() {
        let out = p.wait_with_deadline(LIMIT);
        let t = text(&out);
        assert!(
            out.status.success() && t.contains(&format!("ok rank {r} of 2 from the manifest")),
            "{t}"
        );
    }
    let fails = |manifest: &Path, node: &str, want: &str| {
        let out = Command::new(&py)
            .arg(&script)
            .args(["manifest", manifest.to_str().unwrap(), node])
            .env("PYTHONPATH", lockstep_package())
            .env("PY_MANIFEST_TOKEN", "t")
            .output()
            .expect("python");
        let t = text(&out);
        assert!(
            !out.status.success() && t.contains(want),
            "want {want:?}:\n{t}"
        );
    };
    fails(&good, "coordinator", "node 'coordinator' is not a worker");
    let port0 = write("port0.toml", "127.0.0.1:0");
    fails(
        &port0,
        "worker-0",
        "the rendezvous needs a fixed port there",
    );
}
