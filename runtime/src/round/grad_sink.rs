//! `PieceSink`: the [`GradSink`] `Compute` hands to backprop. It cuts the round's one gradient
//! buffer into bucket pieces as backprop asks for them (`BufferMut::split_to`, no copy) and sends
//! each finished piece to the `Aggregator`; the last one carries where the re-joined buffer goes.
//!
//! With micro-batches, the earlier micro-batches' gradients sit in plain vectors and the last
//! micro-batch writes into the pieces; when a bucket of the last micro-batch is final, the
//! micro-batch gradients of that range are summed in a fixed binary tree,
//! `((g0 + g1) + (g2 + g3)) + ...`, whose final addition writes into the piece. That is the same
//! tree (and the same bits) whatever the number of workers: recursive doubling continues it
//! across ranks.

use super::deliver;
use super::messages::{GradBucket, Reduced};
use crate::error::{MismatchError, RuntimeError};
use actix::Recipient;
use lockstep_tensor::{cast_slice_mut, BufferMut};
use lockstep_trainer::model::GradSink;
use std::ops::Range;

/// A [`GradSink`] over the owned gradient buffer. See the module docs.
pub(crate) struct PieceSink<'a> {
    round: u64,
    rest: BufferMut,
    piece: Option<(Range<usize>, BufferMut)>,
    total: usize,
    head: &'a mut [Vec<f32>],
    /// `None`: nothing to reduce (one worker, allreduce); the pieces are joined here again.
    aggregator: Option<&'a Recipient<GradBucket>>,
    reply: &'a Recipient<Reduced>,
    kept: Option<BufferMut>,
    /// The first failure (later buckets are dropped).
    pub(crate) failed: Option<RuntimeError>,
    /// True once the last bucket went out.
    pub(crate) sent_last: bool,
    /// Parameter server: the round checkpoints, so the servers' state is gathered after it.
    gather_state: bool,
}

impl<'a> PieceSink<'a> {
    /// A sink over `grads` (the whole buffer, `total` f32 values) for `round`; `head` holds the
    /// gradients of the earlier micro-batches (empty without micro-batching).
    pub(crate) fn new(
        round: u64,
        grads: BufferMut,
        total: usize,
        head: &'a mut [Vec<f32>],
        aggregator: Option<&'a Recipient<GradBucket>>,
        reply: &'a Recipient<Reduced>,
    ) -> Self {
        PieceSink {
            round,
            rest: grads,
            piece: None,
            total,
            head,
            aggregator,
            reply,
            kept: None,
            failed: None,
            sent_last: false,
            gather_state: false,
        }
    }

    /// Ask the aggregator to gather the servers' optimizer state after this round (a
    /// parameter-server round whose plan checkpoints).
    pub(crate) fn gathering_state(mut self, on: bool) -> Self {
        self.gather_state = on;
        self
    }
}

impl GradSink for PieceSink<'_> {
    fn bucket(&mut self, range: Range<usize>) -> &mut [f32] {
        let piece = self.rest.split_to((range.len() * 4).min(self.rest.len()));
        let (_, piece) = self.piece.insert((range, piece));
        // A heap buffer is 64-byte aligned and buckets start at f32 boundaries.
        cast_slice_mut::<f32>(piece).unwrap_or(&mut [])
    }

    fn ready(&mut self, range: Range<usize>) {
        let Some((r, mut data)) = self.piece.take() else {
            return;
        };
        if self.failed.is_some() {
            return;
        }
        if r != range || data.len() != range.len() * 4 {
            self.failed = Some(
                MismatchError::BucketWritten {
                    round: self.round,
                    finished: range,
                    wrote: r,
                }
                .into(),
            );
            return;
        }
        if !self.head.is_empty() {
            if let Ok(last) = cast_slice_mut::<f32>(&mut data) {
                tree_sum_into(self.head, last, range.clone());
            }
        }
        let is_last = range.end == self.total;
        let Some(aggregator) = self.aggregator else {
            // Nothing to reduce: join the pieces again right here.
            let joined = match self.kept.take() {
                None => Ok(data),
                Some(mut kept) => kept.unsplit(data).map(|()| kept),
            };
            match joined {
                Ok(k) => self.kept = Some(k),
                Err(_) => {
                    self.failed = Some(MismatchError::BucketsApart { round: self.round }.into())
                }
            }
            self.sent_last |= is_last;
            return;
        };
        let last = is_last.then(|| self.reply.clone());
        self.sent_last |= is_last;
        let msg = GradBucket {
            round: self.round,
            range,
            data,
            last,
            gather_state: self.gather_state && is_last,
        };
        if let Err(e) = deliver(aggregator, msg, "a gradient bucket") {
            self.failed = Some(e);
        }
    }
}

