//! Power-level edits waiting for each room's next `m.room.power_levels` write, and when that write may go (pure: the engine passes the clock's time in and sends the write).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use hush_core::power_levels::UserLevelEdit;

/// A user's level edit waiting for the room's next power-levels write: (level to set,
/// entry hush expects to find there).
type PendingLevel = (Option<i64>, Option<i64>);

#[derive(Debug, Default)]
pub(super) struct PowerBatch {
    /// Level edits waiting for each room's next power-levels write.
    pending_pl: HashMap<String, BTreeMap<String, PendingLevel>>,
    /// Rooms with a power-levels write in flight.
    pl_in_flight: HashSet<String>,
    /// Rooms whose flush is on its way (now or at its time).
    flush_scheduled: HashSet<String>,
    /// When each room's last power-levels write was sent (engine clock, ms): the next one
    /// waits until a batch window has passed since.
    last_pl_flush: HashMap<String, u64>,
    /// When the oldest edit waiting for each room's next write was queued (engine clock,
    /// ms), then, once sent, of the write in flight: the decision the write answers.
    queued_at: HashMap<String, u64>,
    sent_queued_at: HashMap<String, u64>,
}

impl PowerBatch {
    /// Queues one user's level change. The first change after a quiet batch window goes
    /// out at once (after the inputs already queued, so one rule over many members is
    /// still one event); later ones wait until a window has passed since the last write,
    /// or until the write in flight is done, and go out together. `expected` is the entry
    /// hush expects to find; a user queued again keeps the first expectation (the room has
    /// not been written for them in between).
    ///
    /// Returns how long until the room's flush is due if one must be scheduled now (zero:
    /// at once); `None` if one is scheduled already or a write is in flight (its end
    /// flushes what is pending).
    pub(super) fn queue(
        &mut self,
        room_id: &str,
        user_id: &str,
        level: Option<i64>,
        expected: Option<i64>,
        now_ms: u64,
        window: Duration,
    ) -> Option<Duration> {
        self.queued_at.entry(room_id.to_owned()).or_insert(now_ms);
        let pending = self.pending_pl.entry(room_id.to_owned()).or_default();
        let expected = pending.get(user_id).map_or(expected, |(_, first)| *first);
        pending.insert(user_id.to_owned(), (level, expected));
        if self.pl_in_flight.contains(room_id) || !self.flush_scheduled.insert(room_id.to_owned()) {
            return None;
        }
        let window = window.as_millis() as u64;
        let due = self.last_pl_flush.get(room_id).map_or(0, |last| last.saturating_add(window));
        Some(Duration::from_millis(due.saturating_sub(now_ms)))
    }

    /// The room's flush is due: its pending edits, now in flight (sent at `now_ms`), or
    /// `None` if a write is in flight already or nothing is pending.
    pub(super) fn take(&mut self, room_id: &str, now_ms: u64) -> Option<Vec<UserLevelEdit>> {
        self.flush_scheduled.remove(room_id);
        if self.pl_in_flight.contains(room_id) {
            return None;
        }
        let pending = self.pending_pl.remove(room_id)?;
        let queued_at = self.queued_at.remove(room_id);
        if pending.is_empty() {
            return None;
        }
        if let Some(at) = queued_at {
            self.sent_queued_at.insert(room_id.to_owned(), at);
        }
        let edits: Vec<UserLevelEdit> = pending
            .into_iter()
            .map(|(user_id, (level, expected))| UserLevelEdit { user_id, level, expected })
            .collect();
        self.pl_in_flight.insert(room_id.to_owned());
        self.last_pl_flush.insert(room_id.to_owned(), now_ms);
        Some(edits)
    }

    /// The room's write in flight is done (written or failed for good): when its oldest
    /// edit was queued (engine clock, ms), if known.
    pub(super) fn done(&mut self, room_id: &str) -> Option<u64> {
        self.pl_in_flight.remove(room_id);
        self.sent_queued_at.remove(room_id)
    }

    /// The room's write in flight is about to be retried (after a 429 or a fault): the
    /// edits waiting for the room's next write join it instead, but for users it already
    /// holds (`have`), whose edits wait for the next one. Empty when no write is in flight.
    pub(super) fn join(&mut self, room_id: &str, have: &[String]) -> Vec<UserLevelEdit> {
        if !self.pl_in_flight.contains(room_id) {
            return Vec::new();
        }
        let Some(pending) = self.pending_pl.get_mut(room_id) else { return Vec::new() };
        let joining: Vec<String> = pending.keys().filter(|u| !have.contains(u)).cloned().collect();
        let edits = joining
            .into_iter()
            .filter_map(|user_id| {
                let (level, expected) = pending.remove(&user_id)?;
                Some(UserLevelEdit { user_id, level, expected })
            })
            .collect();
        if pending.is_empty() {
            self.pending_pl.remove(room_id);
            self.queued_at.remove(room_id);
        }
        edits
    }

    /// Edits [`Self::join`] took that the write did not take after all: waiting again.
    pub(super) fn put_back(&mut self, room_id: &str, edits: Vec<UserLevelEdit>, now_ms: u64) {
        self.queued_at.entry(room_id.to_owned()).or_insert(now_ms);
        let pending = self.pending_pl.entry(room_id.to_owned()).or_default();
        for e in edits {
            pending.entry(e.user_id).or_insert((e.level, e.expected));
        }
    }

    /// Whether edits wait for the room's next write.
    pub(super) fn has_pending(&self, room_id: &str) -> bool {
        self.pending_pl.get(room_id).is_some_and(|p| !p.is_empty())
    }

