//! A worker's actors for one membership epoch: the `Aggregator`, `DataLoader` and `Compute`, each
//! on its own single-thread `SyncArbiter`, and the `WorkerNode` on the arbiter that answers the
//! coordinator; with a parameter server the initial parameters are synchronised first.

use crate::error::{ActorError, RuntimeError};
use crate::round::*;
use actix::{Actor, SyncArbiter};
use std::sync::{Arc, Mutex};

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
pub(crate) async fn start_worker_actors(
    micro_per_worker: usize,
    model: Box<dyn lockstep_trainer::model::Model>,
    optimizer: lockstep_trainer::optim::Optimizer,
    aggregator: Aggregator,
    local: bool,
    source: Box<dyn lockstep_trainer::data::BatchSource>,
    first_round: u64,
    world: usize,
    task: lockstep_trainer::data::Task,
    test: lockstep_trainer::Batch,
    rank: usize,
    reporter: Reporter,
    sync_params: bool,
    (prequential, offsets): (bool, Option<StreamOffsets>),
    transform: Arc<crate::job::stored_transform::StoredTransform>,
) -> Result<(actix::Addr<WorkerNode>, actix::Addr<Compute>), RuntimeError> {
    use crate::round::messages::{GetParams, SetParams, SyncParams};
    let mailbox = |source: actix::MailboxError| ActorError::Mailbox {
        mailbox: "the worker's actors",
        source,
    };
    let sparse_wait = aggregator.sparse_wait();
    let aggregator = SyncArbiter::start(1, once(aggregator));
    let sparse_link = sparse_wait.map(|w| (aggregator.clone().recipient(), w));
    let loader = DataLoader::new(source, first_round)
        .with_tracer(reporter.tracer())
        .with_activity(reporter.activity().clone());
    let loader = SyncArbiter::start(1, once(loader));
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
                rank,
                task,
                test,
                first_round,
            )
            .with_micro_batches(micro_per_worker)
            .with_local_aggregation(local)
            .with_prequential(prequential)
            .with_stream_offsets(offsets)
            .with_transform(Some(transform))
            .with_sparse_link(sparse_link),
        ),
    );
    if sync_params {
        let params = compute.send(GetParams).await.map_err(mailbox)??;
        let synced = aggregator
            .send(SyncParams { params })
            .await
            .map_err(mailbox)??;
        compute
            .send(SetParams { params: synced })
            .await
            .map_err(mailbox)??;
    }
    Ok((WorkerNode::new(compute.clone(), rank == 0).start(), compute))
}
