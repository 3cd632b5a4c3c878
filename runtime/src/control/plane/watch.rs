//! Waiting for one member without missing another's abort.
//!
//! The control plane reads each member's reports in turn. A member that fails sends `Abort` on its
//! own link, while the member being waited on may be blocked on the failed one's data (its
//! allreduce waits for a peer that stopped computing but still answers heartbeats). So the wait
//! on one member is cut into slices, and between slices every other member's link is read without
//! waiting: an `Abort` there ends the wait at once with that member's error; anything else it sent
//! is kept, in order, for its turn.

use super::{read_member, recv_member_before, ControlPlane};
use crate::control::protocol::ControlMsg;
use crate::error::RuntimeError;
use lockstep_transport::AnyLink;
use std::time::{Duration, Instant};

/// How long one member is waited on before the others are looked at.
const SLICE: Duration = Duration::from_millis(200);
/// How long a look at another member's link may wait for a frame to be ready.
const PEEK: Duration = Duration::from_millis(1);

impl ControlPlane {
    /// The next message from member `i` (see `recv_member_before`), bounded by the collection's
    /// deadline if one is set; an `Abort` any other member sends meanwhile is returned as its
    /// error.
    pub(super) fn recv_watching(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Result<ControlMsg, RuntimeError> {
        loop {
            let slice = Instant::now() + SLICE;
            let until = self.deadline.map_or(slice, |d| d.min(slice));
            let m = &mut self.members[i];
            let progress = self.stream.get_mut(i);
            match recv_member_before(&self.traces, progress, m, round, doing, Some(until)) {
                Err(RuntimeError::Timeout { .. }) if self.deadline.is_none_or(|d| until < d) => {
                    self.sweep(i, round)?;
                }
                other => return other,
            }
        }
    }

    /// Reads every member but `i` without waiting: an `Abort` is its error, other messages are
    /// kept for their turn. A failed link is left for its turn to report. Only TCP links (every
    /// control link) can be looked at without blocking.
    pub(super) fn sweep(&mut self, i: usize, round: u64) -> Result<(), RuntimeError> {
        for j in (0..self.members.len()).filter(|&j| j != i) {
            if !matches!(self.members[j].link, AnyLink::Tcp(_)) {
                continue;
            }
            loop {
                let m = &mut self.members[j];
                let progress = self.stream.get_mut(j);
                let peek = Some(Instant::now() + PEEK);
                match read_member(&self.traces, progress, m, round, "watching", peek) {
                    Ok(Some(msg)) => m.early.push_back(msg),
                    Ok(None) => {}
                    Err(e @ RuntimeError::Aborted { .. }) => return Err(e),
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }
}
