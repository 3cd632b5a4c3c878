//! Elastic rendezvous: a long-lived service (hosted by `lockstep run --elastic`, never by a rank,
//! so it outlives any of them) that forms **generations** of a process group. Every process joins
//! with its name, the address of its listener and the step of its newest committed state; a
//! generation is formed when `max` processes wait, or when at least `min` wait and no one arrived
//! for `settle` (at the very start it waits `first_wait` for `max`). Everyone of a generation
//! gets its number, the peer table (sorted by name, so ranks follow the original slots), its rank
//! and the **source**: the rank with the newest committed state, which the others take.
//!
//! A running generation asks [`waiting`] at its commit points: a replacement that registered
//! makes every member join again, and the next generation includes it. Survivors of a failure
//! join again on their own. A member that died while waiting makes the next mesh fail; the
//! others join again (bounded by the connect timeout each time).
//!
//! When the job is done, a member says so (`D`): processes still waiting, and any that come
//! later (a replacement that started too late), are told the job has finished and exit cleanly.
//!
//! Messages are Control frames (see [`crate::coordinator`]): `J` + listener address + step
//! (i64) to join, answered by generation (u64), rank (u32), source (u32) and the peer table, or
//! by [`FINISHED`] alone; `P` to ask how many wait, answered by a u32; `D` when done.

use crate::coordinator::{decode_table, encode_table, get_str, put_str, read_msg, write_msg};
use crate::error::{Context, Error, Result};
use crate::handshake::Identity;
use crate::rendezvous::{connect_with_retry, PeerAddr};
use crate::tcp::{Conn, Listener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Node name of the rendezvous service in handshakes.
pub const RENDEZVOUS_NAME: &str = "rendezvous";

/// The generation number that means "the job has finished".
pub const FINISHED: u64 = u64::MAX;

/// When a generation forms.
#[derive(Debug, Clone, Copy)]
pub struct ElasticPolicy {
    /// Fewest processes of a generation.
    pub min: usize,
    /// Most processes of a generation (the number started).
    pub max: usize,
    /// Quiet time after the last arrival before forming with fewer than `max`.
    pub settle: Duration,
    /// At the start: how long to wait for `max` before forming with at least `min`.
    pub first_wait: Duration,
}

/// One formed generation, as a member sees it.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Its number, from 1.
    pub number: u64,
    /// This member's rank in it.
    pub rank: usize,
    /// The rank whose state everyone takes (the newest committed step).
    pub source: usize,
    /// Every member by rank.
    pub peers: Vec<PeerAddr>,
}

/// The running service; stopped on drop.
pub struct ElasticRendezvous {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Waiting {
    name: String,
    addr: String,
    step: i64,
    conn: Conn,
}

/// Sort key that puts `rank-2` before `rank-10`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head.to_string(), tail.parse().unwrap_or(0))
}

