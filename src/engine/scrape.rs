//! The engine's side of the metrics (owns no state of its own): the shared `Metrics` given at wiring, and the counts a scrape reads (`Input::Metrics`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hush_core::record::{Entry, Kind, Phase};
use hush_core::schedule::Clock;
use hush_core::server_acl::AclEdit;
use tracing::warn;

use super::Engine;
use crate::enforce::RoomWriter;
use crate::metrics::{action_kind, Metrics, Outcome, Snapshot};

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Counts into the process's metrics instead of the engine's own fresh set.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this engine counts into (tests read them).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The counts a scrape reports: from the index, the view, the holds and the timers,
    /// and one aggregate query of the ledger.
    pub(super) fn metrics_snapshot(&self) -> Snapshot {
        let mut rules: BTreeMap<String, usize> = self.view.lists.keys().map(|l| (l.clone(), 0)).collect();
        for (list, counts) in self.index.list_counts() {
            rules.insert(list, counts.effective);
        }
        let restrictions = self.ledger.in_force_by_kind().unwrap_or_else(|e| {
            warn!("cannot count the restrictions in force for the metrics: {e:#}");
            Vec::new()
        });
        Snapshot {
            rules: rules.into_iter().collect(),
            restrictions,
            held_rules: self.guard.holds.waiting().values().map(Vec::len).sum(),
            timers_pending: self.expiry.pending(),
            rooms_loaded: self.view.rooms.values().filter(|r| r.is_some()).count(),
            rooms_total: self.view.rooms.len(),
        }
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// The room's power-levels write was answered: it is no longer in flight, and the time
    /// since its oldest edit was decided is observed.
    pub(super) fn power_write_answered(&mut self, room_id: &str) {
        if let Some(at) = self.power.done(room_id) {
            self.metrics.decision_to_write(Duration::from_millis(self.now().saturating_sub(at)));
        }
    }

    /// One user's edit in a power-levels write: written (`Ok(false)`), left to someone
    /// else's change (`Ok(true)`) or failed (`Err`), by the phase of hush's entry.
    pub(super) fn count_level_write(&self, entry: Option<&Entry>, result: Result<bool, ()>) {
        let lifting = match entry.map(|e| e.phase) {
            Some(Phase::Applying) => false,
            Some(Phase::Lifting) => true,
            _ => return,
        };
        let outcome = match result {
            Ok(false) => Outcome::Done,
            Ok(true) => Outcome::Overridden,
            Err(()) => Outcome::Failed,
        };
        self.metrics.action(action_kind(Kind::MutePowerLevel, lifting), outcome);
    }

    /// A server ACL write: each server it denies and each it no longer denies.
    pub(super) fn count_acl_write(&self, edit: &AclEdit, outcome: Outcome) {
        for _ in &edit.add {
            self.metrics.action(action_kind(Kind::ServerDeny, false), outcome);
        }
        for _ in &edit.remove {
            self.metrics.action(action_kind(Kind::ServerDeny, true), outcome);
        }
    }

    /// An admin call's result (a suspension or its lift); not a call, or not an action
    /// hush took (already suspended, an admin), counts nothing.
    pub(super) fn count_account_call(&self, suspend: bool, outcome: &crate::suspension::Outcome) {
        use crate::suspension::Outcome as Call;
        let outcome = match outcome {
            Call::Done => Outcome::Done,
            Call::Failed(_) => Outcome::Failed,
            Call::AlreadySuspended | Call::IsAdmin | Call::Unknown(_) | Call::Retry => return,
        };
        self.metrics.action(action_kind(Kind::Suspension, !suspend), outcome);
    }
}
