//! The worker's side of a stream, as the worker node (`node/worker.rs`) wires it: bind the ingest endpoint before
//! registering (its address travels in `Register`), build the data source over the ingest
//! queues once the rank is known, and start serving producers once the `Reporter` exists.

use super::buffers::{Ingest, IngestRecords};
use super::endpoint::Endpoint;
use crate::control::protocol::ToCoordinator;
use crate::error::RuntimeError;
use crate::manifest::Manifest;
use crate::node::NodeContext;
use crate::round::Reporter;
use lockstep_trainer::data::{BatchSource, Fitted, Order, StreamSource, StreamSpec};
use lockstep_transport::tcp::Listener;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Bind this worker's ingest endpoint on the IP of its data address (any port); returns the
/// listener and the address to advertise.
///
/// # Errors
/// Binding fails.
pub(crate) fn bind(
    m: &Manifest,
    me: &str,
    advertise: IpAddr,
) -> Result<(Listener, String), RuntimeError> {
    let data = crate::node::data_bind_addr(m, me);
    let ip = data
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let listener = Listener::bind(&SocketAddr::new(ip, 0).to_string())?;
    let mut bound = listener.local_addr()?;
    if bound.ip().is_unspecified() {
        bound.set_ip(advertise);
    }
    Ok((listener, bound.to_string()))
}

/// The ingest state of `rank` of `world` and the batch source over it. Producers start at
/// `offsets` (from the checkpoint resumed from) or, without them, at the rows of `first_round`
/// rounds.
///
/// # Errors
/// A source that cannot be built (bad sharding).
pub(crate) fn source(
    m: &Manifest,
    spec: &StreamSpec,
    fitted: &Fitted,
    rank: usize,
    world: usize,
    first_round: u64,
    offsets: Option<&BTreeMap<u32, u64>>,
) -> Result<(Arc<Ingest>, Box<dyn BatchSource>), RuntimeError> {
    let per_producer = spec.rows_per_producer(m.job.global_batch) as u64;
    let share = (m.job.global_batch / world) as u64;
    let mine: Vec<(u32, u64)> = spec
        .producers_of(rank, world)
        .into_iter()
        .map(|p| {
            let start = match (offsets, spec.order) {
                (Some(o), _) => o.get(&p).copied().unwrap_or(0),
                (None, Order::Deterministic) => first_round * per_producer,
                (None, Order::Arrival) => 0,
            };
            (p, start)
        })
        .collect();
    let ingest = Ingest::new(
        &mine,
        spec.order,
        per_producer,
        share,
        first_round,
        spec.bounded,
        spec.buffer_rows,
    );
    let ids: Vec<String> = mine.iter().map(|(p, _)| p.to_string()).collect();
    let name = format!("stream (producers {})", ids.join(", "));
    let records = IngestRecords::new(ingest.clone(), &name);
    let source = StreamSource::local_shard(
        records,
        fitted.clone(),
        m.job.global_batch,
        rank,
        world,
        first_round,
    )?;
    Ok((ingest, Box::new(source)))
}

/// Serve producers on `listener`: progress goes to the coordinator through `reporter`, and a
/// silent producer under `on_silent = "fail"` fails this worker.
///
/// # Errors
/// The endpoint cannot start.
pub(crate) fn serve(
    ctx: &NodeContext,
    spec: &StreamSpec,
    fitted: &Fitted,
    ingest: Arc<Ingest>,
    listener: Listener,
    reporter: &Reporter,
) -> Result<(), RuntimeError> {
    let progress = reporter.clone();
    let failing = reporter.clone();
    let stop = ingest.clone();
    let endpoint = Endpoint::new(
        &ctx.name,
        spec.producers,
        fitted.clone(),
        ingest,
        Duration::from_millis(ctx.manifest.cluster.peer_timeout_ms),
        spec.on_silent,
        Duration::from_millis(spec.connect_timeout_ms),
        Arc::new(move |p| {
            let msg = ToCoordinator::StreamProgress {
                available: p.available,
                closed: p.closed,
                rows: p.rows,
                duplicates: p.duplicates,
            };
            if let Err(e) = progress.send(p.available, &msg) {
                tracing::debug!("stream progress not sent: {e}");
            }
        }),
        Arc::new(move |e| {
            stop.fail(e.to_string());
            failing.fail(0, e);
        }),
    );
    endpoint.serve(listener, ctx.identity(&ctx.name))
}