impl ElasticRendezvous {
    /// Bind `addr` and serve on a thread of its own until dropped.
    ///
    /// # Errors
    /// As [`Listener::bind`] and [`Listener::start`].
    pub fn start(
        addr: &str,
        cluster: &str,
        token: &[u8],
        policy: ElasticPolicy,
    ) -> Result<ElasticRendezvous> {
        let listener = Listener::bind(addr)?;
        let bound = listener.local_addr()?;
        let acceptor = listener.start(
            Identity::new(cluster, RENDEZVOUS_NAME, token),
            None,
            Duration::from_secs(10),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lockstep-rendezvous".into())
            .spawn(move || serve(&acceptor, policy, &st))
            .map_err(|e| Error::io(Context::default(), "spawn(rendezvous)", &e))?;
        Ok(ElasticRendezvous {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for ElasticRendezvous {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(acceptor: &crate::tcp::listener::Acceptor, p: ElasticPolicy, stop: &AtomicBool) {
    let started = Instant::now();
    let mut formed = 0u64;
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut last_arrival = Instant::now();
    let mut done = false;
    while !stop.load(Ordering::SeqCst) {
        if let Some((name, mut conn)) = acceptor.next(Instant::now() + Duration::from_millis(50)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            match read_msg(&mut conn, &name).map(|b| parse(&b)) {
                Ok(Some(Request::Join { .. })) if done => {
                    tracing::info!(node = %name, "the job has finished; told a late joiner");
                    let _ = write_msg(&mut conn, &FINISHED.to_le_bytes(), &name);
                }
                Ok(Some(Request::Join { addr, step })) => {
                    // A restarted process replaces its predecessor's stale registration.
                    waiting.retain(|w| w.name != name);
                    tracing::info!(node = %name, step, "waiting for the next generation");
                    waiting.push(Waiting {
                        name: name.clone(),
                        addr,
                        step,
                        conn,
                    });
                    last_arrival = Instant::now();
                }
                Ok(Some(Request::Poll)) => {
                    let n = waiting.len() as u32;
                    let _ = write_msg(&mut conn, &n.to_le_bytes(), &name);
                }
                Ok(Some(Request::Done)) => {
                    tracing::info!(node = %name, "the job has finished");
                    done = true;
                    for w in waiting.iter_mut() {
                        let _ = write_msg(&mut w.conn, &FINISHED.to_le_bytes(), &w.name);
                    }
                    waiting.clear();
                }
                Ok(None) => tracing::warn!(node = %name, "malformed rendezvous request; closed"),
                Err(e) => tracing::warn!(node = %name, error = %e, "rendezvous request failed"),
            }
        }
        let n = waiting.len();
        let quiet = last_arrival.elapsed() >= p.settle;
        let patient = formed > 0 || started.elapsed() >= p.first_wait;
        if n > 0 && (n >= p.max || (n >= p.min.max(1) && quiet && patient)) {
            formed += 1;
            waiting.sort_by_key(|w| natural(&w.name));
            let source = (0..n)
                .max_by_key(|&i| (waiting[i].step, std::cmp::Reverse(i)))
                .unwrap_or(0);
            let table: Vec<PeerAddr> = waiting
                .iter()
                .map(|w| PeerAddr {
                    name: w.name.clone(),
                    addr: w.addr.clone(),
                })
                .collect();
            let names: Vec<&str> = table.iter().map(|t| t.name.as_str()).collect();
            tracing::info!(
                generation = formed,
                source,
                "formed generation {formed}: {names:?}"
            );
            let body = encode_table(&table);
            for (rank, w) in waiting.iter_mut().enumerate() {
                let mut msg = formed.to_le_bytes().to_vec();
                msg.extend_from_slice(&(rank as u32).to_le_bytes());
                msg.extend_from_slice(&(source as u32).to_le_bytes());
                msg.extend_from_slice(&body);
                if let Err(e) = write_msg(&mut w.conn, &msg, &w.name) {
                    tracing::warn!(node = %w.name, error = %e, "could not send the generation");
                }
            }
            waiting.clear();
        }
    }
}

enum Request {
    Join { addr: String, step: i64 },
    Poll,
    Done,
}

fn parse(b: &[u8]) -> Option<Request> {
    match b.first()? {
        b'J' => {
            let mut r = &b[1..];
            let addr = get_str(&mut r)?;
            let step = i64::from_le_bytes(r.get(..8)?.try_into().ok()?);
            Some(Request::Join { addr, step })
        }
        b'P' => Some(Request::Poll),
        b'D' => Some(Request::Done),
        _ => None,
    }
}

/// An authenticated connection to the service at `rendezvous` (retried until `deadline`).
fn connect(rendezvous: &str, me: &Identity, deadline: Instant) -> Result<Conn> {
    let peer = PeerAddr {
        name: RENDEZVOUS_NAME.into(),
        addr: rendezvous.into(),
    };
    connect_with_retry(&peer, me, deadline)
}

fn bad(reason: &str) -> Error {
    Error::Protocol {
        ctx: Context {
            peer: RENDEZVOUS_NAME.into(),
            round: None,
            op: None,
        },
        reason: reason.into(),
    }
}

/// Join the next generation through the service at `rendezvous`: `listener` is where this
/// process accepts its peers, `step` its newest committed step (-1: none). Waits at most
/// `timeout` for the generation to form.
///
/// # Errors
/// [`Error`] from connecting (a wrong token is refused by the handshake), a malformed answer, or
/// a timeout. `Ok(None)`: the job has finished (nothing to join).
pub fn join(
    rendezvous: &str,
    me: &Identity,
    listener: &Listener,
    step: i64,
    timeout: Duration,
) -> Result<Option<Generation>> {
    let deadline = Instant::now() + timeout;
    let mut s = connect(rendezvous, me, deadline)?;
    let ip = s
        .local_addr()
        .map_err(|e| Error::io(Context::default(), "getsockname", &e))?
        .ip();
    let addr = std::net::SocketAddr::new(ip, listener.local_addr()?.port()).to_string();
    let mut msg = vec![b'J'];
    put_str(&mut msg, &addr);
    msg.extend_from_slice(&step.to_le_bytes());
    write_msg(&mut s, &msg, RENDEZVOUS_NAME)?;
    let _ = s.set_read_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ));
    let b = read_msg(&mut s, RENDEZVOUS_NAME)?;
    if b.len() == 8 && b[..] == FINISHED.to_le_bytes() {
        return Ok(None);
    }
    if b.len() < 16 {
        return Err(bad("short generation message"));
    }
    let number = u64::from_le_bytes(b[0..8].try_into().map_err(|_| bad("generation"))?);
    let rank = u32::from_le_bytes(b[8..12].try_into().map_err(|_| bad("rank"))?) as usize;
    let source = u32::from_le_bytes(b[12..16].try_into().map_err(|_| bad("source"))?) as usize;
    let peers = decode_table(&b[16..])?;
    if rank >= peers.len() || source >= peers.len() || peers[rank].name != me.node {
        return Err(bad("inconsistent generation message"));
    }
    Ok(Some(Generation {
        number,
        rank,
        source,
        peers,
    }))
}

/// Tell the service at `rendezvous` that the job is done (see the module's documentation).
///
/// # Errors
/// As [`join`].
pub fn finish(rendezvous: &str, me: &Identity, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut s = connect(rendezvous, me, deadline)?;
    write_msg(&mut s, b"D", RENDEZVOUS_NAME)
}

/// How many processes wait at the service at `rendezvous` for the next generation.
///
/// # Errors
/// As [`join`].
pub fn waiting(rendezvous: &str, me: &Identity, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut s = connect(rendezvous, me, deadline)?;
    write_msg(&mut s, b"P", RENDEZVOUS_NAME)?;
    let _ = s.set_read_timeout(Some(timeout));
    let b = read_msg(&mut s, RENDEZVOUS_NAME)?;
    let n: [u8; 4] = b
        .get(..4)
        .and_then(|x| x.try_into().ok())
        .ok_or_else(|| bad("poll"))?;
    Ok(u32::from_le_bytes(n) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_form_by_count_and_by_quiet_and_take_the_newest_state() {
        let policy = ElasticPolicy {
            min: 2,
            max: 3,
            settle: Duration::from_millis(300),
            first_wait: Duration::from_millis(300),
        };
        let r = ElasticRendezvous::start("127.0.0.1:0", "el", b"tok", policy).unwrap();
        let addr = r.local_addr().to_string();
        let go = |names: Vec<(&'static str, i64)>| {
            let hs: Vec<_> = names
                .into_iter()
                .map(|(n, step)| {
                    let addr = addr.clone();
                    std::thread::spawn(move || {
                        let l = Listener::bind("127.0.0.1:0").unwrap();
                        let me = Identity::new("el", n, b"tok");
                        join(&addr, &me, &l, step, Duration::from_secs(10))
                            .unwrap()
                            .unwrap()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        // All three: formed at once; rank-10 sorts after rank-2; the newest step is the source.
        let g = go(vec![("rank-10", 5), ("rank-2", 7), ("rank-1", 7)]);
        assert!(g.iter().all(|x| x.number == 1 && x.source == 0));
        let names: Vec<&str> = g[0].peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["rank-1", "rank-2", "rank-10"]);
        // Two survivors: formed after the quiet time.
        let g = go(vec![("rank-2", 9), ("rank-1", 4)]);
        assert!(g
            .iter()
            .all(|x| x.number == 2 && x.peers.len() == 2 && x.source == 1));
        let me = Identity::new("el", "rank-1", b"tok");
        assert_eq!(waiting(&addr, &me, Duration::from_secs(5)).unwrap(), 0);
        // A wrong token is refused by the handshake.
        let l = Listener::bind("127.0.0.1:0").unwrap();
        let bad = Identity::new("el", "rank-1", b"wrong");
        assert!(join(&addr, &bad, &l, 0, Duration::from_secs(2)).is_err());
        // Done: a late joiner learns that the job has finished.
        finish(&addr, &me, Duration::from_secs(5)).unwrap();
        let l = Listener::bind("127.0.0.1:0").unwrap();
        let late = Identity::new("el", "rank-2", b"tok");
        assert!(join(&addr, &late, &l, -1, Duration::from_secs(5))
            .unwrap()
            .is_none());
    }
}
