//! `lockstep node`: one node's lifecycle. Resolve which node this is (from `--node` or from the
//! environment cluster managers set), then run its roles:
//!
//! - coordinator: bind the control port (announce it for `launch`), accept and register every
//!   member over authenticated links, check that all models have the same layout, hand out the
//!   data-mesh peer table, then let the `Coordinator` actor drive rounds and write the report;
//! - worker: load data, build the model, connect to the coordinator, join the data mesh, start the
//!   `DataLoader`, `Compute`, `Aggregator` and `WorkerNode` actors, and serve commands;
//! - server: a parameter-server shard (see [`crate::server`]).

use crate::actors::*;
use crate::env_mode;
use crate::error::RuntimeError;
use crate::job;
use crate::manifest::{Aggregation, Manifest, Role, TransportChoice};
use crate::protocol::{recv_msg, send_msg, ControlMsg};
use crate::report::Report;
use actix::{Actor, SyncArbiter};
use lockstep_trainer::aggregate::{AggregateConfig, Communicator, ParameterServer};
use lockstep_trainer::data::{Split, TableSource};
use lockstep_trainer::model::Model;
use lockstep_transport::tcp::{self, Listener, TcpLink};
use lockstep_transport::{
    connect_mesh, AnyLink, Group, Identity, LinkConfig, MeshConfig, PeerAddr, TransportKind,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long members have to connect and register.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one command (a round, an evaluation) may take on a worker.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

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
pub type ModelFactory =
    Arc<dyn Fn(&Manifest, &Split) -> Result<Box<dyn Model>, RuntimeError> + Send + Sync>;

/// The resolved identity of this process in the cluster.
pub struct NodeContext {
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
}

/// The factory that builds `[job.model]`.
pub fn manifest_model_factory() -> ModelFactory {
    Arc::new(|m: &Manifest, split: &Split| job::build(m, split))
}

impl NodeContext {
    fn link_config(&self) -> LinkConfig {
        LinkConfig {
            heartbeat: Duration::from_millis(self.manifest.cluster.heartbeat_ms),
            peer_timeout: Duration::from_millis(self.manifest.cluster.peer_timeout_ms),
            ..LinkConfig::default()
        }
    }

    fn identity(&self, name: &str) -> Identity {
        Identity::new(&self.manifest.cluster.name, name, self.token.as_bytes())
    }

    fn coordinator_name(&self) -> String {
        self.manifest.nodes_with(Role::Coordinator)[0].name.clone()
    }

    /// Members of the data mesh that have a control link: workers first, then servers.
    fn members(&self) -> Vec<String> {
        let m = &self.manifest;
        let mut v = m.worker_names();
        if m.job.aggregation == Aggregation::ParameterServer {
            v.extend(m.nodes_with(Role::Server).iter().map(|n| n.name.clone()));
        }
        v
    }

    /// True when the coordinator serves the parameters itself.
    fn coordinator_serves(&self) -> bool {
        self.manifest.job.aggregation == Aggregation::ParameterServer
            && self.manifest.nodes_with(Role::Server).is_empty()
    }
}

/// Run this node until the job ends.
///
/// # Errors
/// Any failure, naming the node, round and operation where a peer is at fault.
pub fn run(opts: &NodeOptions) -> Result<(), RuntimeError> {
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
        return Err(RuntimeError::Launch(format!(
            "node {name:?} is not in {}",
            manifest.path.display()
        )));
    }
    let token = manifest.token()?;
    let ctx = Arc::new(NodeContext {
        manifest,
        name,
        token,
        opts: opts.clone(),
        model_factory: manifest_model_factory(),
        on_listen: None,
    });
    run_roles(ctx)
}