    /// Drops a user's waiting edit in a room (what it would do is done, or moot).
    pub(super) fn drop_user(&mut self, room_id: &str, user_id: &str) {
        if let Some(p) = self.pending_pl.get_mut(room_id) {
            p.remove(user_id);
        }
    }

    /// Forgets a room no longer protected: its waiting edits and its last write's time.
    pub(super) fn forget_room(&mut self, room_id: &str) {
        self.pending_pl.remove(room_id);
        self.last_pl_flush.remove(room_id);
        self.queued_at.remove(room_id);
        self.sent_queued_at.remove(room_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "!r:x";
    const WINDOW: Duration = Duration::from_millis(250);

    #[test]
    fn the_first_edit_after_a_quiet_window_goes_at_once() {
        let mut b = PowerBatch::default();
        assert_eq!(b.queue(ROOM, "@a:x", Some(-1), Some(0), 1_000, WINDOW), Some(Duration::ZERO));
        // Scheduled already: the next edit joins the same write.
        assert_eq!(b.queue(ROOM, "@b:x", Some(-1), None, 1_000, WINDOW), None);
        let edits = b.take(ROOM, 1_000).unwrap();
        assert_eq!(edits.iter().map(|e| e.user_id.as_str()).collect::<Vec<_>>(), ["@a:x", "@b:x"]);
        b.done(ROOM);
        // A window after the last write: at once again.
        assert_eq!(b.queue(ROOM, "@c:x", Some(-1), None, 1_250, WINDOW), Some(Duration::ZERO));
    }

    #[test]
    fn later_edits_wait_a_window_since_the_last_write() {
        let mut b = PowerBatch::default();
        b.queue(ROOM, "@a:x", Some(-1), None, 1_000, WINDOW);
        b.take(ROOM, 1_000).unwrap();
        b.done(ROOM);
        assert_eq!(b.queue(ROOM, "@b:x", Some(-1), None, 1_100, WINDOW), Some(Duration::from_millis(150)));
    }

    #[test]
    fn edits_during_a_write_wait_until_it_is_done() {
        let mut b = PowerBatch::default();
        b.queue(ROOM, "@a:x", Some(-1), None, 1_000, WINDOW);
        b.take(ROOM, 1_000).unwrap();
        assert_eq!(b.queue(ROOM, "@b:x", Some(-1), None, 5_000, WINDOW), None, "a write is in flight");
        assert!(b.take(ROOM, 5_000).is_none(), "one write at a time");
        assert!(b.has_pending(ROOM));
        b.done(ROOM);
        let edits = b.take(ROOM, 5_000).unwrap();
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].user_id, "@b:x");
        assert!(!b.has_pending(ROOM));
    }

    #[test]
    fn a_user_queued_again_keeps_the_first_expectation() {
        let mut b = PowerBatch::default();
        b.queue(ROOM, "@a:x", Some(-1), Some(0), 1_000, WINDOW);
        b.queue(ROOM, "@a:x", Some(0), Some(-1), 1_000, WINDOW);
        let edits = b.take(ROOM, 1_000).unwrap();
        assert_eq!(edits, [UserLevelEdit { user_id: "@a:x".into(), level: Some(0), expected: Some(0) }]);
    }

    #[test]
    fn a_write_answers_the_decision_of_its_oldest_edit() {
        let mut b = PowerBatch::default();
        b.queue(ROOM, "@a:x", Some(-1), None, 1_000, WINDOW);
        b.queue(ROOM, "@b:x", Some(-1), None, 1_100, WINDOW);
        b.take(ROOM, 1_200).unwrap();
        // Queued while the write is in flight: the next write's decision.
        b.queue(ROOM, "@c:x", Some(-1), None, 1_300, WINDOW);
        assert_eq!(b.done(ROOM), Some(1_000));
        b.take(ROOM, 1_500).unwrap();
        assert_eq!(b.done(ROOM), Some(1_300));
        assert_eq!(b.done(ROOM), None, "nothing in flight");
    }

    #[test]
    fn edits_waiting_behind_a_write_join_its_retry_but_for_users_it_holds() {
        let mut b = PowerBatch::default();
        assert!(b.join(ROOM, &[]).is_empty(), "no write in flight");
        b.queue(ROOM, "@a:x", Some(-1), None, 1_000, WINDOW);
        b.take(ROOM, 1_000).unwrap();
        b.queue(ROOM, "@a:x", Some(0), Some(-1), 1_100, WINDOW);
        b.queue(ROOM, "@b:x", Some(-1), Some(0), 1_100, WINDOW);
        let joined = b.join(ROOM, &["@a:x".to_owned()]);
        assert_eq!(joined, [UserLevelEdit { user_id: "@b:x".into(), level: Some(-1), expected: Some(0) }]);
        assert!(b.has_pending(ROOM), "@a:x's second edit waits for the next write");
        b.put_back(ROOM, joined, 1_200);
        let joined = b.join(ROOM, &["@a:x".to_owned()]);
        assert_eq!(joined.len(), 1, "put back, joined again");
        b.done(ROOM);
        let next = b.take(ROOM, 1_300).unwrap();
        assert_eq!(next.iter().map(|e| e.user_id.as_str()).collect::<Vec<_>>(), ["@a:x"]);
    }

    #[test]
    fn a_dropped_edit_is_not_sent() {
        let mut b = PowerBatch::default();
        b.queue(ROOM, "@a:x", Some(-1), None, 1_000, WINDOW);
        b.drop_user(ROOM, "@a:x");
        assert!(!b.has_pending(ROOM));
        assert!(b.take(ROOM, 1_000).is_none());
    }
}
