//! Nodes that would train on different data are refused at registration, naming both views: in
//! environment mode (as under Kubernetes or Slurm, every node reading its own copy of the
//! manifest and the data) one node fits another transform, here because its `[job.data]`
//! settings differ; other files on its host, or a dataset that changed before a replacement
//! joined, differ in their rows the same way. Without the check the job would run, each node
//! on its own batches.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_node_whose_data_differs_is_refused_naming_both_views() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let kids: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = Command::new(exe());
            cmd.env_clear()
                .envs([
                    ("RANK", r.to_string()),
                    ("WORLD_SIZE", "2".into()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.clone()),
                    ("LOCKSTEP_TOKEN", "same-token".into()),
                ])
                .current_dir(root())
                .arg("node")
                .arg("examples/credit/cluster.toml")
                .args(["--set", "job.epochs=1", "--run-dir"])
                .arg(dir.path().join(format!("rank-{r}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if r == 1 {
                cmd.args(["--set", "job.data.test_fraction=0.3"]);
            }
            cmd.spawn_owned().unwrap()
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| wait_with_deadline(k, LIMIT))
        .collect();
    for (r, out) in outs.iter().enumerate() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rank {r} must fail:\n{err}");
        assert!(
            err.contains("data differs") && err.contains("rows, transform"),
            "rank {r} must name the two data views:\n{err}"
        );
    }
}
