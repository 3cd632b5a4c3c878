//! How far rounds are granted: the window arithmetic of the two paces, kept apart so it can be
//! tested. The coordinator keeps up to [`GRANT_WINDOW`] rounds granted ahead of the round it
//! collects next; workers run granted rounds back to back, so the window is what lets the
//! coordinator stay off the critical path while still stopping everyone at a round boundary.

use crate::control::protocol::GRANT_WINDOW;

/// Batch: after collecting `round` with rounds below `granted` granted, the new end of the
/// window when half of it is used (`None`: leave it), never past `total`.
pub(crate) fn top_up(granted: u64, round: u64, total: u64) -> Option<u64> {
    (granted < total && granted - (round + 1) <= GRANT_WINDOW / 2)
        .then(|| (round + 1 + GRANT_WINDOW).min(total))
}

/// Stream: how far rounds may be granted while `round` is next: no further than every worker's
/// producers have delivered (`available`), a window ahead, the job's `total`, and, in arrival
/// order with checkpoints every `every` rounds, not across the next checkpoint round (its
/// offsets are known only once it is collected).
pub(crate) fn stream_upto(
    available: u64,
    round: u64,
    arrival_every: Option<u64>,
    total: u64,
) -> u64 {
    let limit = match arrival_every {
        Some(every) if every > 0 => (round / every + 1) * every,
        _ => u64::MAX,
    };
    available
        .min(round + 1 + GRANT_WINDOW)
        .min(limit)
        .min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_window_is_topped_up_at_half_and_never_past_the_job() {
        let w = GRANT_WINDOW;
        // Just granted a full window from 0: nothing to do until half of it is used.
        assert_eq!(top_up(w, 0, 1000), None);
        assert_eq!(top_up(w, w / 2 - 2, 1000), None);
        // Half used: a full window ahead of the next round.
        assert_eq!(top_up(w, w / 2 - 1, 1000), Some(w / 2 + w));
        // Near the end: up to the last round, then nothing more.
        assert_eq!(top_up(1000 - 2, 1000 - 2 - w / 2 - 1, 1000), Some(1000));
        assert_eq!(top_up(1000, 995, 1000), None);
    }

    #[test]
    fn a_stream_is_granted_only_what_every_worker_can_fill() {
        let w = GRANT_WINDOW;
        // Producers are ahead: a window.
        assert_eq!(stream_upto(10_000, 5, None, u64::MAX), 6 + w);
        // Producers are behind: only the rounds they filled.
        assert_eq!(stream_upto(7, 5, None, u64::MAX), 7);
        // The job's own end.
        assert_eq!(stream_upto(10_000, 5, None, 9), 9);
        // Arrival order, checkpoints every 50 rounds: never across round 50, then past it.
        assert_eq!(stream_upto(10_000, 5, Some(50), u64::MAX), 50.min(6 + w));
        assert_eq!(stream_upto(10_000, 49, Some(50), u64::MAX), 50);
        assert_eq!(stream_upto(10_000, 50, Some(50), u64::MAX), 100.min(51 + w));
        // Deterministic order (no arrival limit) ignores the checkpoint cadence.
        assert_eq!(stream_upto(10_000, 49, None, u64::MAX), 50 + w);
    }
}
