//! A worker's ingest endpoint: producers that the coordinator's bootstrap sent here connect,
//! authenticate (the cluster handshake, as `producer-<id>`), say which producer they are and
//! where their rows start, and stream Arrow IPC. Each connection has its own thread; a bad one
//! (wrong id, a live producer's id, garbage, a truncated message, a schema that does not fit)
//! is answered with the reason, logged and closed, and the other producers are not disturbed.
//!
//! Backpressure: before reading the next record batch a connection waits until its producer's
//! queue has room ([`Ingest::wait_for_room`]), so a fast producer is slowed by TCP flow control,
//! never by memory. A monitor names producers silent longer than the peer timeout and repeats
//! the worker's progress to the coordinator twice a second.

use super::buffers::{Ingest, Progress};
use super::error::{Refusal, Silence, StreamFailure};
use super::wire::{producer_id, read_msg, write_msg, Hello, Reply};
use crate::error::{RuntimeError, SetupError};
use arrow_ipc::reader::StreamReader;
use lockstep_trainer::data::{Fitted, OnSilent};
use lockstep_transport::tcp::{Conn, Listener};
use lockstep_transport::Identity;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Called with the worker's progress whenever rounds become available, the stream closes or
/// duplicates are dropped.
pub(crate) type OnProgress = Arc<dyn Fn(Progress) + Send + Sync>;
/// Called when a silent producer fails the job (`on_silent = "fail"`).
pub(crate) type OnFail = Arc<dyn Fn(RuntimeError) + Send + Sync>;

/// What an endpoint serves.
pub struct Endpoint {
    /// This worker's name (in messages).
    pub worker: String,
    /// Producers expected in the whole job.
    pub producers: u32,
    /// The fitted columns batches must have.
    pub fitted: Fitted,
    /// Queues and offsets.
    pub ingest: Arc<Ingest>,
    /// Silence threshold (the cluster's peer timeout).
    pub peer_timeout: Duration,
    /// Wait or fail on silence.
    pub on_silent: OnSilent,
    /// A producer not connected this long after the endpoint started fails the job.
    pub connect_timeout: Duration,
    /// Progress reports.
    pub on_progress: OnProgress,
    /// Failure (silent producer with `on_silent = "fail"`).
    pub on_fail: OnFail,
    last_sent: Mutex<Option<(u64, bool, u64)>>,
    started: Instant,
}