impl PieceSink<'_> {
    /// Without an aggregator: the whole buffer, once every bucket was delivered.
    pub(crate) fn into_kept(self) -> Option<BufferMut> {
        self.kept
    }
}

/// Sum the micro-batch gradients `head[0..] ++ [last]` over `range` in a fixed binary tree,
/// leaving the result in `last` (which holds the last micro-batch's values of `range`).
fn tree_sum_into(head: &mut [Vec<f32>], last: &mut [f32], range: Range<usize>) {
    let k = head.len() + 1;
    let mut step = 1;
    while 2 * step < k {
        for lo in (0..k).step_by(2 * step) {
            let hi = lo + step;
            if hi >= k {
                continue;
            }
            if hi == k - 1 {
                let dst = &mut head[lo][range.clone()];
                dst.iter_mut().zip(last.iter()).for_each(|(d, s)| *d += s);
            } else {
                let (a, b) = head.split_at_mut(hi);
                let dst = &mut a[lo][range.clone()];
                dst.iter_mut()
                    .zip(&b[0][range.clone()])
                    .for_each(|(d, s)| *d += s);
            }
        }
        step *= 2;
    }
    // The final addition, node 0 + node `step`, lands in `last`: the same sum as adding into
    // node 0 (IEEE addition is commutative), without copying it out afterwards.
    let g0 = &head[0][range.clone()];
    if step == k - 1 {
        last.iter_mut().zip(g0).for_each(|(d, a)| *d += *a);
    } else {
        let other = &head[step][range];
        last.iter_mut()
            .zip(g0.iter().zip(other))
            .for_each(|(d, (a, b))| *d = *a + *b);
    }
}

#[cfg(test)]
mod tests {
    use super::tree_sum_into;

    /// The reference: the tree of the previous implementation, result in node 0.
    fn tree_sum_reference(mut nodes: Vec<Vec<f32>>) -> Vec<f32> {
        let k = nodes.len();
        let mut step = 1;
        while step < k {
            for lo in (0..k).step_by(2 * step) {
                let hi = lo + step;
                if hi < k {
                    let src = nodes[hi].clone();
                    nodes[lo].iter_mut().zip(&src).for_each(|(d, s)| *d += s);
                }
            }
            step *= 2;
        }
        nodes.swap_remove(0)
    }

    #[test]
    fn same_bits_as_the_in_place_tree_for_any_count() {
        for k in 2..=9 {
            let n = 37;
            let nodes: Vec<Vec<f32>> = (0..k)
                .map(|i| {
                    (0..n)
                        .map(|j| ((i * 31 + j * 7) as f32).sin() * 1e3 / (j as f32 + 1.5))
                        .collect()
                })
                .collect();
            let want = tree_sum_reference(nodes.clone());
            let mut head: Vec<Vec<f32>> = nodes[..k - 1].to_vec();
            let mut last = nodes[k - 1].clone();
            tree_sum_into(&mut head, &mut last[3..20], 3..20);
            let got: Vec<u32> = last[3..20].iter().map(|v| v.to_bits()).collect();
            let exp: Vec<u32> = want[3..20].iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, exp, "k = {k}");
        }
    }
}
