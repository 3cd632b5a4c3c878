//! A parameter-server node (role `server`): holds one contiguous shard of the parameters and its
//! optimizer state. For each granted round it receives every worker's gradient shard, averages
//! them in a fixed rank order, applies the optimizer step, sends the new shard back and reports
//! the round to the coordinator; at a round whose plan checkpoints it sends its optimizer state
//! to the first worker, which writes the checkpoint (see [`crate::ps::state`]), and `--resume`
//! restores its shard from that checkpoint. It runs on a plain
//! thread: all of its work is blocking I/O and arithmetic, no actor system is involved.

use crate::control::protocol::{
    recv_msg, send_msg, ControlMessage, RoundPlan, RoundTiming, ToCoordinator, ToWorker,
};
use crate::error::{ProtocolError, RuntimeError, TrainingError};
use crate::job;
use crate::node::{bind_data, connect_control, join_mesh, NodeContext};
use crate::ps::sparse::SparseSide;
use lockstep_collective::{CollectiveConfig, Communicator, ParameterServer};
use lockstep_trainer::optim::Optimizer;
use lockstep_transport::AnyLink;
use std::ops::Range;

/// Run a server node until `Finish`.
///
/// # Errors
/// A dead worker or coordinator (named, with the round), or a failed optimizer step.
pub(crate) fn run_server(ctx: &NodeContext) -> Result<(), RuntimeError> {
    let mut server = ServerNode::start(ctx)?;
    loop {
        let doing = "waiting for the coordinator's next command";
        match recv_msg(&mut server.link, server.round, doing)? {
            ToWorker::Grant { rounds } => {
                for plan in rounds {
                    server.serve(&plan)?;
                }
            }
            ToWorker::Probe => server.answer_probe()?,
            ToWorker::Finish => return server.finish(),
            other => {
                return Err(ProtocolError::ServerGot {
                    server: ctx.name.clone(),
                    got: other.name(),
                }
                .into())
            }
        }
    }
}

/// A server node between commands: its control link, the mesh, its shard and the round.
struct ServerNode {
    link: AnyLink,
    comm: Communicator,
    ps: ParameterServer,
    /// The parameters (the whole vector; this shard serves `mine`).
    params: Vec<f32>,
    mine: Range<usize>,
    optimizer: Optimizer,
    tables: Option<SparseSide>,
    /// The last round served.
    round: u64,
}

impl ServerNode {
    /// Register with the coordinator, join the mesh, and take this shard's parameters and
    /// optimizer (from the checkpoint when resuming).
    fn start(ctx: &NodeContext) -> Result<ServerNode, RuntimeError> {
        let m = &ctx.manifest;
        let me = ctx.name.clone();
        let (split, _) = crate::job::stored_transform::load_split_for(ctx)?;
        let mut model = (ctx.model_factory)(m, &split)?;
        let n = model.params().len();
        let (mut link, local_ip) = connect_control(ctx, &me)?;
        let node_addr = crate::node::data_bind_addr(m, &me);
        let (listener, data_addr) = bind_data(&node_addr, Some(local_ip))?;
        let register = ToCoordinator::Register {
            node: me.clone(),
            data_addr,
            signature: job::signature_with_data(model.as_ref(), &split),
            ingest_addr: None,
            uptime_ms: Some(crate::node::uptime_ms()),
            rejoin: None,
        };
        send_msg(&mut link, 0, "registering", &register)?;
        let (peers, job, resume) = match recv_msg(&mut link, 0, "waiting for the peer table")? {
            ToWorker::Start {
                peers, job, resume, ..
            } => (peers, job, resume),
            other => {
                let got = other.name();
                return Err(ProtocolError::Expected {
                    expected: "Start",
                    got,
                }
                .into());
            }
        };
        let group = join_mesh(ctx, job, &me, &peers, listener)?;
        let workers = m.worker_names().len();
        let rank = group.rank();
        let servers: Vec<usize> = (workers..peers.len()).collect();
        let all: Vec<usize> = (0..workers).collect();
        let ps = ParameterServer::new(n, &servers, &all, peers.len())?;
        let mine = ps.shard(rank - workers);
        let full = job::optimizer(&m.job.optimizer, model.as_ref())?;
        let (params, optimizer) = match &resume {
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
                    .map_err(TrainingError::optimizer(None, "job.optimizer"))?,
            ),
        };
        let comm = Communicator::new(group, CollectiveConfig::default());
        let shape = (workers, peers.len(), rank);
        let first = u64::from(resume.is_some());
        let resume = resume.as_deref().map(std::path::Path::new);
        let tables = crate::ps::sparse::for_model(m, model.as_mut(), shape, (first, resume))?;
        Ok(ServerNode {
            link,
            comm,
            ps,
            params,
            mine,
            optimizer,
            tables,
            round: 0,
        })
    }

    /// Serve one granted round: average the workers' gradient shards, step, send the shard
    /// back (with the tables' exchanges around it), contribute to a checkpoint; report it.
    fn serve(&mut self, plan: &RoundPlan) -> Result<(), RuntimeError> {
        let round = plan.round;
        self.round = round;
        let started = std::time::Instant::now();
        self.comm.set_round(round);
        let (ps, params, optimizer) = (&mut self.ps, &mut self.params, &mut self.optimizer);
        let mut dense = |comm: &mut Communicator| -> Result<(), RuntimeError> {
            let mut failed = None;
            ps.step(comm, &[], params, |_, p, g| {
                if let Err(e) = optimizer.step_with_lr(plan.lr, p, g) {
                    failed.get_or_insert(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(TrainingError::optimizer(Some(round), "optimizer")(e).into());
            }
            if plan.checkpoint.is_some() {
                crate::ps::state::contribute(ps, comm, optimizer)?;
            }
            Ok(())
        };
        match self.tables.as_mut() {
            Some(t) => t.serve_round(&mut self.comm, plan, dense)?,
            None => dense(&mut self.comm)?,
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let timing = RoundTiming {
            comm_ms: ms,
            collective_ms: ms,
            round_ms: ms,
            ..Default::default()
        };
        let done = ToCoordinator::RoundDone {
            round,
            loss_sum: 0.0,
            samples: 0,
            timing,
            links: Vec::new(),
            scored: Vec::new(),
            offsets: Default::default(),
        };
        send_msg(&mut self.link, round, "reporting to the coordinator", &done)
    }

    /// Between grants every granted round is done: say so.
    fn answer_probe(&mut self) -> Result<(), RuntimeError> {
        let threads = vec![crate::control::hang::ThreadDoing {
            thread: "server".into(),
            operation: "waiting for a grant".into(),
            round: self.round,
            seq: None,
            waiting_on: None,
            for_ms: 0,
            busy: false,
        }];
        let doing = ToCoordinator::Doing { threads };
        send_msg(&mut self.link, self.round, "answering Probe", &doing)
    }

    /// The tables' digest, then this shard's hash to the coordinator.
    fn finish(mut self) -> Result<(), RuntimeError> {
        if let Some(t) = self.tables.as_mut() {
            t.serve_digest(&mut self.comm)?;
        }
        let weights_sha256 = job::weights_sha256(&self.params[self.mine.clone()]);
        let finished = ToCoordinator::Finished {
            weights_sha256,
            solver: None,
        };
        send_msg(
            &mut self.link,
            self.round,
            "reporting to the coordinator",
            &finished,
        )
    }
}
