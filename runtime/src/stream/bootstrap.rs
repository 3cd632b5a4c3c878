//! The coordinator's bootstrap for producers: the one address a producer needs. It authenticates
//! the producer (the cluster handshake, as `producer-<id>`), checks its id, and answers with the
//! ingest endpoint of the worker that trains on that producer's rows; the rows then go straight
//! there, never through the coordinator.

use super::error::Refusal;
use super::wire::{producer_id, read_msg, write_msg, Hello, Reply};
use crate::error::{RuntimeError, SetupError};
use lockstep_trainer::data::StreamSpec;
use lockstep_transport::tcp::{Conn, Listener};
use lockstep_transport::Identity;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Routes producers to workers' ingest endpoints.
pub struct Bootstrap {
    /// `(worker name, ingest endpoint)` of each producer id `0..producers`.
    routes: Vec<(String, String)>,
}

impl Bootstrap {
    /// A bootstrap for `spec` over the workers' endpoints (rank order): producer `p` goes to
    /// worker [`StreamSpec::worker_of`].
    pub fn new(spec: StreamSpec, workers: Vec<(String, String)>) -> Arc<Bootstrap> {
        let routes = (0..spec.producers)
            .map(|p| workers[spec.worker_of(p, workers.len())].clone())
            .collect();
        Arc::new(Bootstrap { routes })
    }

    /// A bootstrap with an explicit route for every producer id `0..routes.len()`: `(worker
    /// name, ingest endpoint)`.
    pub fn routed(routes: Vec<(String, String)>) -> Arc<Bootstrap> {
        Arc::new(Bootstrap { routes })
    }

    /// Serve on `listener` on background threads until the process ends.
    ///
    /// # Errors
    /// [`RuntimeError`] when the listener cannot start accepting.
    pub fn serve(
        self: &Arc<Self>,
        listener: &Listener,
        identity: Identity,
    ) -> Result<(), RuntimeError> {
        let acceptor = listener.start(identity, None, Duration::from_secs(10))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("lockstep-bootstrap".into())
            .spawn(move || loop {
                if let Some((name, stream)) = acceptor.next(Instant::now() + Duration::from_secs(1))
                {
                    let me = me.clone();
                    let _ = std::thread::Builder::new()
                        .name("lockstep-bootstrap-conn".into())
                        .spawn(move || me.connection(&name, stream));
                }
            })
            .map_err(|source| SetupError::Spawn {
                thread: "bootstrap",
                source,
            })?;
        Ok(())
    }

    fn connection(&self, name: &str, mut stream: Conn) {
        let remote = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let reply = match self.route(name, &mut stream) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(producer = %name, %remote, "producer refused at the bootstrap: {why}");
                Reply::refuse(why)
            }
        };
        let _ = write_msg(&mut stream, &reply);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    fn route(&self, name: &str, stream: &mut Conn) -> Result<Reply, Refusal> {
        let hello: Hello = read_msg(stream)?;
        let id = hello.producer;
        if producer_id(name) != Some(id) {
            return Err(Refusal::NameMismatch {
                name: name.to_string(),
                producer: id,
            });
        }
        let Some((worker, endpoint)) = self.routes.get(id as usize) else {
            return Err(Refusal::OutOfRange {
                producer: id,
                producers: self.routes.len(),
            });
        };
        tracing::info!("producer {id} goes to {worker} at {endpoint}");
        Ok(Reply {
            ok: true,
            endpoint: Some(endpoint.clone()),
            worker: Some(worker.clone()),
            ..Reply::default()
        })
    }
}
