//! The cluster manifest (TOML): `[cluster]`, `[[nodes]]` and `[job]` with its `data`, `model`,
//! `optimizer` and `checkpoint` tables.
//!
//! Parsing is strict: an unknown key or a bad value is an error that names the key and the line
//! (the `toml` crate's span reporting, with `deny_unknown_fields` on every table). `--set`
//! overrides are applied to the parsed document before it is checked again, and errors in them
//! name the override. Semantic checks (one coordinator, unique names, a global batch the workers
//! can share) run in [`Manifest::validate`]. Every key is documented in `docs/manifest.md`.

use lockstep_trainer::data::DataSpec;
use lockstep_trainer::model::ModelSpec;
use lockstep_trainer::optim::OptimizerSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[cfg(test)]
mod tests;
pub(crate) mod tls;
mod validate;

/// Errors in a manifest or its overrides.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("manifest {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a bad value (the message names the key and line).
    #[error("manifest {path}: {message}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `--set KEY=VALUE` that does not fit the manifest.
    #[error("--set {assignment}: {message}")]
    Override {
        /// The override as given.
        assignment: String,
        /// What is wrong with it.
        message: String,
    },
    /// A semantic error (names the key).
    #[error("manifest {path}: {key}: {message}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Transport choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    /// Shared memory when every node is on this host; otherwise per peer: shared memory on the
    /// same host, RDMA between hosts where both ends can run it, TCP else (logged with why).
    #[default]
    Auto,
    /// TCP sockets.
    Tcp,
    /// Shared-memory rings (single host).
    Shm,
    /// RDMA queue pairs (a build with the `rdma` feature and an active RDMA device on every
    /// node; otherwise the job fails at start naming what is missing).
    Rdma,
}

/// Aggregation choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Ring / tree allreduce among the workers.
    #[default]
    Allreduce,
    /// Push gradients to (sharded) parameter servers, pull parameters.
    ParameterServer,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Drives rounds, collects metrics, writes checkpoints and the report.
    Coordinator,
    /// Loads data and computes gradients.
    Worker,
    /// Holds a shard of the parameters (parameter-server aggregation).
    Server,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name; peers of another cluster are refused.
    pub name: String,
    /// auto | tcp | shm.
    #[serde(default)]
    pub transport: TransportChoice,
    /// `env:NAME` (read from the environment) or a literal token.
    #[serde(default = "default_token")]
    pub token: String,
    /// Heartbeat interval on every link.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// A peer silent this long is declared dead.
    #[serde(default = "default_timeout")]
    pub peer_timeout_ms: u64,
    /// Allreduce algorithm: auto (chosen from a start-up link probe) | ring | tree | hier.
    #[serde(default = "default_allreduce")]
    pub allreduce: String,
    /// Workers per host, host-major (0: hosts from the IPs of the data addresses).
    #[serde(default)]
    pub ranks_per_host: usize,
    /// A round whose reports are not all in after this long is stuck: the coordinator runs
    /// the hang diagnosis and stops the job (elastic: removes the culprit). Unset: derived
    /// from the measured round times (see [`crate::control::hang::ProgressClock`]).
    #[serde(default)]
    pub progress_timeout_ms: Option<u64>,
    /// `[cluster.tls]`: TLS on every TCP link (see [`crate::manifest::tls`]).
    #[serde(default)]
    pub tls: Option<crate::manifest::tls::TlsSpec>,
}

fn default_allreduce() -> String {
    "auto".into()
}

fn default_token() -> String {
    "env:LOCKSTEP_TOKEN".into()
}
fn default_heartbeat() -> u64 {
    500
}
fn default_timeout() -> u64 {
    3000
}

/// `[[nodes]]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique node name.
    pub name: String,
    /// Bind address, `host:port`; port 0 lets the system choose.
    #[serde(default = "default_addr")]
    pub addr: String,
    /// coordinator / worker / server.
    pub roles: Vec<Role>,
}

fn default_addr() -> String {
    "127.0.0.1:0".into()
}

