//! Broadcast (binomial tree, chunked and pipelined) and barrier (dissemination).
//!
//! Broadcast: with ranks renumbered so that the root is 0, rank `v` receives from `v` minus its
//! highest set bit and forwards to `v + 2^k` for every `2^k` above that bit; the largest subtree
//! is served first. Pieces of at most `chunk_bytes` flow down the tree one after another, so a
//! rank forwards piece `j` while piece `j+1` is still on its way to it. Pieces are received
//! straight into place and sent from there (a socket reads into and writes from the caller's
//! data; over shared memory one copy out of a ring and one into each child's).
//!
//! Barrier: `ceil(log2 n)` rounds; in round `k` rank `r` signals `r + 2^k` and waits for
//! `r - 2^k`. Nobody leaves before everybody has arrived.

use super::comm::{Call, Communicator};
use super::kernels::split;
use super::CollectiveError;

/// Broadcast `bytes` from `root` to every rank (in place).
pub(crate) fn broadcast(
    c: &mut Communicator,
    call: &Call,
    bytes: &mut [u8],
    root: usize,
) -> Result<(), CollectiveError> {
    let all: Vec<usize> = (0..c.world()).collect();
    broadcast_among(c, call, bytes, &all, root)
}

/// Broadcast `bytes` from `members[root]` to the other `members` (global ranks; this rank must
/// be one of them), in place.
pub(crate) fn broadcast_among(
    c: &mut Communicator,
    call: &Call,
    bytes: &mut [u8],
    members: &[usize],
    root: usize,
) -> Result<(), CollectiveError> {
    let n = members.len();
    let Some(pos) = members.iter().position(|&m| m == c.rank()) else {
        return Err(c.invalid(call, format!("rank {} is not among {members:?}", c.rank())));
    };
    if n == 1 {
        return Ok(());
    }
    let v = (pos + n - root) % n;
    let high = if v == 0 {
        0
    } else {
        1usize << (usize::BITS - 1 - v.leading_zeros())
    };
    let parent = (v != 0).then(|| members[(v - high + root) % n]);
    let mut children = Vec::new();
    let mut mask = if v == 0 { 1 } else { high << 1 };
    while v + mask < n {
        children.push(members[(v + mask + root) % n]);
        mask <<= 1;
    }
    children.reverse();
    let pieces = bytes.len().div_ceil(c.config().chunk_bytes.max(1)).max(1);
    for j in 0..pieces {
        let pr = split(bytes.len(), pieces, j);
        if let Some(p) = parent {
            c.recv_slice(call, p, &mut bytes[pr.clone()])?;
        }
        for &child in &children {
            c.send_from(call, child, &bytes[pr.clone()])?;
        }
    }
    Ok(())
}

/// Block until every rank has entered the barrier.
pub(crate) fn barrier(c: &mut Communicator, call: &Call) -> Result<(), CollectiveError> {
    let (n, r) = (c.world(), c.rank());
    let mut d = 1;
    while d < n {
        c.send(call, (r + d) % n, lockstep_tensor::Buffer::zeroed(0))?;
        c.recv_buf(call, (r + n - d) % n, 0)?;
        d <<= 1;
    }
    Ok(())
}
