//! The cluster managers' environment contract, without a cluster: `lockstep node MANIFEST` run
//! with exactly the variables a Kubernetes Indexed Job (examples/kubernetes) or Slurm's srun with
//! examples/slurm/lockstep.sbatch gives each task, and nothing else (the environment is
//! cleared), must train and write rank 0's report. The Kubernetes YAML is parsed (with Python's
//! PyYAML, from the tests' Python environment) and checked against that contract.

mod common;
use common::{python_cmd, SpawnOwned};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Run `world` nodes of the credit example (one epoch), rank `r` with `vars(r)` only; rank 0's
/// report.
fn train_with(world: usize, vars: impl Fn(usize) -> Vec<(String, String)>) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let kids: Vec<_> = (0..world)
        .map(|r| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
            cmd.env_clear()
                .envs(vars(r))
                .arg("node")
                .arg(root().join("examples/credit/cluster.toml"))
                .args(["--set", "job.epochs=1", "--run-dir"])
                .arg(dir.path().join(format!("rank-{r}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if r == 0 {
                cmd.arg("--report").arg(&report);
            }
            cmd.spawn_owned().unwrap()
        })
        .collect();
    for (r, k) in kids.into_iter().enumerate() {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rank {r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

fn pairs(v: &[(&str, String)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn kubernetes_indexed_job_variables_are_enough() {
    let port = free_port().to_string();
    // What the Job's pod spec sets (examples/kubernetes/lockstep.yaml) plus what Kubernetes adds
    // to every pod of an Indexed Job; MASTER_ADDR is a DNS name, as the Service's record is.
    let report = train_with(2, |r| {
        pairs(&[
            ("JOB_COMPLETION_INDEX", r.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("MASTER_ADDR", "localhost".into()),
            ("MASTER_PORT", port.clone()),
            ("LOCKSTEP_TOKEN", "k8s-secret-token".into()),
            ("HOSTNAME", format!("lockstep-{r}")),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1".into()),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
        ])
    });
    assert_eq!(report["world_size"], 2);
    assert!(report["rounds"].as_u64().unwrap() > 0);
}

#[test]
fn slurm_srun_variables_are_enough() {
    let port = free_port().to_string();
    // What srun sets per task (a subset that matters: rank, size, node list, local ids) plus
    // what examples/slurm/lockstep.sbatch exports.
    let report = train_with(2, |r| {
        pairs(&[
            ("SLURM_PROCID", r.to_string()),
            ("SLURM_NTASKS", "2".into()),
            ("SLURM_LOCALID", r.to_string()),
            ("SLURM_NODEID", "0".into()),
            ("SLURM_JOB_NODELIST", "localhost".into()),
            ("SLURM_JOB_ID", "4242".into()),
            ("MASTER_ADDR", "localhost".into()),
            ("MASTER_PORT", port.clone()),
            ("LOCKSTEP_TOKEN", "slurm-token".into()),
        ])
    });
    assert_eq!(report["world_size"], 2);
}

#[test]
fn slurm_script_sets_the_contract() {
    let s = std::fs::read_to_string(root().join("examples/slurm/lockstep.sbatch")).unwrap();
    for needle in [
        "export MASTER_ADDR=",
        "export MASTER_PORT=",
        "LOCKSTEP_TOKEN",
        "srun ",
        "--distribution=block",
        "node $MANIFEST",
    ] {
        assert!(s.contains(needle), "lockstep.sbatch lacks {needle:?}");
    }
}

#[test]
fn kubernetes_yaml_parses_and_matches_the_contract() {
    let yaml = root().join("examples/kubernetes/lockstep.yaml");
    let script =
        "import sys, json, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    // PyYAML comes from the tests' Python environment (tests/requirements.txt).
    let out = python_cmd()
        .args(["-c", script])
        .arg(&yaml)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        yaml.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let svc = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "the Service must be headless"
    );
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], spec["parallelism"]);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["subdomain"], svc["metadata"]["name"]);
    let c = &pod["containers"][0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the pod's env"))
            .clone()
    };
    assert_eq!(
        env("WORLD_SIZE")["value"].as_str().unwrap(),
        spec["completions"].to_string()
    );
    let master = format!(
        "{}-0.{}",
        job["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(env("MASTER_ADDR")["value"], master.as_str());
    assert!(env("MASTER_PORT")["value"].is_string());
    assert!(env("LOCKSTEP_TOKEN")["valueFrom"]["secretKeyRef"]["name"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "node");
    // The image copies examples/ to /opt/lockstep/examples (Dockerfile).
    let manifest = args[1].trim_start_matches("/opt/lockstep/");
    assert!(Path::new(&root().join(manifest)).exists(), "{manifest}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("/opt/lockstep/examples"));
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
}
