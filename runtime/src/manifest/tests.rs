//! Unit tests of manifest parsing, overrides and validation: every rule names its key.

use super::*;

const BASE: &str = r#"[cluster]
name = "t"

[[nodes]]
name = "coordinator"
roles = ["coordinator"]

[[nodes]]
name = "worker-0"
roles = ["worker"]

[[nodes]]
name = "worker-1"
addr = "127.0.0.1:7001"
roles = ["worker"]

[job]
epochs = 2
global_batch = 32

[job.data]
path = "data.parquet"
label = "y"
task = "regression"

[job.model]
kind = "linear"

[job.optimizer]
kind = "sgd"
lr = 0.01
"#;

fn parse(text: &str, sets: &[&str]) -> Result<Manifest, ManifestError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Manifest::parse(text, Path::new("m.toml"), &sets)
}

/// Parse `BASE` with `sets` and validate.
fn check(sets: &[&str]) -> Result<Manifest, ManifestError> {
    let m = parse(BASE, sets)?;
    m.validate()?;
    Ok(m)
}

/// `check(sets)` fails naming `key`, with `words` in the message.
fn refused(sets: &[&str], key: &str, words: &str) {
    let e = check(sets).expect_err("accepted").to_string();
    assert!(
        e.contains(&format!(": {key}: ")),
        "{sets:?}: no key {key} in {e}"
    );
    assert!(e.contains(words), "{sets:?}: {words:?} not in {e}");
}

#[test]
fn defaults_of_a_minimal_manifest() {
    let m = check(&[]).unwrap();
    assert_eq!(m.cluster.transport, TransportChoice::Auto);
    assert_eq!(m.cluster.allreduce, "auto");
    assert_eq!(m.cluster.token, "env:LOCKSTEP_TOKEN");
    assert_eq!(
        (m.cluster.heartbeat_ms, m.cluster.peer_timeout_ms),
        (500, 3000)
    );
    assert_eq!(m.job.aggregation, Aggregation::Allreduce);
    assert_eq!(m.job.micro_batches, 0);
    assert_eq!(m.worker_names(), ["worker-0", "worker-1"]);
    assert_eq!(m.node("worker-1").unwrap().addr, "127.0.0.1:7001");
    assert!(
        m.node("worker-0").unwrap().addr.ends_with(":0"),
        "port 0 by default"
    );
    assert_eq!(m.nodes_with(Role::Coordinator).len(), 1);
    assert!(m.stream().is_none() && m.elastic().is_none());
}

