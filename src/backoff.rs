//! The wait between retries: starts at a first delay and doubles up to a maximum.

use std::time::Duration;

/// Doubling retry delays: `first`, `2 × first`, … capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
    tries: u32,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, current: first.min(max), tries: 0 }
    }

    /// The delay to wait now; the following one is double (at most `max`).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let wait = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        self.tries = self.tries.saturating_add(1);
        wait
    }

    /// The delay [`next`](Self::next) would return, without moving on.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// How many delays [`next`](Self::next) has given since the start or the last reset.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.first.min(self.max);
        self.tries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| b.next().as_secs()).collect()
    }

    #[test]
    fn doubles_up_to_the_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(secs(&mut b, 8), [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.tries(), 8);
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(secs(&mut b, 10), [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn current_does_not_move_on() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.current(), Duration::from_secs(1));
        assert_eq!(b.current(), Duration::from_secs(1));
        b.next();
        assert_eq!(b.current(), Duration::from_secs(2));
        assert_eq!(b.tries(), 1);
    }

    #[test]
    fn reset_starts_again() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        secs(&mut b, 10);
        b.reset();
        assert_eq!(b.tries(), 0);
        assert_eq!(secs(&mut b, 3), [1, 2, 4]);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..200 {
            b.next();
        }
        assert_eq!(b.next(), Duration::MAX);
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(secs(&mut b, 2), [5, 5]);
    }
}
