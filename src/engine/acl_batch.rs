//! Server ACL edits waiting for each room's next `m.room.server_acl` write, the write in flight, when the next may go, and the rooms whose ACL the input being handled must look at again (pure: the engine passes the clock's time in and sends the write).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use hush_core::server_acl::AclEdit;

#[derive(Debug, Default)]
pub(super) struct AclBatch {
    /// `deny` edits waiting for each room's next ACL write.
    pending: HashMap<String, AclEdit>,
    /// Rooms with an ACL write in flight.
    in_flight: HashSet<String>,
    /// Rooms whose flush is on its way (now or at its time).
    flush_scheduled: HashSet<String>,
    /// When each room's last ACL write was sent (engine clock, ms).
    last_flush: HashMap<String, u64>,
    /// Rooms whose ACL the input being handled must reconcile at its end.
    dirty: BTreeSet<String>,
    /// Every protected room's ACL must be reconciled at the end of the input.
    dirty_all: bool,
    /// Rooms whose reconcile waited for the write in flight: reconciled when it is done.
    deferred: HashSet<String>,
}

impl AclBatch {
    /// Queues one `deny` edit (`add`, or remove). The first edit after a quiet batch
    /// window goes out at once (after the inputs already queued, so one input's edits are
    /// one event); later ones wait a window since the last write, or the write in flight,
    /// and go out together.
    ///
    /// Returns how long until the room's flush is due if one must be scheduled now (zero:
    /// at once); `None` if one is scheduled already or a write is in flight (its end
    /// flushes what is pending).
    pub(super) fn queue(
        &mut self,
        room_id: &str,
        entry: &str,
        add: bool,
        now_ms: u64,
        window: Duration,
    ) -> Option<Duration> {
        let pending = self.pending.entry(room_id.to_owned()).or_default();
        if add {
            pending.add(entry);
        } else {
            pending.remove(entry);
        }
        if self.in_flight.contains(room_id) || !self.flush_scheduled.insert(room_id.to_owned()) {
            return None;
        }
        let window = window.as_millis() as u64;
        let due = self.last_flush.get(room_id).map_or(0, |last| last.saturating_add(window));
        Some(Duration::from_millis(due.saturating_sub(now_ms)))
    }

    /// The room's flush is due: its pending edit, now in flight (sent at `now_ms`), or
    /// `None` if a write is in flight already or nothing is pending.
    pub(super) fn take(&mut self, room_id: &str, now_ms: u64) -> Option<AclEdit> {
        self.flush_scheduled.remove(room_id);
        if self.in_flight.contains(room_id) {
            return None;
        }
        let edit = self.pending.remove(room_id).filter(|e| !e.is_empty())?;
        self.in_flight.insert(room_id.to_owned());
        self.last_flush.insert(room_id.to_owned(), now_ms);
        Some(edit)
    }

    /// The room's write in flight is done; returns whether a reconcile waited for it.
    pub(super) fn done(&mut self, room_id: &str) -> bool {
        self.in_flight.remove(room_id);
        self.deferred.remove(room_id)
    }

    pub(super) fn in_flight(&self, room_id: &str) -> bool {
        self.in_flight.contains(room_id)
    }

    /// Reconcile this room's ACL when its write in flight is done.
    pub(super) fn defer(&mut self, room_id: &str) {
        self.deferred.insert(room_id.to_owned());
    }

    pub(super) fn has_pending(&self, room_id: &str) -> bool {
        self.pending.get(room_id).is_some_and(|e| !e.is_empty())
    }

    /// Drops a waiting edit of one entry (what it would do is done, or moot).
    pub(super) fn drop_entry(&mut self, room_id: &str, entry: &str) {
        if let Some(p) = self.pending.get_mut(room_id) {
            p.drop_entry(entry);
        }
    }

    /// Forgets a room no longer protected.
    pub(super) fn forget_room(&mut self, room_id: &str) {
        self.pending.remove(room_id);
        self.last_flush.remove(room_id);
        self.dirty.remove(room_id);
        self.deferred.remove(room_id);
    }

    /// Look at this room's ACL again at the end of the input.
    pub(super) fn mark(&mut self, room_id: &str) {
        self.dirty.insert(room_id.to_owned());
    }

    /// Look at every protected room's ACL again at the end of the input.
    pub(super) fn mark_all(&mut self) {
        self.dirty_all = true;
    }

    /// Whether some room's ACL is to be reconciled.
    pub(super) fn any_dirty(&self) -> bool {
        self.dirty_all || !self.dirty.is_empty()
    }

    /// The rooms to reconcile now, among `rooms` (the loaded protected rooms).
    pub(super) fn take_dirty(&mut self, rooms: impl Iterator<Item = String>) -> BTreeSet<String> {
        let all = std::mem::take(&mut self.dirty_all);
        let dirty = std::mem::take(&mut self.dirty);
        rooms.filter(|r| all || dirty.contains(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "!r:x";
    const WINDOW: Duration = Duration::from_millis(250);

    #[test]
    fn edits_of_one_window_are_one_write() {
        let mut b = AclBatch::default();
        assert_eq!(b.queue(ROOM, "a.org", true, 1_000, WINDOW), Some(Duration::ZERO));
        assert_eq!(b.queue(ROOM, "b.org", true, 1_000, WINDOW), None);
        assert_eq!(b.queue(ROOM, "c.org", false, 1_000, WINDOW), None);
        let edit = b.take(ROOM, 1_000).unwrap();
        assert_eq!(edit.add.iter().map(String::as_str).collect::<Vec<_>>(), ["a.org", "b.org"]);
        assert_eq!(edit.remove.iter().map(String::as_str).collect::<Vec<_>>(), ["c.org"]);
        assert!(b.in_flight(ROOM));
        assert_eq!(b.queue(ROOM, "d.org", true, 1_100, WINDOW), None, "a write is in flight");
        assert!(b.take(ROOM, 1_100).is_none(), "one write at a time");
        b.defer(ROOM);
        assert!(b.done(ROOM), "the deferred reconcile is due");
        assert!(b.has_pending(ROOM));
        assert_eq!(b.take(ROOM, 1_100).unwrap().add.len(), 1);
        b.done(ROOM);
        assert_eq!(b.queue(ROOM, "e.org", true, 1_200, WINDOW), Some(Duration::from_millis(150)));
    }

    #[test]
    fn a_dropped_edit_is_not_sent_and_dirty_rooms_are_taken_once() {
        let mut b = AclBatch::default();
        b.queue(ROOM, "a.org", true, 1_000, WINDOW);
        b.drop_entry(ROOM, "a.org");
        assert!(!b.has_pending(ROOM));
        assert!(b.take(ROOM, 1_000).is_none());
        let rooms = || ["!a".to_owned(), "!b".to_owned()].into_iter();
        b.mark("!b");
        assert_eq!(b.take_dirty(rooms()), BTreeSet::from(["!b".to_owned()]));
        assert!(b.take_dirty(rooms()).is_empty());
        b.mark_all();
        assert_eq!(b.take_dirty(rooms()).len(), 2);
    }
}
