//! A parameter-server node (role `server`): holds one contiguous shard of the parameters and its
//! optimizer state. For each granted round it receives every worker's gradient shard, averages
//! them in a fixed rank order, applies the optimizer step, sends the new shard back and reports
//! the round to the coordinator; at a round whose plan checkpoints it sends its optimizer state
//! to the first worker, which writes the checkpoint (see [`crate::ps::state`]), and `--resume`
//! restores its shard from that checkpoint. It runs on a plain
//! thread: all of its work is blocking I/O and arithmetic, no actor system is involved.

use crate::control::protocol::{recv_msg, send_msg, ControlMsg, RoundTiming};
use crate::error::RuntimeError;
use crate::job;
use crate::node::{bind_data, connect_control, join_mesh, NodeContext};
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer};

/// Run a server node until `Finish`.
///
/// # Errors
/// A dead worker or coordinator (named, with the round), or a failed optimizer step.
pub fn run_server(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let m = &ctx.manifest;
    let me = ctx.name.clone();
    let (split, _) = crate::job::stored_transform::load_split_for(ctx)?;
    let mut model = (ctx.model_factory)(m, &split)?;
    let n = model.params().len();
    let (mut link, local_ip) = connect_control(ctx, &me)?;
    let node_addr = crate::node::data_bind_addr(m, &me);
    let (listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
    let register = ControlMsg::Register {
        node: me.clone(),
        data_addr,
        signature: job::signature_with_data(model.as_ref(), &split),
        ingest_addr: None,
        uptime_ms: Some(crate::node::uptime_ms()),
    };
    send_msg(&mut link, 0, "registering", &register)?;
    let (peers, job, resume) = match recv_msg(&mut link, 0, "waiting for the peer table")? {
        ControlMsg::Start {
            peers, job, resume, ..
        } => (peers, job, resume),
        other => {
            return Err(RuntimeError::Protocol(format!(
                "expected Start, got {}",
                other.name()
            )))
        }
    };
    let group = join_mesh(ctx, job, &me, &peers, listener)?;
    let workers = m.worker_names().len();
    let rank = group.rank();
    let servers: Vec<usize> = (workers..peers.len()).collect();
    let mut ps = ParameterServer::new(n, &servers, &(0..workers).collect::<Vec<_>>(), peers.len())?;
    let mine = ps.shard(rank - workers);
    let full = job::optimizer(&m.job.optimizer, model.as_ref())?;
    let (mut params, mut optimizer) = match &resume {
        Some(dir) => {
            let dir = std::path::Path::new(dir);
            let restored =
                crate::ps::state::restore_shard(dir, model.as_ref(), &full, mine.clone())?;
            tracing::info!(node = %me, "serving parameters {mine:?} from {}", dir.display());
            restored
        }
        None => (
            model.params().to_vec(),
            full.shard(mine.clone())
                .map_err(|e| RuntimeError::Model(format!("job.optimizer: {e}")))?,
        ),
    };
    let mut comm = Communicator::new(group, CollectiveConfig::default());
    let shape = (workers, peers.len(), rank);
    let mut tables =
        crate::ps::sparse::for_model(m, model.as_mut(), shape, u64::from(resume.is_some()))?;
    let mut round = 0;
    loop {
        match recv_msg(
            &mut link,
            round,
            "waiting for the coordinator's next command",
        )? {
            ControlMsg::Grant { rounds } => {
                for plan in rounds {
                    round = plan.round;
                    let started = std::time::Instant::now();
                    comm.set_round(round);
                    let mut dense = |comm: &mut Communicator| -> Result<(), RuntimeError> {
                        let mut failed = None;
                        ps.step(comm, &[], &mut params, |_, p, g| {
                            if let Err(e) = optimizer.step_with_lr(plan.lr, p, g) {
                                failed.get_or_insert(e.to_string());
                            }
                        })?;
                        if let Some(e) = failed {
                            return Err(RuntimeError::Model(format!(
                                "round {round}: optimizer: {e}"
                            )));
                        }
                        if plan.checkpoint.is_some() {
                            crate::ps::state::contribute(&mut ps, comm, &optimizer)?;
                        }
                        Ok(())
                    };
                    match tables.as_mut() {
                        Some(t) => t.serve_round(&mut comm, &plan, dense)?,
                        None => dense(&mut comm)?,
                    }
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    let timing = RoundTiming {
                        comm_ms: ms,
                        collective_ms: ms,
                        round_ms: ms,
                        ..Default::default()
                    };
                    let done = ControlMsg::RoundDone {
                        round,
                        loss_sum: 0.0,
                        samples: 0,
                        timing,
                        links: Vec::new(),
                        scored: Vec::new(),
                        offsets: Default::default(),
                    };
                    send_msg(&mut link, round, "reporting to the coordinator", &done)?;
                }
            }
            ControlMsg::Probe => {
                // Between grants: every granted round is done.
                let threads = vec![crate::control::hang::ThreadDoing {
                    thread: "server".into(),
                    operation: "waiting for a grant".into(),
                    round,
                    seq: None,
                    waiting_on: None,
                    for_ms: 0,
                    busy: false,
                }];
                let doing = ControlMsg::Doing { threads };
                send_msg(&mut link, round, "answering Probe", &doing)?;
            }
            ControlMsg::Finish => {
                if let Some(t) = tables.as_mut() {
                    t.serve_digest(&mut comm)?;
                }
                let weights_sha256 = job::weights_sha256(&params[mine.clone()]);
                send_msg(
                    &mut link,
                    round,
                    "reporting to the coordinator",
                    &ControlMsg::Finished {
                        weights_sha256,
                        solver: None,
                    },
                )?;
                return Ok(());
            }
            other => {
                return Err(RuntimeError::Protocol(format!(
                    "server {me} got unexpected {}",
                    other.name()
                )))
            }
        }
    }
}
