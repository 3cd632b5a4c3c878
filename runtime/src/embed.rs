//! Embedding: run a whole cluster inside your own program, every node on its own threads with
//! its own actor system, talking over real TCP or shared-memory links on loopback, with a model
//! type of your own.
//!
//! # Examples
//! ```no_run
//! use lockstep_runtime::embed::LocalCluster;
//! use lockstep_runtime::manifest::TransportChoice;
//! let report = LocalCluster::from_manifest("examples/mnist/cluster.toml".as_ref(), &[])
//!     .unwrap()
//!     .workers(2)
//!     .transport(TransportChoice::Tcp)
//!     .run()
//!     .unwrap();
//! println!("{}", report.summary());
//! ```

use crate::error::RuntimeError;
use crate::manifest::{Manifest, TransportChoice};
use crate::node::{manifest_model_factory, run_roles, ModelFactory, NodeContext, NodeOptions};
use crate::report::Report;
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
            tls.insert(n.name.clone(), crate::tls::load(&self.manifest, &n.name)?);
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
            if let Err(e) = t
                .join()
                .unwrap_or_else(|_| Err(RuntimeError::Actor("a node thread panicked".into())))
            {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        Report::read(&report_path)
    }
}
