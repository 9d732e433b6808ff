//! One gate per account for hush's writes after a 429: the shared "not before" time the homeserver asked for, and the one-at-a-time turn until a write gets through.
//!
//! Without it, every write answered 429 sleeps its own `retry_after` and they all retry
//! at the same moment; only one wins and the others are answered 429 again (issue 15:
//! 527 of them in a 50-user burst over 20 rooms). With it, `enforce::with_retries` asks
//! for a [`Gate::turn`] before each attempt: while the account is rate-limited, writes
//! queue (first come, first served), each waits until the latest `retry_after` has
//! passed, and goes alone; the first that succeeds opens the gate, and writes started
//! afterwards go at once again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// The gate; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct Gate {
    /// `Some(t)`: the account is rate-limited, and no write may go before `t`.
    not_before: Arc<Mutex<Option<Instant>>>,
    /// Held by the one write going while the account is rate-limited.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A write's turn at a closed gate, held through its attempt.
pub struct Turn(#[allow(dead_code)] OwnedMutexGuard<()>);

impl Gate {
    /// Waits until this write may go: at once while the gate is open; else for its turn
    /// and the gate's "not before" time, then holding the turn (`Some`) through its attempt.
    pub async fn turn(&self) -> Option<Turn> {
        self.not_before()?;
        let guard = self.turn.clone().lock_owned().await;
        // A write answered 429 while this one waited for its turn moves the time on.
        while let Some(at) = self.not_before() {
            if Instant::now() >= at {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        Some(Turn(guard))
    }

    /// A write was answered 429, to be retried after `wait`: no write goes before then.
    pub fn closed_for(&self, wait: Duration) {
        let at = Instant::now() + wait;
        let mut nb = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        *nb = Some(nb.map_or(at, |t| t.max(at)));
    }

    /// A write got through: the gate is open.
    pub fn opened(&self) {
        *self.not_before.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn not_before(&self) -> Option<Instant> {
        *self.not_before.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("not_before", &self.not_before()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_goes_at_once_closed_waits_and_goes_alone() {
        let gate = Gate::default();
        assert!(gate.turn().await.is_none(), "open: no turn to wait for");
        let start = Instant::now();
        gate.closed_for(Duration::from_secs(2));
        let first = gate.turn().await.expect("closed: a turn");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A second write waits for the first's attempt.
        let g = gate.clone();
        let second = tokio::spawn(async move {
            let _t = g.turn().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished(), "one at a time");
        // The first is answered 429 again: the second waits for the new time too.
        gate.closed_for(Duration::from_secs(5));
        drop(first);
        assert_eq!(second.await.unwrap() - start, Duration::from_secs(8));
        gate.opened();
        assert!(gate.turn().await.is_none(), "open again");
    }
}
