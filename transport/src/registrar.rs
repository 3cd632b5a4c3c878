//! Registration, the one rendezvous path of every Lockstep process group: a coordinator takes
//! one authenticated connection per expected member within one deadline, hands each to the
//! caller's `admit` (read the member's registration, check it), refuses strangers and second
//! connections for a name that is already in, and on the deadline names who never came.
//!
//! The runtime's coordinator registers its workers through [`gather`] (keeping each connection as
//! the member's control link, checking model layouts); [`crate::Coordinator`] does the same for
//! process groups that only need a data mesh (benches, tests, embedders).

use crate::tcp::listener::Acceptor;
use crate::tcp::Conn;
use std::time::Instant;

/// Who is expected.
#[derive(Clone, Copy, Debug)]
pub enum Expected<'a> {
    /// Exactly these node names; the result is in this order.
    Names(&'a [String]),
    /// Any `n` distinct names; the result is in arrival order.
    Count(usize),
}

/// What `admit` decided about one authenticated connection.
pub enum Admit<T> {
    /// A member: keep it.
    Member(T),
    /// Not a member after all (the reason is logged); keep waiting for the others.
    Refuse(String),
}

/// Why [`gather`] stopped before everyone was in. The members gathered so far are handed back so
/// that the caller can tell them (an abort message) before closing their connections.
pub enum GatherError<T, E> {
    /// The deadline passed; `missing` names who never came.
    Missing {
        /// The missing names, or "k of n nodes (have: ...)" for [`Expected::Count`].
        missing: String,
        /// Members that did register.
        gathered: Vec<(String, T)>,
    },
    /// `admit` failed in a way that stops the whole registration.
    Fatal {
        /// The caller's error.
        error: E,
        /// Members that did register.
        gathered: Vec<(String, T)>,
    },
}

/// Gather every expected member from `acceptor` by `deadline`; see the module documentation.
///
/// # Errors
/// [`GatherError::Missing`] at the deadline, [`GatherError::Fatal`] when `admit` fails.
pub fn gather<T, E>(
    acceptor: &Acceptor,
    expected: Expected<'_>,
    deadline: Instant,
    mut admit: impl FnMut(&str, Conn) -> Result<Admit<T>, E>,
) -> Result<Vec<(String, T)>, GatherError<T, E>> {
    let want = match expected {
        Expected::Names(n) => n.len(),
        Expected::Count(n) => n,
    };
    let mut got: Vec<(String, T)> = Vec::with_capacity(want);
    while got.len() < want {
        let Some((peer, stream)) = acceptor.next(deadline) else {
            let missing = match expected {
                Expected::Names(names) => names
                    .iter()
                    .filter(|n| !got.iter().any(|(g, _)| g == *n))
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                Expected::Count(n) => {
                    let have: Vec<&str> = got.iter().map(|(g, _)| g.as_str()).collect();
                    format!("{} of {n} nodes (have: {})", n - got.len(), have.join(", "))
                }
            };
            return Err(GatherError::Missing {
                missing,
                gathered: got,
            });
        };
        if let Expected::Names(names) = expected {
            if !names.contains(&peer) {
                tracing::warn!(node = %peer, "refused {peer}: not a member of this group");
                continue;
            }
        }
        if got.iter().any(|(g, _)| *g == peer) {
            tracing::warn!(node = %peer, "a second connection claims an already registered node; closed");
            continue;
        }
        match admit(&peer, stream) {
            Ok(Admit::Member(m)) => got.push((peer, m)),
            Ok(Admit::Refuse(why)) => tracing::warn!(node = %peer, "registration refused: {why}"),
            Err(error) => {
                return Err(GatherError::Fatal {
                    error,
                    gathered: got,
                })
            }
        }
    }
    if let Expected::Names(names) = expected {
        got.sort_by_key(|(g, _)| names.iter().position(|n| n == g));
    }
    Ok(got)
}