/// The 1-based line of `BASE` that starts with `prefix`.
fn line_of(prefix: &str) -> usize {
    BASE.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_line() {
    let e = parse(&BASE.replace("epochs = 2", "epochz = 2"), &[]).unwrap_err();
    let m = e.to_string();
    let line = format!("line {}", line_of("epochs"));
    assert!(m.contains("epochz") && m.contains(&line), "{m}");
    let e = parse(
        &BASE.replace("global_batch = 32", "global_batch = \"many\""),
        &[],
    )
    .unwrap_err()
    .to_string();
    let line = format!("line {}", line_of("global_batch"));
    assert!(e.contains("many") && e.contains(&line), "{e}");
    let e = parse(
        &BASE.replace("name = \"t\"", "name = \"t\"\ntransport = \"ib\""),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ib") && e.contains("line 3"), "{e}");
}

#[test]
fn overrides_parse_as_toml_or_fall_back_to_a_string() {
    let m = check(&["cluster.transport=rdma", "job.optimizer.lr=0.5"]).unwrap();
    assert_eq!(m.cluster.transport, TransportChoice::Rdma);
    assert_eq!(m.job.optimizer.lr, 0.5);
    let m = check(&["cluster.transport=\"tcp\"", "job.seed=7"]).unwrap();
    assert_eq!((m.cluster.transport, m.job.seed), (TransportChoice::Tcp, 7));
    // rounds and epochs replace each other.
    let m = check(&["job.rounds=5"]).unwrap();
    assert_eq!((m.job.rounds, m.job.epochs), (Some(5), None));
    let m = parse(&BASE.replace("epochs = 2", "rounds = 9"), &["job.epochs=1"]).unwrap();
    assert_eq!((m.job.rounds, m.job.epochs), (None, Some(1)));
    // A new table is created on the way.
    let m = check(&["job.elastic.min_workers=1"]).unwrap();
    assert_eq!(m.elastic(), Some((1, 2)));
    for (bad, words) in [
        ("job.epochs", "expected KEY=VALUE"),
        ("job..epochs=1", "bad key"),
        ("cluster.name.x=1", "name is not a table"),
        ("job.nonsense=1", "nonsense"),
        ("cluster.transport=carrier-pigeon", "carrier-pigeon"),
    ] {
        let e = parse(BASE, &[bad]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--set {bad}")), "{e}");
        assert!(e.contains(words), "{bad}: {words:?} not in {e}");
    }
}

#[test]
fn roles_names_and_addresses_are_checked() {
    let no_coord = BASE.replace("roles = [\"coordinator\"]", "roles = [\"worker\"]");
    let e = parse(&no_coord, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nodes.roles: need exactly one coordinator, found 0"),
        "{e}"
    );
    let two = BASE.replace(
        "name = \"worker-0\"\nroles = [\"worker\"]",
        "name = \"worker-0\"\nroles = [\"worker\", \"coordinator\"]",
    );
    let e = parse(&two, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("found 2"), "{e}");
    let dup = BASE.replace("name = \"worker-1\"", "name = \"worker-0\"");
    let e = parse(&dup, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nodes.name: node name \"worker-0\" appears twice"),
        "{e}"
    );
    let bad_name = BASE.replace("name = \"worker-1\"", "name = \"worker 1\"");
    let e = parse(&bad_name, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nodes.name: \"worker 1\": use 1-64 letters"),
        "{e}"
    );
    let bad_addr = BASE.replace("127.0.0.1:7001", "localhost:7001");
    let e = parse(&bad_addr, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nodes.addr: node worker-1: \"localhost:7001\""),
        "{e}"
    );
    let no_role = BASE.replace(
        "addr = \"127.0.0.1:7001\"\nroles = [\"worker\"]",
        "roles = []",
    );
    let e = parse(&no_role, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("node worker-1 has no role"), "{e}");
}

#[test]
fn lengths_batches_and_micro_batches_are_checked() {
    let both = BASE.replace("epochs = 2", "epochs = 2\nrounds = 3");
    let e = parse(&both, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("job.rounds: give either job.epochs or job.rounds, not both"),
        "{e}"
    );
    refused(&["job.epochs=0"], "job.epochs", "at least 1");
    refused(&["job.global_batch=0"], "job.global_batch", "at least 1");
    refused(
        &["job.global_batch=33"],
        "job.global_batch",
        "cannot be shared evenly by 2 workers",
    );
    refused(
        &["job.micro_batches=3"],
        "job.micro_batches",
        "power of two",
    );
    refused(
        &["job.micro_batches=64"],
        "job.micro_batches",
        "divide job.global_batch = 32",
    );
    refused(
        &[
            "job.micro_batches=4",
            "job.aggregation=\"parameter-server\"",
        ],
        "job.micro_batches",
        "allreduce aggregation only",
    );
    assert!(check(&["job.micro_batches=4"]).is_ok());
    let neither = BASE.replace("epochs = 2\n", "");
    let e = parse(&neither, &[])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("job.epochs: give job.epochs or job.rounds"),
        "{e}"
    );
}

#[test]
fn elasticity_cluster_timings_and_streams_are_checked() {
    refused(
        &["job.elastic.min_workers=0"],
        "job.elastic.min_workers",
        "1 <= min_workers (0)",
    );
    refused(
        &["job.elastic.min_workers=1", "job.elastic.max_workers=3"],
        "job.elastic.min_workers",
        "<= the 2 workers",
    );
    refused(
        &[
            "job.elastic.min_workers=1",
            "job.aggregation=\"parameter-server\"",
        ],
        "job.elastic",
        "allreduce aggregation only",
    );
    refused(
        &["cluster.allreduce=\"ringo\""],
        "cluster.allreduce",
        "\"ringo\" is not one of",
    );
    refused(
        &["cluster.progress_timeout_ms=0"],
        "cluster.progress_timeout_ms",
        "positive",
    );
    refused(
        &["cluster.heartbeat_ms=3000"],
        "cluster.peer_timeout_ms",
        "must exceed cluster.heartbeat_ms (3000 <= 3000)",
    );
    refused(
        &["job.data.stream.producers=2"],
        "job.data.stream",
        "source = \"stream\" only",
    );
    refused(
        &["job.data.source=\"stream\""],
        "job.data.stream",
        "needs [job.data.stream]",
    );
}

