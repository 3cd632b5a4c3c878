//! `lockstep node`: one node's lifecycle. Resolve which node this is (from `--node` or from the
//! environment cluster managers set), then run its roles:
//!
//! - coordinator: bind the control port (announce it for `launch`), accept and register every
//!   member over authenticated links, check that all models have the same layout, hand out the
//!   data-mesh peer table, then let the `Coordinator` actor drive rounds and write the report;
//! - worker: load data, build the model, connect to the coordinator, join the data mesh, start the
//!   `DataLoader`, `Compute`, `Aggregator` and `WorkerNode` actors, and serve commands;
//! - server: a parameter-server shard (see [`crate::ps::node`]).

pub(crate) mod coordinator;
pub mod embed;
pub(crate) mod env_mode;
pub(crate) mod guard;
pub(crate) mod preflight;
pub(crate) mod stop;
pub(crate) mod worker;
pub(crate) mod worker_actors;
pub(crate) mod worker_data;
pub(crate) mod worker_epoch;
pub(crate) mod worker_rejoin;

use crate::error::{ActorError, ProtocolError, RuntimeError, SetupError};
use crate::job;
use crate::manifest::{Aggregation, Manifest, Role, TransportChoice};
use lockstep_trainer::data::Split;
use lockstep_trainer::model::Model;
use lockstep_transport::tcp::{self, Listener, TcpLink};
use lockstep_transport::{
    connect_mesh, AnyLink, Group, Identity, LinkConfig, MeshConfig, PeerAddr, TransportKind,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long members have to connect and register.
pub(crate) const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one command (a round, an evaluation) may take on a worker.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// What `lockstep node` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The manifest.
    pub manifest: PathBuf,
    /// This node's name; `None` reads `RANK`/`WORLD_SIZE`/`MASTER_ADDR`/`MASTER_PORT` (or Slurm's).
    pub node: Option<String>,
    /// `--set` overrides.
    pub sets: Vec<String>,
    /// `--workers N` (must match what the other nodes were given).
    pub workers: Option<usize>,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Report path (coordinator).
    pub report: Option<PathBuf>,
    /// The coordinator's control address, when its manifest address has port 0.
    pub coordinator: Option<String>,
    /// Write the bound control address here (coordinator; used by `launch`).
    pub announce: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in the run directory (coordinator).
    pub resume: bool,
}

/// Builds the model for a split (the default builds `[job.model]`; embedding programs bring
/// their own model types).
pub(crate) type ModelFactory =
    Arc<dyn Fn(&Manifest, &Split) -> Result<Box<dyn Model>, RuntimeError> + Send + Sync>;

/// The resolved identity of this process in the cluster.
pub(crate) struct NodeContext {
    /// The effective manifest.
    pub manifest: Manifest,
    /// This node's name.
    pub name: String,
    /// The cluster token.
    pub token: String,
    /// Options as given.
    pub opts: NodeOptions,
    /// How models are built.
    pub model_factory: ModelFactory,
    /// Told the coordinator's bound control address (in-process clusters).
    pub on_listen: Option<std::sync::mpsc::Sender<SocketAddr>>,
    /// This node's TLS setup (`[cluster.tls]`), loaded and checked at start-up.
    pub tls: Option<Arc<lockstep_transport::TlsConfig>>,
}

/// The factory that builds `[job.model]`.
pub(crate) fn manifest_model_factory() -> ModelFactory {
    Arc::new(|m: &Manifest, split: &Split| job::build(m, split))
}

impl NodeContext {
    /// The settings of this node's control link (small frames: [`LinkConfig::control`]).
    pub(crate) fn link_config(&self) -> LinkConfig {
        LinkConfig {
            heartbeat: Duration::from_millis(self.manifest.cluster.heartbeat_ms),
            peer_timeout: Duration::from_millis(self.manifest.cluster.peer_timeout_ms),
            ..LinkConfig::control()
        }
    }

    pub(crate) fn identity(&self, name: &str) -> Identity {
        Identity::new(&self.manifest.cluster.name, name, self.token.as_bytes())
            .with_tls(self.tls.clone())
    }

    pub(crate) fn coordinator_name(&self) -> String {
        self.manifest.nodes_with(Role::Coordinator)[0].name.clone()
    }

    /// Members of the data mesh that have a control link: workers first, then servers.
    pub(crate) fn members(&self) -> Vec<String> {
        let m = &self.manifest;
        let mut v = m.worker_names();
        if m.job.aggregation == Aggregation::ParameterServer {
            v.extend(m.nodes_with(Role::Server).iter().map(|n| n.name.clone()));
        }
        v
    }

    /// True when the coordinator serves the parameters itself.
    pub(crate) fn coordinator_serves(&self) -> bool {
        self.manifest.job.aggregation == Aggregation::ParameterServer
            && self.manifest.nodes_with(Role::Server).is_empty()
    }
}

/// Run this node until the job ends.
///
/// # Errors
/// Any failure, naming the node, round and operation where a peer is at fault.
pub fn run(opts: &NodeOptions) -> Result<(), RuntimeError> {
    run_with(opts, manifest_model_factory())
}

