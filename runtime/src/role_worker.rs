//! The worker role of a node: load data, build the model, connect to the coordinator, join the
//! data mesh, start the `DataLoader`, `Compute`, `Aggregator` and `WorkerNode` actors, and run
//! the granted rounds until `Finish`.

use crate::actors::*;
use crate::error::RuntimeError;
use crate::job;
use crate::manifest::Aggregation;
use crate::node::{bind_data, connect_control, join_mesh, NodeContext, COMMAND_TIMEOUT};
use crate::protocol::{recv_msg, send_msg, ControlMsg};
use actix::{Actor, SyncArbiter};
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer};
use lockstep_trainer::data::{BatchSource, TableSource};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn run_worker(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let split = job::load_split(m)?;
    let model = (ctx.model_factory)(m, &split)?;
    let optimizer = job::optimizer(&m.job.optimizer, model.params().len())?;
    let (mut link, local_ip) = connect_control(ctx, &me)?;
    let node_addr = crate::node::data_bind_addr(m, &me);
    let (listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
    let stream = m.stream().cloned();
    let ingest_bound = match &stream {
        Some(_) => Some(crate::ingest::setup::bind(m, &me, local_ip)?),
        None => None,
    };
    let register = ControlMsg::Register {
        node: me.clone(),
        data_addr,
        signature: job::signature(model.as_ref()),
        ingest_addr: ingest_bound.as_ref().map(|(_, a)| a.clone()),
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
    let mut stream_offsets = None;
    if let Some(dir) = &resume {
        let restored =
            crate::checkpoint::read(std::path::Path::new(dir), model.as_ref(), &optimizer)?;
        model.params_mut().copy_from_slice(&restored.params);
        optimizer
            .load_state(&restored.optimizer)
            .map_err(|e| RuntimeError::Model(format!("checkpoint {dir}: optimizer state: {e}")))?;
        stream_offsets = restored.meta.stream_offsets;
        tracing::info!(node = %me, "resuming at round {first_round} from {dir}");
    }
    let group = join_mesh(ctx, job_id, &me, &peers, listener)?;
    let workers = m.worker_names();
    let rank = group.rank();
    let num_params = model.params().len();
    let comm = Communicator::new(group, CollectiveConfig::default());
    let mode = if m.job.aggregation == Aggregation::ParameterServer {
        let servers: Vec<usize> = (workers.len()..peers.len()).collect();
        let ps = ParameterServer::new(
            num_params,
            &servers,
            &(0..workers.len()).collect::<Vec<_>>(),
            peers.len(),
        )?;
        Mode::ParameterServer {
            ps,
            params: Arc::new(model.params().to_vec()),
        }
    } else if m.job.micro_batches > 0 {
        Mode::AllreduceTreeSum
    } else {
        Mode::Allreduce
    };
    let micro_per_worker = m.job.micro_batches / workers.len().max(1);
    let (source, ingest): (Box<dyn BatchSource>, _) = match &stream {
        Some(spec) => {
            let (ingest, source) = crate::ingest::setup::source(
                m,
                spec,
                &split.fitted,
                rank,
                workers.len(),
                first_round,
                stream_offsets.as_ref(),
            )?;
            (source, Some(ingest))
        }
        None => {
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
                source.seek(job::plan(m, split.train.rows).cursor_at(first_round))?;
            }
            (Box::new(source), None)
        }
    };
    let test = split.test.all();
    let task = split.task;
    let world = workers.len();

    let reporter = Reporter::new(link.tcp_sender().ok_or_else(|| {
        RuntimeError::Launch("the control link to the coordinator is not a TCP link".into())
    })?);
    if let (Some(spec), Some(ingest), Some((listener, _))) = (&stream, ingest, ingest_bound) {
        crate::ingest::setup::serve(ctx, spec, &split.fitted, ingest, listener, &reporter)?;
    }
    let prequential = stream.is_some();
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
            source,
            first_round,
            world,
            task,
            test,
            rank,
            reporter.clone(),
            prequential,
        )
        .await;
        match res {
            Ok((node, compute)) => {
                let system = actix::System::current();
                std::thread::spawn(move || {
                    let grants = compute.recipient();
                    let r = control_loop(&mut link, &node, &grants, &reporter, COMMAND_TIMEOUT);
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
pub(crate) fn once<T: Send + 'static>(v: T) -> impl Fn() -> T + Send + Sync {
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
    reporter: Reporter,
    prequential: bool,
) -> Result<(actix::Addr<WorkerNode>, actix::Addr<Compute>), RuntimeError> {
    use crate::actors::messages::{GetParams, SetParams, SyncParams};
    let mailbox = |e: actix::MailboxError| RuntimeError::Actor(e.to_string());
    let local = world == 1 && !matches!(mode, Mode::ParameterServer { .. });
    let aggregator = SyncArbiter::start(
        1,
        once(Aggregator::new(comm, mode, num_params, reporter.clone())),
    );
    let loader = SyncArbiter::start(1, once(DataLoader::new(source, first_round)));
    let compute = SyncArbiter::start(
        1,
        once(
            Compute::new(
                model,
                optimizer,
                aggregator.clone().recipient(),
                loader.recipient(),
                reporter,
                world,
                rank == 0,
                task,
                test,
                first_round,
            )
            .with_micro_batches(micro_per_worker)
            .with_local_aggregation(local)
            .with_prequential(prequential),
        ),
    );
    let params = compute.send(GetParams).await.map_err(mailbox)??;
    let synced = aggregator
        .send(SyncParams { params })
        .await
        .map_err(mailbox)??;
    compute
        .send(SetParams { params: synced })
        .await
        .map_err(mailbox)??;
    Ok((WorkerNode::new(compute.clone(), rank == 0).start(), compute))
}
