//! The actors of a node. Worker side: [`DataLoader`], [`Compute`] and [`Aggregator`] each on
//! their own `SyncArbiter` thread (they do blocking work) and pass a round's data between each
//! other directly (see [`messages`]); the [`WorkerNode`] actor serves the coordinator's rare
//! commands (save, finish), and a [`Reporter`] carries round reports to the coordinator.
//! Coordinator side: the async [`Coordinator`] grants rounds and collects reports through the
//! [`ControlPlane`] (blocking control links, on a `SyncArbiter` thread); when the coordinator is
//! the parameter server, [`PsServe`] serves the granted rounds on its own thread.

pub mod aggregator;
pub mod compute;
pub mod control;
pub mod coordinator;
pub mod coordinator_stream;
pub mod data_loader;
mod grad_sink;
pub mod messages;
pub mod ps_serve;
pub mod reporter;
pub mod worker;

pub use aggregator::{Aggregator, Mode};
pub use compute::{save_model, Compute, StreamOffsets};
pub use control::{ControlPlane, Member};
pub use coordinator::{Coordinator, Schedule};
pub use data_loader::DataLoader;
pub use ps_serve::PsServe;
pub use reporter::Reporter;
pub use worker::{control_loop, Exit, WorkerNode};

use crate::error::RuntimeError;
use actix::prelude::SendError;
use actix::{Message, Recipient};
use std::time::{Duration, Instant};

/// How long a message may wait for room in a bounded mailbox.
pub const MAILBOX_DEADLINE: Duration = Duration::from_secs(60);

/// Hand `msg` to `to` from a sync actor's thread: `try_send`, waiting (with a deadline) while
/// the mailbox is full, so tensors are never pushed past the mailbox bound.
///
/// # Errors
/// [`RuntimeError::Timeout`] naming `what` after [`MAILBOX_DEADLINE`], [`RuntimeError::Actor`]
/// when the receiver stopped.
pub fn deliver<M>(to: &Recipient<M>, mut msg: M, what: &str) -> Result<(), RuntimeError>
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
                return Err(RuntimeError::Actor(format!(
                    "{what}: the receiving actor stopped"
                )))
            }
        }
    }
}
