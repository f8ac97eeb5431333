//! The one retry pause every service uses: doubling from a first delay up to
//! a cap, optionally with ±20% jitter, cut short by shutdown.
//!
//! The schedule itself is `backon`'s exponential one; this type adds what a
//! service loop needs around it: waiting that ends on shutdown, a reset once
//! the thing retried works again, and the n-th delay for schedules that are
//! counted elsewhere (a message's deliveries, the client's reconnects).

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// A doubling pause: `first`, `2 × first`, … up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: ExponentialBuilder,
    taken: u32,
    jitter: bool,
}

impl Backoff {
    /// Pauses doubling from `first` to `max`, without end.
    pub fn new(first: Duration, max: Duration) -> Self {
        let schedule = ExponentialBuilder::default()
            .with_factor(2.0)
            .with_min_delay(first)
            .with_max_delay(max.max(first))
            .without_max_times();
        Self { schedule, taken: 0, jitter: false }
    }

    /// Spreads each pause by ±20%, so that many clients failing together do
    /// not retry in step.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Starts the schedule again from its first pause.
    pub fn reset(&mut self) {
        self.taken = 0;
    }

    /// Whether a pause has been taken since the last reset.
    pub fn started(&self) -> bool {
        self.taken > 0
    }

    /// The next pause, without moving the schedule (jitter aside, what
    /// [`next_delay`](Self::next_delay) returns next).
    pub fn upcoming(&self) -> Duration {
        self.nth(self.taken)
    }

    /// The next pause, moving the schedule on.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay_after(self.taken);
        self.taken = self.taken.saturating_add(1);
        delay
    }

    /// The pause after `attempt` earlier ones (0: the first pause), without
    /// moving the schedule: for retries counted elsewhere.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.spread(self.nth(attempt))
    }

    /// Sleeps for the next pause; returns `false` at once when `shutdown`
    /// fires first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    fn nth(&self, attempt: u32) -> Duration {
        // The cap is reached after a few dozen doublings at most.
        let steps = usize::try_from(attempt.min(64)).unwrap_or(64);
        let delay = self.schedule.build().nth(steps).unwrap_or_default();
        // The schedule computes in floating point: whole milliseconds.
        Duration::from_millis(u64::try_from((delay.as_secs_f64() * 1e3).round() as u128).unwrap_or(u64::MAX))
    }

    fn spread(&self, delay: Duration) -> Duration {
        if self.jitter { delay.mul_f64(0.8 + fastrand::f64() * 0.4) } else { delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_starts_again_on_reset() {
        let mut backoff = Backoff::new(100 * MS, 1_000 * MS);
        assert!(!backoff.started());
        let taken: Vec<_> = (0..6).map(|_| backoff.next_delay()).collect();
        assert_eq!(taken, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1_000 * MS, 1_000 * MS]);
        assert!(backoff.started());
        backoff.reset();
        assert!(!backoff.started());
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn the_nth_delay_does_not_move_the_schedule() {
        let backoff = Backoff::new(50 * MS, 500 * MS);
        assert_eq!(backoff.delay_after(0), 50 * MS);
        assert_eq!(backoff.delay_after(3), 400 * MS);
        assert_eq!(backoff.delay_after(u32::MAX), 500 * MS);
        assert!(!backoff.started());
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let backoff = Backoff::new(1_000 * MS, 1_000 * MS).with_jitter();
        let delays: Vec<_> = (0..200).map(|_| backoff.delay_after(0)).collect();
        assert!(delays.iter().all(|d| (800 * MS..=1_200 * MS).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter spreads the pauses");
    }

    #[tokio::test]
    async fn a_wait_ends_at_shutdown() {
        let mut backoff = Backoff::new(Duration::from_secs(3_600), Duration::from_secs(3_600));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await);
    }
}
