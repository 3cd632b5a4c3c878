//! The producer protocol's own messages: after the cluster handshake (HMAC over the cluster token,
//! the producer's node name is `producer-<id>`), each side sends small JSON messages framed by a
//! 4-byte little-endian length (at most [`MAX_MESSAGE`] bytes). On the worker's ingest endpoint the
//! producer's `Hello` is followed by an Arrow IPC stream (schema, record batches, end-of-stream),
//! and the endpoint answers once, at the end or at the first error.
//!
//! ```text
//! producer -> bootstrap  Hello { producer }            bootstrap -> producer  Reply { endpoint }
//! producer -> endpoint   Hello { producer, offset }    endpoint  -> producer  Reply { resume_offset }
//! producer -> endpoint   Arrow IPC stream ... EOS      endpoint  -> producer  Reply { rows, duplicates }
//! ```
//! Any refusal is a `Reply` with `ok = false` and the reason, after which the connection closes.

use super::error::WireError;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Longest JSON message accepted.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// The node-name prefix of producers in the handshake.
pub(crate) const PRODUCER_PREFIX: &str = "producer-";

/// A producer introduces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hello {
    /// Producer id (e.g. the Flink subtask index).
    pub producer: u32,
    /// Offset (row number in the producer's stream) of the first row it will send.
    #[serde(default)]
    pub offset: u64,
}

/// The answer to a `Hello` or to a whole stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Accepted.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bootstrap: the ingest endpoint serving this producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bootstrap: the worker behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Endpoint: rows below this offset are already trained on (or received) and are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_offset: Option<u64>,
    /// End of stream: new rows taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// End of stream: rows dropped as duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
}

impl Reply {
    /// A refusal with `why` (its text is the reason the producer reads).
    pub(crate) fn refuse(why: impl std::fmt::Display) -> Reply {
        Reply {
            ok: false,
            error: Some(why.to_string()),
            ..Reply::default()
        }
    }
}

/// Write one framed JSON message.
///
/// # Errors
/// I/O errors of the socket.
pub(crate) fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()
}

/// Read one framed JSON message (length bounded by [`MAX_MESSAGE`]).
///
/// # Errors
/// [`WireError`] for I/O errors, an oversized length or JSON that does not parse.
pub(crate) fn read_msg<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(WireError::Length)?;
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_MESSAGE {
        return Err(WireError::TooLong {
            len: n,
            max: MAX_MESSAGE,
        });
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)
        .map_err(|source| WireError::Body { len: n, source })?;
    serde_json::from_slice(&body).map_err(WireError::Json)
}

/// The producer id a handshake name claims (`producer-<id>`).
pub(crate) fn producer_id(node: &str) -> Option<u32> {
    node.strip_prefix(PRODUCER_PREFIX)?.parse().ok()
}
