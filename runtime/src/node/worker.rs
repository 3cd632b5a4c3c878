//! The worker role of a node: load data, build the model, connect to the coordinator, join the
//! data mesh, start the `DataLoader`, `Compute`, `Aggregator` and `WorkerNode` actors, and run
//! the granted rounds until `Finish`; in an elastic job, one membership after another. One
//! membership is [`super::worker_epoch`], its actors [`super::worker_actors`], where its rows
//! come from [`super::worker_data`].

use super::worker_data::StreamSetup;
use crate::control::protocol::{recv_msg, send_msg, ControlMessage, ToCoordinator, ToWorker};
use crate::error::{MismatchError, ProtocolError, RuntimeError, TrainingError};
use crate::job;
use crate::job::stored_transform::StoredTransform;
use crate::node::{bind_data, connect_control, NodeContext};
use crate::round::messages::WorkerState;
use lockstep_trainer::data::Split;
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::Optimizer;
use lockstep_transport::tcp::Listener;
use lockstep_transport::AnyLink;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Run the worker role of `ctx`'s node: register, then run every membership until `Finish`.
pub(crate) fn run_worker(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let (split, transform) = crate::job::stored_transform::load_split_for(ctx)?;
    let model = (ctx.model_factory)(m, &split)?;
    let mut state = Trained {
        params: model.params().to_vec(),
        optimizer: job::optimizer(&m.job.optimizer, model.as_ref())?,
    };
    let (mut link, local_ip) = connect_control(ctx, &me)?;
    let node_addr = crate::node::data_bind_addr(m, &me);
    let (listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
    let stream = m.stream().cloned();
    let ingest_bound = match &stream {
        Some(_) => Some(crate::stream::setup::bind(m, &me, local_ip)?),
        None => None,
    };
    let register = ToCoordinator::Register {
        node: me.clone(),
        data_addr,
        signature: job::signature_with_data(model.as_ref(), &split),
        ingest_addr: ingest_bound.as_ref().map(|(_, a)| a.clone()),
        uptime_ms: Some(crate::node::uptime_ms()),
        rejoin: None,
    };
    send_msg(&mut link, 0, "registering", &register)?;
    let signature = job::signature_with_data(model.as_ref(), &split);
    let (epoch, stream_offsets) = first_epoch(ctx, &mut link, model.as_ref(), &split, &mut state)?;
    drop(model);
    // A stream's ingest endpoint is set up once, for the first (and, streams not being
    // elastic, only) membership.
    let stream = stream.map(|spec| StreamSetup {
        spec,
        bound: ingest_bound,
        offsets: stream_offsets,
    });
    let worker = Worker {
        ctx,
        split: &split,
        transform: &transform,
        node_addr,
        local_ip,
        stream,
        signature,
    };
    worker.epochs(link, listener, epoch, state)
}

/// The parameters and optimizer a worker carries from one membership to the next.
pub(super) struct Trained {
    pub(super) params: Vec<f32>,
    pub(super) optimizer: Optimizer,
}

/// The coordinator's answer to `Register`: `Start` (from round 0, or from a checkpoint, read
/// here) or, for a replacement joining a running job, `Remesh`. With the checkpoint's stream
/// offsets.
fn first_epoch(
    ctx: &NodeContext,
    link: &mut AnyLink,
    model: &dyn Model,
    split: &Split,
    state: &mut Trained,
) -> Result<(Epoch, Option<BTreeMap<u32, u64>>), RuntimeError> {
    let me = &ctx.name;
    match recv_msg(link, 0, "waiting for the peer table")? {
        ToWorker::Start {
            peers,
            first_round,
            resume,
            job,
        } => {
            let offsets = match &resume {
                Some(dir) => resume_from(dir, me, first_round, model, split, state)?,
                None => None,
            };
            let epoch = Epoch {
                peers,
                mesh: job,
                round: first_round,
                source: None,
                resume,
                rollback: false,
            };
            Ok((epoch, offsets))
        }
        ToWorker::Remesh {
            peers,
            mesh,
            round,
            source,
            checkpoint,
            rollback,
        } => {
            tracing::info!(node = %me, "joining a running job at round {round}");
            let epoch = Epoch {
                peers,
                mesh,
                round,
                source: (!rollback).then_some(source),
                resume: checkpoint,
                rollback,
            };
            Ok((epoch, None))
        }
        other => Err(ProtocolError::Expected {
            expected: "Start",
            got: other.name(),
        }
        .into()),
    }
}

/// Take the parameters and optimizer state of the checkpoint in `dir` (checking it was made
/// with the data transform this node fitted); its stream offsets.
pub(super) fn resume_from(
    dir: &str,
    me: &str,
    first_round: u64,
    model: &dyn Model,
    split: &Split,
    state: &mut Trained,
) -> Result<Option<BTreeMap<u32, u64>>, RuntimeError> {
    let restored = crate::checkpoint::read(std::path::Path::new(dir), model, &state.optimizer)?;
    crate::job::stored_transform::check_same(
        restored.meta.transform.as_ref(),
        &split.fitted,
        dir,
        me,
    )?;
    state.params.copy_from_slice(&restored.params);
    state
        .optimizer
        .load_state(&restored.optimizer)
        .map_err(|source| TrainingError::CheckpointState {
            checkpoint: dir.to_string(),
            source,
        })?;
    tracing::info!(node = %me, "resuming at round {first_round} from {dir}");
    Ok(restored.meta.stream_offsets)
}

/// One membership's mesh: who, its id, where it starts and whose state it takes.
pub(super) struct Epoch {
    pub(super) peers: Vec<(String, String)>,
    pub(super) mesh: u64,
    pub(super) round: u64,
    pub(super) source: Option<usize>,
    /// The checkpoint directory this membership starts from (`Start` with `--resume`, or a
    /// rollback).
    pub(super) resume: Option<String>,
    /// Embedding tables: every member rolls back to `resume` (or, without it, to the initial
    /// state) instead of taking a source's state.
    pub(super) rollback: bool,
}

/// How a membership ended.
pub(super) enum EpochEnd {
    Finished,
    Suspended(WorkerState),
    /// Elastic: the coordinator was lost (why).
    Orphaned(WorkerState, String),
    /// Elastic: the mesh could not be built or the state not transferred.
    MeshFailed(RuntimeError),
}

/// What a worker keeps across memberships.
pub(super) struct Worker<'a> {
    pub(super) ctx: &'a NodeContext,
    pub(super) split: &'a Split,
    pub(super) transform: &'a Arc<StoredTransform>,
    pub(super) node_addr: String,
    pub(super) local_ip: IpAddr,
    pub(super) stream: Option<StreamSetup>,
    /// Its model's layout and data view (registering again with a new coordinator).
    pub(super) signature: crate::control::protocol::ModelSignature,
}