/// `[job.checkpoint]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Directory (relative to the run directory).
    #[serde(default = "default_ckpt_dir")]
    pub dir: PathBuf,
    /// Write one every this many rounds (0: only at the end).
    #[serde(default)]
    pub every_rounds: u64,
    /// Keep the newest this many.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

impl CheckpointSpec {
    /// Where checkpoints are written on this node: `dir` under the run directory, or, when
    /// `dir` is an object-store URL, `<run dir>/checkpoints` (then uploaded to the URL).
    pub fn local_root(&self, run_dir: &std::path::Path) -> PathBuf {
        match self.remote() {
            Some(_) => run_dir.join(default_ckpt_dir()),
            None => run_dir.join(&self.dir),
        }
    }

    /// `dir` when it is an object-store URL (`s3://bucket/prefix`, `gs://`, `az://`).
    pub fn remote(&self) -> Option<String> {
        crate::checkpoint::remote::is_remote(&self.dir)
            .then(|| self.dir.to_string_lossy().trim_end_matches('/').to_string())
    }
}

fn default_ckpt_dir() -> PathBuf {
    PathBuf::from("checkpoints")
}
fn default_keep() -> usize {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            dir: default_ckpt_dir(),
            every_rounds: 0,
            keep: default_keep(),
        }
    }
}

/// `[job]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The one seed every random choice flows from.
    #[serde(default)]
    pub seed: u64,
    /// Passes over the training split (exclusive with `rounds`).
    pub epochs: Option<u64>,
    /// Number of SGD rounds (exclusive with `epochs`).
    pub rounds: Option<u64>,
    /// Rows per round across all workers.
    pub global_batch: usize,
    /// allreduce | parameter-server.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Evaluate on the test split every this many rounds (0: once per epoch).
    #[serde(default)]
    pub eval_every: u64,
    /// Bit-reproducible across world sizes: cut every global batch into this many equal
    /// micro-batches (a power of two), sum their gradients in a fixed binary tree (locally, then
    /// by recursive-doubling allreduce). 1, 2, 4 ... workers then produce identical weights.
    /// 0 (default) = off: one shard per worker, mean allreduce with the fastest algorithm.
    #[serde(default)]
    pub micro_batches: usize,
    /// `[job.data]`
    pub data: DataSpec,
    /// `[job.model]`
    pub model: ModelSpec,
    /// `[job.optimizer]`
    pub optimizer: OptimizerSpec,
    /// `[job.checkpoint]`
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// `[job.elastic]`: survivors carry on when workers die, replacements join live.
    #[serde(default)]
    pub elastic: Option<ElasticSpec>,
}

/// `[job.elastic]`: elastic membership (allreduce only). The job starts with every worker of
/// the manifest; when one dies the survivors continue without restarting, down to
/// `min_workers`; replacements join at a round boundary while fewer than `max_workers` run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ElasticSpec {
    /// Fewest workers to continue with; below, the job stops with an error naming the dead.
    pub min_workers: usize,
    /// Most workers at once (default: every worker of the manifest).
    #[serde(default)]
    pub max_workers: Option<usize>,
    /// How long a worker that lost its coordinator keeps its state and tries to register with
    /// the one taking over (started again by `launch --max-restarts`, Kubernetes or an
    /// operator) before it gives up, in milliseconds (default 60 000).
    #[serde(default)]
    pub coordinator_timeout_ms: Option<u64>,
}

impl ElasticSpec {
    /// [`ElasticSpec::coordinator_timeout_ms`] or its default.
    pub fn coordinator_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.coordinator_timeout_ms.unwrap_or(60_000))
    }
}

