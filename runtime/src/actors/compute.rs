//! `Compute`: forward/backward and the optimizer step, on a `SyncArbiter` thread (never on an
//! arbiter thread: a backward pass there would stall every heartbeat and mailbox on it).
//!
//! During backprop each finished layer's gradient bucket is copied out and handed to the
//! `Aggregator` with `try_send` (bounded mailbox; on a full mailbox it waits, with a deadline), so
//! the allreduce of one bucket overlaps the computation of the next.

use super::messages::*;
use crate::error::RuntimeError;
use crate::job;
use actix::{Actor, Handler, Recipient, SyncContext};
use lockstep_tensor::{write_safetensors, Tensor};
use lockstep_trainer::data::Task as DataTask;
use lockstep_trainer::model::Model;
use lockstep_trainer::optim::Optimizer;
use lockstep_trainer::Batch;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long a bucket may wait for room in the aggregator's mailbox.
const BUCKET_DEADLINE: Duration = Duration::from_secs(60);

/// The compute actor: owns the model replica, its gradients and the optimizer.
pub struct Compute {
    model: Box<dyn Model>,
    optimizer: Optimizer,
    grads: Vec<f32>,
    aggregator: Recipient<GradBucket>,
    world: usize,
    task: DataTask,
    test: Batch,
    /// Micro-batches per worker (0: off), and their gradient buffers.
    micro: usize,
    micro_grads: Vec<Vec<f32>>,
}

impl Compute {
    /// A compute actor for rank `world`-sized data parallelism.
    pub fn new(
        model: Box<dyn Model>,
        optimizer: Optimizer,
        aggregator: Recipient<GradBucket>,
        world: usize,
        task: DataTask,
        test: Batch,
    ) -> Self {
        let grads = vec![0.0; model.params().len()];
        Compute {
            model,
            optimizer,
            grads,
            aggregator,
            world,
            task,
            test,
            micro: 0,
            micro_grads: Vec::new(),
        }
    }

    /// Reproducible mode: `per_worker` micro-batches per shard, summed in a fixed binary tree.
    pub fn with_micro_batches(mut self, per_worker: usize) -> Self {
        self.micro = per_worker;
        self.micro_grads = vec![vec![0.0; self.grads.len()]; per_worker];
        self
    }

    /// Forward/backward over `k` equal micro-batches; each bucket of the last one triggers the
    /// tree sum of that range over all micro-batches, which then goes to the aggregator.
    fn step_micro(
        &mut self,
        round: u64,
        shard: &lockstep_trainer::data::ShardBatch,
    ) -> Result<(f64, usize), RuntimeError> {
        let k = self.micro;
        let b = &shard.batch;
        if !b.rows.is_multiple_of(k) {
            return Err(RuntimeError::Model(format!(
                "round {round}: {} rows do not split into {k} micro-batches",
                b.rows
            )));
        }
        let per = b.rows / k;
        let divisor = shard.global_rows as f32;
        let mut loss_sum = 0.0;
        let (mut failed, agg) = (None, &self.aggregator);
        for i in 0..k {
            let micro = b.slice_rows(i * per..(i + 1) * per);
            let (head, tail) = self.micro_grads.split_at_mut(i);
            let last = i + 1 == k;
            let out = self
                .model
                .forward_backward_scaled(&micro, divisor, &mut tail[0], &mut |range, g| {
                    if !last || failed.is_some() {
                        return;
                    }
                    tree_sum(head, g, range.clone());
                    let data = if k == 1 {
                        g.to_vec()
                    } else {
                        head[0][range.clone()].to_vec()
                    };
                    if let Err(e) = send_bucket(agg, GradBucket { round, range, data }) {
                        failed = Some(e);
                    }
                })
                .map_err(|e| RuntimeError::Model(format!("round {round}: {e}")))?;
            loss_sum += out.loss_sum;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((loss_sum, b.rows))
    }
}

/// Sum micro-batch gradients `head[0..] ++ [last]` over `range` in a fixed binary tree,
/// `((g0 + g1) + (g2 + g3)) + ...`, leaving the result in `head[0]` (or `last` alone when there
/// is a single micro-batch). The same tree continues across ranks in recursive doubling.
fn tree_sum(head: &mut [Vec<f32>], last: &mut [f32], range: std::ops::Range<usize>) {
    let k = head.len() + 1;
    let mut step = 1;
    while step < k {
        for lo in (0..k).step_by(2 * step) {
            let hi = lo + step;
            if hi >= k {
                continue;
            }
            if hi == k - 1 {
                let dst = &mut head[lo][range.clone()];
                dst.iter_mut().zip(last.iter()).for_each(|(d, s)| *d += s);
            } else {
                let (a, b) = head.split_at_mut(hi);
                let dst = &mut a[lo][range.clone()];
                dst.iter_mut()
                    .zip(&b[0][range.clone()])
                    .for_each(|(d, s)| *d += s);
            }
        }
        step *= 2;
    }
}

impl Actor for Compute {
    type Context = SyncContext<Self>;
}

fn send_bucket(to: &Recipient<GradBucket>, mut msg: GradBucket) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + BUCKET_DEADLINE;
    loop {
        match to.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(actix::prelude::SendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(actix::prelude::SendError::Full(_)) => {
                return Err(RuntimeError::Timeout {
                    doing: "handing a gradient bucket to the aggregator".into(),
                    ms: BUCKET_DEADLINE.as_millis() as u64,
                })
            }
            Err(actix::prelude::SendError::Closed(_)) => {
                return Err(RuntimeError::Actor("the aggregator stopped".into()))
            }
        }
    }
}

