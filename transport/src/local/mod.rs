//! In-process backend: ranks are threads, links are channels. For unit tests of algorithms
//! that run without sockets; it obeys the same contract (deadlines, expectations, poisoning).

use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, FrameKind};
use crate::link::{AnyLink, Frame, Group, Link};
use lockstep_tensor::Buffer;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// One end of an in-process link.
pub struct LocalLink {
    me: String,
    peer: String,
    tx: Sender<Frame>,
    rx: Receiver<Frame>,
    timeout: Duration,
    poisoned: crate::poison::Poison,
}

/// A full mesh of `names.len()` in-process ranks; give each group to its own thread.
#[allow(clippy::needless_range_loop)] // (i, j) index a square matrix of ends
pub fn mesh(names: &[&str], peer_timeout: Duration) -> Vec<Group> {
    let n = names.len();
    let mut ends: Vec<Vec<Option<AnyLink>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in (i + 1)..n {
            let (tx_ij, rx_ij) = channel();
            let (tx_ji, rx_ji) = channel();
            let mk = |me: usize, peer: usize, tx, rx| {
                AnyLink::Local(LocalLink {
                    me: names[me].to_string(),
                    peer: names[peer].to_string(),
                    tx,
                    rx,
                    timeout: peer_timeout,
                    poisoned: crate::poison::Poison::default(),
                })
            };
            ends[i][j] = Some(mk(i, j, tx_ij, rx_ji));
            ends[j][i] = Some(mk(j, i, tx_ji, rx_ij));
        }
    }
    let all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    ends.into_iter()
        .enumerate()
        .map(|(r, links)| Group::new(r, all.clone(), links).expect("mesh is well formed"))
        .collect()
}

impl LocalLink {
    fn ctx(&self, round: Option<u64>, op: Option<crate::frame::Op>) -> Context {
        Context {
            peer: self.peer.clone(),
            round,
            op,
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.poisoned.set_quiet(e)
    }
}

impl Link for LocalLink {
    fn peer_name(&self) -> &str {
        &self.peer
    }

    fn send(&mut self, header: FrameHeader, payload: Buffer) -> Result<()> {
        self.poisoned.check()?;
        if self.tx.send(Frame { header, payload }).is_err() {
            let e = Error::PeerClosed {
                ctx: self.ctx(Some(header.round), Some(header.op)),
            };
            return Err(self.fail(e));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.poisoned.check()
    }

    fn recv(&mut self, expect: &Expect) -> Result<Frame> {
        self.poisoned.check()?;
        loop {
            let frame = match self.rx.recv_timeout(self.timeout) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => {
                    let e = Error::PeerTimeout {
                        ctx: self.ctx(expect.round, expect.op),
                        waited_ms: self.timeout.as_millis() as u64,
                    };
                    return Err(self.fail(e));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let e = Error::PeerClosed {
                        ctx: self.ctx(expect.round, expect.op),
                    };
                    return Err(self.fail(e));
                }
            };
            if frame.header.kind == FrameKind::Heartbeat {
                continue;
            }
            if let Some((field, expected, actual)) = expect.check(&frame.header) {
                let e = Error::Mismatch {
                    ctx: self.ctx(expect.round, expect.op),
                    field,
                    local_node: self.me.clone(),
                    remote_node: self.peer.clone(),
                    expected,
                    actual,
                };
                return Err(self.fail(e));
            }
            return Ok(frame);
        }
    }
}
