//! The progress timeout: how long the coordinator waits for a round's reports before it
//! declares the round stuck (`cluster.progress_timeout_ms`).
//!
//! The rule:
//! - set in the manifest: that value for every round, except the first round after the start
//!   or a membership change, which gets at least [`STARTUP_MS`] (joining the mesh, loading and
//!   broadcasting the state come before it);
//! - not set (the default): derived from the round times measured so far,
//!   `max(FLOOR_MS, FACTOR x the slowest round seen)`; the first round after the start or a
//!   membership change, and the first round that evaluates or checkpoints (rank 0's duties
//!   add to its time, unmeasured until then), get [`STARTUP_MS`] instead. The first round
//!   after the start or a change is not measured (start-up or the change's pause is in it).
//!
//! The end-of-job waits (the model save, the final hash exchange) have their own bound,
//! [`ProgressClock::end_timeout`]: the set value, or derived `max(STARTUP_MS, FACTOR x the
//! slowest round seen)` (a save is a checkpoint's work, unmeasured as such).

use std::time::Duration;

/// Floor of the derived timeout.
pub(crate) const FLOOR_MS: u64 = 10_000;
/// Multiple of the slowest round seen that the derived timeout allows.
pub(crate) const FACTOR: f64 = 10.0;
/// The first round after the start or a membership change (and, derived, the first round
/// with an evaluation or a checkpoint) waits at least this long.
pub(crate) const STARTUP_MS: u64 = 120_000;

/// The progress timeout of each round. See the module docs for the rule.
#[derive(Debug, Clone)]
pub(crate) struct ProgressClock {
    fixed_ms: Option<u64>,
    slowest_ms: f64,
    duty_seen: bool,
    first: bool,
}

impl ProgressClock {
    /// `fixed_ms`: `cluster.progress_timeout_ms` when set.
    pub(crate) fn new(fixed_ms: Option<u64>) -> Self {
        ProgressClock {
            fixed_ms,
            slowest_ms: 0.0,
            duty_seen: false,
            first: true,
        }
    }

    /// The timeout of the next round; `duty`: its plan evaluates or checkpoints.
    pub(crate) fn timeout(&self, duty: bool) -> Duration {
        let ms = match self.fixed_ms {
            Some(f) if self.first => f.max(STARTUP_MS),
            Some(f) => f,
            None if self.first || (duty && !self.duty_seen) => STARTUP_MS,
            None => ((self.slowest_ms * FACTOR).ceil() as u64).max(FLOOR_MS),
        };
        Duration::from_millis(ms)
    }

    /// The bound of an end-of-job wait (the model save, the final `Finish`): the set value,
    /// else `max(STARTUP_MS, FACTOR x the slowest round)`.
    pub(crate) fn end_timeout(&self) -> Duration {
        let ms = match self.fixed_ms {
            Some(f) => f,
            None => ((self.slowest_ms * FACTOR).ceil() as u64).max(STARTUP_MS),
        };
        Duration::from_millis(ms)
    }

    /// A round completed in `round_ms`; `duty` as in [`ProgressClock::timeout`]. The first
    /// round after the start or a membership change is not measured (start-up or the pause
    /// of the change is in its time).
    pub(crate) fn record(&mut self, round_ms: f64, duty: bool) {
        if round_ms.is_finite() && !self.first {
            self.slowest_ms = self.slowest_ms.max(round_ms);
            self.duty_seen |= duty;
        }
        self.first = false;
    }

    /// The membership changed: the next round is a first round again.
    pub(crate) fn restart(&mut self) {
        self.first = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn the_derived_timeout_is_startup_then_a_multiple_of_the_slowest_round_with_a_floor() {
        let mut c = ProgressClock::new(None);
        assert_eq!(ms(c.timeout(false)), STARTUP_MS);
        c.record(90_000.0, true);
        assert_eq!(
            ms(c.timeout(false)),
            FLOOR_MS,
            "the first round is not measured"
        );
        assert_eq!(ms(c.timeout(true)), STARTUP_MS, "nor its duties");
        c.record(50.0, false);
        assert_eq!(
            ms(c.timeout(false)),
            FLOOR_MS,
            "10 x 50 ms is below the floor"
        );
        c.record(4_000.0, false);
        assert_eq!(ms(c.timeout(false)), 40_000, "10 x the slowest round");
        c.record(100.0, false);
        assert_eq!(ms(c.timeout(false)), 40_000, "the slowest, not the last");
        assert_eq!(
            ms(c.timeout(true)),
            STARTUP_MS,
            "first evaluation is unmeasured"
        );
        c.record(5_000.0, true);
        assert_eq!(ms(c.timeout(true)), 50_000);
        c.restart();
        assert_eq!(
            ms(c.timeout(false)),
            STARTUP_MS,
            "after a membership change"
        );
    }

    #[test]
    fn the_end_timeout_is_the_set_value_or_derived_with_the_startup_floor() {
        let mut c = ProgressClock::new(None);
        assert_eq!(ms(c.end_timeout()), STARTUP_MS);
        c.record(1.0, false);
        c.record(30_000.0, false);
        assert_eq!(ms(c.end_timeout()), 300_000, "10 x the slowest round");
        assert_eq!(ms(ProgressClock::new(Some(1_500)).end_timeout()), 1_500);
    }

    #[test]
    fn a_fixed_timeout_holds_for_every_round_but_the_first() {
        let mut c = ProgressClock::new(Some(2_000));
        assert_eq!(ms(c.timeout(false)), STARTUP_MS);
        c.record(30_000.0, false);
        assert_eq!(ms(c.timeout(false)), 2_000);
        assert_eq!(ms(c.timeout(true)), 2_000);
        let mut long = ProgressClock::new(Some(500_000));
        assert_eq!(ms(long.timeout(false)), 500_000);
        long.record(1.0, false);
        assert_eq!(ms(long.timeout(false)), 500_000);
    }
}
