//! The coordinator role of a node: bind the control port (and announce it for `launch`), accept
//! and register every member, check their models, hand out the data-mesh peer table (with a fresh
//! job id), resume from a checkpoint if asked, then let the `Coordinator` actor drive rounds and
//! write the report.

use crate::control::coordinator::Server;
use crate::control::coordinator::{Coordinator, Schedule};
use crate::control::plane::Elastic;
use crate::control::plane::{ControlPlane, Member};
use crate::control::protocol::{send_msg, ToWorker};
use crate::control::registration::Registration;
use crate::control::rounds::stream::StreamSchedule;
use crate::error::{ActorError, RuntimeError, SetupError};
use crate::job;
use crate::manifest::Aggregation;
use crate::node::worker_actors::once;
use crate::node::{bind_data, join_mesh, transport_kind, NodeContext};
use crate::observe::report::Report;
use crate::ps::serve::PsServe;
use actix::{Actor, SyncArbiter};
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer};
use lockstep_trainer::data::Split;
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::Optimizer;
use lockstep_transport::tcp::Listener;
use lockstep_transport::PeerAddr;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run the coordinator role of `ctx`'s node until the job ends, and write its report.
pub(crate) fn run_coordinator(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let (listener, control_addr) = listen(ctx)?;
    let stream = m.stream().cloned();
    let bootstrap = match &stream {
        Some(_) => Some(bind_bootstrap(m, control_addr.ip())?),
        None => None,
    };
    // endpoints.json first: a worker that lost its coordinator finds this one there, and
    // `launch` starts workers only once the address is announced.
    write_endpoints(ctx, control_addr, bootstrap.as_ref().map(|(_, a)| *a))?;
    announce(ctx, control_addr)?;
    let (split, _) = crate::job::stored_transform::load_split_for(ctx)?;
    let model = (ctx.model_factory)(m, &split)?;
    let (mut regs, joiners) = register(ctx, listener, model.as_ref(), &split)?;
    if let (Some(spec), Some((listener, addr))) = (&stream, &bootstrap) {
        let workers = m.worker_names().len();
        let table = regs[..workers]
            .iter()
            .map(|r| (r.name.clone(), r.ingest_addr.clone().unwrap_or_default()))
            .collect();
        crate::stream::Bootstrap::new(spec.clone(), table).serve(listener, ctx.identity(&me))?;
        tracing::info!("producers' bootstrap listening on {addr}");
    }

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
    let mut resume = resume_point(ctx, stream.is_some())?;
    let job_id: u64 = rand::random();
    let (start, takeover) = first_message(ctx, &regs, &peers, job_id, &mut resume);
    for r in &mut regs {
        match send_msg(&mut r.link, 0, "sending the peer table", &start) {
            // Elastic: a member that died since it registered is found lost by the first
            // collection, and the others continue without it.
            Err(e @ RuntimeError::Peer { .. }) if m.elastic().is_some() => {
                tracing::warn!(node = %r.name, error = %e, "not sent; the member is lost");
            }
            other => other?,
        }
    }
    let server = match ps_listener {
        Some(l) => Some(serve_shard(
            ctx,
            job_id,
            &peers,
            l,
            model.as_ref(),
            &resume,
        )?),
        None => None,
    };
    let schedule = schedule(ctx, &split, &peers, resume, takeover)?;
    let members = regs
        .into_iter()
        .map(|r| Member::new(r.name, r.link))
        .collect();
    let report = drive(ctx, members, joiners, job_id, server, schedule)?;
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

/// What every registered member gets first: `Start` (from round 0 or the checkpoint resumed
/// from), or, when survivors of a dead coordinator registered, the takeover's `Remesh` (and
/// `resume` then starts at its round).
fn first_message(
    ctx: &NodeContext,
    regs: &[Registration],
    peers: &[(String, String)],
    job_id: u64,
    resume: &mut Resume,
) -> (ToWorker, Option<crate::control::takeover::Takeover>) {
    let m = &ctx.manifest;
    let rollback_root =
        crate::job::has_tables(m).then(|| m.job.checkpoint.local_root(&ctx.opts.run_dir));
    let takeover = crate::control::takeover::plan(
        &ctx.name,
        regs,
        rollback_root.as_deref(),
        &crate::control::takeover::history_file(&ctx.opts.run_dir),
    );
    let start = match &takeover {
        Some(t) => {
            tracing::warn!(
                "taking over as coordinator (term {}): {} workers continue at round {}",
                t.term,
                t.world,
                t.round
            );
            resume.first_round = t.round;
            t.remesh(peers.to_vec(), job_id)
        }
        None => ToWorker::Start {
            peers: peers.to_vec(),
            job: job_id,
            first_round: resume.first_round,
            resume: resume.dir.clone(),
        },
    };
    (start, takeover)
}

/// Bind the control port and log it.
fn listen(ctx: &NodeContext) -> Result<(Listener, SocketAddr), RuntimeError> {
    let me = &ctx.name;
    let node = ctx
        .manifest
        .node(me)
        .cloned()
        .ok_or_else(|| SetupError::NodeMissing { node: me.clone() })?;
    let listener = Listener::bind(&node.addr)?;
    let control_addr = listener.local_addr()?;
    tracing::info!(node = %me, "coordinator listening on {control_addr}");
    Ok((listener, control_addr))
}

/// Tell `launch` (its announce file) or an in-process cluster where the control port is.
fn announce(ctx: &NodeContext, control_addr: SocketAddr) -> Result<(), RuntimeError> {
    if let Some(path) = &ctx.opts.announce {
        lockstep_tensor::safetensors_io::write_atomic(path, format!("{control_addr}\n").as_bytes())
            .map_err(|e| RuntimeError::io("write", path, e))?;
    }
    if let Some(tx) = &ctx.on_listen {
        let _ = tx.send(control_addr);
    }
    Ok(())
}

/// Late joiners of an elastic job: each registration and when it came.
type Joiners = Receiver<(Registration, Instant)>;

/// Accept and register every member (their models and data checked against this one); in an
/// elastic job keep accepting joiners, else keep refusing late ones.
fn register(
    ctx: &NodeContext,
    listener: Listener,
    model: &dyn Model,
    split: &Split,
) -> Result<(Vec<Registration>, Option<Joiners>), RuntimeError> {
    let m = &ctx.manifest;
    let signature = job::signature_with_data(model, split);
    let names = ctx.members();
    let acceptor = listener.start(
        ctx.identity(&ctx.name),
        Some(names.clone()),
        Duration::from_secs(10),
    )?;
    let regs = match m.elastic() {
        Some((min_workers, _)) => crate::control::takeover::accept_elastic(
            ctx,
            &acceptor,
            &names,
            &signature,
            min_workers,
        )?,
        None => crate::control::registration::accept_members(ctx, &acceptor, &names, &signature)?,
    };
    let joiners = match m.elastic() {
        // Elastic: a worker of the manifest may (re)join at a round boundary.
        Some(_) => Some(crate::control::registration::accept_joiners(
            ctx,
            acceptor,
            m.worker_names(),
            signature,
        )),
        None => {
            // Keep refusing late or unexpected joiners for the rest of the job (logged by the
            // handshake).
            let _late = crate::control::registration::refuse_late_joiners(acceptor);
            None
        }
    };
    Ok((regs, joiners))
}

/// Where the job starts: round 0, or with `--resume` the newest complete checkpoint (for a
/// stream, with the producers' offsets it committed).
struct Resume {
    first_round: u64,
    dir: Option<String>,
    offsets: BTreeMap<u32, u64>,
}

/// The job's starting point under the checkpoint root.
///
/// # Errors
/// [`SetupError::NoStreamOffsets`] for a stream resumed from a checkpoint without offsets.
fn resume_point(ctx: &NodeContext, stream: bool) -> Result<Resume, RuntimeError> {
    let fresh = Resume {
        first_round: 0,
        dir: None,
        offsets: BTreeMap::new(),
    };
    if !ctx.opts.resume {
        return Ok(fresh);
    }
    let ckpt_root = ctx.manifest.job.checkpoint.local_root(&ctx.opts.run_dir);
    let Some((dir, meta)) = crate::checkpoint::find_latest(&ckpt_root) else {
        tracing::warn!(
            "--resume: no complete checkpoint under {}; starting from round 0",
            ckpt_root.display()
        );
        return Ok(fresh);
    };
    tracing::info!("resuming from {} (round {})", dir.display(), meta.round);
    let mut offsets = BTreeMap::new();
    if stream {
        offsets = meta
            .stream_offsets
            .clone()
            .ok_or_else(|| SetupError::NoStreamOffsets {
                checkpoint: dir.clone(),
            })?;
    }
    Ok(Resume {
        first_round: meta.round,
        dir: Some(dir.display().to_string()),
        offsets,
    })
}

/// The coordinator's own parameter-server shard (no server nodes): the last rank of the mesh,
/// serving every parameter, restored from the checkpoint when resuming.
type Shard = (Communicator, ParameterServer, Vec<f32>, Optimizer);

fn serve_shard(
    ctx: &NodeContext,
    job_id: u64,
    peers: &[(String, String)],
    listener: Listener,
    model: &dyn Model,
    resume: &Resume,
) -> Result<Shard, RuntimeError> {
    let m = &ctx.manifest;
    let group = join_mesh(ctx, job_id, &format!("{}-ps", ctx.name), peers, listener)?;
    let world = group.world();
    let w = m.worker_names().len();
    let n = model.params().len();
    let ps = ParameterServer::new(n, &[world - 1], &(0..w).collect::<Vec<_>>(), world)?;
    let optimizer = job::optimizer(&m.job.optimizer, model)?;
    let (params, optimizer) = match &resume.dir {
        Some(dir) => {
            crate::ps::state::restore_shard(std::path::Path::new(dir), model, &optimizer, 0..n)?
        }
        None => (model.params().to_vec(), optimizer),
    };
    let comm = Communicator::new(group, CollectiveConfig::default());
    Ok((comm, ps, params, optimizer))
}

/// What the `Coordinator` actor drives: rounds, evaluations, checkpoints, the report's frame.
fn schedule(
    ctx: &NodeContext,
    split: &Split,
    peers: &[(String, String)],
    resume: Resume,
    takeover: Option<crate::control::takeover::Takeover>,
) -> Result<Schedule, RuntimeError> {
    let m = &ctx.manifest;
    let workers = takeover
        .as_ref()
        .map_or(m.worker_names().len(), |t| t.world);
    let total_rounds = job::total_rounds(m, split.train_rows())?;
    let addrs: Vec<PeerAddr> = peers
        .iter()
        .map(|(n, a)| PeerAddr {
            name: n.clone(),
            addr: a.clone(),
        })
        .collect();
    let transport = format!("{:?}", transport_kind(ctx, &addrs)).to_lowercase();
    let plan = job::plan(m, split.train_rows());
    let observer = crate::observe::start_for(ctx, split, total_rounds, &transport)?;
    Ok(Schedule {
        observer,
        first_round: resume.first_round,
        checkpoints: (
            m.job.checkpoint.local_root(&ctx.opts.run_dir),
            m.job.checkpoint.every_rounds,
            m.job.checkpoint.keep,
        ),
        checkpoint_remote: m.job.checkpoint.remote(),
        seed: m.job.seed,
        rounds_per_epoch: plan.batches_per_epoch(),
        plan,
        total_rounds,
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
            status: "completed".into(),
            class_weight: job::class_weights_by_name(m, split)?,
            ..Report::default()
        },
        model_path: ctx.opts.run_dir.join("model.safetensors"),
        progress_timeout_ms: m.cluster.progress_timeout_ms,
        takeover,
        history: m
            .elastic()
            .map(|_| crate::control::takeover::history_file(&ctx.opts.run_dir)),
        stream: m.stream().cloned().map(|spec| StreamSchedule {
            per_producer: spec.rows_per_producer(m.job.global_batch) as u64,
            spec,
            task: split.task,
            start_offsets: resume.offsets,
        }),
    })
}

