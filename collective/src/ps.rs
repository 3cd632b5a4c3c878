//! A sharded parameter server (the seed's section 3.1): workers push gradients, servers average
//! them, apply the optimizer step and workers pull the new parameters.
//!
//! Parameters are split into contiguous, balanced ranges, one per server rank; with no server
//! nodes the caller names the coordinator as the only server. A rank may be a server and a
//! worker at once (the coordinator that also trains). The optimizer stays outside: the server
//! calls `update(range, params_shard, mean_grad_shard)`, so any optimizer (and its state for that
//! range) plugs in.
//!
//! One [`ParameterServer::step`], called by every rank of the group:
//! 1. as a worker: send `grads[shard]` to every remote server (`PsPush`);
//! 2. as a server: receive the pushes in ascending worker rank (summed straight out of the link,
//!    in that fixed order, so the mean is deterministic), divide by the number of workers, call
//!    `update`, and send the shard to every remote worker (`PsPull`);
//! 3. as a worker: receive every remote server's shard into `params`.
//!
//! At a checkpoint, [`ParameterServer::gather_state`] brings every server's optimizer state (its
//! step count and its shard of each buffer) to one worker, which then holds the whole state and
//! writes it with the parameters of the same round.
//!
//! Sends never wait for the receiver (the `Link` contract), so the order cannot deadlock as long
//! as a link's queue holds what a rank pushes before it serves; with dedicated servers or one
//! coordinator that always holds.

use super::comm::{Call, Communicator};
use super::kernels::{divide, split, Consumer, Sink};
use super::{CollectiveError, ConfigError};
use lockstep_tensor::{fingerprint_dims, DType};
use lockstep_transport::Op;
use std::ops::Range;

/// `list` sorted, when its ranks are distinct and below `world` and there is at least one; the
/// check every layout (`layout`: "parameter server", "embedding table") makes of its role lists.
pub(crate) fn distinct_ranks(
    layout: &'static str,
    role: &'static str,
    list: &[usize],
    world: usize,
) -> Result<Vec<usize>, CollectiveError> {
    let mut v = list.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() || v.len() != list.len() || v.last().is_some_and(|&r| r >= world) {
        return Err(ConfigError::Ranks {
            layout,
            role,
            ranks: list.to_vec(),
            world,
        }
        .into());
    }
    Ok(v)
}

/// The roles and the parameter layout; the same on every rank.
#[derive(Debug, Clone)]
pub struct ParameterServer {
    num_params: usize,
    servers: Vec<usize>,
    workers: Vec<usize>,
    scratch: Vec<f32>,
}

impl ParameterServer {
    /// A layout of `num_params` parameters over `servers`, with gradients from `workers` (ranks
    /// of a group of `world`). Both lists are sorted; duplicates are refused.
    ///
    /// # Errors
    /// [`CollectiveError::Config`] for an empty list, a rank out of range or a duplicate.
    pub fn new(
        num_params: usize,
        servers: &[usize],
        workers: &[usize],
        world: usize,
    ) -> Result<Self, CollectiveError> {
        let check = |role, list| distinct_ranks("parameter server", role, list, world);
        Ok(ParameterServer {
            num_params,
            servers: check("servers", servers)?,
            workers: check("workers", workers)?,
            scratch: Vec::new(),
        })
    }

    /// The server ranks, ascending.
    pub fn servers(&self) -> &[usize] {
        &self.servers
    }

    /// The worker ranks, ascending.
    pub fn workers(&self) -> &[usize] {
        &self.workers
    }

    /// The parameter range served by the `i`-th server.
    pub fn shard(&self, i: usize) -> Range<usize> {
        split(self.num_params, self.servers.len(), i)
    }

