//! Embedding: Lockstep inside your own program, with a model type of your own (any
//! [`Model`]; see `examples/custom_model`). Two ways:
//!
//! - [`LocalCluster`]: a whole cluster in this process, every node on its own threads with its
//!   own actor system, talking over real TCP or shared-memory links on loopback;
//! - [`EmbeddedNode`]: one node of a job whose nodes are separate processes or machines, exactly
//!   as `lockstep node` runs it (named in the manifest, or described by the environment a cluster
//!   manager sets: torchrun, Slurm, a Kubernetes Indexed Job). A program that runs an
//!   `EmbeddedNode` when given `lockstep node`'s arguments can also be started by
//!   [`crate::launch()`] (`LaunchOptions::exe`), one process per node.
//!
//! Both give the same weights for the same manifest, worker count and seed. docs/embedding.md
//! shows both, and how to feed your own data.
//!
//! # Examples
//! ```no_run
//! use lockstep_runtime::node::embed::LocalCluster;
//! use lockstep_runtime::manifest::TransportChoice;
//! let report = LocalCluster::from_manifest("examples/mnist/cluster.toml".as_ref(), &[])
//!     .unwrap()
//!     .workers(2)
//!     .transport(TransportChoice::Tcp)
//!     .run()
//!     .unwrap();
//! println!("{}", report.summary());
//! ```
//!
//! One node of a two-machine job (the other machine runs `worker-1`; the coordinator's address
//! is in the manifest, or given with [`EmbeddedNode::coordinator`]):
//! ```no_run
//! use lockstep_runtime::node::embed::EmbeddedNode;
//! EmbeddedNode::from_manifest("examples/credit/cluster.toml", "worker-0")
//!     .coordinator("10.0.0.1:7000")
//!     .run_dir("runs/credit")
//!     .run()
//!     .unwrap();
//! ```

use crate::error::{ActorError, RuntimeError};
use crate::manifest::{Manifest, TransportChoice};
use crate::node::{
    manifest_model_factory, run_roles, run_with, ModelFactory, NodeContext, NodeOptions,
};
use crate::observe::report::Report;
use lockstep_trainer::data::Split;
use lockstep_trainer::model::Model;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

/// A cluster of in-process nodes built from a manifest.
pub struct LocalCluster {
    manifest: Manifest,
    model_factory: ModelFactory,
    run_dir: PathBuf,
}

impl LocalCluster {
    /// A cluster for `manifest` (already loaded and validated).
    pub fn new(manifest: Manifest) -> Self {
        let run_dir = std::env::temp_dir().join(format!(
            "lockstep-{}-{}",
            manifest.cluster.name,
            std::process::id()
        ));
        LocalCluster {
            manifest,
            model_factory: manifest_model_factory(),
            run_dir,
        }
    }

    /// Load a manifest (with `--set`-style overrides).
    ///
    /// # Errors
    /// Manifest errors naming the key and line.
    pub fn from_manifest(path: &Path, sets: &[String]) -> Result<Self, RuntimeError> {
        Ok(LocalCluster::new(Manifest::load(path, sets)?))
    }

    /// Replace the workers by `n` in-process workers.
    pub fn workers(mut self, n: usize) -> Self {
        self.manifest.set_workers(n);
        self
    }

    /// Choose the transport.
    pub fn transport(mut self, t: TransportChoice) -> Self {
        self.manifest.cluster.transport = t;
        self
    }