/// A whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[cluster]`
    pub cluster: ClusterSpec,
    /// `[[nodes]]`
    pub nodes: Vec<NodeSpec>,
    /// `[job]`
    pub job: JobSpec,
    /// `[observe]`: metrics endpoint, timeline, curves.
    #[serde(default)]
    pub observe: crate::observe::ObserveSpec,
    /// Directory of the manifest file; relative data paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The manifest file.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Manifest {
    /// Read, apply `--set` overrides, parse and validate.
    ///
    /// # Errors
    /// A [`ManifestError`] naming the key (and line, for parse errors).
    pub fn load(path: &Path, sets: &[String]) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut m = Manifest::parse(&text, path, sets)?;
        m.path = path.to_path_buf();
        m.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        m.validate()?;
        Ok(m)
    }

    /// Parse text (with overrides) without validating.
    ///
    /// # Errors
    /// [`ManifestError::Parse`] or [`ManifestError::Override`].
    pub fn parse(text: &str, path: &Path, sets: &[String]) -> Result<Manifest, ManifestError> {
        let parse_err = |e: toml::de::Error| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        };
        // First pass on the text itself, so errors carry line numbers.
        let m: Manifest = toml::from_str(text).map_err(parse_err)?;
        if sets.is_empty() {
            return Ok(m);
        }
        let mut doc: toml::Table = toml::from_str(text).map_err(parse_err)?;
        for s in sets {
            apply_set(&mut doc, s)?;
        }
        let joined = sets.join(", ");
        Manifest::deserialize(toml::Value::Table(doc)).map_err(|e| ManifestError::Override {
            assignment: joined,
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// The stream spec when the job trains from a stream.
    pub fn stream(&self) -> Option<&lockstep_trainer::data::StreamSpec> {
        match self.job.data.source {
            lockstep_trainer::data::Source::Stream => self.job.data.stream.as_ref(),
            lockstep_trainer::data::Source::File => None,
        }
    }

    /// Nodes having `role`, in manifest order.
    pub fn nodes_with(&self, role: Role) -> Vec<&NodeSpec> {
        self.nodes
            .iter()
            .filter(|n| n.roles.contains(&role))
            .collect()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The worker names in rank order.
    pub fn worker_names(&self) -> Vec<String> {
        self.nodes_with(Role::Worker)
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// Replace the workers by `n` loopback workers `worker-0 ..`, keeping other nodes.
    pub fn set_workers(&mut self, n: usize) {
        self.nodes
            .retain(|node| !(node.roles.len() == 1 && node.roles[0] == Role::Worker));
        for node in &mut self.nodes {
            node.roles.retain(|r| *r != Role::Worker);
        }
        for i in 0..n {
            self.nodes.push(NodeSpec {
                name: format!("worker-{i}"),
                addr: default_addr(),
                roles: vec![Role::Worker],
            });
        }
    }

    /// Resolve the cluster token (`env:NAME` or a literal).
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] when the variable is unset or the token is empty.
    pub fn token(&self) -> Result<String, ManifestError> {
        let t = &self.cluster.token;
        let value = match t.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                self.invalid(
                    "cluster.token",
                    format!("environment variable {var} is not set"),
                )
            })?,
            None => t.strip_prefix("literal:").unwrap_or(t).to_string(),
        };
        if value.is_empty() {
            return Err(self.invalid("cluster.token", "the token is empty".into()));
        }
        Ok(value)
    }

    /// `(min_workers, max_workers)` when membership is elastic.
    pub fn elastic(&self) -> Option<(usize, usize)> {
        let w = self.worker_names().len();
        self.job
            .elastic
            .map(|e| (e.min_workers, e.max_workers.unwrap_or(w)))
    }

    /// The data file, resolved against the manifest's directory.
    pub fn data_path(&self) -> PathBuf {
        self.base_dir.join(&self.job.data.path)
    }
}

/// Apply one `a.b.c=value` override; the value is parsed as TOML, falling back to a string.
fn apply_set(doc: &mut toml::Table, assignment: &str) -> Result<(), ManifestError> {
    let err = |message: String| ManifestError::Override {
        assignment: assignment.to_string(),
        message,
    };
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| err("expected KEY=VALUE".into()))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("bad key {key:?}")));
    }
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("{p} is not a table")))?;
    }
    let last = parts[parts.len() - 1];
    // `job.rounds` and `job.epochs` are two ways to say how long: setting one replaces the other.
    if parts.len() == 2 && parts[0] == "job" {
        match last {
            "rounds" => drop(table.remove("epochs")),
            "epochs" => drop(table.remove("rounds")),
            _ => {}
        }
    }
    table.insert(last.to_string(), value);
    Ok(())
}
