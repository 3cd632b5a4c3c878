//! The worker role of a node: load data, build the model, connect to the coordinator, join the
//! data mesh, start the `DataLoader`, `Compute`, `Aggregator` and `WorkerNode` actors, and run
//! the granted rounds until `Finish`.

use crate::control::protocol::{recv_msg, send_msg, ControlMsg};
use crate::error::RuntimeError;
use crate::job;
use crate::manifest::Aggregation;
use crate::node::guard::{caught, StopOnDrop};
use crate::node::worker_actors::start_worker_actors;
use crate::node::{bind_data, connect_control, join_mesh, NodeContext, COMMAND_TIMEOUT};
use crate::round::messages::WorkerState;
use crate::round::*;
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer};
use lockstep_trainer::data::BatchSource;
use lockstep_transport::tcp::Listener;
use lockstep_transport::AnyLink;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn run_worker(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let (split, transform) = crate::job::stored_transform::load_split_for(ctx)?;
    let model = (ctx.model_factory)(m, &split)?;
    let mut params = model.params().to_vec();
    let mut optimizer = job::optimizer(&m.job.optimizer, model.as_ref())?;
    let (mut link, local_ip) = connect_control(ctx, &me)?;
    let node_addr = crate::node::data_bind_addr(m, &me);
    let (mut listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
    let stream = m.stream().cloned();
    let ingest_bound = match &stream {
        Some(_) => Some(crate::stream::setup::bind(m, &me, local_ip)?),
        None => None,
    };
    let register = ControlMsg::Register {
        node: me.clone(),
        data_addr,
        signature: job::signature_with_data(model.as_ref(), &split),
        ingest_addr: ingest_bound.as_ref().map(|(_, a)| a.clone()),
        uptime_ms: Some(crate::node::uptime_ms()),
    };
    send_msg(&mut link, 0, "registering", &register)?;
    let mut stream_offsets = None;
    let mut epoch = match recv_msg(&mut link, 0, "waiting for the peer table")? {
        ControlMsg::Start {
            peers,
            first_round,
            resume,
            job,
        } => {
            if let Some(dir) = &resume {
                let restored =
                    crate::checkpoint::read(std::path::Path::new(dir), model.as_ref(), &optimizer)?;
                crate::job::stored_transform::check_same(
                    restored.meta.transform.as_ref(),
                    &split.fitted,
                    dir,
                    &me,
                )?;
                stream_offsets = restored.meta.stream_offsets.clone();
                params.copy_from_slice(&restored.params);
                optimizer.load_state(&restored.optimizer).map_err(|e| {
                    RuntimeError::Model(format!("checkpoint {dir}: optimizer state: {e}"))
                })?;
                tracing::info!(node = %me, "resuming at round {first_round} from {dir}");
            }
            Epoch {
                peers,
                mesh: job,
                round: first_round,
                source: None,
            }
        }
        ControlMsg::Remesh {
            peers,
            mesh,
            round,
            source,
        } => {
            tracing::info!(node = %me, "joining a running job at round {round}");
            Epoch {
                peers,
                mesh,
                round,
                source: Some(source),
            }
        }
        other => {
            return Err(RuntimeError::Protocol(format!(
                "expected Start, got {}",
                other.name()
            )))
        }
    };
    drop(model);
    // A stream's ingest endpoint is set up once, for the first (and, streams not being
    // elastic, only) membership.
    let mut stream = stream.map(|spec| StreamSetup {
        spec,
        bound: ingest_bound,
        offsets: stream_offsets,
    });
    let elastic = m.elastic().is_some();
    let mut next_round = epoch.round;
    loop {
        let (ended, back) = run_epoch(
            ctx,
            &split,
            &transform,
            link,
            listener,
            &epoch,
            &mut params,
            &mut optimizer,
            next_round,
            &mut stream,
        );
        link = back;
        match ended {
            Ok(EpochEnd::Finished) => return Ok(()),
            Ok(EpochEnd::Suspended(state)) => {
                params = state.params;
                optimizer
                    .load_state(&state.optimizer)
                    .map_err(|e| RuntimeError::Inconsistent(format!("optimizer state: {e}")))?;
                next_round = state.next_round;
                listener = suspended(&mut link, &node_addr, local_ip, next_round)?;
            }
            Ok(EpochEnd::MeshFailed(e)) if elastic => {
                tracing::warn!(node = %me, error = %e, "the new mesh failed; waiting for the coordinator");
                let lost = ControlMsg::PeerLost {
                    mesh: epoch.mesh,
                    round: epoch.round,
                    node: String::new(),
                    reason: e.to_string(),
                };
                send_msg(&mut link, epoch.round, "reporting a lost peer", &lost)?;
                listener = wait_suspend(&mut link, &node_addr, local_ip, next_round)?;
            }
            Ok(EpochEnd::MeshFailed(e)) | Err(e) => return Err(e),
        }
        epoch = wait_remesh(&mut link, &node_addr, local_ip, next_round, &mut listener)?;
    }
}

/// A stream job's ingest: the spec, the bound endpoint and the offsets to resume from.
struct StreamSetup {
    spec: lockstep_trainer::data::StreamSpec,
    bound: Option<(Listener, String)>,
    offsets: Option<std::collections::BTreeMap<u32, u64>>,
}

/// One membership's mesh: who, its id, where it starts and whose state it takes.
struct Epoch {
    peers: Vec<(String, String)>,
    mesh: u64,
    round: u64,
    source: Option<usize>,
}

enum EpochEnd {
    Finished,
    Suspended(WorkerState),
    /// Elastic: the mesh could not be built or the state not transferred.
    MeshFailed(RuntimeError),
}

/// Bind a fresh data listener and tell the coordinator this worker is suspended.
fn suspended(
    link: &mut AnyLink,
    node_addr: &str,
    local_ip: std::net::IpAddr,
    next_round: u64,
) -> Result<Listener, RuntimeError> {
    let (listener, data_addr) = bind_data(node_addr, Some(local_ip))?;
    let msg = ControlMsg::Suspended {
        next_round,
        data_addr,
    };
    send_msg(link, next_round, "reporting the suspension", &msg)?;
    Ok(listener)
}

/// Wait for the coordinator's `Suspend` (ignoring stale grants) and answer it.
fn wait_suspend(
    link: &mut AnyLink,
    node_addr: &str,
    local_ip: std::net::IpAddr,
    next_round: u64,
) -> Result<Listener, RuntimeError> {
    loop {
        match recv_msg(link, next_round, "waiting for the coordinator's suspension")? {
            ControlMsg::Suspend { .. } => return suspended(link, node_addr, local_ip, next_round),
            ControlMsg::Grant { .. } | ControlMsg::Probe => continue,
            other => {
                return Err(RuntimeError::Protocol(format!(
                    "expected Suspend, got {}",
                    other.name()
                )))
            }
        }
    }
}

/// Wait for the new membership (answering a repeated `Suspend` with a fresh listener).
fn wait_remesh(
    link: &mut AnyLink,
    node_addr: &str,
    local_ip: std::net::IpAddr,
    next_round: u64,
    listener: &mut Listener,
) -> Result<Epoch, RuntimeError> {
    loop {
        match recv_msg(link, next_round, "waiting for the new membership")? {
            ControlMsg::Remesh {
                peers,
                mesh,
                round,
                source,
            } => {
                return Ok(Epoch {
                    peers,
                    mesh,
                    round,
                    source: Some(source),
                })
            }
            ControlMsg::Suspend { .. } => {
                *listener = suspended(link, node_addr, local_ip, next_round)?;
            }
            ControlMsg::Grant { .. } | ControlMsg::Probe => continue,
            other => {
                return Err(RuntimeError::Protocol(format!(
                    "expected Remesh, got {}",
                    other.name()
                )))
            }
        }
    }
}

/// Run one membership's rounds: join its mesh, take the state from its source (elastic), start
/// the actors and serve the coordinator until `Finish` or `Suspend`. The control link comes back
/// whatever happens.
#[allow(clippy::too_many_arguments)]
fn run_epoch(
    ctx: &NodeContext,
    split: &lockstep_trainer::data::Split,
    transform: &Arc<crate::job::stored_transform::StoredTransform>,
    link: AnyLink,
    listener: Listener,
    epoch: &Epoch,
    params: &mut [f32],
    optimizer: &mut lockstep_trainer::optim::Optimizer,
    next_round: u64,
    stream: &mut Option<StreamSetup>,
) -> (Result<EpochEnd, RuntimeError>, AnyLink) {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let elastic = m.elastic().is_some();
    let peers = &epoch.peers;
    let group = match join_mesh(ctx, epoch.mesh, &me, peers, listener) {
        Ok(g) => g,
        Err(e) if elastic => return (Ok(EpochEnd::MeshFailed(e)), link),
        Err(e) => return (Err(e), link),
    };
    let workers = if elastic {
        peers.len()
    } else {
        m.worker_names().len()
    };
    let rank = group.rank();
    let num_params = params.len();
    let mut comm = Communicator::new(group, CollectiveConfig::default());
    let tracer = m
        .observe
        .trace
        .then(|| crate::observe::trace::Tracer::new(m.observe.sampling()));
    let peer_names: Vec<String> = peers.iter().map(|(n, _)| n.clone()).collect();
    let traffic = comm.traffic();
    let mut min_bucket = 0;
    let board = Some((comm.waiting(), peer_names.clone()));
    #[cfg(feature = "fault-injection")]
    let activity = match crate::control::hang::fault::Fault::for_node(&me) {
        Ok(fault) => crate::control::hang::Activity::with_fault(board, fault),
        Err(e) => return (Err(e), link),
    };
    #[cfg(not(feature = "fault-injection"))]
    let activity = crate::control::hang::Activity::new(board);
    if m.job.aggregation != Aggregation::ParameterServer {
        match crate::round::scale::prepare(m, &mut comm, peers, num_params * 4) {
            Ok(bytes) => min_bucket = bytes,
            Err(e) => return (Err(e), link),
        }
    }
    let plan = job::plan(m, split.train_rows());
    let mut first_round = epoch.round;
    let mut cursor = plan.cursor_at(first_round);
    if let Some(source) = epoch.source {
        comm.set_round(epoch.round);
        match crate::round::elastic::sync_state(
            &mut comm,
            source,
            params,
            optimizer,
            next_round,
            plan.cursor_at(next_round),
        ) {
            Ok(s) => {
                tracing::info!(node = %me, rank, world = workers, "state of round {} taken from rank {source}", s.next_round);
                first_round = s.next_round;
                cursor = s.cursor;
            }
            Err(e) => return (Ok(EpochEnd::MeshFailed(e)), link),
        }
    }
    let built = (|| -> Result<_, RuntimeError> {
        let mut model = (ctx.model_factory)(m, split)?;
        model.params_mut().copy_from_slice(params);
        let mode = if m.job.aggregation == Aggregation::ParameterServer {
            let servers: Vec<usize> = (workers..peers.len()).collect();
            let ps = ParameterServer::new(
                num_params,
                &servers,
                &(0..workers).collect::<Vec<_>>(),
                peers.len(),
            )?;
            Mode::ParameterServer {
                ps,
                params: Arc::new(model.params().to_vec()),
                buffers: optimizer
                    .state()
                    .buffers
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect(),
            }
        } else if m.job.micro_batches > 0 {
            Mode::AllreduceTreeSum
        } else {
            Mode::Allreduce
        };
        let k = m.job.micro_batches;
        let drop_last = plan.drop_last;
        let name = m.job.data.resolved(&m.base_dir).path.display().to_string();
        // A table in memory or a streamed dataset (many files, object storage), by the spec. A
        // streamed dataset's batches are cut into lanes fixed for the job (the micro-batches, else
        // the manifest's workers), so they do not move when the world shrinks or grows.
        let lanes = if k > 0 { k } else { m.worker_names().len() };
        // Full-batch L-BFGS, k-means, PCA: the same rows (and leftover) at every evaluation.
        let lbfgs = job::full_batch(m);
        let table_source = |rank, world| {
            lockstep_trainer::data::train_source(
                split,
                &name,
                job::global_batch(m, split.train_rows()),
                drop_last,
                m.job.seed,
                lanes,
                rank,
                world,
                lbfgs,
            )
        };
        if let Some(st) = stream.as_ref() {
            let (ingest, source) = crate::stream::setup::source(
                m,
                &st.spec,
                &split.fitted,
                rank,
                workers,
                first_round,
                st.offsets.as_ref(),
            )?;
            return Ok((model, mode, source, k / workers.max(1), Some(ingest)));
        }
        let (mut source, micro_per_worker): (Box<dyn BatchSource>, usize) =
            if k > 0 && !workers.is_power_of_two() {
                let leaves = crate::round::elastic::leaf_block(rank, workers, k);
                let n = leaves.len();
                let whole = table_source(0, 1)?;
                (
                    Box::new(crate::round::elastic::LeafRows::new(whole, leaves, k)),
                    n,
                )
            } else {
                (table_source(rank, workers)?, k / workers.max(1))
            };
        if first_round > 0 {
            source.seek(cursor)?;
        }
        Ok((model, mode, source, micro_per_worker, None))
    })();
    let (model, mode, source, micro_per_worker, ingest) = match built {
        Ok(b) => b,
        Err(e) => return (Err(e), link),
    };
    let (mut model, mode) = (model, mode);
    let sparse = match crate::ps::sparse::for_model(
        m,
        model.as_mut(),
        (workers, peers.len(), rank),
        first_round,
    ) {
        Ok(s) => s,
        Err(e) => return (Err(e), link),
    };
    let test = split.test.all();
    let task = split.task;
    let Some(sender) = link.tcp_sender() else {
        let e =
            RuntimeError::Launch("the control link to the coordinator is not a TCP link".into());
        return (Err(e), link);
    };
    let mut reporter = Reporter::new(sender)
        .with_observe(tracer, traffic, peer_names)
        .with_activity(activity);
    if elastic {
        reporter = reporter.elastic(epoch.mesh);
    }
    let prequential = stream.is_some();
    let offsets = match (&ingest, stream.as_ref()) {
        (Some(i), Some(st)) if st.spec.order == lockstep_trainer::data::Order::Arrival => {
            let i = i.clone();
            Some(Arc::new(move |round| i.offsets_after(round)) as StreamOffsets)
        }
        _ => None,
    };
    if let (Some(ingest), Some(st)) = (ingest, stream.as_mut()) {
        if let Some((listener, _)) = st.bound.take() {
            let served = crate::stream::setup::serve(
                ctx,
                &st.spec,
                &split.fitted,
                ingest,
                listener,
                &reporter,
            );
            if let Err(e) = served {
                return (Err(e), link);
            }
        }
    }
    let optimizer = optimizer.clone();
    let sync_params = epoch.source.is_none();
    let transform = Arc::clone(transform);
    let sys = actix::System::new();
    let (tx, rx) = sync_channel(1);
    let mut slot = Some(link);
    let tx2 = tx.clone();
    sys.block_on(async move {
        let mut link = slot.take().expect("the link is here once");
        let local = workers == 1 && !matches!(mode, Mode::ParameterServer { .. });
        let aggregator = Aggregator::new(comm, mode, num_params, reporter.clone())
            .with_min_bucket(min_bucket)
            .with_sparse(sparse);
        let res = start_worker_actors(
            micro_per_worker,
            model,
            optimizer,
            aggregator,
            local,
            source,
            first_round,
            workers,
            task,
            test,
            rank,
            reporter.clone(),
            sync_params,
            (prequential, offsets),
            transform,
        )
        .await;
        match res {
            Ok((node, compute)) => {
                let stop = StopOnDrop(actix::System::current());
                std::thread::spawn(move || {
                    // The system stops when this thread ends, however it ends (a panic too).
                    let _stop = stop;
                    let grants = compute.recipient();
                    let r = caught("the worker's control loop", || {
                        control_loop(&mut link, &node, &grants, &reporter, COMMAND_TIMEOUT)
                    });
                    let _ = tx.send((r, link));
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
                let _ = tx2.send((Err(e), link));
                actix::System::current().stop();
            }
        }
    });
    if let Err(e) = sys.run() {
        tracing::error!("actor system: {e}");
    }
    let (r, link) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the control thread hands the link back before the actor system stops");
    let end = r.map(|exit| match exit {
        Exit::Finished => EpochEnd::Finished,
        Exit::Suspended(s) => EpochEnd::Suspended(s),
    });
    (end, link)
}
