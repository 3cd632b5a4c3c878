//! What goes wrong with a stream: a framed message that cannot be read ([`WireError`]), why a
//! producer's connection is refused ([`Refusal`], sent to the producer as the `Reply`'s reason,
//! so its text is part of the protocol), a producer's own write failing ([`ProducerIo`]), and
//! what fails the whole job ([`StreamFailure`]: producers that never connected or went silent).

use lockstep_trainer::data::DataError;
use std::time::Duration;

/// A framed JSON message that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The 4-byte length.
    #[error("reading a message length: {0}")]
    Length(#[source] std::io::Error),
    /// A length over [`super::wire::MAX_MESSAGE`].
    #[error("message of {len} bytes announced (at most {max}): not a Lockstep producer")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body.
    #[error("reading a {len}-byte message: {source}")]
    Body {
        /// The body's length.
        len: usize,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },
    /// JSON that does not parse as the message expected.
    #[error("bad message: {0}")]
    Json(#[source] serde_json::Error),
}

/// Why a producer's connection is refused (the bootstrap's or the endpoint's answer).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its hello could not be read.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The handshake's name and the hello's id disagree.
    #[error("the handshake named {name:?} but the hello says producer {producer}")]
    NameMismatch {
        /// The handshake's node name.
        name: String,
        /// The hello's producer id.
        producer: u32,
    },
    /// An id outside `0..producers`.
    #[error(
        "producer id {producer} is outside 0..{producers} ([job.data.stream] producers = {producers})"
    )]
    OutOfRange {
        /// The id.
        producer: u32,
        /// `[job.data.stream] producers`.
        producers: usize,
    },
    /// The id of a producer that is connected and alive.
    #[error(
        "producer {producer} is already connected (a second connection with a live producer's id)"
    )]
    AlreadyConnected {
        /// The id.
        producer: u32,
    },
    /// A bounded stream's producer that already sent end-of-stream.
    #[error("producer {producer} already ended its stream")]
    AlreadyEnded {
        /// The id.
        producer: u32,
    },
    /// A producer this worker does not serve.
    #[error("producer {producer} is not served by {worker}")]
    NotServedBy {
        /// The id.
        producer: u32,
        /// This worker.
        worker: String,
    },
    /// A producer the queues do not know.
    #[error("producer {producer} is not served here")]
    NotServedHere {
        /// The id.
        producer: u32,
    },
    /// A newer connection of the same producer took over.
    #[error("producer {producer}: a newer connection took over this one")]
    TakenOver {
        /// The id.
        producer: u32,
    },
    /// A batch that starts past the next expected row.
    #[error(
        "producer {producer}: rows {received}..{offset} are missing (the batch starts at offset \
         {offset}, the next expected row is {received})"
    )]
    Gap {
        /// The id.
        producer: u32,
        /// The next expected row.
        received: u64,
        /// Where the batch starts.
        offset: u64,
    },
    /// The answer to the hello could not be sent.
    #[error("answering the hello: {0}")]
    Answer(#[source] std::io::Error),
    /// The bytes after the hello are not an Arrow IPC stream.
    #[error("not an Arrow IPC stream: {0}")]
    NotIpc(#[source] arrow_schema::ArrowError),
    /// The stream's schema does not fit the job's columns.
    #[error("schema refused: {0}")]
    Schema(#[source] DataError),
    /// The connection ended inside an IPC message.
    #[error("bad Arrow IPC message after {rows} rows: truncated (the connection ended inside a message)")]
    Truncated {
        /// New rows taken before it.
        rows: u64,
    },
    /// An IPC message that does not decode.
    #[error("bad Arrow IPC message after {rows} rows: {source}")]
    BadIpc {
        /// New rows taken before it.
        rows: u64,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A batch whose values do not convert (a null label, a NaN under `missing = "error"`).
    #[error(
        "batch of rows {from}..{to} refused: {source} (rows below offset {from} were accepted; fix \
         the data and reconnect to resume there)"
    )]
    Batch {
        /// The batch's first offset.
        from: u64,
        /// One past its last.
        to: u64,
        /// The conversion's error.
        #[source]
        source: DataError,
    },
}

/// A producer's write or end of stream that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIo {
    /// Arrow IPC writing failed.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server's answer could not be read.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A producer went silent: its id, how long, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// The producer id.
    pub producer: u32,
    /// How long it sent nothing.
    pub quiet: Duration,
    /// The cluster's peer timeout.
    pub peer_timeout: Duration,
    /// Whether it is connected.
    pub connected: bool,
    /// Its next offset.
    pub offset: u64,
}

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "producer {} has sent nothing for {:.1} s (peer timeout {} ms; {}; next offset {})",
            self.producer,
            self.quiet.as_secs_f64(),
            self.peer_timeout.as_millis(),
            if self.connected {
                "connected"
            } else {
                "not connected"
            },
            self.offset
        )
    }
}

/// Producers that fail the job.
#[derive(Debug, thiserror::Error)]
pub enum StreamFailure {
    /// Producers that never connected within `[job.data.stream] connect_timeout_ms`.
    #[error(
        "producer{} {} never connected to {worker} within {:.1} s ([job.data.stream] \
         connect_timeout_ms = {}); producers find the job through the bootstrap address in \
         <run dir>/endpoints.json",
        if producers.len() > 1 { "s" } else { "" },
        producers.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        timeout.as_secs_f64(),
        timeout.as_millis()
    )]
    NeverConnected {
        /// The producer ids.
        producers: Vec<u32>,
        /// The worker whose endpoint they should have reached.
        worker: String,
        /// `connect_timeout_ms`.
        timeout: Duration,
    },
    /// A producer silent past the peer timeout with `on_silent = "fail"`.
    #[error("{0}; [job.data.stream] on_silent = \"fail\"")]
    Silent(Silence),
}
