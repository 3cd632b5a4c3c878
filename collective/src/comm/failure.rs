//! Failure handling of the [`Communicator`].
//!
//! Frames are received with a loose expectation and checked in `comm.rs`, so that an *abort
//! notice* (a zero-length frame with op `Control` and the abort flag, naming the failed rank) can
//! be told apart from a wrong frame. The first rank that sees a link fail (or a mismatching frame)
//! sends such a notice to every other rank, and every rank that receives one forwards it before it
//! gives up: a rank killed in the middle of a ring is named by every survivor, not only by its
//! neighbour, and nobody waits out the peer timeout on a link whose peer is merely blocked. After
//! an error the communicator is poisoned: every later call returns the same error.

use super::{Call, Communicator, FLAG_ABORT};
use crate::error::{CollectiveError, FailureKind};
use lockstep_tensor::Buffer;
use lockstep_transport::{Error as TransportError, FrameHeader, Link, Op};

impl Communicator {
    /// A link to `peer` failed: notify every other rank, poison, and return the error.
    pub(super) fn fail_link(
        &mut self,
        call: &Call,
        peer: usize,
        source: TransportError,
    ) -> CollectiveError {
        let kind = match source {
            TransportError::Mismatch { .. } | TransportError::Protocol { .. } => {
                FailureKind::Mismatch
            }
            _ => FailureKind::Lost,
        };
        self.notify_abort(call, peer, kind, &[peer]);
        let e = CollectiveError::Transport {
            rank: self.rank(),
            node: self.group.my_name().to_string(),
            round: self.round,
            op: call.op,
            seq: call.seq,
            peer,
            source: Box::new(source),
        };
        self.poison(e)
    }

    /// `reporter` sent an abort notice: forward it, poison, and return the error it names.
    pub(super) fn aborted(
        &mut self,
        call: &Call,
        reporter: usize,
        h: &FrameHeader,
    ) -> CollectiveError {
        let world = self.world();
        let failed = usize::try_from(h.shape_fp)
            .ok()
            .filter(|&f| f < world)
            .unwrap_or(reporter);
        let kind = FailureKind::from_wire(h.dtype);
        self.notify_abort(call, failed, kind, &[failed, reporter]);
        let e = CollectiveError::PeerFailed {
            rank: self.rank(),
            node: self.group.my_name().to_string(),
            round: self.round,
            op: call.op,
            seq: call.seq,
            failed,
            failed_node: self.group.name(failed).to_string(),
            kind,
            reporter,
            reporter_node: self.group.name(reporter).to_string(),
        };
        self.poison(e)
    }

    /// Best effort: tell every rank except `skip` (and this one) that `failed` broke `call`.
    pub(super) fn notify_abort(
        &mut self,
        call: &Call,
        failed: usize,
        kind: FailureKind,
        skip: &[usize],
    ) {
        let me = self.rank();
        for p in (0..self.world()).filter(|p| *p != me && !skip.contains(p)) {
            let mut h = FrameHeader::data(
                Op::Control,
                self.round,
                call.seq,
                failed as u64,
                kind.to_wire(),
                0,
            );
            h.flags = FLAG_ABORT;
            h.src_rank = me as u32;
            let _ = self.group.link(p).send(h, Buffer::zeroed(0));
        }
    }

    pub(super) fn poison(&mut self, e: CollectiveError) -> CollectiveError {
        tracing::warn!(error = %e, "collective failed");
        self.poisoned.get_or_insert(e).clone()
    }
}