/// Run the control plane, the coordinator's shard (if any) and the `Coordinator` actor on an
/// actor system until the job ends; its report. From here on SIGINT / SIGTERM stop the job at a
/// round boundary with a final checkpoint.
fn drive(
    ctx: &NodeContext,
    members: Vec<Member>,
    joiners: Option<Joiners>,
    job_id: u64,
    server: Option<Shard>,
    schedule: Schedule,
) -> Result<Report, RuntimeError> {
    let m = &ctx.manifest;
    // Workers only (in a parameter-server job the members include the server nodes).
    let workers = schedule.report.world_size;
    let traces = schedule.observer.traces();
    let elastic = m.elastic();
    let duplicate_grace = Duration::from_millis(m.cluster.peer_timeout_ms);
    let rollback =
        crate::job::has_tables(m).then(|| m.job.checkpoint.local_root(&ctx.opts.run_dir));
    crate::node::stop::arm();
    let sys = actix::System::new();
    let (tx, rx) = sync_channel(1);
    sys.block_on(async move {
        let mut plane = ControlPlane::new(members, workers).with_traces(traces);
        if let (Some((min_workers, max_workers)), Some(joiners)) = (elastic, joiners) {
            plane = plane.with_elastic(Elastic {
                min_workers,
                max_workers,
                joiners,
                mesh: job_id,
                duplicate_grace,
                rollback,
            });
        }
        let control = SyncArbiter::start(1, once(plane));
        let server = server.map(|(comm, ps, params, optimizer)| {
            let failure = Arc::new(Mutex::new(None));
            let serve = PsServe::new(comm, ps, params, optimizer, failure.clone());
            let addr = SyncArbiter::start(1, once(serve));
            Server { addr, failure }
        });
        Coordinator::new(control, server, schedule, tx).start();
    });
    sys.run().map_err(|source| ActorError::System {
        role: "coordinator",
        source,
    })?;
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
        Err(ActorError::NoResult {
            actor: "coordinator",
        }
        .into())
    })
}

