//! Parameter-server checkpoints with real processes: two server shards own the Adam state of
//! their halves of the parameters; a checkpoint gathers it, so a run whose server shard is
//! killed (SIGKILL) resumes with `--resume` (or is restarted by `--max-restarts`) and ends with
//! the uninterrupted run's weights. The same checkpoint with its optimizer state zeroed must end
//! elsewhere: the state is what makes the weights equal. Waits are bounded and generous; no
//! wall-time assertions.

mod common;
use common::*;
use lockstep_tensor::{read_safetensors, write_safetensors, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);
/// 4400 rounds: long enough that a kill after the second checkpoint lands mid-run.
const EPOCHS: u32 = 400;

/// A diabetes job with Adam (state: two moments and a step count per shard), checkpoints every
/// 100 rounds, and `servers` parameter-server nodes (0: the coordinator serves).
fn manifest(dir: &Path, servers: usize, epochs: u32) -> PathBuf {
    let data = root().join("examples/data/diabetes.parquet");
    let mut nodes = String::from(
        "[[nodes]]\nname = \"coordinator\"\nroles = [\"coordinator\"]\n\n\
         [[nodes]]\nname = \"worker-0\"\nroles = [\"worker\"]\n\n\
         [[nodes]]\nname = \"worker-1\"\nroles = [\"worker\"]\n\n",
    );
    for s in 0..servers {
        nodes.push_str(&format!(
            "[[nodes]]\nname = \"server-{s}\"\nroles = [\"server\"]\n\n"
        ));
    }
    let body = format!(
        "[cluster]\nname = \"pscheck\"\ntoken = \"env:LOCKSTEP_TOKEN\"\n\n{nodes}\
         [job]\nseed = 3\nepochs = {epochs}\nglobal_batch = 32\naggregation = \"parameter-server\"\n\n\
         [job.checkpoint]\nevery_rounds = 100\nkeep = 100\n\n\
         [job.data]\npath = {data:?}\nlabel = \"target\"\ntask = \"regression\"\nscaling = \"standard\"\n\n\
         [job.model]\nkind = \"linear\"\n\n\
         [job.optimizer]\nkind = \"adam\"\nlr = 0.01\n"
    );
    let path = dir.join("ps.toml");
    std::fs::write(&path, body).expect("write the manifest");
    path
}

