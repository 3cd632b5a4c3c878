//! Checking a parsed manifest: every rule that spans keys (roles, counts, sizes, the data and
//! stream sections, elasticity), each error naming the key.

use super::*;

impl Manifest {
    pub(super) fn invalid(&self, key: &str, message: String) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    /// Semantic checks.
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let workers = self.validate_nodes()?;
        self.validate_stream(workers)?;
        self.validate_length()?;
        self.validate_batch(workers)?;
        self.validate_elastic(workers)?;
        self.validate_penalties()?;
        self.validate_cluster()
    }

    /// One coordinator, some workers, unique well-formed names, `host:port` addresses, a role
    /// for every node. Returns the number of workers.
    fn validate_nodes(&self) -> Result<usize, ManifestError> {
        let coords = self.nodes_with(Role::Coordinator);
        if coords.len() != 1 {
            return Err(self.invalid(
                "nodes.roles",
                format!("need exactly one coordinator, found {}", coords.len()),
            ));
        }
        let workers = self.nodes_with(Role::Worker).len();
        if workers == 0 {
            return Err(self.invalid("nodes.roles", "no node has the worker role".into()));
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(self.invalid("nodes.name", format!("node name {:?} appears twice", w[0])));
        }
        for n in &self.nodes {
            if n.name.is_empty()
                || n.name.len() > 64
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    "nodes.name",
                    format!("{:?}: use 1-64 letters, digits, '-' or '_'", n.name),
                ));
            }
            if n.addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(self.invalid(
                    "nodes.addr",
                    format!(
                        "node {}: {:?} is not host:port (an IP address and a port)",
                        n.name, n.addr
                    ),
                ));
            }
            if n.roles.is_empty() {
                return Err(self.invalid("nodes.roles", format!("node {} has no role", n.name)));
            }
        }
        Ok(workers)
    }

    /// How long the job runs: `job.epochs` or `job.rounds` (a stream: rounds or nothing).
    fn validate_length(&self) -> Result<(), ManifestError> {
        let job = &self.job;
        let stream = job.data.source == lockstep_trainer::data::Source::Stream;
        match (job.epochs, job.rounds) {
            (None, None) | (None, Some(_)) if stream => {}
            (Some(_), _) if stream => {
                return Err(self.invalid(
                    "job.epochs",
                    "a stream has no epochs: give job.rounds (or nothing, to train until the producers close)".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "job.rounds",
                    "give either job.epochs or job.rounds, not both".into(),
                ))
            }
            (None, None) => {
                return Err(self.invalid("job.epochs", "give job.epochs or job.rounds".into()))
            }
            (Some(0), _) | (_, Some(0)) => {
                return Err(self.invalid("job.epochs", "must be at least 1".into()))
            }
            _ => {}
        }
        Ok(())
    }

    /// `job.global_batch` shared evenly by the workers; `job.micro_batches` a power of two that
    /// the workers share and that divides the global batch (allreduce only).
    fn validate_batch(&self, workers: usize) -> Result<(), ManifestError> {
        let job = &self.job;
        if job.global_batch == 0 {
            return Err(self.invalid("job.global_batch", "must be at least 1".into()));
        }
        if !job.global_batch.is_multiple_of(workers) {
            return Err(self.invalid(
                "job.global_batch",
                format!(
                    "{} rows cannot be shared evenly by {workers} workers ({:.2} each); use a multiple of {workers}",
                    job.global_batch,
                    job.global_batch as f64 / workers as f64
                ),
            ));
        }
        let m = job.micro_batches;
        if m > 0 {
            if !m.is_power_of_two()
                || !m.is_multiple_of(workers)
                || !job.global_batch.is_multiple_of(m)
            {
                return Err(self.invalid(
                    "job.micro_batches",
                    format!(
                        "{m} micro-batches need to be a power of two, a multiple of the {workers} workers, and to divide job.global_batch = {}",
                        job.global_batch
                    ),
                ));
            }
            if job.aggregation == Aggregation::ParameterServer {
                return Err(self.invalid(
                    "job.micro_batches",
                    "applies to allreduce aggregation only".into(),
                ));
            }
        }
        Ok(())
    }

    /// `[job.elastic]`: `1 <= min_workers <= max_workers <= workers`, with a file source and
    /// allreduce.
    fn validate_elastic(&self, workers: usize) -> Result<(), ManifestError> {
        let job = &self.job;
        if let Some(e) = &job.elastic {
            let max = e.max_workers.unwrap_or(workers);
            if e.min_workers == 0 || e.min_workers > max || max > workers {
                return Err(self.invalid(
                    "job.elastic.min_workers",
                    format!(
                        "need 1 <= min_workers ({}) <= max_workers ({max}) <= the {workers} workers of the manifest",
                        e.min_workers
                    ),
                ));
            }
            if job.data.source == lockstep_trainer::data::Source::Stream {
                return Err(self.invalid(
                    "job.elastic",
                    "elastic membership is not supported with a stream source yet (producers are routed to fixed workers); drop [job.elastic] or use a file source".into(),
                ));
            }
            if job.aggregation == Aggregation::ParameterServer {
                return Err(self.invalid(
                    "job.elastic",
                    "elastic membership applies to allreduce aggregation only: in a parameter-server job a dead worker or server shard stops the job naming it, and `launch --resume` or `--max-restarts` continue from the newest checkpoint (which holds the servers' optimizer state); drop [job.elastic] or use aggregation = \"allreduce\"".into(),
                ));
            }
        }
        Ok(())
    }

    /// `[cluster]`: the allreduce algorithm, the progress timeout, heartbeat and peer timeout.
    fn validate_cluster(&self) -> Result<(), ManifestError> {
        if !["auto", "ring", "tree", "hier"].contains(&self.cluster.allreduce.as_str()) {
            return Err(self.invalid(
                "cluster.allreduce",
                format!(
                    "{:?} is not one of auto, ring, tree, hier",
                    self.cluster.allreduce
                ),
            ));
        }
        if self.cluster.progress_timeout_ms == Some(0) {
            return Err(self.invalid(
                "cluster.progress_timeout_ms",
                "must be positive (leave it out for the derived default)".into(),
            ));
        }
        if self.cluster.heartbeat_ms == 0
            || self.cluster.peer_timeout_ms <= self.cluster.heartbeat_ms
        {
            return Err(self.invalid(
                "cluster.peer_timeout_ms",
                format!(
                    "must exceed cluster.heartbeat_ms ({} <= {})",
                    self.cluster.peer_timeout_ms, self.cluster.heartbeat_ms
                ),
            ));
        }
        Ok(())
    }

    /// `l1` only for the convex models (the optimizer checks the rest of its table).
    fn validate_penalties(&self) -> Result<(), ManifestError> {
        use lockstep_trainer::model::ModelKind;
        let kind = self.job.model.kind;
        if self.job.optimizer.l1 > 0.0 && !matches!(kind, ModelKind::Linear | ModelKind::Logistic) {
            return Err(self.invalid(
                "job.optimizer.l1",
                format!(
                    "applies to kind = \"linear\" and \"logistic\" (a convex objective whose weights can be exactly zero); for {kind:?} use l2"
                ),
            ));
        }
        if matches!(kind, ModelKind::Kmeans | ModelKind::Pca) {
            return self.validate_closed_form(kind);
        }
        if self.job.optimizer.kind == lockstep_trainer::optim::OptimizerKind::Lbfgs {
            let why = if !matches!(kind, ModelKind::Linear | ModelKind::Logistic) {
                Some(format!("solves convex objectives only (model kind = \"linear\" or \"logistic\"); {kind:?} is not convex: use sgd, adam or adamw"))
            } else if self.job.data.source == lockstep_trainer::data::Source::Stream {
                Some("needs the whole training set at every evaluation; a stream has no whole: use sgd, adam or adamw".into())
            } else if self.job.aggregation == Aggregation::ParameterServer {
                Some("is not elementwise, so it cannot run on parameter-server shards: use aggregation = \"allreduce\"".into())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(self.invalid("job.optimizer.kind", format!("\"lbfgs\" {why}")));
            }
        }
        Ok(())
    }

    /// k-means and PCA: fitted in closed form over the whole training split by allreduce, so no
    /// stream, no parameter server, no penalty and no L-BFGS.
    fn validate_closed_form(
        &self,
        kind: lockstep_trainer::model::ModelKind,
    ) -> Result<(), ManifestError> {
        let o = &self.job.optimizer;
        let (key, why) = if self.job.data.source == lockstep_trainer::data::Source::Stream {
            (
                "job.data.source",
                "needs the whole training set at every round; a stream has no whole",
            )
        } else if self.job.aggregation == Aggregation::ParameterServer {
            (
                "job.aggregation",
                "sums its statistics by allreduce: use aggregation = \"allreduce\"",
            )
        } else if o.l2 != 0.0 || o.l1 != 0.0 || o.weight_decay != 0.0 {
            (
                "job.optimizer",
                "is fitted in closed form: it takes no l2, l1 or weight_decay",
            )
        } else if o.kind == lockstep_trainer::optim::OptimizerKind::Lbfgs {
            ("job.optimizer.kind", "is fitted in closed form: leave [job.optimizer] at kind = \"sgd\" (it is not used)")
        } else {
            return Ok(());
        };
        Err(self.invalid(key, format!("model kind {kind:?} {why}")))
    }

    /// `[job.data.stream]` against `source`, the global batch and the worker count.
    fn validate_stream(&self, workers: usize) -> Result<(), ManifestError> {
        use lockstep_trainer::data::Source;
        let data = &self.job.data;
        match (data.source, &data.stream) {
            (Source::File, Some(_)) => Err(self.invalid(
                "job.data.stream",
                "applies to source = \"stream\" only".into(),
            )),
            (Source::Stream, None) => Err(self.invalid(
                "job.data.stream",
                "source = \"stream\" needs [job.data.stream] with producers = N".into(),
            )),
            (Source::Stream, Some(s)) => {
                if self.job.aggregation == Aggregation::ParameterServer {
                    return Err(self.invalid(
                        "job.aggregation",
                        "streams train with allreduce only".into(),
                    ));
                }
                s.check(self.job.global_batch, workers)
                    .map_err(|e| self.invalid(e.key(), e.to_string()))
            }
            (Source::File, None) => Ok(()),
        }
    }
}
