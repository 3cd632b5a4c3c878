//! Writing frames' bytes to a TCP socket: vectored `send` of a frame's parts, either as much as
//! the socket takes now or all of it (waiting in `SO_SNDTIMEO` slices until a stop is asked).
//! Shared by the plain TCP sink and the TLS sink, which hands it ciphertext.

use socket2::Socket;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};

fn send_parts(
    sock: &Socket,
    parts: &[&[u8]],
    skip: usize,
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut skip = skip;
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        slices.push(IoSlice::new(&p[skip..]));
        skip = 0;
    }
    if slices.is_empty() {
        return Ok(0);
    }
    sock.send_vectored_with_flags(&slices, flags | libc::MSG_NOSIGNAL)
}

/// Hand as much of `parts` to the socket as it takes now, without waiting; the bytes taken.
/// (Shared with the TLS sink, which hands it ciphertext.)
pub(crate) fn send_now(sock: &Socket, parts: &[&[u8]]) -> io::Result<usize> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        match send_parts(sock, parts, done, libc::MSG_DONTWAIT) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Hand all of `parts` to the socket, waiting for room in `SO_SNDTIMEO` slices and giving up
/// between slices once `stop` is set. (Shared with the TLS sink.)
pub(crate) fn send_all(sock: &Socket, parts: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        match send_parts(sock, parts, done, 0) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            // SO_SNDTIMEO slice: the peer is slow, not necessarily gone; check for shutdown.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
