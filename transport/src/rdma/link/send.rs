//! The send path of an [`RdmaLink`] (see the parent module's docs): small frames copied with
//! their header into the eager slot, larger payloads posted from their own registered memory
//! through the send window.

use super::{RdmaLink, EAGER, SEND_WR, SLOT, WINDOW};
use crate::error::{Context, Error, Result};
use crate::frame::{Expect, FrameHeader, HEADER_LEN};
use crate::rdma::window::{FramePlan, Sge};
use sideway::ibverbs::queue_pair::{
    PostSendGuard, QueuePair, SetScatterGatherEntry, WorkRequestFlags,
};

impl RdmaLink {
    pub(super) fn send_inner(&mut self, header: &FrameHeader, payload: &[u8]) -> Result<()> {
        let expect = Expect::default();
        let hb = header.encode();
        if payload.len() <= EAGER {
            // Small: header and payload copied into the eager slot, one SEND.
            let out = self.send.bytes_mut();
            out[..HEADER_LEN].copy_from_slice(&hb);
            out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
            let (lkey, addr) = (self.send.lkey, self.send.addr(0));
            self.post_sends(&[(lkey, addr, (HEADER_LEN + payload.len()) as u32)])?;
            return self.wait_sends(1, &expect);
        }
        // Large: the header from the header slot, then the payload from its own memory.
        self.send.bytes_mut()[..HEADER_LEN].copy_from_slice(&hb);
        let reg = self.registrar.register(payload)?;
        let header_sge = (self.send.lkey, self.send.addr(0), HEADER_LEN as u32);
        let mut plan = FramePlan::new(header_sge, reg.lkey, payload, SLOT, WINDOW);
        // One batch of work requests per `ibv_post_send`, on the stack (no allocation per
        // message): at most the whole window.
        let mut batch = [(0u32, 0u64, 0u32); WINDOW];
        while !plan.done() {
            let n = plan.next_batch(&mut batch);
            if n > 0 {
                self.post_sends(&batch[..n])?;
            }
            self.wait(&expect, true, |l| l.sends_done > 0)?;
            plan.completed(std::mem::take(&mut self.sends_done));
        }
        // `reg` (and with it a pinned registration) is dropped only now, after every SEND
        // posted from it has completed.
        drop(reg);
        Ok(())
    }

    /// Wait until `n` SENDs have completed.
    fn wait_sends(&mut self, mut n: usize, expect: &Expect) -> Result<()> {
        while n > 0 {
            self.wait(expect, true, |l| l.sends_done > 0)?;
            n = n.saturating_sub(std::mem::take(&mut self.sends_done));
        }
        Ok(())
    }

    /// Post one signaled SEND per `(lkey, addr, len)`, all in one `ibv_post_send`.
    fn post_sends(&mut self, sges: &[Sge]) -> Result<()> {
        let mut guard = self.verbs.qp.start_post_send();
        for &(lkey, addr, len) in sges {
            let wr = guard
                .construct_wr(SEND_WR, WorkRequestFlags::Signaled)
                .setup_send();
            // SAFETY: every range lies in registered memory (the link's send region, or the
            // caller's payload under a registration `send_inner` keeps) that is not released
            // or changed until the SEND's completion has been polled (`send_inner` waits for
            // all of them before it returns).
            unsafe { wr.setup_sge(lkey, addr, len) };
        }
        guard.post().map_err(|e| Error::Protocol {
            ctx: Context::expecting(&self.peer, &Expect::default()),
            reason: format!("rdma {}: ibv_post_send: {e}", self.dev),
        })
    }
}
