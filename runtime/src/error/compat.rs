//! Transitional: the constructors of the five `String` variants that [`RuntimeError`] no longer
//! has (`Protocol`, `Model`, `Inconsistent`, `Actor`, `Launch`), for the control files being
//! rewritten in parallel (`control/coordinator.rs`, `control/coordinator_stream.rs`,
//! `control/plane.rs`, `control/plane/`). Each renders exactly as the old variant did. Their
//! call sites move to the typed variants ([`super::ProtocolError`], [`super::TrainingError`],
//! [`super::MismatchError`], [`super::ActorError`], [`super::LaunchError`]); then this file and
//! [`RuntimeError::Untyped`] go.

use super::RuntimeError;

/// A message from a call site not yet moved to a typed variant, rendered as before.
#[doc(hidden)]
#[derive(Debug, thiserror::Error)]
pub enum Untyped {
    /// Was `RuntimeError::Protocol`.
    #[error("control protocol: {0}")]
    Protocol(String),
    /// Was `RuntimeError::Model`.
    #[error("model: {0}")]
    Model(String),
    /// Was `RuntimeError::Inconsistent`.
    #[error("{0}")]
    Inconsistent(String),
    /// Was `RuntimeError::Actor`.
    #[error("actor system: {0}")]
    Actor(String),
    /// Was `RuntimeError::Launch`.
    #[error("{0}")]
    Launch(String),
}

#[allow(non_snake_case)]
impl RuntimeError {
    /// Was the variant `Protocol(String)`; use a [`super::ProtocolError`].
    pub(crate) fn Protocol(message: String) -> Self {
        RuntimeError::Untyped(Untyped::Protocol(message))
    }

    /// Was the variant `Model(String)`; use a [`super::TrainingError`].
    pub(crate) fn Model(message: String) -> Self {
        RuntimeError::Untyped(Untyped::Model(message))
    }

    /// Was the variant `Inconsistent(String)`; use a [`super::MismatchError`].
    pub(crate) fn Inconsistent(message: String) -> Self {
        RuntimeError::Untyped(Untyped::Inconsistent(message))
    }

    /// Was the variant `Actor(String)`; use an [`super::ActorError`].
    pub(crate) fn Actor(message: String) -> Self {
        RuntimeError::Untyped(Untyped::Actor(message))
    }

    /// Was the variant `Launch(String)`; use a [`super::LaunchError`] or [`super::SetupError`].
    pub(crate) fn Launch(message: String) -> Self {
        RuntimeError::Untyped(Untyped::Launch(message))
    }
}
