//! One membership of a worker: join its data mesh, take the state (its own, or its source's in
//! an elastic job), build the model and the rows, and run the actors until `Finish` or
//! `Suspend` (see [`super::worker_actors`]).

use super::worker::{Epoch, EpochEnd, Trained, Worker};
use super::worker_actors::{run_actors, EpochActors};
use super::worker_data::{self, Position};
#[cfg(feature = "fault-injection")]
use crate::control::hang::fault::Fault;
use crate::control::hang::Activity;
use crate::error::{RuntimeError, SetupError};
use crate::job;
use crate::manifest::Aggregation;
use crate::node::{join_mesh, NodeContext};
use crate::observe::trace::Tracer;
use crate::round::{Exit, Mode, Reporter};
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer, Traffic};
use lockstep_trainer::data::{DataCursor, Split};
use lockstep_trainer::model::Model;
use lockstep_transport::tcp::Listener;
use lockstep_transport::AnyLink;
use std::sync::Arc;

/// Why a membership ended before its actors started.
enum Early {
    /// Elastic: the mesh could not be built or the state not transferred (the coordinator
    /// decides what next).
    MeshFailed(RuntimeError),
    /// Anything else: the worker fails.
    Failed(RuntimeError),
}

impl From<RuntimeError> for Early {
    fn from(e: RuntimeError) -> Self {
        Early::Failed(e)
    }
}

impl Worker<'_> {
    /// Run one membership's rounds: join its mesh, take the state from its source (elastic),
    /// start the actors and serve the coordinator until `Finish` or `Suspend`. The control link
    /// comes back whatever happens.
    pub(super) fn run_epoch(
        &mut self,
        link: AnyLink,
        listener: Listener,
        epoch: &Epoch,
        state: &mut Trained,
        next_round: u64,
    ) -> (Result<EpochEnd, RuntimeError>, AnyLink) {
        let actors = match self.prepare(&link, listener, epoch, state, next_round) {
            Ok(a) => a,
            Err(Early::MeshFailed(e)) => return (Ok(EpochEnd::MeshFailed(e)), link),
            Err(Early::Failed(e)) => return (Err(e), link),
        };
        let (r, link) = run_actors(actors, link);
        let end = r.map(|exit| match exit {
            Exit::Finished => EpochEnd::Finished,
            Exit::Suspended(s) => EpochEnd::Suspended(s),
            Exit::Orphaned(s, why) => EpochEnd::Orphaned(s, why),
        });
        (end, link)
    }

    /// Everything one membership's actors start with: the mesh, the state (this worker's or
    /// its source's), the model, the rows, the reporter; a stream's endpoint served.
    fn prepare(
        &mut self,
        link: &AnyLink,
        listener: Listener,
        epoch: &Epoch,
        state: &mut Trained,
        next_round: u64,
    ) -> Result<EpochActors, Early> {
        let (ctx, split) = (self.ctx, self.split);
        let m = &ctx.manifest;
        let mut mesh = Mesh::join(ctx, epoch, state.params.len(), listener)?;
        let (first_round, cursor) = take_state(ctx, split, &mut mesh, epoch, state, next_round)?;
        let (mut model, mode) = model_and_mode(ctx, split, state, &mesh)?;
        let at = Position {
            rank: mesh.rank,
            workers: mesh.workers,
            first_round,
            cursor,
        };
        let rows = worker_data::rows(ctx, split, self.stream.as_ref(), &at)?;
        let shape = (mesh.workers, mesh.world, mesh.rank);
        let resume = epoch.resume.as_deref().map(std::path::Path::new);
        let sparse = crate::ps::sparse::for_model(m, model.as_mut(), shape, (first_round, resume))?;
        let not_tcp = || RuntimeError::from(SetupError::ControlNotTcp);
        let sender = link.tcp_sender().ok_or_else(not_tcp)?;
        let mut reporter = Reporter::new(sender)
            .with_observe(mesh.tracer, mesh.traffic, mesh.peer_names)
            .with_activity(mesh.activity);
        if m.elastic().is_some() {
            reporter = reporter.elastic(epoch.mesh);
        }
        let prequential = self.stream.is_some();
        let offsets =
            worker_data::serve_stream(ctx, split, self.stream.as_mut(), rows.ingest, &reporter)?;
        Ok(EpochActors {
            comm: mesh.comm,
            mode,
            num_params: state.params.len(),
            min_bucket: mesh.min_bucket,
            sparse,
            model,
            optimizer: state.optimizer.clone(),
            source: rows.source,
            micro_per_worker: rows.micro_per_worker,
            first_round,
            workers: mesh.workers,
            rank: mesh.rank,
            test: split.test.all(),
            task: split.task,
            reporter,
            sync_params: epoch.source.is_none(),
            prequential,
            offsets,
            transform: Arc::clone(self.transform),
        })
    }
}

