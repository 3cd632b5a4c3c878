//! Where backprop writes gradients: a [`GradSink`] hands out the memory of one bucket at a time
//! (in [`Model::buckets`](super::Model::buckets) order) and is told when that bucket is final.
//!
//! Why not one `&mut [f32]`: the runtime's gradient is one owned buffer cut into bucket pieces
//! (`lockstep_tensor::BufferMut::split_to`); each finished piece moves to the aggregator, which
//! reduces it while backprop fills the next one, and all pieces come back and join again without
//! a copy. A slice borrowed for the whole backward pass could not be handed over piece by piece.
//! [`SliceSink`] adapts a plain slice and a callback, for tests and simple loops.

use std::ops::Range;

/// Gradient memory, one bucket at a time. See the module docs.
pub trait GradSink {
    /// Writable memory for bucket `range` (the next one in backprop order). The model
    /// overwrites all of it.
    fn bucket(&mut self, range: Range<usize>) -> &mut [f32];
    /// Bucket `range`, last handed out by [`GradSink::bucket`], holds its final gradients.
    fn ready(&mut self, range: Range<usize>);
}

/// A [`GradSink`] over one flat slice: `ready` calls `on_bucket(range, &mut grads[range])`.
pub struct SliceSink<'a> {
    grads: &'a mut [f32],
    on_bucket: &'a mut dyn FnMut(Range<usize>, &mut [f32]),
}

impl<'a> SliceSink<'a> {
    /// A sink writing into `grads` and reporting each finished bucket to `on_bucket`.
    pub fn new(
        grads: &'a mut [f32],
        on_bucket: &'a mut dyn FnMut(Range<usize>, &mut [f32]),
    ) -> Self {
        SliceSink { grads, on_bucket }
    }
}

impl GradSink for SliceSink<'_> {
    fn bucket(&mut self, range: Range<usize>) -> &mut [f32] {
        &mut self.grads[range]
    }

    fn ready(&mut self, range: Range<usize>) {
        (self.on_bucket)(range.clone(), &mut self.grads[range]);
    }
}
