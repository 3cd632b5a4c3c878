//! [`ProtocolError`]: traffic that does not fit the protocol: a control message out of turn, one
//! that does not parse, held-out shares that do not add up, a producer's refusal. Each case
//! names the node that sent it and what was expected; rendered after `control protocol: `.

use crate::stream::error::{ProducerIo, WireError};

/// A message that does not fit the protocol, with the sender and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The coordinator sent `got` where this node waited for `expected`.
    #[error("expected {expected}, got {got}")]
    Expected {
        /// The message waited for (`Start`, `Suspend`, `Remesh`).
        expected: &'static str,
        /// The message that came.
        got: &'static str,
    },
    /// A member sent `got` instead of `expected`.
    #[error("{node} sent {got} instead of {expected}")]
    InsteadOf {
        /// The sender.
        node: String,
        /// The message that came.
        got: &'static str,
        /// The message waited for (`Register`).
        expected: &'static str,
    },
    /// A member sent `got` about round `about` while the coordinator was `doing` of `round`.
    #[error(
        "{node} sent {got} (round {about:?}) while the coordinator was {doing} of round {round}"
    )]
    OutOfTurn {
        /// The sender.
        node: String,
        /// The message that came.
        got: &'static str,
        /// The round it was about, if any.
        about: Option<u64>,
        /// What the coordinator was doing (`waiting for the reports`, ...).
        doing: &'static str,
        /// The round the coordinator was at.
        round: u64,
    },
    /// A member's report of `round` was not a `RoundDone`.
    #[error("{node} did not report RoundDone for round {round}")]
    NoRoundDone {
        /// The member.
        node: String,
        /// The round.
        round: u64,
    },
    /// A member sent `got` where its evaluation of `round` was due.
    #[error("{node} sent {got} instead of its evaluation of round {round}")]
    NoEvaluation {
        /// The member.
        node: String,
        /// The message that came.
        got: &'static str,
        /// The round.
        round: u64,
    },
    /// A member answered a command (`Save`, `Finish`) with the wrong message.
    #[error("{node} answered {got} to {command}")]
    Answered {
        /// The member.
        node: String,
        /// Its answer.
        got: &'static str,
        /// The command.
        command: &'static str,
    },
    /// A member sent `got` while the coordinator waited for stream progress.
    #[error("{node} sent {got} while the coordinator waited for stream progress")]
    DuringStream {
        /// The member.
        node: String,
        /// The message that came.
        got: &'static str,
    },
    /// A membership change in a job that is not elastic.
    #[error("membership is not elastic")]
    NotElastic,
    /// A control frame of another coordinator term: from a replaced coordinator (seen by a
    /// member), or from a member that follows a newer coordinator (seen by a replaced one).
    #[error(
        "{node} sent {message} in coordinator term {theirs}; this node is in term {mine}: {why}"
    )]
    Fenced {
        /// The sender.
        node: String,
        /// The message.
        message: &'static str,
        /// The sender's term.
        theirs: u64,
        /// This node's term.
        mine: u64,
        /// What it means.
        why: &'static str,
    },
    /// A member's control link carried a frame that is not a control message (the link ends).
    #[error("bad control message from {node}: {reason}")]
    Malformed {
        /// The member.
        node: String,
        /// What the JSON decoder said.
        reason: String,
    },
    /// A member's control link is not TCP (control links always are).
    #[error("the control link to {node} is {kind}; control links must be tcp")]
    NotTcp {
        /// The member.
        node: String,
        /// Its backend.
        kind: &'static str,
    },
    /// A stream job lost a round, but streams are not elastic.
    #[error("round {round} was lost ({reason}), but a stream job is not elastic")]
    StreamLost {
        /// The round.
        round: u64,
        /// Why it was lost.
        reason: String,
    },
    /// A server node got a message it does not serve.
    #[error("server {server} got unexpected {got}")]
    ServerGot {
        /// The server node.
        server: String,
        /// The message.
        got: &'static str,
    },
    /// The worker actor got a command it does not serve.
    #[error("unexpected command {got}")]
    UnexpectedCommand {
        /// The command.
        got: &'static str,
    },
    /// The coordinator's peer table does not list this node.
    #[error("{node} is not in the peer table the coordinator sent")]
    NotInPeerTable {
        /// This node.
        node: String,
    },
    /// A grant that skips or repeats rounds.
    #[error("granted round {granted} but round {next} is next")]
    GrantOutOfOrder {
        /// The first round granted.
        granted: u64,
        /// The round this worker runs next.
        next: u64,
    },
    /// A control message that does not serialise.
    #[error("cannot encode {message}: {source}")]
    Encode {
        /// The message's name.
        message: &'static str,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// A control message that does not parse.
    #[error("bad control message from {node}: {source}")]
    Decode {
        /// The sender.
        node: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// Two workers' held-out shares disagree on how the set was cut.
    #[error("{node} evaluated {chunks} chunks as {kind:?}, another worker {other_chunks} as {other_kind:?}")]
    HeldOutCut {
        /// The worker.
        node: String,
        /// Its chunk count.
        chunks: u32,
        /// Its kind of evaluation.
        kind: crate::job::held_out::EvalKind,
        /// The first worker's chunk count.
        other_chunks: usize,
        /// The first worker's kind.
        other_kind: crate::job::held_out::EvalKind,
    },
    /// A held-out chunk out of range, or sent twice.
    #[error("{node} sent held-out chunk {chunk}, which is out of range or already evaluated")]
    HeldOutChunk {
        /// The worker.
        node: String,
        /// The chunk.
        chunk: usize,
    },
    /// A held-out chunk nobody evaluated.
    #[error("no worker evaluated held-out chunk {chunk} of {of}")]
    HeldOutMissing {
        /// The chunk.
        chunk: usize,
        /// The chunk count.
        of: usize,
    },
    /// A producer's connection was refused, with the server's reason.
    #[error("{by} refused: {}", reason.as_deref().unwrap_or("no reason given"))]
    Refused {
        /// Who refused: the bootstrap, the ingest endpoint, or the endpoint mid-stream.
        by: Refuser,
        /// The server's reason.
        reason: Option<String>,
    },
    /// A server's answer that could not be read.
    #[error("{addr}: {source}")]
    Answer {
        /// The server's address.
        addr: String,
        /// What went wrong.
        #[source]
        source: WireError,
    },
    /// A producer's stream failed.
    #[error("producer {producer}: {source}")]
    Producer {
        /// The producer id.
        producer: u32,
        /// What failed.
        #[source]
        source: ProducerIo,
    },
}

/// Who refused a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuser {
    /// The coordinator's bootstrap.
    Bootstrap,
    /// The worker's ingest endpoint, at the hello.
    Endpoint,
    /// The ingest endpoint, mid-stream (a batch refused), for producer `.0`.
    Producer(u32),
}

impl std::fmt::Display for Refuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refuser::Bootstrap => f.write_str("bootstrap"),
            Refuser::Endpoint => f.write_str("ingest endpoint"),
            Refuser::Producer(id) => write!(f, "producer {id}"),
        }
    }
}
