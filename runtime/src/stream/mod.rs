//! Streams into training: producers (Apache Flink subtasks, scripts) push Arrow record batches
//! over TCP as an Arrow IPC stream.
//!
//! - [`bootstrap`]: the coordinator's one address for producers: authenticate, route each
//!   producer id to the worker that trains on its rows.
//! - [`endpoint`]: a worker's ingest endpoint: authenticate, check the schema, queue the rows
//!   (bounded, TCP backpressure), drop and count duplicates, name silent producers.
//! - [`buffers`]: the per-producer queues and offsets, and [`IngestRecords`], the
//!   `RecordBatchSource` the data loader reads in deterministic or arrival order.
//! - [`wire`]: the producer protocol's framed JSON messages.
//! - [`error`]: why a producer is refused, and the stream failures that stop a job.
//! - [`producer`]: a producer in Rust (tests, `lockstep bench ingest`).
//!
//! docs/streaming.md describes the protocol and its semantics for users.

pub(crate) mod bootstrap;
pub(crate) mod buffers;
pub(crate) mod endpoint;
pub mod error;
pub(crate) mod producer;
pub(crate) mod setup;
pub(crate) mod wire;

pub use bootstrap::Bootstrap;
pub use buffers::{Ingest, IngestRecords, Progress};
pub use endpoint::Endpoint;
pub use producer::Producer;