fn spawn_launch(manifest: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let report = dir.join("report.json");
    let mut args = vec![
        "launch",
        manifest.to_str().unwrap(),
        "--run-dir",
        dir.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Command::new(exe())
        .args(&args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("spawn lockstep")
}

/// PID of the process of node `name` in run directory `dir`.
fn pid_of(dir: &Path, name: &str) -> i32 {
    let needle = format!("--node {name} ");
    let found: Vec<i32> = processes_mentioning(dir.to_str().unwrap())
        .into_iter()
        .filter(|p| p.contains(&needle) && p.contains(" node "))
        .filter_map(|p| p.split(':').next().and_then(|s| s.parse().ok()))
        .collect();
    assert_eq!(found.len(), 1, "expected one process of {name}: {found:?}");
    found[0]
}

fn kill9(pid: i32) {
    // SAFETY: plain kill(2) of a process this test started (through the launcher).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Complete checkpoints under `dir`, oldest first.
fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("meta.json").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_for_checkpoints(dir: &Path, n: usize) {
    let start = Instant::now();
    while checkpoints(dir).len() < n {
        assert!(start.elapsed() < LIMIT, "no {n} checkpoints under {dir:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sha(dir: &Path) -> String {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report"))
            .expect("json");
    r["weights_sha256"].as_str().expect("sha").to_string()
}

fn meta(ckpt: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(ckpt.join("meta.json")).unwrap()).unwrap()
}

/// The optimizer buffers of a checkpoint, by name.
fn optimizer_buffers(ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    let set = read_safetensors(ckpt.join("state.safetensors")).expect("state.safetensors");
    set.tensors
        .iter()
        .filter(|(n, _)| n.starts_with("optimizer."))
        .map(|(n, t)| (n.clone(), t.to_vec::<f32>().unwrap()))
        .collect()
}

/// Copy `ckpt` into `dir`'s checkpoints with every optimizer buffer zeroed (and the checksum in
/// `meta.json` made to match): the checkpoint a parameter server without state would write.
fn stateless_copy(ckpt: &Path, dir: &Path) {
    let to = dir.join("checkpoints").join(ckpt.file_name().unwrap());
    std::fs::create_dir_all(&to).unwrap();
    let set = read_safetensors(ckpt.join("state.safetensors")).unwrap();
    let tensors: Vec<(String, Tensor)> = set
        .tensors
        .iter()
        .map(|(n, t)| match n.starts_with("optimizer.") {
            true => {
                let zeros = vec![0.0f32; t.shape().numel()];
                (
                    n.clone(),
                    Tensor::from_slice(t.shape().clone(), &zeros).unwrap(),
                )
            }
            false => (n.clone(), t.clone()),
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let state = to.join("state.safetensors");
    write_safetensors(&state, &refs, None).unwrap();
    let mut m = meta(ckpt);
    m["state_sha256"] = lockstep_runtime::checkpoint::sha256_file(&state)
        .unwrap()
        .into();
    std::fs::write(to.join("meta.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn parameter_server_state_survives_a_killed_server_and_a_resume() {
    // A: uninterrupted, two server shards.
    let a = run_dir("ps-a");
    let ma = manifest(a.path(), 2, EPOCHS);
    let out = wait_with_deadline(spawn_launch(&ma, a.path(), &[]), LIMIT);
    assert_ok(&out);
    let sha_a = sha(a.path());
    // Its checkpoints hold the servers' state: Adam moments that are not zero, and the step
    // count of the round they continue at.
    let first = checkpoints(a.path())
        .into_iter()
        .next()
        .expect("a checkpoint");
    let m = meta(&first);
    assert_eq!(m["optimizer_step"], m["round"], "{m}");
    let bufs = optimizer_buffers(&first);
    let names: Vec<&str> = bufs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["optimizer.exp_avg", "optimizer.exp_avg_sq"]);
    for (n, b) in &bufs {
        // Both halves (one per server shard) were gathered.
        let (lo, hi) = b.split_at(b.len() / 2);
        assert!(
            lo.iter().any(|v| *v != 0.0) && hi.iter().any(|v| *v != 0.0),
            "{n} has a zero half: {b:?}"
        );
    }

    // B: kill server-1 after the second checkpoint; the job stops naming it; --resume.
    let b = run_dir("ps-b");
    let mb = manifest(b.path(), 2, EPOCHS);
    let child = spawn_launch(&mb, b.path(), &[]);
    wait_for_checkpoints(b.path(), 2);
    kill9(pid_of(b.path(), "server-1"));
    let out = wait_with_deadline(child, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the run with a killed server must fail:\n{err}"
    );
    assert!(
        err.contains("server-1"),
        "the error does not name server-1:\n{err}"
    );
    let left = processes_mentioning(b.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left: {left:?}");
    let resumed_from = checkpoints(b.path()).last().cloned().unwrap();
    let out = wait_with_deadline(spawn_launch(&mb, b.path(), &["--resume"]), LIMIT);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming from"),
        "the second run did not resume"
    );
    assert_eq!(
        sha(b.path()),
        sha_a,
        "resumed run differs from the uninterrupted one"
    );

    // C: the same checkpoint without the optimizer state ends elsewhere.
    let c = run_dir("ps-c");
    let mc = manifest(c.path(), 2, EPOCHS);
    stateless_copy(&resumed_from, c.path());
    let out = wait_with_deadline(spawn_launch(&mc, c.path(), &["--resume"]), LIMIT);
    assert_ok(&out);
    let sha_c = sha(c.path());
    eprintln!(
        "uninterrupted {sha_a}; resumed from {} {}; same checkpoint with zeroed state {sha_c}",
        resumed_from.display(),
        sha(b.path())
    );
    assert_ne!(sha_c, sha_a, "zeroed optimizer state made no difference");
}

#[test]
fn the_coordinator_as_server_is_restarted_from_its_checkpoint() {
    // The coordinator serves (no server nodes); --max-restarts restarts every node from the
    // newest checkpoint after a worker is killed.
    let a = run_dir("psc-a");
    let ma = manifest(a.path(), 0, EPOCHS);
    let out = wait_with_deadline(spawn_launch(&ma, a.path(), &[]), LIMIT);
    assert_ok(&out);
    let b = run_dir("psc-b");
    let mb = manifest(b.path(), 0, EPOCHS);
    let child = spawn_launch(&mb, b.path(), &["--max-restarts", "1"]);
    wait_for_checkpoints(b.path(), 2);
    kill9(pid_of(b.path(), "worker-0"));
    let out = wait_with_deadline(child, LIMIT);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restart 1 of 1"), "no restart logged:\n{err}");
    assert_eq!(sha(b.path()), sha(a.path()), "restarted run differs");
}

#[test]
fn a_killed_server_shard_stops_the_job_naming_it() {
    let d = run_dir("ps-kill");
    let m = manifest(d.path(), 2, 5000);
    let child = spawn_launch(&m, d.path(), &[]);
    wait_for_checkpoints(d.path(), 1);
    kill9(pid_of(d.path(), "server-0"));
    let out = wait_with_deadline(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail:\n{err}");
    for line in err.lines().filter(|l| l.contains("server-0")) {
        eprintln!("  {line}");
    }
    assert!(
        err.contains("lockstep: error: node server-0 was killed by signal 9"),
        "the error does not name server-0:\n{err}"
    );
    let left = processes_mentioning(d.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn elastic_membership_with_a_parameter_server_is_refused_with_the_reason() {
    let d = run_dir("ps-elastic");
    let (out, _) = launch(
        "examples/diabetes/cluster.toml",
        d.path(),
        &["--elastic", "1"],
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "elastic with a parameter server must be refused"
    );
    assert!(
        err.contains("job.elastic") && err.contains("--resume") && err.contains("server shard"),
        "the refusal does not say why and what to do:\n{err}"
    );
    let left = processes_mentioning(d.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left: {left:?}");
}