/// Run the roles of `ctx`'s node, each on its own thread, and return the first error.
///
/// # Errors
/// The first role's failure.
pub fn run_roles(ctx: Arc<NodeContext>) -> Result<(), RuntimeError> {
    let node = ctx
        .manifest
        .node(&ctx.name)
        .cloned()
        .ok_or_else(|| RuntimeError::Launch(format!("node {} missing", ctx.name)))?;
    let mut threads = Vec::new();
    if node.roles.contains(&Role::Coordinator) {
        let c = ctx.clone();
        threads.push((
            "coordinator",
            std::thread::spawn(move || run_coordinator(&c)),
        ));
    }
    if node.roles.contains(&Role::Worker) {
        let c = ctx.clone();
        threads.push(("worker", std::thread::spawn(move || run_worker(&c))));
    }
    if node.roles.contains(&Role::Server)
        && ctx.manifest.job.aggregation == Aggregation::ParameterServer
    {
        let c = ctx.clone();
        threads.push((
            "server",
            std::thread::spawn(move || crate::server::run_server(&c)),
        ));
    }
    let mut first_err = None;
    for (role, t) in threads {
        let res = t
            .join()
            .unwrap_or_else(|_| Err(RuntimeError::Actor(format!("the {role} thread panicked"))));
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn transport_kind(ctx: &NodeContext, peers: &[PeerAddr]) -> TransportKind {
    match ctx.manifest.cluster.transport {
        TransportChoice::Tcp => TransportKind::Tcp,
        TransportChoice::Shm => TransportKind::Shm,
        TransportChoice::Auto => {
            let local = peers.iter().all(|p| {
                p.addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip().is_loopback())
            });
            if local {
                TransportKind::Shm
            } else {
                TransportKind::Tcp
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
    let rank = peers.iter().position(|p| p.name == me).ok_or_else(|| {
        RuntimeError::Protocol(format!(
            "{me} is not in the peer table the coordinator sent"
        ))
    })?;
    let mesh_name = format!("{}-{:08x}", ctx.manifest.cluster.name, job as u32);
    let mut cfg = MeshConfig::new(&mesh_name, ctx.token.as_bytes(), me, rank, peers.clone());
    cfg.transport = transport_kind(ctx, &peers);
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
    let coord = ctx.coordinator_name();
    let addr = match &ctx.opts.coordinator {
        Some(a) => a.clone(),
        None => {
            let a = ctx
                .manifest
                .node(&coord)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            if a.ends_with(":0") {
                return Err(RuntimeError::Launch(format!(
                    "the coordinator {coord} has port 0 in the manifest; pass --coordinator HOST:PORT (lockstep launch does this)"
                )));
            }
            a
        }
    };
    let sa = tcp::resolve(&addr)?;
    let identity = ctx.identity(me);
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let mut delay = Duration::from_millis(20);
    let stream = loop {
        match tcp::connect_once(sa, &identity, &coord, Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(e @ lockstep_transport::Error::Handshake { .. }) => return Err(e.into()),
            Err(e) if Instant::now() + delay > deadline => {
                return Err(RuntimeError::Timeout {
                    doing: format!("connecting to the coordinator {coord} at {sa}: {e}"),
                    ms: REGISTRATION_TIMEOUT.as_millis() as u64,
                })
            }
            Err(e) => {
                tracing::debug!(%e, "coordinator not reachable yet; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    };
    let local_ip = stream
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| RuntimeError::io("getsockname", &addr, e))?;
    let link = AnyLink::Tcp(TcpLink::new(stream, me, &coord, ctx.link_config())?);
    Ok((link, local_ip))
}

fn run_worker(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let split = job::load_split(m)?;
    let model = (ctx.model_factory)(m, &split)?;
    let optimizer = job::optimizer(&m.job.optimizer, model.params().len())?;
    let (mut link, local_ip) = connect_control(ctx, &me)?;
    let node_addr = crate::node::data_bind_addr(m, &me);
    let (listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
    let register = ControlMsg::Register {
        node: me.clone(),
        data_addr,
        signature: job::signature(model.as_ref()),
    };
    send_msg(&mut link, 0, "registering", &register)?;
    let (peers, first_round, resume, job_id) =
        match recv_msg(&mut link, 0, "waiting for the peer table")? {
            ControlMsg::Start {
                peers,
                first_round,
                resume,
                job,
            } => (peers, first_round, resume, job),
            other => {
                return Err(RuntimeError::Protocol(format!(
                    "expected Start, got {}",
                    other.name()
                )))
            }
        };
    let (mut model, mut optimizer) = (model, optimizer);
    if let Some(dir) = &resume {
        let restored =
            crate::checkpoint::read(std::path::Path::new(dir), model.as_ref(), &optimizer)?;
        model.params_mut().copy_from_slice(&restored.params);
        optimizer
            .load_state(&restored.optimizer)
            .map_err(|e| RuntimeError::Model(format!("checkpoint {dir}: optimizer state: {e}")))?;
        tracing::info!(node = %me, "resuming at round {first_round} from {dir}");
    }
    let group = join_mesh(ctx, job_id, &me, &peers, listener)?;
    let workers = m.worker_names();
    let rank = group.rank();
    let num_params = model.params().len();
    let comm = Communicator::new(group, AggregateConfig::default());
    let mode = if m.job.aggregation == Aggregation::ParameterServer {
        let servers: Vec<usize> = (workers.len()..peers.len()).collect();
        let ps = ParameterServer::new(
            num_params,
            &servers,
            &(0..workers.len()).collect::<Vec<_>>(),
            peers.len(),
        )
        .map_err(|e| RuntimeError::Aggregate(e.to_string()))?;
        Mode::ParameterServer {
            ps,
            params: model.params().to_vec(),
        }
    } else if m.job.micro_batches > 0 {
        Mode::AllreduceTreeSum
    } else {
        Mode::Allreduce
    };
    let micro_per_worker = m.job.micro_batches / workers.len().max(1);
    let table = Arc::new(split.train.clone());
    let mut source = TableSource::new(
        &m.data_path().display().to_string(),
        table,
        m.job.global_batch,
        job::plan(m, split.train.rows).drop_last,
        m.job.seed,
        rank,
        workers.len(),
    )?;
    if first_round > 0 {
        use lockstep_trainer::data::BatchSource;
        source.seek(job::plan(m, split.train.rows).cursor_at(first_round))?;
    }
    let test = split.test.all();
    let task = split.task;
    let world = workers.len();

    let sys = actix::System::new();
    let (tx, rx) = sync_channel(1);
    sys.block_on(async move {
        let res = start_worker_actors(
            micro_per_worker,
            model,
            optimizer,
            comm,
            mode,
            num_params,
            Box::new(source),
            first_round,
            world,
            task,
            test,
            rank,
        )
        .await;
        match res {
            Ok(node) => {
                let system = actix::System::current();
                std::thread::spawn(move || {
                    let r = control_loop(&mut link, &node, COMMAND_TIMEOUT);
                    let _ = tx.send(r);
                    system.stop();
                });
            }
            Err(e) => {
                let _ = send_msg(
                    &mut link,
                    0,
                    "aborting",
                    &ControlMsg::Abort {
                        reason: e.to_string(),
                    },
                );
                let _ = tx.send(Err(e));
                actix::System::current().stop();
            }
        }
    });
    sys.run().map_err(|e| RuntimeError::Actor(e.to_string()))?;
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| Err(RuntimeError::Actor("worker ended without a result".into())))
}

/// Move a value into a `SyncArbiter` factory that runs once (one thread).
fn once<T: Send + 'static>(v: T) -> impl Fn() -> T + Send + Sync {
    let cell = Mutex::new(Some(v));
    move || {
        cell.lock()
            .ok()
            .and_then(|mut c| c.take())
            .expect("a single-thread SyncArbiter calls its factory once")
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_worker_actors(
    micro_per_worker: usize,
    model: Box<dyn lockstep_trainer::model::Model>,
    optimizer: lockstep_trainer::optim::Optimizer,
    comm: Communicator,
    mode: Mode,
    num_params: usize,
    source: Box<dyn lockstep_trainer::data::BatchSource>,
    first_round: u64,
    world: usize,
    task: lockstep_trainer::data::Task,
    test: lockstep_trainer::Batch,
    rank: usize,
) -> Result<actix::Addr<WorkerNode>, RuntimeError> {
    use crate::actors::messages::{GetParams, SetParams, SyncParams};
    let mailbox = |e: actix::MailboxError| RuntimeError::Actor(e.to_string());
    let aggregator = SyncArbiter::start(1, once(Aggregator::new(comm, mode, num_params)));
    let agg_rcpt = aggregator.clone().recipient();
    let compute = SyncArbiter::start(
        1,
        once(
            Compute::new(model, optimizer, agg_rcpt, world, task, test)
                .with_micro_batches(micro_per_worker),
        ),
    );
    let loader = SyncArbiter::start(1, once(DataLoader::new(source, first_round)));
    let params = compute.send(GetParams).await.map_err(mailbox)??;
    let synced = aggregator
        .send(SyncParams { params })
        .await
        .map_err(mailbox)??;
    compute
        .send(SetParams { params: synced })
        .await
        .map_err(mailbox)??;
    Ok(WorkerNode::new(loader, compute, aggregator, rank == 0).start())
}

fn run_coordinator(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let node = m
        .node(&me)
        .cloned()
        .ok_or_else(|| RuntimeError::Launch(format!("node {me} missing")))?;
    let listener = Listener::bind(&node.addr)?;
    let control_addr = listener.local_addr()?;
    if let Some(path) = &ctx.opts.announce {
        lockstep_tensor::safetensors_io::write_atomic(path, format!("{control_addr}\n").as_bytes())
            .map_err(|e| RuntimeError::io("write", path, e))?;
    }
    if let Some(tx) = &ctx.on_listen {
        let _ = tx.send(control_addr);
    }
    tracing::info!(node = %me, "coordinator listening on {control_addr}");
    let split = job::load_split(m)?;
    let model = (ctx.model_factory)(m, &split)?;
    let signature = job::signature(model.as_ref());
    let names = ctx.members();
    let acceptor = listener.start(
        ctx.identity(&me),
        Some(names.clone()),
        Duration::from_secs(10),
    )?;
    let mut regs = crate::registration::accept_members(ctx, &acceptor, &names, &signature)?;
    // Keep refusing late or unexpected joiners for the rest of the job (logged by the handshake).
    let _late = crate::registration::refuse_late_joiners(acceptor);

    let mut peers: Vec<(String, String)> = regs
        .iter()
        .map(|r| (r.name.clone(), r.data_addr.clone()))
        .collect();
    let ps_listener = if ctx.coordinator_serves() {
        let ip = control_addr.ip();
        let (l, a) = bind_data(&format!("{ip}:0"), None)?;
        peers.push((format!("{me}-ps"), a));
        Some(l)
    } else {
        None
    };
    let ckpt_root = ctx.opts.run_dir.join(&m.job.checkpoint.dir);
    let (first_round, resume) = match ctx.opts.resume {
        false => (0, None),
        true if m.job.aggregation == Aggregation::ParameterServer => {
            return Err(RuntimeError::Launch(
                "--resume is not supported with parameter-server aggregation yet (the servers' optimizer state is not checkpointed)".into(),
            ))
        }
        true => match crate::checkpoint::find_latest(&ckpt_root) {
            Some((dir, meta)) => {
                tracing::info!("resuming from {} (round {})", dir.display(), meta.round);
                (meta.round, Some(dir.display().to_string()))
            }
            None => {
                tracing::warn!("--resume: no complete checkpoint under {}; starting from round 0", ckpt_root.display());
                (0, None)
            }
        },
    };
    let job_id: u64 = rand::random();
    let start = ControlMsg::Start {
        peers: peers.clone(),
        job: job_id,
        first_round,
        resume,
    };
    for r in &mut regs {
        send_msg(&mut r.link, 0, "sending the peer table", &start)?;
    }
    let server = match ps_listener {
        Some(l) => {
            let group = join_mesh(ctx, job_id, &format!("{me}-ps"), &peers, l)?;
            let world = group.world();
            let w = m.worker_names().len();
            let ps = ParameterServer::new(
                model.params().len(),
                &[world - 1],
                &(0..w).collect::<Vec<_>>(),
                world,
            )
            .map_err(|e| RuntimeError::Aggregate(e.to_string()))?;
            let optimizer = job::optimizer(&m.job.optimizer, model.params().len())?;
            let comm = Communicator::new(group, AggregateConfig::default());
            Some(PsServer {
                comm,
                ps,
                params: model.params().to_vec(),
                optimizer,
            })
        }
        None => None,
    };
    let workers = m.worker_names().len();
    let total_rounds = job::total_rounds(m, split.train.rows)?;
    let transport = format!(
        "{:?}",
        transport_kind(
            ctx,
            &peers
                .iter()
                .map(|(n, a)| PeerAddr {
                    name: n.clone(),
                    addr: a.clone()
                })
                .collect::<Vec<_>>()
        )
    )
    .to_lowercase();
    let plan = job::plan(m, split.train.rows);
    let schedule = Schedule {
        first_round,
        checkpoints: (
            ckpt_root,
            m.job.checkpoint.every_rounds,
            m.job.checkpoint.keep,
        ),
        seed: m.job.seed,
        plan,
        total_rounds,
        rounds_per_epoch: job::plan(m, split.train.rows).batches_per_epoch(),
        eval_every: m.job.eval_every,
        optimizer: m.job.optimizer.clone(),
        headline: job::headline_metric(split.task),
        report: Report {
            cluster: m.cluster.name.clone(),
            world_size: workers,
            transport,
            aggregation: match m.job.aggregation {
                Aggregation::Allreduce => "allreduce".into(),
                Aggregation::ParameterServer => "parameter-server".into(),
            },
            ..Report::default()
        },
        model_path: ctx.opts.run_dir.join("model.safetensors"),
    };
    let members: Vec<Member> = regs
        .into_iter()
        .map(|r| Member {
            name: r.name,
            link: r.link,
        })
        .collect();
    let sys = actix::System::new();
    let (tx, rx) = sync_channel(1);
    sys.block_on(async move {
        let control = SyncArbiter::start(1, once(ControlPlane::new(members, workers, server)));
        Coordinator::new(control, schedule, tx).start();
    });
    sys.run().map_err(|e| RuntimeError::Actor(e.to_string()))?;
    let report = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| {
            Err(RuntimeError::Actor(
                "coordinator ended without a result".into(),
            ))
        })?;
    let path = ctx
        .opts
        .report
        .clone()
        .unwrap_or_else(|| ctx.opts.run_dir.join("report.json"));
    report.write(&path)?;
    tracing::info!("{}", report.summary());
    tracing::info!("report written to {}", path.display());
    Ok(())
}
