//! Streams on the control plane: what the workers' producers have delivered, and waiting for
//! it before granting rounds (see `docs/streaming.md`).

use super::*;
use crate::control::protocol::ControlMessage;
/// What the workers' producers have delivered (streams).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StreamView {
    /// Rounds below this one can be filled by every worker.
    pub available: u64,
    /// A worker's producers all ended and it cannot fill the round asked about: no more rounds.
    pub ended: bool,
    /// New rows received, all workers.
    pub rows: u64,
    /// Duplicate rows dropped, all workers.
    pub duplicates: u64,
}

/// Streams: what is known now about round `round` (`block = false`), or wait until every
/// worker can fill it or the stream has ended (`block = true`).
#[derive(Message)]
#[rtype(result = "Result<StreamView, RuntimeError>")]
pub(crate) struct AwaitStream {
    /// The round asked about.
    pub round: u64,
    /// Wait for it.
    pub block: bool,
}

impl Handler<AwaitStream> for ControlPlane {
    type Result = Result<StreamView, RuntimeError>;
    fn handle(&mut self, msg: AwaitStream, _: &mut SyncContext<Self>) -> Self::Result {
        let round = msg.round;
        if msg.block {
            let doing = "waiting for producers' rows";
            for i in 0..self.workers {
                while self.stream[i].0 <= round && !self.stream[i].1 {
                    if crate::node::stop::requested().is_some() {
                        // A graceful stop: stop waiting (workers tick their progress
                        // twice a second, so this is seen within about 0.5 s).
                        return Ok(self.view(round));
                    }
                    if let Some(got) = self.take(i, round, doing) {
                        return Err(ProtocolError::DuringStream {
                            node: self.members[i].name.clone(),
                            got: got?.name(),
                        }
                        .into());
                    }
                    // Any member's delivery: progress is absorbed, an abort ends the wait.
                    self.wait_one(Some(i), round, doing, None, true)?;
                }
            }
        }
        Ok(self.view(round))
    }
}

impl ControlPlane {
    pub(super) fn view(&self, round: u64) -> StreamView {
        StreamView {
            available: self.stream.iter().map(|s| s.0).min().unwrap_or(0),
            ended: self.stream.iter().any(|s| s.1 && s.0 <= round),
            rows: self.stream.iter().map(|s| s.2).sum(),
            duplicates: self.stream.iter().map(|s| s.3).sum(),
        }
    }
}
