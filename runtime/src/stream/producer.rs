//! A producer in Rust: connect through the bootstrap, authenticate with the cluster token, and
//! stream Arrow record batches to the worker that trains on them. The Python client
//! (`python/lockstep_client`) speaks the same protocol; this one serves tests and
//! `lockstep bench ingest`.
//!
//! For a job with `cluster.tls`, [`Producer::connect_tls`] takes the cluster CA and this
//! producer's certificate and key (naming `producer-<id>`, e.g. from `lockstep tls gen --nodes
//! producer-0`), the same files as the Python client's `tls_ca`, `tls_cert`, `tls_key`: both
//! connections (bootstrap and endpoint) run TLS, and the worker's certificate must chain to the
//! CA and name the node it announces.
//!
//! # Examples
//! ```no_run
//! # fn demo(batch: arrow_array::RecordBatch) -> Result<(), lockstep_runtime::RuntimeError> {
//! use lockstep_runtime::stream::Producer;
//! let mut p = Producer::connect("127.0.0.1:7100", "credit", b"secret", 0, 0, &batch.schema())?;
//! p.send(&batch)?;
//! let done = p.close()?;
//! println!("{} new rows, {} duplicates", done.rows.unwrap_or(0), done.duplicates.unwrap_or(0));
//! # Ok(()) }
//! ```

use super::error::ProducerIo;
use super::wire::{read_msg, write_msg, Hello, Reply, PRODUCER_PREFIX};
use crate::error::{ProtocolError, Refuser, RuntimeError};
use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::Schema;
use lockstep_transport::handshake::{handshake, Role};
use lockstep_transport::tcp::Conn;
use lockstep_transport::tls::{TlsConfig, TlsFiles, TlsStream};
use lockstep_transport::{tcp, Identity};
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The connection to the endpoint, shared by the batch writer and the reply reader (used one
/// at a time: replies are read only after the writer failed or finished).
#[derive(Clone)]
struct Shared(Arc<Mutex<Conn>>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.lock().read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

/// A connected producer. See the module docs.
pub struct Producer {
    id: u32,
    reply_side: Shared,
    writer: StreamWriter<BufWriter<Shared>>,
    /// Rows below this offset were already trained on (or received) and will be dropped.
    pub resume_offset: u64,
    /// The worker serving this producer.
    pub worker: String,
}

fn refused(by: Refuser, r: Reply) -> RuntimeError {
    ProtocolError::Refused {
        by,
        reason: r.error,
    }
    .into()
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn open(addr: &str, identity: &Identity, hello: &Hello) -> Result<(Conn, Reply), RuntimeError> {
    let sa = tcp::resolve(addr)?;
    let deadline = Instant::now() + TIMEOUT;
    let s = TcpStream::connect_timeout(&sa, TIMEOUT)
        .map_err(|e| RuntimeError::io("connect", addr, e))?;
    let _ = s.set_nodelay(true);
    let mut s = match &identity.tls {
        Some(tls) => Conn::Tls(Box::new(TlsStream::connect(s, tls, addr, deadline)?)),
        None => Conn::Plain(s),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = handshake(&mut s, Role::Initiator, identity, None, left) {
        // Over TLS 1.3 a refusal of this producer's certificate comes with the first answer.
        return Err(match s.tls_error() {
            Some(failure) => lockstep_transport::Error::Tls {
                remote: addr.to_string(),
                failure,
            }
            .into(),
            None => e.into(),
        });
    }
    write_msg(&mut s, hello).map_err(|e| RuntimeError::io("send hello", addr, e))?;
    let reply: Reply = read_msg(&mut s).map_err(|source| ProtocolError::Answer {
        addr: addr.to_string(),
        source,
    })?;
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
        Self::connect_as(bootstrap, identity, id, offset, schema)
    }

    /// [`Producer::connect`] to a job with `cluster.tls`: `files` are the cluster CA and this
    /// producer's certificate (naming `producer-<id>`) and key.
    ///
    /// # Errors
    /// Files that do not fit (named), TLS failures (a refused certificate either way, a job
    /// without TLS), and those of [`Producer::connect`].
    pub fn connect_tls(
        bootstrap: &str,
        cluster: &str,
        token: &[u8],
        id: u32,
        offset: u64,
        schema: &Schema,
        files: &TlsFiles,
    ) -> Result<Producer, RuntimeError> {
        let name = format!("{PRODUCER_PREFIX}{id}");
        let tls = Arc::new(TlsConfig::load(&name, files)?);
        let identity = Identity::new(cluster, &name, token).with_tls(Some(tls));
        Self::connect_as(bootstrap, identity, id, offset, schema)
    }

    fn connect_as(
        bootstrap: &str,
        identity: Identity,
        id: u32,
        offset: u64,
        schema: &Schema,
    ) -> Result<Producer, RuntimeError> {
        let hello = Hello {
            producer: id,
            offset,
        };
        let (_, route) = open(bootstrap, &identity, &hello)?;
        if !route.ok {
            return Err(refused(Refuser::Bootstrap, route));
        }
        let endpoint = route.endpoint.clone().unwrap_or_default();
        let (s, reply) = open(&endpoint, &identity, &hello)?;
        if !reply.ok {
            return Err(refused(Refuser::Endpoint, reply));
        }
        let s = Shared(Arc::new(Mutex::new(s)));
        let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, s.clone()), schema)
            .map_err(|e| ProtocolError::Producer {
                producer: id,
                source: e.into(),
            })?;
        Ok(Producer {
            id,
            reply_side: s,
            writer,
            resume_offset: reply.resume_offset.unwrap_or(0),
            worker: route.worker.unwrap_or_default(),
        })
    }

    /// The server's reason after a failed write (it answers before closing).
    fn why(&mut self, e: impl Into<ProducerIo>) -> RuntimeError {
        let _ = self
            .reply_side
            .lock()
            .set_read_timeout(Some(Duration::from_secs(5)));
        match read_msg::<Reply>(&mut self.reply_side) {
            Ok(r) if !r.ok => refused(Refuser::Producer(self.id), r),
            _ => ProtocolError::Producer {
                producer: self.id,
                source: e.into(),
            }
            .into(),
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
        // The Arrow end-of-stream marker ends the stream; a plain socket also half-closes (a
        // TLS session cannot without leaving TLS, and needs not).
        let half_close = {
            let c = self.reply_side.lock();
            if c.is_tls() {
                Ok(())
            } else {
                c.shutdown(Shutdown::Write)
            }
        };
        if let Err(e) = half_close {
            return Err(self.why(e));
        }
        let _ = self
            .reply_side
            .lock()
            .set_read_timeout(Some(Duration::from_secs(60)));
        let r: Reply = read_msg(&mut self.reply_side).map_err(|e| ProtocolError::Producer {
            producer: self.id,
            source: e.into(),
        })?;
        if r.ok {
            Ok(r)
        } else {
            Err(refused(Refuser::Producer(self.id), r))
        }
    }
}