impl Endpoint {
    /// An endpoint; see the fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        worker: &str,
        producers: u32,
        fitted: Fitted,
        ingest: Arc<Ingest>,
        peer_timeout: Duration,
        on_silent: OnSilent,
        connect_timeout: Duration,
        on_progress: OnProgress,
        on_fail: OnFail,
    ) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            worker: worker.to_string(),
            producers,
            fitted,
            ingest,
            peer_timeout,
            on_silent,
            connect_timeout,
            on_progress,
            on_fail,
            last_sent: Mutex::new(None),
            started: Instant::now(),
        })
    }

    /// Serve producers on `listener` (authenticating as `identity`) on background threads, and
    /// watch for silent producers. Runs until the process ends.
    ///
    /// # Errors
    /// [`RuntimeError`] when the listener cannot start accepting.
    pub fn serve(
        self: &Arc<Self>,
        listener: Listener,
        identity: Identity,
    ) -> Result<(), RuntimeError> {
        let acceptor = listener.start(identity, None, Duration::from_secs(10))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("lockstep-ingest".into())
            .spawn(move || loop {
                if let Some((name, stream)) = acceptor.next(Instant::now() + Duration::from_secs(1))
                {
                    let me = me.clone();
                    let _ = std::thread::Builder::new()
                        .name("lockstep-producer".into())
                        .spawn(move || me.connection(&name, stream));
                }
            })
            .map_err(|source| SetupError::Spawn {
                thread: "ingest endpoint",
                source,
            })?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("lockstep-silence".into())
            .spawn(move || me.watch_silence())
            .map_err(|source| SetupError::Spawn {
                thread: "ingest monitor",
                source,
            })?;
        self.report();
        Ok(())
    }

    /// Tell the coordinator about progress when it changed.
    fn report(&self) {
        let p = self.ingest.progress();
        let key = (p.available, p.closed, p.duplicates);
        let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
        if *last != Some(key) {
            *last = Some(key);
            drop(last);
            (self.on_progress)(p);
        }
    }

    fn watch_silence(&self) {
        for tick in 0u64.. {
            std::thread::sleep(Duration::from_millis(250));
            if tick % 2 == 1 {
                // A heartbeat of progress: a coordinator waiting for rows wakes up to see a
                // graceful stop (see `crate::node::stop`).
                (self.on_progress)(self.ingest.progress());
            }
            if let Some(e) = self.never_connected() {
                tracing::error!(worker = %self.worker, "{e}");
                (self.on_fail)(e);
                return;
            }
            for id in self.ingest.ids() {
                let silent = self.ingest.with_producer(id, |p| {
                    let quiet = p.last_seen.elapsed();
                    if p.closed || p.silence_reported || quiet <= self.peer_timeout {
                        return None;
                    }
                    p.silence_reported = true;
                    let silence = Silence {
                        producer: id,
                        quiet,
                        peer_timeout: self.peer_timeout,
                        connected: p.connected,
                        offset: p.received,
                    };
                    Some((silence, p.seen))
                });
                if let Some(Some((silence, seen))) = silent {
                    tracing::warn!(worker = %self.worker, "{silence}");
                    // Before its first connection a producer is governed by connect_timeout_ms.
                    if seen && self.on_silent == OnSilent::Fail {
                        (self.on_fail)(StreamFailure::Silent(silence).into());
                    }
                }
            }
        }
    }

    /// The failure for producers that have not connected within `connect_timeout` of the start.
    fn never_connected(&self) -> Option<RuntimeError> {
        if self.started.elapsed() <= self.connect_timeout {
            return None;
        }
        let missing: Vec<u32> = self
            .ingest
            .ids()
            .into_iter()
            .filter(|&id| self.ingest.with_producer(id, |p| !p.seen) == Some(true))
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(
            StreamFailure::NeverConnected {
                producers: missing,
                worker: self.worker.clone(),
                timeout: self.connect_timeout,
            }
            .into(),
        )
    }

    fn connection(&self, name: &str, mut stream: Conn) {
        let remote = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let outcome = self.accept(name, &mut stream);
        let reply = match outcome {
            Ok(reply) => reply,
            Err(why) => {
                tracing::warn!(worker = %self.worker, producer = %name, %remote, "producer refused: {why}");
                Reply::refuse(why)
            }
        };
        let _ = write_msg(&mut stream, &reply);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// Check the producer's hello, take the connection, stream its batches.
    fn accept(&self, name: &str, stream: &mut Conn) -> Result<Reply, Refusal> {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let hello: Hello = read_msg(stream)?;
        let _ = stream.set_read_timeout(None);
        let id = hello.producer;
        if producer_id(name) != Some(id) {
            return Err(Refusal::NameMismatch {
                name: name.to_string(),
                producer: id,
            });
        }
        if id >= self.producers {
            return Err(Refusal::OutOfRange {
                producer: id,
                producers: self.producers as usize,
            });
        }
        let peer_timeout = self.peer_timeout;
        let bounded = self.ingest.bounded;
        let taken = self.ingest.with_producer(id, |p| {
            if p.connected && p.last_seen.elapsed() <= peer_timeout {
                return Err(Refusal::AlreadyConnected { producer: id });
            }
            if p.closed && bounded {
                return Err(Refusal::AlreadyEnded { producer: id });
            }
            p.connected = true;
            p.seen = true;
            p.closed = false;
            p.last_seen = Instant::now();
            p.generation += 1;
            Ok((p.generation, p.received))
        });
        let (generation, resume) = match taken {
            None => {
                return Err(Refusal::NotServedBy {
                    producer: id,
                    worker: self.worker.clone(),
                })
            }
            Some(r) => r?,
        };
        write_msg(
            stream,
            &Reply {
                ok: true,
                resume_offset: Some(resume),
                ..Reply::default()
            },
        )
        .map_err(Refusal::Answer)?;
        tracing::info!(worker = %self.worker, producer = id, "producer {id} connected; its rows from offset {} start at {}, resume offset {resume}", hello.offset, hello.offset);
        let res = self.stream_batches(id, generation, hello.offset, stream);
        let eos = res.as_ref().is_ok_and(|(_, _, eos)| *eos);
        self.ingest.disconnect(id, generation, eos);
        self.report();
        let (rows, duplicates, eos) = res?;
        if !eos {
            tracing::warn!(worker = %self.worker, producer = id, "producer {id} disconnected without end-of-stream after {rows} new rows; waiting for it to reconnect");
        } else {
            tracing::info!(worker = %self.worker, producer = id, "producer {id} ended its stream: {rows} new rows, {duplicates} duplicates dropped");
        }
        Ok(Reply {
            ok: true,
            rows: Some(rows),
            duplicates: Some(duplicates),
            ..Reply::default()
        })
    }

    /// Read the IPC stream into the queue. Returns (new rows, duplicates, saw end-of-stream).
    fn stream_batches(
        &self,
        id: u32,
        generation: u64,
        mut offset: u64,
        stream: &mut Conn,
    ) -> Result<(u64, u64, bool), Refusal> {
        let tail = Tail::new(BufReader::with_capacity(1 << 20, &mut *stream));
        let mut reader = StreamReader::try_new(tail, None).map_err(Refusal::NotIpc)?;
        let label = format!("producer {id}");
        self.fitted
            .check_schema(&reader.schema(), &label)
            .map_err(Refusal::Schema)?;
        let (mut rows, mut dups) = (0u64, 0u64);
        loop {
            self.ingest.wait_for_room(id);
            let Some(next) = reader.next() else { break };
            let batch = next.map_err(|source| {
                if source.to_string().contains("failed to fill whole buffer") {
                    Refusal::Truncated { rows }
                } else {
                    Refusal::BadIpc { rows, source }
                }
            })?;
            let n = batch.num_rows() as u64;
            // Every batch is converted here, once: a bad value (a null label, a NaN under
            // `missing = "error"`) closes this connection, not the job, and training takes the
            // converted rows as they are.
            let rows_in = self
                .fitted
                .table(&batch, &label)
                .map_err(|source| Refusal::Batch {
                    from: offset,
                    to: offset + n,
                    source,
                })?;
            drop(batch);
            let (fresh, dup) = self.ingest.push(id, generation, offset, rows_in)?;
            offset += n;
            rows += fresh;
            dups += dup;
            self.report();
        }
        Ok((rows, dups, reader.get_ref().saw_eos()))
    }
}

/// A reader that remembers the last 8 bytes read, to tell an explicit Arrow end-of-stream
/// marker from a connection that just ended.
struct Tail<R> {
    inner: R,
    last: [u8; 8],
}

impl<R: Read> Tail<R> {
    fn new(inner: R) -> Self {
        Tail {
            inner,
            last: [0xAA; 8],
        }
    }

    fn saw_eos(&self) -> bool {
        self.last == [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        if got.len() >= 8 {
            self.last.copy_from_slice(&got[got.len() - 8..]);
        } else if !got.is_empty() {
            self.last.rotate_left(got.len());
            let at = 8 - got.len();
            self.last[at..].copy_from_slice(got);
        }
        Ok(n)
    }
}
