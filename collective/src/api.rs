//! The collectives as methods of [`Communicator`]: allreduce for f32, f16 and bf16 (f32
//! accumulation), broadcast of any element type, and barrier. Here the caller's request becomes a
//! [`Call`] (sequence number, shape fingerprint, dtype) and the algorithm is chosen.

use super::comm::{Call, Communicator};
use super::{bcast, hier, ring, tree, Algo, CollectiveError, ReduceOp};
use lockstep_tensor::{bf16, f16, fingerprint_dims, kernels, DType, Element};
use lockstep_transport::Op;

/// How to run one allreduce: the reduction, the shape every rank must agree on, and optionally
/// an algorithm that overrides the communicator's setting.
///
/// # Examples
/// ```
/// use lockstep_collective::{AllReduce, Algo};
/// let how = AllReduce::mean().shape(&[128, 10]).algo(Algo::Ring);
/// # let _ = how;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllReduce<'a> {
    /// Sum or mean.
    pub op: ReduceOp,
    /// Dimensions of the tensor (their product must be the data length); `None` means `[len]`.
    pub dims: Option<&'a [usize]>,
    /// Algorithm override; `None` uses [`super::CollectiveConfig::algo`].
    pub algo: Option<Algo>,
}

impl<'a> AllReduce<'a> {
    /// Sum over ranks.
    pub fn sum() -> Self {
        AllReduce {
            op: ReduceOp::Sum,
            dims: None,
            algo: None,
        }
    }

    /// Mean over ranks.
    pub fn mean() -> Self {
        AllReduce {
            op: ReduceOp::Mean,
            dims: None,
            algo: None,
        }
    }

    /// The tensor's shape, carried as a fingerprint in every frame.
    pub fn shape(mut self, dims: &'a [usize]) -> Self {
        self.dims = Some(dims);
        self
    }

    /// Use this algorithm for this call.
    pub fn algo(mut self, algo: Algo) -> Self {
        self.algo = Some(algo);
        self
    }
}

impl Communicator {
    /// Allreduce `data` in place (f32). Every rank must call it with the same length, shape and
    /// algorithm; afterwards every rank holds identical bits.
    ///
    /// # Errors
    /// [`CollectiveError::Transport`] when a link fails or a peer's frame does not match (other
    /// round, sequence number, shape, length), [`CollectiveError::PeerFailed`] when another rank
    /// reports a failure, [`CollectiveError::Invalid`] for a shape that does not fit the data.
    /// On error the contents of `data` are unspecified.
    pub fn allreduce(
        &mut self,
        data: &mut [f32],
        how: AllReduce<'_>,
    ) -> Result<(), CollectiveError> {
        let call = self.begin_allreduce(data.len(), DType::F32, &how)?;
        self.run_allreduce(&call, data, &how)
    }

    /// Allreduce of f16 data with f32 accumulation (converted once on entry and once on exit;
    /// the partial sums travel as f32).
    ///
    /// # Errors
    /// As [`Communicator::allreduce`].
    pub fn allreduce_f16(
        &mut self,
        data: &mut [f16],
        how: AllReduce<'_>,
    ) -> Result<(), CollectiveError> {
        let call = self.begin_allreduce(data.len(), DType::F16, &how)?;
        let mut acc = kernels::f16_to_f32_vec(data);
        self.run_allreduce(&call, &mut acc, &how)?;
        kernels::f32_to_f16(&acc, data);
        Ok(())
    }

    /// Allreduce of bf16 data with f32 accumulation.
    ///
    /// # Errors
    /// As [`Communicator::allreduce`].
    pub fn allreduce_bf16(
        &mut self,
        data: &mut [bf16],
        how: AllReduce<'_>,
    ) -> Result<(), CollectiveError> {
        let call = self.begin_allreduce(data.len(), DType::BF16, &how)?;
        let mut acc = kernels::bf16_to_f32_vec(data);
        self.run_allreduce(&call, &mut acc, &how)?;
        kernels::f32_to_bf16(&acc, data);
        Ok(())
    }

    /// The algorithm `auto` (or an explicit setting) resolves to for `bytes` of f32 data: with
    /// link costs, the [`crate::cost::choose`] pick (made once per size); without, the fixed
    /// `small_bytes` threshold.
    pub fn resolve_algo(&mut self, algo: Option<Algo>, bytes: usize) -> Algo {
        match algo.unwrap_or(self.config().algo) {
            Algo::Auto => match self.pick(bytes) {
                Some(picked) => picked,
                None if bytes < self.config().small_bytes => Algo::Tree,
                None if self.topology().is_hierarchical() => Algo::Hier,
                None => Algo::Ring,
            },
            other => other,
        }
    }

    /// Broadcast `data` from `root` to every rank, in place. The shape fingerprint is `[len]`.
    ///
    /// # Errors
    /// As [`Communicator::allreduce`]; [`CollectiveError::Invalid`] for a root out of range.
    pub fn broadcast<T: Element>(
        &mut self,
        data: &mut [T],
        root: usize,
    ) -> Result<(), CollectiveError> {
        let call = self.begin(
            Op::Broadcast,
            fingerprint_dims(&[data.len()]),
            T::DTYPE.to_wire(),
        )?;
        if root >= self.world() {
            return Err(self.invalid(
                &call,
                format!("root {root} out of range for world {}", self.world()),
            ));
        }
        bcast::broadcast(self, &call, bytemuck::cast_slice_mut(data), root)
    }

    /// Wait until every rank has called `barrier` for this sequence number.
    ///
    /// # Errors
    /// As [`Communicator::allreduce`].
    pub fn barrier(&mut self) -> Result<(), CollectiveError> {
        let call = self.begin(Op::Barrier, 0, 0)?;
        bcast::barrier(self, &call)
    }

    fn begin_allreduce(
        &mut self,
        len: usize,
        dtype: DType,
        how: &AllReduce<'_>,
    ) -> Result<Call, CollectiveError> {
        let fp = fingerprint_dims(how.dims.unwrap_or(&[len]));
        let call = self.begin(Op::AllReduce, fp, dtype.to_wire())?;
        if let Some(d) = how.dims {
            if d.iter().product::<usize>() != len {
                return Err(self.invalid(&call, format!("shape {d:?} does not fit {len} elements")));
            }
        }
        Ok(call)
    }

    fn run_allreduce(
        &mut self,
        call: &Call,
        data: &mut [f32],
        how: &AllReduce<'_>,
    ) -> Result<(), CollectiveError> {
        let mean = how.op == ReduceOp::Mean;
        match self.resolve_algo(how.algo, data.len() * 4) {
            Algo::Tree => tree::allreduce(self, call, data, mean),
            Algo::Hier => hier::allreduce(self, call, data, mean),
            _ => ring::allreduce(self, call, data, mean),
        }
    }
}
