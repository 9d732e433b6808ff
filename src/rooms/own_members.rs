//! hush's own membership writes in a room that sync has not brought back yet, so that an older echo of its own is not read as someone else's change.
//!
//! A membership write's answer reaches the engine before sync brings the event back, and
//! the view takes the written membership at once. The echo of an earlier write of hush's
//! (a mute, then a ban of the same member) may still be on its way: applying it would roll
//! the view back, and the ban would look undone by someone else. Each member's awaited
//! writes are kept in order, by membership and, when the answer gave one, by event id (a
//! write whose answer was lost has none).

use std::collections::HashMap;

use hush_core::reconcile::Membership;
use hush_core::record::{Entry, Kind};

/// At most this many writes per member are awaited: a write whose echo came back before
/// its answer is never removed, and must not make the list grow.
const AWAITED: usize = 4;

/// A membership hush wrote, with the event id its answer gave (none if it was lost).
type Awaited = (Membership, Option<Box<str>>);

#[derive(Debug, Default, Clone)]
pub struct OwnMemberWrites {
    /// Per member, the memberships hush wrote whose events sync has not delivered, oldest
    /// first, with the event id when the answer gave one.
    awaited: HashMap<String, Vec<Awaited>>,
    /// Restrictions (or lifts, `true`) whose write failed for good: a retry refused after
    /// a lost answer means the first attempt was applied, and its event is still to come.
    failed: HashMap<String, (Entry, bool)>,
}

impl OwnMemberWrites {
    /// hush's write set `user`'s membership to `m` (its answer came back, with `event_id`
    /// if it gave one; or it was lost and the write may have happened).
    pub fn written(&mut self, user: &str, m: Membership, event_id: Option<&str>) {
        let awaited = self.awaited.entry(user.to_owned()).or_default();
        // The same membership twice in a row is one event at most: a repeated write changes
        // nothing (a retry refused after a lost answer, then another refused attempt, as the
        // model test found: the second awaited echo never came, and the first was taken for
        // a stale one).
        if let Some(last) = awaited.last_mut().filter(|(lm, _)| *lm == m) {
            if let Some(id) = event_id {
                last.1 = Some(id.into());
            }
            return;
        }
        if awaited.len() == AWAITED {
            awaited.remove(0);
        }
        awaited.push((m, event_id.map(Into::into)));
    }

    /// hush's restriction `entry` (or its lift) failed for good.
    pub fn failed(&mut self, entry: Entry, lifting: bool) {
        self.failed.insert(entry.user_id.clone(), (entry, lifting));
    }

    /// A later write of hush's for `user` was answered: an earlier one whose answer was
    /// lost no longer decides what the room shows.
    pub fn superseded(&mut self, user: &str) {
        self.failed.remove(user);
    }

    /// Whether hush's restriction (`lifting` false) or lift of `user` of this kind failed
    /// after a lost answer, with its event still to come.
    pub fn failed_as(&self, user: &str, kind: Kind, lifting: bool) -> bool {
        self.failed.get(user).is_some_and(|(e, l)| e.kind == kind && *l == lifting)
    }

    /// hush's restriction (`false`) or lift (`true`) of `user` that failed after a lost
    /// answer, by kind, whose event may still come: until it comes (or not), the room's view
    /// may not show it yet.
    pub fn failed_write(&self, user: &str) -> Option<(Kind, bool)> {
        self.failed.get(user).map(|(e, lifting)| (e.kind, *lifting))
    }

    /// A membership event for `user` shows `m`: hush's failed restriction (`false`) or lift
    /// (`true`) it shows after all, with its entry.
    pub fn take_failed(&mut self, user: &str, m: Membership) -> Option<(Entry, bool)> {
        let shows = |(e, lifting): &(Entry, bool)| match (e.kind, lifting) {
            (Kind::Ban, false) => m == Membership::Ban,
            (Kind::Ban, true) => m == Membership::Leave,
            (Kind::MuteMembership, false) => matches!(m, Membership::Mute | Membership::LeaveMute),
            (Kind::MuteMembership, true) => matches!(m, Membership::Join | Membership::Leave),
            _ => false,
        };
        if self.failed.get(user).is_some_and(shows) {
            return self.failed.remove(user);
        }
        None
    }

    /// A membership event for `user` (`event_id`) arrived: whether it is the echo of a write
    /// of hush's older than another awaited one (stale: the view already has the newer).
    /// An awaited write with an event id is matched by it, one without by membership: the
    /// model soak found the echo of hush's latest mute taken for the one of an earlier mute
    /// (by membership), so the lift written after it was taken for stale in turn.
    pub fn is_stale_echo(&mut self, user: &str, m: Membership, event_id: Option<&str>) -> bool {
        let Some(awaited) = self.awaited.get_mut(user) else { return false };
        let by_id = event_id.and_then(|id| awaited.iter().position(|(_, w)| w.as_deref() == Some(id)));
        let at = by_id.or_else(|| awaited.iter().position(|(wm, w)| *wm == m && w.is_none()));
        let Some(at) = at else { return false };
        awaited.drain(..=at);
        let stale = !awaited.is_empty();
        if awaited.is_empty() {
            self.awaited.remove(user);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_older_than_an_awaited_write_is_stale_and_the_last_is_not() {
        let mut w = OwnMemberWrites::default();
        w.written("@a:x", Membership::Mute, None);
        w.written("@a:x", Membership::Ban, None);
        assert!(w.is_stale_echo("@a:x", Membership::Mute, Some("$1")), "the mute's echo is older than the ban");
        assert!(!w.is_stale_echo("@a:x", Membership::Ban, Some("$2")), "the ban's echo is the latest");
        assert!(!w.is_stale_echo("@a:x", Membership::Mute, Some("$3")), "nothing awaited: applied");
        assert!(!w.is_stale_echo("@b:x", Membership::Join, Some("$4")));
    }

    #[test]
    fn the_same_membership_written_twice_awaits_one_echo() {
        let mut w = OwnMemberWrites::default();
        w.written("@a:x", Membership::Mute, None);
        w.written("@a:x", Membership::Mute, None);
        assert!(!w.is_stale_echo("@a:x", Membership::Mute, Some("$1")), "the one echo is the latest");
    }

    /// The model soak (seed 1796063770656786516): mute, lift, mute again, then a lift whose
    /// answer was lost. The second mute's echo was matched with the first mute's entry, so
    /// it read as stale, and so did the lost lift's echo after it: the view kept the mute
    /// and the lift's entry was never settled.
    #[test]
    fn the_echo_of_the_latest_write_is_matched_by_its_id() {
        let mut w = OwnMemberWrites::default();
        w.written("@a:x", Membership::Mute, Some("$1"));
        w.written("@a:x", Membership::Join, Some("$2"));
        w.written("@a:x", Membership::Mute, Some("$3"));
        w.written("@a:x", Membership::Join, None);
        assert!(w.is_stale_echo("@a:x", Membership::Mute, Some("$3")), "older than the lost lift");
        assert!(!w.is_stale_echo("@a:x", Membership::Join, Some("$4")), "the lost lift's echo is the latest");
    }
}