    /// One push/average/update/pull step; every rank of the group calls it. Workers pass their
    /// gradients (`grads.len() == num_params`; other ranks may pass `&[]`); every rank passes the
    /// full `params`, of which a server owns its shard, and a worker receives all of it.
    ///
    /// # Errors
    /// As [`Communicator::allreduce`]; [`CollectiveError::Invalid`] for wrong lengths.
    pub fn step<F>(
        &mut self,
        c: &mut Communicator,
        grads: &[f32],
        params: &mut [f32],
        mut update: F,
    ) -> Result<(), CollectiveError>
    where
        F: FnMut(Range<usize>, &mut [f32], &[f32]),
    {
        let me = c.rank();
        let fp = fingerprint_dims(&[self.num_params]);
        let push = c.begin(Op::PsPush, fp, DType::F32.to_wire())?;
        let pull = c.begin(Op::PsPull, fp, DType::F32.to_wire())?;
        let is_worker = self.workers.contains(&me);
        if params.len() != self.num_params || (is_worker && grads.len() != self.num_params) {
            let reason = format!(
                "parameter server expects {} parameters, got {} parameters and {} gradients",
                self.num_params,
                params.len(),
                grads.len()
            );
            return Err(c.invalid(&push, reason));
        }
        let pieces = self.pieces(c);
        if is_worker {
            for (i, &s) in self.servers.iter().enumerate().filter(|(_, &s)| s != me) {
                for j in 0..pieces {
                    let piece = &grads[self.piece(i, pieces, j)];
                    c.send_from(&push, s, bytemuck::cast_slice(piece))?;
                }
            }
        }
        if let Some(i) = self.servers.iter().position(|&s| s == me) {
            self.serve(c, &push, &pull, i, pieces, grads, params, &mut update)?;
        }
        if is_worker {
            for (i, &s) in self.servers.iter().enumerate().filter(|(_, &s)| s != me) {
                for j in 0..pieces {
                    let pr = self.piece(i, pieces, j);
                    let bytes = pr.len() * 4;
                    let mut consumer = Consumer::new(Sink::Copy(&mut params[pr]));
                    c.recv_into(&pull, s, bytes, &mut consumer)?;
                }
            }
        }
        Ok(())
    }

    /// Gather the servers' optimizer state at `root` (a rank of the group, normally the first
    /// worker), after a [`step`](Self::step) of the same round; every rank of the group calls it.
    /// A server passes its `step` count and its shard of each buffer in `mine` (each as long as
    /// its [`shard`](Self::shard)); `root` passes `full`, one vector of `num_params` values per
    /// buffer, into which every server's shard is received; other ranks pass `&[]` for both.
    /// Returns, at `root`, the servers' common step count (elsewhere `step`).
    ///
    /// # Errors
    /// [`CollectiveError::Invalid`] when the servers' step counts or buffer counts differ from
    /// each other or from `full`, or a length is wrong; a link failure as in
    /// [`step`](Self::step).
    pub fn gather_state(
        &mut self,
        c: &mut Communicator,
        root: usize,
        step: u64,
        mine: &[&[f32]],
        full: &mut [Vec<f32>],
    ) -> Result<u64, CollectiveError> {
        let me = c.rank();
        let head = c.begin(Op::PsState, fingerprint_dims(&[2]), DType::I64.to_wire())?;
        let body = c.begin(
            Op::PsState,
            fingerprint_dims(&[self.num_params]),
            DType::F32.to_wire(),
        )?;
        let pieces = self.pieces(c);
        let position = self.servers.iter().position(|&s| s == me);
        if let Some(i) = position {
            let len = self.shard(i).len();
            if let Some(b) = mine.iter().find(|b| b.len() != len) {
                let reason = format!(
                    "server shard {i} holds {len} parameters, an optimizer buffer has {}",
                    b.len()
                );
                return Err(c.invalid(&head, reason));
            }
        }
        if me == root && full.iter().any(|b| b.len() != self.num_params) {
            let reason = format!("the gathered buffers must hold {} values", self.num_params);
            return Err(c.invalid(&head, reason));
        }
        if let (Some(i), true) = (position, me != root) {
            let header = [step, mine.len() as u64];
            c.send_from(&head, root, bytemuck::cast_slice(&header))?;
            for b in mine {
                for j in 0..pieces {
                    let pr = self.piece(i, pieces, j);
                    let local = pr.start - self.shard(i).start..pr.end - self.shard(i).start;
                    c.send_from(&body, root, bytemuck::cast_slice(&b[local]))?;
                }
            }
        }
        if me != root {
            return Ok(step);
        }
        let mut common: Option<(u64, usize)> = None;
        for (i, &s) in self.servers.iter().enumerate() {
            let got = if s == me {
                let shard = self.shard(i);
                for (dst, src) in full.iter_mut().zip(mine) {
                    dst[shard.clone()].copy_from_slice(src);
                }
                (step, mine.len())
            } else {
                let mut header = [0u64; 2];
                c.recv_slice(&head, s, bytemuck::cast_slice_mut(&mut header))?;
                (header[0], header[1] as usize)
            };
            if got.1 != full.len() || common.is_some_and(|c| c != got) {
                let name = c.group().name(s).to_string();
                let reason = format!(
                    "server {name} has {} optimizer buffers at step {}, expected {} buffers{}",
                    got.1,
                    got.0,
                    full.len(),
                    common
                        .map(|c| format!(" at step {}", c.0))
                        .unwrap_or_default()
                );
                return Err(c.invalid(&head, reason));
            }
            common = Some(got);
            if s == me {
                continue;
            }
            for dst in full.iter_mut() {
                for j in 0..pieces {
                    let pr = self.piece(i, pieces, j);
                    c.recv_slice(&body, s, bytemuck::cast_slice_mut(&mut dst[pr]))?;
                }
            }
        }
        Ok(common.map_or(step, |c| c.0))
    }

