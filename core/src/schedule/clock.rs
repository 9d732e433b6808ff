//! Injectable clocks in milliseconds since the Unix epoch: system, manual (tests) and tokio-driven.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// The system's wall clock. Times before the epoch read as 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Sets the time (it may go backwards; the wheel ignores that).
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`, saturating at `u64::MAX`; returns the new time.
    pub fn advance(&self, ms: u64) -> u64 {
        let mut current = self.0.load(Ordering::SeqCst);
        loop {
            let next = current.saturating_add(ms);
            match self.0.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wall-clock time derived from tokio's monotonic clock: `base_ms` plus the time
/// elapsed on `tokio::time::Instant` since the clock was made.
///
/// Under `tokio::time::pause()` it moves exactly as paused time does, which makes
/// driver tests exact. In production it does not follow wall-clock adjustments
/// (NTP steps, suspend); prefer [`SystemClock`] there.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the system's current wall-clock time.
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now_ms())
    }

    /// Starts at `base_ms`, now.
    pub fn starting_at(base_ms: u64) -> Self {
        TokioClock { base_ms, base: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_saturates() {
        let clock = ManualClock::new(5);
        let other = clock.clone();
        other.advance(10);
        assert_eq!(clock.now_ms(), 15);
        clock.set(u64::MAX - 1);
        assert_eq!(other.advance(10), u64::MAX);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