/// [`run`] with models from `model_factory` (embedding programs bring their own model types:
/// [`crate::node::embed::EmbeddedNode`]).
///
/// # Errors
/// As [`run`].
pub(crate) fn run_with(
    opts: &NodeOptions,
    model_factory: ModelFactory,
) -> Result<(), RuntimeError> {
    let mut manifest = Manifest::load(&opts.manifest, &opts.sets)?;
    if let Some(n) = opts.workers {
        manifest.set_workers(n);
        manifest.validate()?;
    }
    let name = match &opts.node {
        Some(n) => n.clone(),
        None => env_mode::apply(&mut manifest)?,
    };
    if manifest.node(&name).is_none() {
        return Err(SetupError::NotInManifest {
            node: name,
            manifest: manifest.path.clone(),
        }
        .into());
    }
    let token = manifest.token()?;
    // Before connecting anywhere: a missing or mismatched TLS file is named now.
    let tls = crate::manifest::tls::load(&manifest, &name)?;
    let ctx = Arc::new(NodeContext {
        manifest,
        name,
        token,
        opts: opts.clone(),
        model_factory,
        on_listen: None,
        tls,
    });
    crate::node::preflight::check_run_dir(&ctx)?;
    let coordinator = ctx
        .manifest
        .node(&ctx.name)
        .is_some_and(|n| n.roles.contains(&Role::Coordinator));
    if coordinator {
        // SIGINT / SIGTERM: a graceful stop at a round boundary once training runs.
        crate::node::stop::install();
    }
    run_roles(ctx)
}

