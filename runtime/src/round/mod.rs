//! A worker's round, from data to the optimizer step: the [`DataLoader`] has this rank's rows of
//! the next global batch ready ([`elastic`] when the world changed), [`Compute`] runs forward and
//! backward, cuts the gradient into buckets (`grad_sink.rs`), steps the optimizer and decides when
//! to evaluate and what to score (`compute/`), the [`Aggregator`] allreduces each bucket or pushes
//! and pulls it from the parameter server, and the [`Reporter`] tells the coordinator. Each actor
//! runs on its own `SyncArbiter` thread (they block) and they pass a round's data to each other
//! directly (see [`messages`]); the [`WorkerNode`] actor serves the coordinator's rare commands
//! (save, finish). [`scale`] measures the links and picks the allreduce before the first round.
//!
//! May call: [`crate::control::protocol`] (reports on the wire), [`crate::ps`] (sparse tables),
//! [`crate::control::hang`] (the activity board), [`crate::observe`], [`crate::checkpoint`].

pub(crate) mod aggregator;
pub(crate) mod compute;
pub(crate) mod data_loader;
pub(crate) mod elastic;
mod grad_sink;
pub(crate) mod messages;
pub(crate) mod reporter;
pub(crate) mod scale;
pub(crate) mod worker;

pub(crate) use aggregator::{Aggregator, Mode};
pub(crate) use compute::{Compute, StreamOffsets};
pub(crate) use data_loader::DataLoader;
pub(crate) use reporter::Reporter;
pub(crate) use worker::{control_loop, coordinator_lost, Exit, WorkerNode};

use crate::error::{ActorError, RuntimeError};
use actix::prelude::SendError;
use actix::{Message, Recipient};
use std::time::{Duration, Instant};

/// How long a message may wait for room in a bounded mailbox.
pub(crate) const MAILBOX_DEADLINE: Duration = Duration::from_secs(60);

/// Hand `msg` to `to` from a sync actor's thread: `try_send`, waiting (with a deadline) while
/// the mailbox is full, so tensors are never pushed past the mailbox bound.
///
/// # Errors
/// [`RuntimeError::Timeout`] naming `what` after [`MAILBOX_DEADLINE`],
/// [`ActorError::ReceiverStopped`] when the receiver stopped.
pub(crate) fn deliver<M>(to: &Recipient<M>, mut msg: M, what: &str) -> Result<(), RuntimeError>
where
    M: Message + Send,
    M::Result: Send,
{
    let deadline = Instant::now() + MAILBOX_DEADLINE;
    loop {
        match to.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(SendError::Full(_)) => {
                return Err(RuntimeError::Timeout {
                    doing: format!("handing {what} over (mailbox full)"),
                    ms: MAILBOX_DEADLINE.as_millis() as u64,
                })
            }
            Err(SendError::Closed(_)) => {
                return Err(ActorError::ReceiverStopped {
                    what: what.to_string(),
                }
                .into())
            }
        }
    }
}