/// Bind the producers' bootstrap: `[job.data.stream] bootstrap` or any port on the control IP.
fn bind_bootstrap(
    m: &crate::manifest::Manifest,
    ip: std::net::IpAddr,
) -> Result<(Listener, std::net::SocketAddr), RuntimeError> {
    let addr = m
        .stream()
        .and_then(|s| s.bootstrap.clone())
        .unwrap_or_else(|| std::net::SocketAddr::new(ip, 0).to_string());
    let listener = Listener::bind(&addr)?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// `<run dir>/endpoints.json`: the addresses a script may need (port 0 makes them unknown
/// beforehand), written atomically as soon as they listen.
fn write_endpoints(
    ctx: &NodeContext,
    coordinator: std::net::SocketAddr,
    bootstrap: Option<std::net::SocketAddr>,
) -> Result<(), RuntimeError> {
    let dir = &ctx.opts.run_dir;
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    let mut v = serde_json::json!({ "coordinator": coordinator.to_string() });
    if let Some(b) = bootstrap {
        v["bootstrap"] = serde_json::Value::String(b.to_string());
    }
    let path = dir.join("endpoints.json");
    let body =
        serde_json::to_vec_pretty(&v).map_err(|e| RuntimeError::io("serialise", &path, e))?;
    lockstep_tensor::safetensors_io::write_atomic(&path, &body)
        .map_err(|e| RuntimeError::io("write", &path, e))
}
