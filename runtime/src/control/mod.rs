//! The coordinator's side of a job: it accepts every member ([`registration`]), speaks the
//! control [`protocol`], plans rounds (learning rate, when to evaluate and checkpoint:
//! [`coordinator`]), drives them in one loop for every data source ([`rounds`]; files and
//! datasets in `rounds/batch.rs`, streams in `rounds/stream.rs`), collects every member's reports over
//! its control link ([`plane`], with elastic membership in `plane/membership.rs`), and tells a
//! stuck job from a slow one ([`hang`]: progress timeout, activity board, the hang table),
//! and takes over from a dead coordinator's survivors ([`takeover`]).
//!
//! May call: [`crate::round`] messages it carries, [`crate::ps`] (when the coordinator is the
//! parameter server), [`crate::observe`], [`crate::checkpoint`], [`crate::manifest`].

pub(crate) mod coordinator;
pub(crate) mod hang;
pub(crate) mod plane;
pub(crate) mod protocol;
pub(crate) mod registration;
pub(crate) mod rounds;
pub(crate) mod takeover;