impl Handler<Step> for Compute {
    type Result = Result<StepDone, RuntimeError>;
    fn handle(&mut self, msg: Step, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        if self.micro > 0 {
            let (loss_sum, rows) = self.step_micro(msg.round, &msg.shard)?;
            return Ok(StepDone {
                loss_sum,
                rows,
                compute: started.elapsed(),
            });
        }
        let divisor = (msg.shard.global_rows as f32 / self.world as f32).max(f32::MIN_POSITIVE);
        let mut failed: Option<RuntimeError> = None;
        let (round, agg) = (msg.round, &self.aggregator);
        let out = self
            .model
            .forward_backward_scaled(
                &msg.shard.batch,
                divisor,
                &mut self.grads,
                &mut |range, g| {
                    if failed.is_none() {
                        let bucket = GradBucket {
                            round,
                            range,
                            data: g.to_vec(),
                        };
                        if let Err(e) = send_bucket(agg, bucket) {
                            failed = Some(e);
                        }
                    }
                },
            )
            .map_err(|e| RuntimeError::Model(format!("round {round}: {e}")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(StepDone {
            loss_sum: out.loss_sum,
            rows: out.rows,
            compute: started.elapsed(),
        })
    }
}

impl Handler<ApplyUpdate> for Compute {
    type Result = Result<Duration, RuntimeError>;
    fn handle(&mut self, msg: ApplyUpdate, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        let params = self.model.params_mut();
        match msg.update {
            Aggregated::MeanGradients(g) => self
                .optimizer
                .step_with_lr(msg.lr, params, &g)
                .map_err(|e| RuntimeError::Model(format!("round {}: optimizer: {e}", msg.round)))?,
            Aggregated::Parameters(p) => {
                if p.len() != params.len() {
                    return Err(RuntimeError::Inconsistent(format!(
                        "round {}: pulled {} parameters, model has {}",
                        msg.round,
                        p.len(),
                        params.len()
                    )));
                }
                params.copy_from_slice(&p);
            }
        }
        Ok(started.elapsed())
    }
}

impl Handler<SetParams> for Compute {
    type Result = Result<(), RuntimeError>;
    fn handle(&mut self, msg: SetParams, _: &mut SyncContext<Self>) -> Self::Result {
        let params = self.model.params_mut();
        if msg.params.len() != params.len() {
            return Err(RuntimeError::Inconsistent(format!(
                "got {} parameters, model has {}",
                msg.params.len(),
                params.len()
            )));
        }
        params.copy_from_slice(&msg.params);
        Ok(())
    }
}

impl Handler<GetParams> for Compute {
    type Result = Result<Vec<f32>, RuntimeError>;
    fn handle(&mut self, _: GetParams, _: &mut SyncContext<Self>) -> Self::Result {
        Ok(self.model.params().to_vec())
    }
}

impl Handler<Evaluate> for Compute {
    type Result = Result<BTreeMap<String, f64>, RuntimeError>;
    fn handle(&mut self, _: Evaluate, _: &mut SyncContext<Self>) -> Self::Result {
        job::evaluate(self.model.as_mut(), self.task, &self.test)
    }
}

impl Handler<ParamsHash> for Compute {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, _: ParamsHash, _: &mut SyncContext<Self>) -> Self::Result {
        Ok(job::weights_sha256(self.model.params()))
    }
}

impl Handler<SaveModel> for Compute {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: SaveModel, _: &mut SyncContext<Self>) -> Self::Result {
        save_model(self.model.as_ref(), &msg.path, msg.round)?;
        Ok(msg.path)
    }
}

impl Handler<WriteCheckpoint> for Compute {
    type Result = Result<String, RuntimeError>;
    fn handle(&mut self, msg: WriteCheckpoint, _: &mut SyncContext<Self>) -> Self::Result {
        let root = std::path::Path::new(&msg.root);
        let dir = crate::checkpoint::write(
            root,
            msg.round,
            msg.cursor,
            msg.seed,
            self.model.as_ref(),
            &self.optimizer,
            msg.keep,
        )?;
        Ok(dir.display().to_string())
    }
}

/// Write a model's parameters as safetensors, one tensor per layout entry.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub fn save_model(model: &dyn Model, path: &str, round: u64) -> Result<(), RuntimeError> {
    let params = model.params();
    let mut tensors = Vec::new();
    for p in model.layout() {
        let t = Tensor::from_slice(p.shape.clone(), &params[p.range()])
            .map_err(|e| RuntimeError::io("save", path, e))?;
        tensors.push((p.name.clone(), t));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([
        ("round".to_string(), round.to_string()),
        ("model".to_string(), model.name().to_string()),
        ("weights_sha256".to_string(), job::weights_sha256(params)),
    ]);
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    }
    write_safetensors(path, &refs, Some(meta)).map_err(|e| RuntimeError::io("write", path, e))
}
