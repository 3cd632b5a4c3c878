//! [`ActorError`]: the actor system failed under a node. Each case names the actor, mailbox or
//! thread, and the round where there is one; rendered after `actor system: `.

/// A mailbox closed, an actor stopped or refused a message, a thread panicked.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// Sending to an actor failed (its mailbox closed, or the send timed out).
    #[error("{mailbox}: {source}")]
    Mailbox {
        /// The actor sent to (`compute`, ...).
        mailbox: &'static str,
        /// actix's error.
        #[source]
        source: actix::MailboxError,
    },
    /// The thread reading a member's control link ended without a word (it panicked).
    #[error("the control link reader of {node} stopped ({doing}, round {round})")]
    ReaderGone {
        /// The member.
        node: String,
        /// What the coordinator was doing.
        doing: &'static str,
        /// The round.
        round: u64,
    },
    /// The actor a message was delivered to stopped before taking it.
    #[error("{what}: the receiving actor stopped")]
    ReceiverStopped {
        /// What was delivered (`the reduced gradients`, ...).
        what: String,
    },
    /// An actor stopped while this node waited for its answer.
    #[error("{actor} stopped")]
    Stopped {
        /// The actor.
        actor: &'static str,
    },
    /// An actor could not take a message (stopped, or its mailbox is full).
    #[error("{actor} cannot take {what} (stopped or full)")]
    Refused {
        /// The actor.
        actor: &'static str,
        /// The message.
        what: &'static str,
    },
    /// An actor did not hand something over within the command timeout.
    #[error("{actor} did not hand over {what}")]
    NoHandover {
        /// The actor.
        actor: &'static str,
        /// What it owed.
        what: &'static str,
    },
    /// An actor dropped a request of round `round` without answering it.
    #[error("round {round}: {actor} dropped {what}")]
    Dropped {
        /// The round.
        round: u64,
        /// The actor.
        actor: &'static str,
        /// The request.
        what: &'static str,
    },
    /// A thread or actor ended without handing back its result.
    #[error("{actor} ended without a result")]
    NoResult {
        /// The actor or thread.
        actor: &'static str,
    },
    /// Something failed and its error was already taken (reported to the coordinator).
    #[error("{what} failed")]
    Failed {
        /// What failed.
        what: &'static str,
    },
    /// A thread panicked.
    #[error("{thread} panicked{}", text.as_ref().map(|t| format!(": {t}")).unwrap_or_default())]
    Panicked {
        /// The thread (`the worker thread`, `the worker's control loop`, ...).
        thread: String,
        /// The panic's message, when it had one that could be read.
        text: Option<String>,
    },
    /// The actor system itself failed to run.
    #[error("{role}: {source}")]
    System {
        /// Whose system (`coordinator`, ...).
        role: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}
