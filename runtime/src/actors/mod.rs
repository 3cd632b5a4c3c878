//! The actors of a node. Worker side: [`DataLoader`], [`Compute`] and [`Aggregator`] each on
//! their own `SyncArbiter` thread (they do blocking work), orchestrated by the async
//! [`WorkerNode`]. Coordinator side: the async [`Coordinator`] drives rounds through the
//! [`ControlPlane`] (blocking control links, on a `SyncArbiter` thread).

pub mod aggregator;
pub mod compute;
pub mod control;
pub mod coordinator;
pub mod data_loader;
pub mod messages;
pub mod worker;

pub use aggregator::{Aggregator, Mode};
pub use compute::{save_model, Compute};
pub use control::{ControlPlane, Member, PsServer};
pub use coordinator::{Coordinator, Schedule};
pub use data_loader::DataLoader;
pub use worker::{control_loop, WorkerNode};
