//! Recursive-doubling allreduce, the latency-optimal algorithm for small messages: `log2(p)`
//! exchanges of the whole vector instead of the ring's `2(n-1)` steps.
//!
//! Non-power-of-two world sizes fold in first: with `p` the largest power of two `<= n`, rank
//! `p + i` sends its data to rank `i` and waits; ranks `0..p` run recursive doubling (at step
//! `k` rank `r` exchanges with `r ^ 2^k` and both compute `mine + theirs`); then rank `i` sends
//! the result back to `p + i`.
//!
//! Determinism: float addition is commutative, so both partners of an exchange compute the same
//! bits; by induction every rank of `0..p` holds identical bits after each step, and the folded
//! ranks receive a copy. The order of additions is fixed by the world size alone.
//!
//! Large vectors are cut into pieces of at most `chunk_bytes`; each piece is sent before the
//! partner's matching piece is received, so neither side waits on the other's queue.

use super::comm::{Call, Communicator};
use super::kernels::{divide, split, Consumer, Sink};
use super::CollectiveError;

/// Recursive-doubling allreduce of `data` in place; `mean` divides by the world size.
pub(crate) fn allreduce(
    c: &mut Communicator,
    call: &Call,
    data: &mut [f32],
    mean: bool,
) -> Result<(), CollectiveError> {
    let (n, r) = (c.world(), c.rank());
    if n == 1 {
        return Ok(());
    }
    let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let pieces = data
        .len()
        .div_ceil((c.config().chunk_bytes / 4).max(1))
        .max(1);
    if r >= p {
        send_all(c, call, r - p, data, pieces)?;
        return recv_all(c, call, r - p, data, pieces, Mode::Copy);
    }
    if r + p < n {
        recv_all(c, call, r + p, data, pieces, Mode::Accumulate)?;
    }
    let mut mask = 1;
    while mask < p {
        let partner = r ^ mask;
        for j in 0..pieces {
            let pr = split(data.len(), pieces, j);
            c.send_from(call, partner, bytemuck::cast_slice(&data[pr.clone()]))?;
            let mut consumer = Consumer::new(Sink::Accumulate(&mut data[pr.clone()]));
            c.recv_into(call, partner, pr.len() * 4, &mut consumer)?;
        }
        mask <<= 1;
    }
    if mean {
        divide(data, n);
    }
    if r + p < n {
        send_all(c, call, r + p, data, pieces)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    Copy,
    Accumulate,
}

fn send_all(
    c: &mut Communicator,
    call: &Call,
    peer: usize,
    data: &[f32],
    pieces: usize,
) -> Result<(), CollectiveError> {
    for j in 0..pieces {
        let piece = &data[split(data.len(), pieces, j)];
        c.send_from(call, peer, bytemuck::cast_slice(piece))?;
    }
    Ok(())
}

fn recv_all(
    c: &mut Communicator,
    call: &Call,
    peer: usize,
    data: &mut [f32],
    pieces: usize,
    mode: Mode,
) -> Result<(), CollectiveError> {
    for j in 0..pieces {
        let pr = split(data.len(), pieces, j);
        let bytes = pr.len() * 4;
        let dst = &mut data[pr];
        let mut consumer = Consumer::new(match mode {
            Mode::Copy => Sink::Copy(dst),
            Mode::Accumulate => Sink::Accumulate(dst),
        });
        c.recv_into(call, peer, bytes, &mut consumer)?;
    }
    Ok(())
}