/// Run the roles of `ctx`'s node, each on its own thread, and return the first error.
///
/// # Errors
/// The first role's failure.
pub(crate) fn run_roles(ctx: Arc<NodeContext>) -> Result<(), RuntimeError> {
    let node = ctx
        .manifest
        .node(&ctx.name)
        .cloned()
        .ok_or_else(|| SetupError::NodeMissing {
            node: ctx.name.clone(),
        })?;
    if ctx.opts.resume {
        if let Some(url) = ctx.manifest.job.checkpoint.remote() {
            // A rescheduled node may have an empty disk: the newest checkpoint comes from the store.
            let local = ctx.manifest.job.checkpoint.local_root(&ctx.opts.run_dir);
            if crate::checkpoint::remote::fetch_latest(&url, &local)?.is_none() {
                tracing::warn!("--resume: no complete checkpoint under {url}");
            }
        }
    }
    let mut threads = Vec::new();
    if node.roles.contains(&Role::Coordinator) {
        let c = ctx.clone();
        threads.push((
            "coordinator",
            std::thread::spawn(move || crate::node::coordinator::run_coordinator(&c)),
        ));
    }
    if node.roles.contains(&Role::Worker) {
        let c = ctx.clone();
        threads.push((
            "worker",
            std::thread::spawn(move || crate::node::worker::run_worker(&c)),
        ));
    }
    if node.roles.contains(&Role::Server)
        && ctx.manifest.job.aggregation == Aggregation::ParameterServer
    {
        let c = ctx.clone();
        threads.push((
            "server",
            std::thread::spawn(move || crate::ps::node::run_server(&c)),
        ));
    }
    let mut first_err = None;
    for (role, t) in threads {
        let res = t.join().unwrap_or_else(|_| {
            Err(ActorError::Panicked {
                thread: format!("the {role} thread"),
                text: None,
            }
            .into())
        });
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

pub(crate) fn transport_kind(ctx: &NodeContext, peers: &[PeerAddr]) -> TransportKind {
    match ctx.manifest.cluster.transport {
        TransportChoice::Tcp => TransportKind::Tcp,
        TransportChoice::Shm => TransportKind::Shm,
        TransportChoice::Rdma => TransportKind::Rdma,
        TransportChoice::Auto => {
            let local = peers.iter().all(|p| {
                p.addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip().is_loopback())
            });
            if local {
                TransportKind::Shm
            } else {
                // Per peer: shared memory to workers with this node's IP, TCP to the others.
                TransportKind::Auto
            }
        }
    }
}

/// Join the data mesh of job `job` as `me` (a name in `peers`). The job id (random per run, from
/// the coordinator) is part of the mesh's name, so two runs of one cluster on one host never share
/// shared-memory segments.
pub(crate) fn join_mesh(
    ctx: &NodeContext,
    job: u64,
    me: &str,
    peers: &[(String, String)],
    listener: Listener,
) -> Result<Group, RuntimeError> {
    let peers: Vec<PeerAddr> = peers
        .iter()
        .map(|(n, a)| PeerAddr {
            name: n.clone(),
            addr: a.clone(),
        })
        .collect();
    let rank =
        peers
            .iter()
            .position(|p| p.name == me)
            .ok_or_else(|| ProtocolError::NotInPeerTable {
                node: me.to_string(),
            })?;
    let mesh_name = format!("{}-{:08x}", ctx.manifest.cluster.name, job as u32);
    let mut cfg = MeshConfig::new(&mesh_name, ctx.token.as_bytes(), me, rank, peers.clone());
    cfg.transport = transport_kind(ctx, &peers);
    cfg.tls = ctx.tls.clone();
    cfg.heartbeat_ms = ctx.manifest.cluster.heartbeat_ms;
    cfg.peer_timeout_ms = ctx.manifest.cluster.peer_timeout_ms;
    tracing::debug!(node = me, rank, transport = ?cfg.transport, "joining the data mesh");
    Ok(connect_mesh(&cfg, listener)?)
}

/// Where a worker or server binds its data listener: its manifest address, except that a node
/// which is also the coordinator keeps that port for control and takes any free port on the IP.
pub(crate) fn data_bind_addr(m: &Manifest, me: &str) -> String {
    match m.node(me) {
        Some(n) if n.roles.contains(&Role::Coordinator) => match n.addr.parse::<SocketAddr>() {
            Ok(a) => SocketAddr::new(a.ip(), 0).to_string(),
            Err(_) => "0.0.0.0:0".into(),
        },
        Some(n) => n.addr.clone(),
        None => "0.0.0.0:0".into(),
    }
}

/// Bind a data listener on the IP of `addr` (port as given) and the address to advertise.
pub(crate) fn bind_data(
    addr: &str,
    advertise_ip: Option<IpAddr>,
) -> Result<(Listener, String), RuntimeError> {
    let listener = Listener::bind(addr)?;
    let mut bound = listener.local_addr()?;
    if bound.ip().is_unspecified() {
        if let Some(ip) = advertise_ip {
            bound.set_ip(ip);
        }
    }
    Ok((listener, bound.to_string()))
}

/// Connect to the coordinator's control port (bounded retries) and register.
pub(crate) fn connect_control(
    ctx: &NodeContext,
    me: &str,
) -> Result<(AnyLink, IpAddr), RuntimeError> {
    let addr = coordinator_addr(ctx)?;
    tcp::resolve(&addr)?; // a bad address is an error at once, not after the retries
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    if ctx.manifest.elastic().is_some() {
        // A worker started again while its coordinator is replaced finds the new one.
        let candidates = || worker_rejoin::coordinator_candidates(ctx, false);
        return connect_control_until(ctx, me, candidates, deadline);
    }
    connect_control_until(ctx, me, || Ok(vec![addr.clone()]), deadline)
}

/// The coordinator's control address: `--coordinator`, else the manifest's.
///
/// # Errors
/// [`SetupError::CoordinatorPortZero`] when neither says a port.
pub(crate) fn coordinator_addr(ctx: &NodeContext) -> Result<String, RuntimeError> {
    if let Some(a) = &ctx.opts.coordinator {
        return Ok(a.clone());
    }
    let coord = ctx.coordinator_name();
    let a = ctx
        .manifest
        .node(&coord)
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    if a.ends_with(":0") {
        return Err(SetupError::CoordinatorPortZero { coordinator: coord }.into());
    }
    Ok(a)
}

/// Connect to the coordinator at one of the addresses `candidates` says, in order (asked again
/// before every round of tries, so a coordinator that moved is found), until `deadline`.
///
/// # Errors
/// A refused handshake (wrong token) at once; [`RuntimeError::Timeout`] naming the coordinator
/// and the addresses tried at the deadline.
pub(crate) fn connect_control_until(
    ctx: &NodeContext,
    me: &str,
    candidates: impl Fn() -> Result<Vec<String>, RuntimeError>,
    deadline: Instant,
) -> Result<(AnyLink, IpAddr), RuntimeError> {
    let coord = ctx.coordinator_name();
    let identity = ctx.identity(me);
    let limit_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    let mut delay = Duration::from_millis(20);
    let (stream, addr) = 'found: loop {
        let addrs = candidates()?;
        let mut last = None;
        for addr in &addrs {
            let tried = tcp::resolve(addr)
                .map_err(RuntimeError::from)
                .and_then(|sa| {
                    tcp::connect_once(sa, &identity, &coord, Duration::from_secs(10))
                        .map_err(Into::into)
                });
            match tried {
                Ok(s) => break 'found (s, addr.clone()),
                Err(RuntimeError::Transport(e)) if e.is_refusal() => {
                    return Err(RuntimeError::Transport(e))
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.map(|e| e.to_string()).unwrap_or_default();
        if Instant::now() + delay > deadline {
            return Err(RuntimeError::Timeout {
                doing: format!(
                    "connecting to the coordinator {coord} at {}: {e}",
                    addrs.join(" or ")
                ),
                ms: limit_ms,
            });
        }
        tracing::debug!(%e, "coordinator not reachable yet; retrying in {delay:?}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    };
    let local_ip = stream
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| RuntimeError::io("getsockname", &addr, e))?;
    let link = AnyLink::Tcp(TcpLink::new(stream, me, &coord, ctx.link_config())?);
    Ok((link, local_ip))
}

/// When this process started, as far as the runtime can tell: the first call (the `lockstep`
/// binary calls it first thing in `main`).
pub fn process_started() -> std::time::Instant {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::Instant::now)
}

/// Milliseconds since [`process_started`].
pub fn uptime_ms() -> f64 {
    process_started().elapsed().as_secs_f64() * 1e3
}