impl Worker<'_> {
    /// Run memberships until `Finish`; between two (elastic) report the suspension or the lost
    /// peer and wait for the coordinator's next membership. A coordinator lost on the way is
    /// replaced: this worker registers again with the one taking over
    /// ([`Worker::rejoin`](super::worker_rejoin)).
    fn epochs(
        mut self,
        mut link: AnyLink,
        mut listener: Listener,
        mut epoch: Epoch,
        mut state: Trained,
    ) -> Result<(), RuntimeError> {
        let elastic = self.ctx.manifest.elastic().is_some();
        let (node_addr, local_ip) = (self.node_addr.clone(), self.local_ip);
        let mut next_round = epoch.round;
        loop {
            let (ended, back) = self.run_epoch(link, listener, &epoch, &mut state, next_round);
            link = back;
            let between = match ended {
                Ok(EpochEnd::Finished) => return Ok(()),
                Ok(EpochEnd::Suspended(s)) => {
                    next_round = adopt(&mut state, s)?;
                    suspended(&mut link, &node_addr, local_ip, next_round)
                }
                Ok(EpochEnd::Orphaned(s, why)) => {
                    next_round = adopt(&mut state, s)?;
                    (link, listener, epoch) = self.rejoin(next_round, why)?;
                    continue;
                }
                Ok(EpochEnd::MeshFailed(e)) if elastic => {
                    tracing::warn!(node = %self.ctx.name, error = %e, "the new mesh failed; waiting for the coordinator");
                    let lost = ToCoordinator::PeerLost {
                        mesh: epoch.mesh,
                        round: epoch.round,
                        node: String::new(),
                        reason: e.to_string(),
                    };
                    send_msg(&mut link, epoch.round, "reporting a lost peer", &lost)
                        .and_then(|()| wait_suspend(&mut link, &node_addr, local_ip, next_round))
                }
                Ok(EpochEnd::MeshFailed(e)) | Err(e) => return Err(e),
            };
            let next = between.and_then(|mut l| {
                wait_remesh(&mut link, &node_addr, local_ip, next_round, &mut l).map(|e| (l, e))
            });
            match next {
                Ok((l, e)) => (listener, epoch) = (l, e),
                Err(e) if elastic && crate::round::coordinator_lost(&e) => {
                    (link, listener, epoch) = self.rejoin(next_round, e.to_string())?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Take a suspended membership's state; the round it continues at.
fn adopt(state: &mut Trained, s: WorkerState) -> Result<u64, RuntimeError> {
    state.params = s.params;
    state
        .optimizer
        .load_state(&s.optimizer)
        .map_err(|source| MismatchError::OptimizerState {
            round: None,
            what: "optimizer state",
            source,
        })?;
    Ok(s.next_round)
}

/// Bind a fresh data listener and tell the coordinator this worker is suspended.
fn suspended(
    link: &mut AnyLink,
    node_addr: &str,
    local_ip: std::net::IpAddr,
    next_round: u64,
) -> Result<Listener, RuntimeError> {
    let (listener, data_addr) = bind_data(node_addr, Some(local_ip))?;
    let msg = ToCoordinator::Suspended {
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
            ToWorker::Suspend { .. } => return suspended(link, node_addr, local_ip, next_round),
            ToWorker::Grant { .. } | ToWorker::Probe => continue,
            other => {
                let got = other.name();
                return Err(ProtocolError::Expected {
                    expected: "Suspend",
                    got,
                }
                .into());
            }
        }
    }
}

/// Wait for the new membership (answering a repeated `Suspend` with a fresh listener).
pub(super) fn wait_remesh(
    link: &mut AnyLink,
    node_addr: &str,
    local_ip: std::net::IpAddr,
    next_round: u64,
    listener: &mut Listener,
) -> Result<Epoch, RuntimeError> {
    loop {
        match recv_msg(link, next_round, "waiting for the new membership")? {
            ToWorker::Remesh {
                peers,
                mesh,
                round,
                source,
                checkpoint,
                rollback,
            } => {
                return Ok(Epoch {
                    peers,
                    mesh,
                    round,
                    source: (!rollback).then_some(source),
                    resume: checkpoint,
                    rollback,
                })
            }
            ToWorker::Suspend { .. } => {
                *listener = suspended(link, node_addr, local_ip, next_round)?;
            }
            ToWorker::Grant { .. } | ToWorker::Probe => continue,
            other => {
                let got = other.name();
                return Err(ProtocolError::Expected {
                    expected: "Remesh",
                    got,
                }
                .into());
            }
        }
    }
}
