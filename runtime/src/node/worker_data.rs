//! Where a worker's rows come from: the training split in memory or a dataset streamed from
//! files (cut into lanes fixed for the job), or a stream's ingest endpoint; positioned at the
//! round the worker starts at. For a stream, also serving the endpoint and the producers'
//! offsets a checkpoint commits.

use crate::error::RuntimeError;
use crate::job;
use crate::node::NodeContext;
use crate::round::{Reporter, StreamOffsets};
use crate::stream::Ingest;
use lockstep_trainer::data::{BatchSource, DataCursor, Order, Split, StreamSpec};
use lockstep_transport::tcp::Listener;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A stream job's ingest: the spec, the bound endpoint and the offsets to resume from.
pub(super) struct StreamSetup {
    pub(super) spec: StreamSpec,
    pub(super) bound: Option<(Listener, String)>,
    pub(super) offsets: Option<BTreeMap<u32, u64>>,
}

/// A worker's rows for one membership.
pub(super) struct Rows {
    /// The batches of this rank.
    pub(super) source: Box<dyn BatchSource>,
    /// Micro-batches this worker runs per round.
    pub(super) micro_per_worker: usize,
    /// A stream's queues, to serve and to read offsets from.
    pub(super) ingest: Option<Arc<Ingest>>,
}

/// Where a worker's rows start: its rank among `workers`, the first round, and the data cursor
/// of that round.
pub(super) struct Position {
    pub(super) rank: usize,
    pub(super) workers: usize,
    pub(super) first_round: u64,
    pub(super) cursor: DataCursor,
}

/// The rows of rank `at.rank` from `at.first_round`: from the stream when there is one, else
/// from the split (or the dataset it streams from files).
///
/// # Errors
/// The data source cannot be opened or positioned.
pub(super) fn rows(
    ctx: &NodeContext,
    split: &Split,
    stream: Option<&StreamSetup>,
    at: &Position,
) -> Result<Rows, RuntimeError> {
    let m = &ctx.manifest;
    let k = m.job.micro_batches;
    if let Some(st) = stream {
        let (ingest, source) = crate::stream::setup::source(
            m,
            &st.spec,
            &split.fitted,
            at.rank,
            at.workers,
            at.first_round,
            st.offsets.as_ref(),
        )?;
        return Ok(Rows {
            source,
            micro_per_worker: k / at.workers.max(1),
            ingest: Some(ingest),
        });
    }
    let (mut source, micro_per_worker): (Box<dyn BatchSource>, usize) =
        if k > 0 && !at.workers.is_power_of_two() {
            let leaves = crate::round::elastic::leaf_block(at.rank, at.workers, k);
            let n = leaves.len();
            let whole = table_source(ctx, split, 0, 1)?;
            (
                Box::new(crate::round::elastic::LeafRows::new(whole, leaves, k)),
                n,
            )
        } else {
            (
                table_source(ctx, split, at.rank, at.workers)?,
                k / at.workers.max(1),
            )
        };
    if at.first_round > 0 {
        source.seek(at.cursor)?;
    }
    Ok(Rows {
        source,
        micro_per_worker,
        ingest: None,
    })
}

/// A table in memory or a streamed dataset (many files, object storage), by the spec, for rank
/// `rank` of `world`. A streamed dataset's batches are cut into lanes fixed for the job (the
/// micro-batches, else the manifest's workers), so they do not move when the world shrinks or
/// grows; full-batch L-BFGS, k-means and PCA see the same rows (and leftover) every time.
fn table_source(
    ctx: &NodeContext,
    split: &Split,
    rank: usize,
    world: usize,
) -> Result<Box<dyn BatchSource>, RuntimeError> {
    let m = &ctx.manifest;
    let k = m.job.micro_batches;
    let lanes = if k > 0 { k } else { m.worker_names().len() };
    let name = m.job.data.resolved(&m.base_dir).path.display().to_string();
    Ok(lockstep_trainer::data::train_source(
        split,
        &name,
        job::global_batch(m, split.train_rows()),
        job::plan(m, split.train_rows()).drop_last,
        m.job.seed,
        lanes,
        rank,
        world,
        job::full_batch(m),
    )?)
}

/// For a stream in arrival order: per round, the producers' offsets after it (what a
/// checkpoint of that round commits). Then serve the ingest endpoint, once per job: streams are
/// not elastic, so the first membership is the only one.
///
/// # Errors
/// The endpoint cannot start serving.
pub(super) fn serve_stream(
    ctx: &NodeContext,
    split: &Split,
    stream: Option<&mut StreamSetup>,
    ingest: Option<Arc<Ingest>>,
    reporter: &Reporter,
) -> Result<Option<StreamOffsets>, RuntimeError> {
    let (Some(st), Some(ingest)) = (stream, ingest) else {
        return Ok(None);
    };
    let offsets = (st.spec.order == Order::Arrival).then(|| {
        let i = ingest.clone();
        Arc::new(move |round| i.offsets_after(round)) as StreamOffsets
    });
    if let Some((listener, _)) = st.bound.take() {
        crate::stream::setup::serve(ctx, &st.spec, &split.fitted, ingest, listener, reporter)?;
    }
    Ok(offsets)
}