#[test]
fn the_token_comes_from_the_environment_or_the_manifest() {
    let var = format!("LOCKSTEP_TEST_TOKEN_{}", std::process::id());
    let m = check(&[&format!("cluster.token=\"env:{var}\"")]).unwrap();
    let e = m.token().unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "cluster.token: environment variable {var} is not set"
        )),
        "{e}"
    );
    std::env::set_var(&var, "s3cret");
    assert_eq!(m.token().unwrap(), "s3cret");
    std::env::remove_var(&var);
    let m = check(&["cluster.token=\"literal:abc\""]).unwrap();
    assert_eq!(m.token().unwrap(), "abc");
    let m = check(&["cluster.token=\"xyz\""]).unwrap();
    assert_eq!(m.token().unwrap(), "xyz");
    let m = check(&["cluster.token=\"literal:\""]).unwrap();
    assert!(m
        .token()
        .unwrap_err()
        .to_string()
        .contains("the token is empty"));
}

#[test]
fn set_workers_replaces_only_the_worker_role() {
    let both = BASE.replace(
        "roles = [\"coordinator\"]",
        "roles = [\"coordinator\", \"worker\"]",
    );
    let mut m = parse(&both, &[]).unwrap();
    assert_eq!(m.worker_names(), ["coordinator", "worker-0", "worker-1"]);
    m.set_workers(4);
    assert_eq!(
        m.worker_names(),
        ["worker-0", "worker-1", "worker-2", "worker-3"]
    );
    let c = m.node("coordinator").unwrap();
    assert_eq!(
        c.roles,
        [Role::Coordinator],
        "the coordinator keeps its other roles"
    );
    assert_eq!(m.nodes.len(), 5);
    m.validate().unwrap();
}

#[test]
fn lbfgs_is_for_convex_models_over_the_whole_training_set() {
    let lbfgs = ["job.optimizer.kind=\"lbfgs\"", "job.optimizer.lr=1.0"];
    check(&lbfgs).expect("linear with lbfgs");
    let mut mlp = lbfgs.to_vec();
    mlp.extend(["job.model.kind=\"mlp\"", "job.model.hidden=[8]"]);
    refused(&mlp, "job.optimizer.kind", "convex objectives only");
    let mut ps = lbfgs.to_vec();
    ps.push("job.aggregation=\"parameter-server\"");
    refused(&ps, "job.optimizer.kind", "parameter-server shards");
    // The optimizer's own fields are checked when the optimizer is made (at the node's start).
    let spec_error = |sets: &[&str]| {
        let m = check(sets).expect("the manifest itself is valid");
        m.job.optimizer.validate().unwrap_err().to_string()
    };
    assert!(spec_error(&[lbfgs[0], lbfgs[1], "job.optimizer.weight_decay=0.1"]).contains("use l2"));
    assert!(
        spec_error(&[lbfgs[0], lbfgs[1], "job.optimizer.warmup_steps=5"])
            .contains("no schedule or warm-up")
    );
    assert!(spec_error(&[lbfgs[0], lbfgs[1], "job.optimizer.history=0"]).contains("history = 0"));
    assert!(spec_error(&["job.optimizer.history=5"]).contains("`history` does not apply"));
}

#[test]
fn kmeans_and_pca_are_closed_form_over_the_whole_training_set() {
    let km = ["job.model.kind=\"kmeans\"", "job.model.clusters=3"];
    check(&km).expect("kmeans");
    refused(
        &[km[0], km[1], "job.aggregation=\"parameter-server\""],
        "job.aggregation",
        "allreduce",
    );
    refused(
        &[km[0], km[1], "job.optimizer.l2=0.1"],
        "job.optimizer",
        "closed form",
    );
    let pca = ["job.model.kind=\"pca\"", "job.model.components=2"];
    refused(
        &[pca[0], pca[1], "job.optimizer={kind=\"lbfgs\", lr=1.0}"],
        "job.optimizer.kind",
        "closed form",
    );
}