    fn pieces(&self, c: &Communicator) -> usize {
        self.shard(0)
            .len()
            .div_ceil((c.config().chunk_bytes / 4).max(1))
            .max(1)
    }

    fn piece(&self, server: usize, pieces: usize, j: usize) -> Range<usize> {
        let s = self.shard(server);
        let p = split(s.len(), pieces, j);
        s.start + p.start..s.start + p.end
    }

    /// Server side of a step for the `i`-th server shard.
    fn serve<F>(
        &mut self,
        c: &mut Communicator,
        push: &Call,
        pull: &Call,
        i: usize,
        pieces: usize,
        grads: &[f32],
        params: &mut [f32],
        update: &mut F,
    ) -> Result<(), CollectiveError>
    where
        F: FnMut(Range<usize>, &mut [f32], &[f32]),
    {
        let me = c.rank();
        let shard = self.shard(i);
        let mut acc = std::mem::take(&mut self.scratch);
        acc.clear();
        acc.resize(shard.len(), 0.0);
        for (k, &w) in self.workers.iter().enumerate() {
            for j in 0..pieces {
                let pr = self.piece(i, pieces, j);
                let local = pr.start - shard.start..pr.end - shard.start;
                let dst = &mut acc[local];
                if w == me {
                    if k == 0 {
                        dst.copy_from_slice(&grads[pr]);
                    } else {
                        lockstep_tensor::kernels::add_assign(dst, &grads[pr]);
                    }
                    continue;
                }
                let bytes = dst.len() * 4;
                let mut consumer = Consumer::new(if k == 0 {
                    Sink::Copy(dst)
                } else {
                    Sink::Accumulate(dst)
                });
                c.recv_into(push, w, bytes, &mut consumer)?;
            }
        }
        divide(&mut acc, self.workers.len());
        update(shard.clone(), &mut params[shard.clone()], &acc);
        self.scratch = acc;
        for j in 0..pieces {
            let piece = &params[self.piece(i, pieces, j)];
            for &w in self.workers.iter().filter(|&&w| w != me) {
                c.send_from(pull, w, bytemuck::cast_slice(piece))?;
            }
        }
        Ok(())
    }
}
