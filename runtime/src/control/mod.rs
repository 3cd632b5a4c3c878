//! The coordinator's side of a job: it accepts every member ([`registration`]), speaks the
//! control [`protocol`], grants rounds and schedules evaluation and checkpoints
//! ([`coordinator`], [`coordinator_stream`] for streams), collects every member's reports over
//! its control link ([`plane`], with elastic membership in `plane/membership.rs`), and tells a
//! stuck job from a slow one ([`hang`]: progress timeout, activity board, the hang table).
//!
//! May call: [`crate::round`] messages it carries, [`crate::ps`] (when the coordinator is the
//! parameter server), [`crate::observe`], [`crate::checkpoint`], [`crate::manifest`].

pub mod coordinator;
pub mod coordinator_stream;
pub mod hang;
pub mod plane;
pub mod protocol;
pub mod registration;