/// One membership's data mesh, joined: the communicator, this rank, and what its reports carry.
struct Mesh {
    comm: Communicator,
    rank: usize,
    /// Workers in this membership.
    workers: usize,
    /// Ranks in the mesh (workers, then parameter servers).
    world: usize,
    /// The smallest gradient bucket worth an allreduce (from the link probe).
    min_bucket: usize,
    tracer: Option<Tracer>,
    traffic: Traffic,
    peer_names: Vec<String>,
    activity: Activity,
}

impl Mesh {
    /// Join `epoch`'s mesh (a failure in an elastic job is the coordinator's to handle), then
    /// set up the collectives for gradients of `num_params` values.
    fn join(
        ctx: &NodeContext,
        epoch: &Epoch,
        num_params: usize,
        listener: Listener,
    ) -> Result<Mesh, Early> {
        let m = &ctx.manifest;
        let elastic = m.elastic().is_some();
        let peers = &epoch.peers;
        let group = join_mesh(ctx, epoch.mesh, &ctx.name, peers, listener).map_err(|e| {
            if elastic {
                Early::MeshFailed(e)
            } else {
                Early::Failed(e)
            }
        })?;
        let workers = if elastic {
            peers.len()
        } else {
            m.worker_names().len()
        };
        let rank = group.rank();
        let mut comm = Communicator::new(group, CollectiveConfig::default());
        let tracer = m.observe.trace.then(|| Tracer::new(m.observe.sampling()));
        let peer_names: Vec<String> = peers.iter().map(|(n, _)| n.clone()).collect();
        let traffic = comm.traffic();
        let board = Some((comm.waiting(), peer_names.clone()));
        #[cfg(feature = "fault-injection")]
        let activity = Activity::with_fault(board, Fault::for_node(&ctx.name)?);
        #[cfg(not(feature = "fault-injection"))]
        let activity = Activity::new(board);
        let mut min_bucket = 0;
        if m.job.aggregation != Aggregation::ParameterServer {
            min_bucket = crate::round::scale::prepare(m, &mut comm, peers, num_params * 4)?;
        }
        Ok(Mesh {
            comm,
            rank,
            workers,
            world: peers.len(),
            min_bucket,
            tracer,
            traffic,
            peer_names,
            activity,
        })
    }
}

/// Where this membership starts: at `epoch.round` with this worker's own state, or (a
/// membership with a source) with the state, round and cursor of rank `source`, taken over
/// the mesh (a failure there is the coordinator's to handle).
fn take_state(
    ctx: &NodeContext,
    split: &Split,
    mesh: &mut Mesh,
    epoch: &Epoch,
    state: &mut Trained,
    next_round: u64,
) -> Result<(u64, DataCursor), Early> {
    let plan = job::plan(&ctx.manifest, split.train_rows());
    if epoch.rollback {
        roll_back(ctx, split, epoch, state)?;
    }
    let Some(source) = epoch.source else {
        return Ok((epoch.round, plan.cursor_at(epoch.round)));
    };
    mesh.comm.set_round(epoch.round);
    let s = crate::round::elastic::sync_state(
        &mut mesh.comm,
        source,
        &mut state.params,
        &mut state.optimizer,
        next_round,
        plan.cursor_at(next_round),
    )
    .map_err(Early::MeshFailed)?;
    let (me, rank, world) = (&ctx.name, mesh.rank, mesh.workers);
    tracing::info!(node = %me, rank, world, "state of round {} taken from rank {source}", s.next_round);
    Ok((s.next_round, s.cursor))
}

/// Embedding tables: every member takes the state of the checkpoint `epoch.resume` (its tables
/// follow in `for_model`), or the initial state without one; nobody's state in memory.
fn roll_back(
    ctx: &NodeContext,
    split: &Split,
    epoch: &Epoch,
    state: &mut Trained,
) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let fresh = (ctx.model_factory)(m, split)?;
    let me = &ctx.name;
    match &epoch.resume {
        Some(dir) => {
            super::worker::resume_from(dir, me, epoch.round, fresh.as_ref(), split, state)?;
        }
        None => {
            state.params.copy_from_slice(fresh.params());
            state.optimizer = job::optimizer(&m.job.optimizer, fresh.as_ref())?;
            tracing::info!(node = %me, "rolled back to the initial state");
        }
    }
    Ok(())
}

/// A fresh model with the worker's parameters, and how its gradients are aggregated.
fn model_and_mode(
    ctx: &NodeContext,
    split: &Split,
    state: &Trained,
    mesh: &Mesh,
) -> Result<(Box<dyn Model>, Mode), RuntimeError> {
    let m = &ctx.manifest;
    let mut model = (ctx.model_factory)(m, split)?;
    model.params_mut().copy_from_slice(&state.params);
    let mode = if m.job.aggregation == Aggregation::ParameterServer {
        let servers: Vec<usize> = (mesh.workers..mesh.world).collect();
        let workers: Vec<usize> = (0..mesh.workers).collect();
        let ps = ParameterServer::new(state.params.len(), &servers, &workers, mesh.world)?;
        Mode::ParameterServer {
            ps,
            params: Arc::new(model.params().to_vec()),
            buffers: state
                .optimizer
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
    Ok((model, mode))
}
