//! A producer in Rust: connect through the bootstrap, authenticate with the cluster token, and
//! stream Arrow record batches to the worker that trains on them. The Python client
//! (`python/lockstep_client`) speaks the same protocol; this one serves tests and
//! `lockstep bench ingest`.
//!
//! # Examples
//! ```no_run
//! # fn demo(batch: arrow_array::RecordBatch) -> Result<(), lockstep_runtime::RuntimeError> {
//! use lockstep_runtime::ingest::Producer;
//! let mut p = Producer::connect("127.0.0.1:7100", "credit", b"secret", 0, 0, &batch.schema())?;
//! p.send(&batch)?;
//! let done = p.close()?;
//! println!("{} new rows, {} duplicates", done.rows.unwrap_or(0), done.duplicates.unwrap_or(0));
//! # Ok(()) }
//! ```

use super::wire::{read_msg, write_msg, Hello, Reply, PRODUCER_PREFIX};
use crate::error::RuntimeError;
use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::Schema;
use lockstep_transport::handshake::{handshake, Role};
use lockstep_transport::{tcp, Identity};
use std::io::BufWriter;
use std::net::TcpStream;
use std::time::Duration;

/// A connected producer. See the module docs.
pub struct Producer {
    id: u32,
    reply_side: TcpStream,
    writer: StreamWriter<BufWriter<TcpStream>>,
    /// Rows below this offset were already trained on (or received) and will be dropped.
    pub resume_offset: u64,
    /// The worker serving this producer.
    pub worker: String,
}

fn refused(what: &str, r: Reply) -> RuntimeError {
    RuntimeError::Protocol(format!(
        "{what} refused: {}",
        r.error.unwrap_or_else(|| "no reason given".into())
    ))
}

fn open(
    addr: &str,
    identity: &Identity,
    hello: &Hello,
) -> Result<(TcpStream, Reply), RuntimeError> {
    let sa = tcp::resolve(addr)?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(10))
        .map_err(|e| RuntimeError::io("connect", addr, e))?;
    let _ = s.set_nodelay(true);
    handshake(
        &mut s,
        Role::Initiator,
        identity,
        None,
        Duration::from_secs(10),
    )?;
    write_msg(&mut s, hello).map_err(|e| RuntimeError::io("send hello", addr, e))?;
    let reply: Reply =
        read_msg(&mut s).map_err(|e| RuntimeError::Protocol(format!("{addr}: {e}")))?;
    Ok((s, reply))
}

impl Producer {
    /// Connect producer `id` through `bootstrap`; its first row will have offset `offset`
    /// (0 for a stream sent from its start); `schema` is the batches' schema.
    ///
    /// # Errors
    /// Connection and handshake errors, or the server's refusal with its reason.
    pub fn connect(
        bootstrap: &str,
        cluster: &str,
        token: &[u8],
        id: u32,
        offset: u64,
        schema: &Schema,
    ) -> Result<Producer, RuntimeError> {
        let identity = Identity::new(cluster, &format!("{PRODUCER_PREFIX}{id}"), token);
        let hello = Hello {
            producer: id,
            offset,
        };
        let (_, route) = open(bootstrap, &identity, &hello)?;
        if !route.ok {
            return Err(refused("bootstrap", route));
        }
        let endpoint = route.endpoint.clone().unwrap_or_default();
        let (s, reply) = open(&endpoint, &identity, &hello)?;
        if !reply.ok {
            return Err(refused("ingest endpoint", reply));
        }
        let w = s
            .try_clone()
            .map_err(|e| RuntimeError::io("dup", &endpoint, e))?;
        let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, w), schema)
            .map_err(|e| RuntimeError::Protocol(format!("producer {id}: {e}")))?;
        Ok(Producer {
            id,
            reply_side: s,
            writer,
            resume_offset: reply.resume_offset.unwrap_or(0),
            worker: route.worker.unwrap_or_default(),
        })
    }

    /// The server's reason after a failed write (it answers before closing).
    fn why(&mut self, e: impl std::fmt::Display) -> RuntimeError {
        let _ = self
            .reply_side
            .set_read_timeout(Some(Duration::from_secs(5)));
        match read_msg::<Reply>(&mut self.reply_side) {
            Ok(r) if !r.ok => refused(&format!("producer {}", self.id), r),
            _ => RuntimeError::Protocol(format!("producer {}: {e}", self.id)),
        }
    }

    /// Send one record batch (blocks while the worker's buffer for this producer is full).
    ///
    /// # Errors
    /// The server's refusal, or the connection's error.
    pub fn send(&mut self, batch: &RecordBatch) -> Result<(), RuntimeError> {
        if let Err(e) = self.writer.write(batch) {
            return Err(self.why(e));
        }
        Ok(())
    }

    /// Send end-of-stream and wait for the server's account of the stream.
    ///
    /// # Errors
    /// The server's refusal, or the connection's error.
    pub fn close(mut self) -> Result<Reply, RuntimeError> {
        if let Err(e) = self.writer.finish() {
            return Err(self.why(e));
        }
        if let Err(e) = self
            .writer
            .get_mut()
            .get_mut()
            .shutdown(std::net::Shutdown::Write)
        {
            return Err(self.why(e));
        }
        let _ = self
            .reply_side
            .set_read_timeout(Some(Duration::from_secs(60)));
        let r: Reply = read_msg(&mut self.reply_side)
            .map_err(|e| RuntimeError::Protocol(format!("producer {}: {e}", self.id)))?;
        if r.ok {
            Ok(r)
        } else {
            Err(refused(&format!("producer {}", self.id), r))
        }
    }
}
