//! A worker's actors for one membership epoch: the `Aggregator`, `DataLoader` and `Compute`, each
//! on its own single-thread `SyncArbiter`, and the `WorkerNode` on the arbiter that answers the
//! coordinator; with a parameter server the initial parameters are synchronised first. Then the
//! worker's control thread serves the coordinator until the membership ends.

use crate::control::protocol::{send_msg, ToCoordinator};
use crate::error::{ActorError, RuntimeError};
use crate::job::stored_transform::StoredTransform;
use crate::node::guard::{caught, StopOnDrop};
use crate::node::COMMAND_TIMEOUT;
use crate::ps::sparse::SparseSide;
use crate::round::*;
use actix::{Actor, SyncArbiter};
use lockstep_collective::Communicator;
use lockstep_trainer::data::BatchSource;
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::Optimizer;
use lockstep_transport::AnyLink;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Start the actors of `a` (the aggregator built here) and, unless the state came from a
/// source rank, give every rank rank 0's parameters (through the aggregator).
async fn start_worker_actors(
    a: EpochActors,
) -> Result<(actix::Addr<WorkerNode>, actix::Addr<Compute>), RuntimeError> {
    use crate::round::messages::{GetParams, SetParams, SyncParams};
    let mailbox = |mailbox: &'static str| {
        move |source: actix::MailboxError| ActorError::Mailbox { mailbox, source }
    };
    let local = a.workers == 1 && !matches!(a.mode, Mode::ParameterServer { .. });
    let aggregator = Aggregator::new(a.comm, a.mode, a.num_params, a.reporter.clone())
        .with_min_bucket(a.min_bucket)
        .with_sparse(a.sparse);
    let sparse_wait = aggregator.sparse_wait();
    let aggregator = SyncArbiter::start(1, once(aggregator));
    let sparse_link = sparse_wait.map(|w| (aggregator.clone().recipient(), w));
    let reporter = a.reporter;
    let loader = DataLoader::new(a.source, a.first_round)
        .with_tracer(reporter.tracer())
        .with_activity(reporter.activity().clone());
    let loader = SyncArbiter::start(1, once(loader));
    let compute = SyncArbiter::start(
        1,
        once(
            Compute::new(
                a.model,
                a.optimizer,
                aggregator.clone().recipient(),
                loader.recipient(),
                reporter,
                a.workers,
                a.rank,
                a.task,
                a.test,
                a.first_round,
            )
            .with_micro_batches(a.micro_per_worker)
            .with_local_aggregation(local)
            .with_prequential(a.prequential)
            .with_stream_offsets(a.offsets)
            .with_transform(Some(a.transform))
            .with_sparse_link(sparse_link),
        ),
    );
    if a.sync_params {
        let params = compute
            .send(GetParams)
            .await
            .map_err(mailbox("compute"))??;
        let synced = aggregator
            .send(SyncParams { params })
            .await
            .map_err(mailbox("aggregator"))??;
        compute
            .send(SetParams { params: synced })
            .await
            .map_err(mailbox("compute"))??;
    }
    Ok((
        WorkerNode::new(compute.clone(), a.rank == 0).start(),
        compute,
    ))
}

/// Everything one membership's actors start with.
pub(crate) struct EpochActors {
    pub(crate) comm: Communicator,
    pub(crate) mode: Mode,
    pub(crate) num_params: usize,
    pub(crate) min_bucket: usize,
    pub(crate) sparse: Option<SparseSide>,
    pub(crate) model: Box<dyn Model>,
    pub(crate) optimizer: Optimizer,
    pub(crate) source: Box<dyn BatchSource>,
    pub(crate) micro_per_worker: usize,
    pub(crate) first_round: u64,
    pub(crate) workers: usize,
    pub(crate) rank: usize,
    pub(crate) test: lockstep_trainer::Batch,
    pub(crate) task: lockstep_trainer::data::Task,
    pub(crate) reporter: Reporter,
    /// Rank 0's parameters go to every rank first (not after a state transfer).
    pub(crate) sync_params: bool,
    pub(crate) prequential: bool,
    pub(crate) offsets: Option<StreamOffsets>,
    pub(crate) transform: Arc<StoredTransform>,
}

/// Start the actors on a fresh actor system and serve the coordinator on a control thread
/// until the job or this membership ends; the system stops however that thread ends. The
/// control link comes back either way.
pub(crate) fn run_actors(a: EpochActors, link: AnyLink) -> (Result<Exit, RuntimeError>, AnyLink) {
    let sys = actix::System::new();
    let (tx, rx) = sync_channel(1);
    let mut slot = Some(link);
    let tx2 = tx.clone();
    sys.block_on(async move {
        let mut link = slot.take().expect("the link is here once");
        let reporter = a.reporter.clone();
        let res = start_worker_actors(a).await;
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
                let abort = ToCoordinator::Abort {
                    reason: e.to_string(),
                };
                let _ = send_msg(&mut link, 0, "aborting", &abort);
                let _ = tx2.send((Err(e), link));
                actix::System::current().stop();
            }
        }
    });
    if let Err(e) = sys.run() {
        tracing::error!("actor system: {e}");
    }
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the control thread hands the link back before the actor system stops")
}