    /// Where the report and the model go.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = dir.into();
        self
    }

    /// Train a model type of your own: `factory` builds one replica per node from the manifest and
    /// the loaded data (every replica must start from the same parameters, e.g. the job seed).
    pub fn model<F>(mut self, factory: F) -> Self
    where
        F: Fn(&Manifest, &Split) -> Result<Box<dyn Model>, RuntimeError> + Send + Sync + 'static,
    {
        self.model_factory = Arc::new(factory);
        self
    }

    /// Run to completion and return the coordinator's report.
    ///
    /// # Errors
    /// The first node failure, naming the node, round and operation.
    pub fn run(self) -> Result<Report, RuntimeError> {
        self.manifest.validate()?;
        let token = match self.manifest.token() {
            Ok(t) => t,
            // In-process nodes share memory anyway: a fresh random token is as good as any.
            Err(_) => hex::encode(rand::random::<[u8; 16]>()),
        };
        std::fs::create_dir_all(&self.run_dir)
            .map_err(|e| RuntimeError::io("create", &self.run_dir, e))?;
        let report_path = self.run_dir.join("report.json");
        let _ = std::fs::remove_file(&report_path);
        let coordinator = self.manifest.nodes_with(crate::manifest::Role::Coordinator)[0]
            .name
            .clone();
        let opts = NodeOptions {
            manifest: self.manifest.path.clone(),
            run_dir: self.run_dir.clone(),
            report: Some(report_path.clone()),
            ..Default::default()
        };
        // Every node's TLS files are checked before any node starts.
        let mut tls = std::collections::HashMap::new();
        for n in &self.manifest.nodes {
            tls.insert(
                n.name.clone(),
                crate::manifest::tls::load(&self.manifest, &n.name)?,
            );
        }
        let ctx = |name: &str, opts: NodeOptions, on_listen| {
            Arc::new(NodeContext {
                manifest: self.manifest.clone(),
                name: name.to_string(),
                token: token.clone(),
                opts,
                model_factory: self.model_factory.clone(),
                on_listen,
                tls: tls.get(name).cloned().flatten(),
            })
        };
        let (tx, rx) = channel();
        let c = ctx(&coordinator, opts.clone(), Some(tx));
        let mut threads = vec![std::thread::spawn(move || run_roles(c))];
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| RuntimeError::Timeout {
                doing: "waiting for the coordinator to listen".into(),
                ms: 60_000,
            })?;
        for n in self.manifest.nodes.iter().filter(|n| n.name != coordinator) {
            let o = NodeOptions {
                coordinator: Some(addr.to_string()),
                ..opts.clone()
            };
            let c = ctx(&n.name, o, None);
            threads.push(std::thread::spawn(move || run_roles(c)));
        }
        let mut first = None;
        for t in threads {
            if let Err(e) = t.join().unwrap_or_else(|_| {
                Err(ActorError::Panicked {
                    thread: "a node thread".into(),
                    text: None,
                }
                .into())
            }) {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        Report::read(&report_path)
    }
}

/// One node of a job whose nodes run as separate processes (on one machine or many), in your own
/// program: what `lockstep node` does, with your model type. Every node of the job must build
/// the same model (the coordinator checks that all layouts match); a node may run the stock
/// `lockstep node` only if the job uses the manifest's `[job.model]`.
pub struct EmbeddedNode {
    opts: NodeOptions,
    model_factory: ModelFactory,
}

impl EmbeddedNode {
    /// Exactly what `lockstep node` was given (its flags map one to one onto [`NodeOptions`]).
    pub fn from_options(opts: NodeOptions) -> Self {
        EmbeddedNode {
            opts,
            model_factory: manifest_model_factory(),
        }
    }

    /// Node `name` of the manifest at `path` (`lockstep node MANIFEST --node NAME`); the run
    /// directory is `runs/node` unless [`EmbeddedNode::run_dir`] says otherwise.
    pub fn from_manifest(path: impl Into<PathBuf>, name: &str) -> Self {
        EmbeddedNode::from_options(NodeOptions {
            manifest: path.into(),
            node: Some(name.to_string()),
            run_dir: PathBuf::from("runs/node"),
            ..Default::default()
        })
    }

    /// The node the environment names (`lockstep node MANIFEST` without `--node`):
    /// `RANK`/`WORLD_SIZE`/`MASTER_ADDR`/`MASTER_PORT` (torchrun), `SLURM_PROCID`/`SLURM_NTASKS`
    /// or a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`; rank 0 is the coordinator and a
    /// worker (see [`crate::node::env_mode`]).
    pub fn from_env(path: impl Into<PathBuf>) -> Self {
        EmbeddedNode::from_options(NodeOptions {
            manifest: path.into(),
            run_dir: PathBuf::from("runs/node"),
            ..Default::default()
        })
    }

    /// A `--set KEY=VALUE` manifest override (every node must get the same).
    pub fn set(mut self, key_value: impl Into<String>) -> Self {
        self.opts.sets.push(key_value.into());
        self
    }

    /// The coordinator's control address `HOST:PORT`, when the manifest gives it port 0.
    pub fn coordinator(mut self, addr: impl Into<String>) -> Self {
        self.opts.coordinator = Some(addr.into());
        self
    }

    /// Run directory (checkpoints; on the coordinator also the model and the report).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.run_dir = dir.into();
        self
    }

    /// Where the coordinator writes the JSON report.
    pub fn report(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.report = Some(path.into());
        self
    }

    /// Train a model type of your own, as [`LocalCluster::model`].
    pub fn model<F>(mut self, factory: F) -> Self
    where
        F: Fn(&Manifest, &Split) -> Result<Box<dyn Model>, RuntimeError> + Send + Sync + 'static,
    {
        self.model_factory = Arc::new(factory);
        self
    }

    /// Run this node until the job ends (the coordinator writes the report; read it with
    /// [`Report::read`]).
    ///
    /// # Errors
    /// As `lockstep node`: this node's failure, naming the peer, round and operation where a
    /// peer is at fault.
    pub fn run(self) -> Result<(), RuntimeError> {
        run_with(&self.opts, self.model_factory)
    }
}
