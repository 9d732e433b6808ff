//! Protections' counters: flood detection (more than N events in T from one user in one
//! room, a small ring of timestamps per active user) and escalation (a second trigger
//! within a window doubles the mute, up to a cap). Pure: times are milliseconds given by
//! the caller.
//!
//! Memory is bounded by the active users: a ring is allocated once per (room, user) when
//! they first speak, never per event, and rings idle longer than the window are dropped
//! at most once per window.

use std::collections::HashMap;

/// The flood limits: more than `max_events` events within `per_ms` is a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    pub max_events: u32,
    pub per_ms: u64,
}

/// What a flood looked like when it tripped: `events` events within `span_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    pub events: u32,
    pub span_ms: u64,
}

/// The last `max_events + 1` timestamps of one user in one room (a fixed ring).
#[derive(Debug)]
struct Ring {
    ts: Box<[u64]>,
    /// The next slot to write.
    head: usize,
    len: usize,
    /// The newest timestamp seen (for forgetting idle users).
    newest: u64,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring { ts: vec![0; cap].into_boxed_slice(), head: 0, len: 0, newest: 0 }
    }

    fn push(&mut self, t: u64) {
        self.ts[self.head] = t;
        self.head = (self.head + 1) % self.ts.len();
        self.len = (self.len + 1).min(self.ts.len());
        self.newest = self.newest.max(t);
    }

    /// The oldest timestamp kept (the ring is full when asked).
    fn oldest(&self) -> u64 {
        // Full: the slot to write next holds the oldest.
        self.ts[self.head]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Flood counters for every (room, user) seen recently.
#[derive(Debug)]
pub struct Flood {
    limits: FloodLimits,
    rooms: HashMap<String, HashMap<String, Ring>>,
    last_sweep: u64,
}

impl Flood {
    /// `max_events` is at least 1 (a smaller value is taken as 1).
    pub fn new(limits: FloodLimits) -> Flood {
        let limits = FloodLimits { max_events: limits.max_events.max(1), per_ms: limits.per_ms };
        Flood { limits, rooms: HashMap::new(), last_sweep: 0 }
    }

    pub fn limits(&self) -> FloodLimits {
        self.limits
    }

    /// Counts one event of `user` in `room` at `ts`; `Some` when it is the one too many.
    /// The user's count starts afresh after a trigger. `now` (the caller's clock) paces
    /// forgetting idle users.
    pub fn observe(&mut self, room: &str, user: &str, ts: u64, now: u64) -> Option<Trigger> {
        self.sweep(now);
        let cap = self.limits.max_events as usize + 1;
        let users = match self.rooms.get_mut(room) {
            Some(u) => u,
            None => self.rooms.entry(room.to_owned()).or_default(),
        };
        let ring = match users.get_mut(user) {
            Some(r) => r,
            None => users.entry(user.to_owned()).or_insert_with(|| Ring::new(cap)),
        };
        ring.push(ts);
        if ring.len < cap {
            return None;
        }
        let oldest = ring.oldest();
        let newest = ring.ts[(ring.head + cap - 1) % cap];
        let span = newest.abs_diff(oldest);
        if span < self.limits.per_ms {
            ring.clear();
            return Some(Trigger { events: cap as u32, span_ms: span });
        }
        None
    }

    /// Forgets one user's count everywhere (e.g. they were muted by other means).
    pub fn forget_user(&mut self, user: &str) {
        for users in self.rooms.values_mut() {
            users.remove(user);
        }
    }

    /// Drops the rings of users idle for longer than the window, at most once per window.
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep.saturating_add(self.limits.per_ms) {
            return;
        }
        self.last_sweep = now;
        let horizon = now.saturating_sub(self.limits.per_ms);
        for users in self.rooms.values_mut() {
            users.retain(|_, r| r.newest >= horizon && r.len > 0);
        }
        self.rooms.retain(|_, users| !users.is_empty());
    }

    /// How many (room, user) rings are kept.
    pub fn active(&self) -> usize {
        self.rooms.values().map(HashMap::len).sum()
    }
}

/// Escalation: a trigger within `within_ms` of the user's last one doubles their previous
/// mute, up to `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationLimits {
    pub within_ms: u64,
    pub max_ms: u64,
}

/// Each recently triggered user's last trigger and mute length.
#[derive(Debug)]
pub struct Escalation {
    limits: Option<EscalationLimits>,
    last: HashMap<String, (u64, u64)>,
}

impl Escalation {
    /// `None`: every trigger mutes for the base duration.
    pub fn new(limits: Option<EscalationLimits>) -> Escalation {
        Escalation { limits, last: HashMap::new() }
    }

    /// The mute length for a trigger of `user` at `now` whose base length is `base_ms`;
    /// remembered for the next trigger.
    pub fn mute_for(&mut self, user: &str, base_ms: u64, now: u64) -> u64 {
        let Some(limits) = self.limits else { return base_ms };
        self.last.retain(|_, (at, _)| now.saturating_sub(*at) < limits.within_ms);
        let length = match self.last.get(user) {
            Some((_, previous)) => previous.saturating_mul(2).min(limits.max_ms.max(base_ms)),
            None => base_ms,
        };
        self.last.insert(user.to_owned(), (now, length));
        length
    }

    /// Who tripped a protection within the window: (user, when, mute length), to be kept
    /// across restarts.
    pub fn records(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.last.iter().map(|(u, (at, len))| (u.as_str(), *at, *len))
    }

    /// Takes back what [`Escalation::records`] gave (at start): a later trigger escalates
    /// from it as if there had been no restart.
    pub fn restore(&mut self, records: impl IntoIterator<Item = (String, u64, u64)>) {
        self.last.extend(records.into_iter().map(|(u, at, len)| (u, (at, len))));
    }
}

/// Which protected rooms a protection watches: all of them, or only those listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Watched {
    #[default]
    All,
    /// These room ids (the configured aliases as they resolve).
    Only(std::collections::BTreeSet<String>),
}

impl Watched {
    pub fn watches(&self, room_id: &str) -> bool {
        match self {
            Watched::All => true,
            Watched::Only(rooms) => rooms.contains(room_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(max_events: u32, per_ms: u64) -> Flood {
        Flood::new(FloodLimits { max_events, per_ms })
    }

    #[test]
    fn the_event_one_too_many_within_the_window_trips() {
        let mut f = flood(10, 10_000);
        for i in 0..10 {
            assert_eq!(f.observe("!r", "@u", 1000 + i * 100, 1000), None, "event {i}");
        }
        assert_eq!(f.observe("!r", "@u", 2000, 2000), Some(Trigger { events: 11, span_ms: 1000 }));
    }

    #[test]
    fn as_many_as_allowed_spread_over_the_window_never_trip() {
        let mut f = flood(10, 10_000);
        // One event a second for a minute: 10 within any 10 s window, never 11.
        for i in 0..60u64 {
            assert_eq!(f.observe("!r", "@u", i * 1000, i * 1000), None, "event {i}");
        }
    }

    #[test]
    fn the_count_starts_afresh_after_a_trigger() {
        let mut f = flood(2, 10_000);
        assert_eq!(f.observe("!r", "@u", 0, 0), None);
        assert_eq!(f.observe("!r", "@u", 1, 0), None);
        assert!(f.observe("!r", "@u", 2, 0).is_some());
        assert_eq!(f.observe("!r", "@u", 3, 0), None);
        assert_eq!(f.observe("!r", "@u", 4, 0), None);
        assert!(f.observe("!r", "@u", 5, 0).is_some());
    }

    #[test]
    fn users_and_rooms_count_apart() {
        let mut f = flood(2, 10_000);
        for (room, user) in [("!a", "@u"), ("!a", "@v"), ("!b", "@u"), ("!a", "@u"), ("!a", "@v"), ("!b", "@u")] {
            assert_eq!(f.observe(room, user, 0, 0), None, "{room} {user}");
        }
        assert!(f.observe("!b", "@u", 0, 0).is_some());
    }

    #[test]
    fn a_full_ring_takes_more_events_without_allocating() {
        let mut f = flood(10, 1_000);
        for i in 0..11u64 {
            f.observe("!r", "@u", i * 1000, 0);
        }
        let ring = |f: &Flood| {
            let r = &f.rooms["!r"]["@u"];
            (r.ts.as_ptr() as usize, r.ts.len())
        };
        let before = ring(&f);
        let map_cap = f.rooms["!r"].capacity();
        for i in 11..10_000u64 {
            assert_eq!(f.observe("!r", "@u", i * 1000, 0), None);
        }
        assert_eq!(ring(&f), before, "the same ring, the same size");
        assert_eq!(f.rooms["!r"].capacity(), map_cap);
        assert_eq!(f.active(), 1);
    }

    #[test]
    fn idle_users_are_forgotten() {
        let mut f = flood(10, 10_000);
        for u in 0..100 {
            f.observe("!r", &format!("@u{u}"), 0, 0);
        }
        assert_eq!(f.active(), 100);
        f.observe("!r", "@late", 30_000, 30_000);
        assert_eq!(f.active(), 1, "only the user seen within the window is kept");
    }

    #[test]
    fn a_zero_limit_is_taken_as_one() {
        let mut f = flood(0, 10_000);
        assert_eq!(f.observe("!r", "@u", 0, 0), None);
        assert!(f.observe("!r", "@u", 1, 0).is_some());
    }

    #[test]
    fn escalation_doubles_within_the_window_up_to_the_cap() {
        let day = 86_400_000;
        let mut e = Escalation::new(Some(EscalationLimits { within_ms: day, max_ms: 35 * 60_000 }));
        let ten = 10 * 60_000;
        assert_eq!(e.mute_for("@u", ten, 0), ten);
        assert_eq!(e.mute_for("@u", ten, 1000), 2 * ten);
        assert_eq!(e.mute_for("@u", ten, 2000), 35 * 60_000, "capped");
        assert_eq!(e.mute_for("@v", ten, 2000), ten, "per user");
        assert_eq!(e.mute_for("@u", ten, 2000 + day), ten, "a day later it starts afresh");
    }

    #[test]
    fn restored_records_escalate_as_before_a_restart() {
        let limits = Some(EscalationLimits { within_ms: 1000, max_ms: 100 });
        let mut before = Escalation::new(limits);
        before.mute_for("@u", 10, 0);
        let kept: Vec<(String, u64, u64)> = before.records().map(|(u, a, l)| (u.to_owned(), a, l)).collect();
        let mut after = Escalation::new(limits);
        after.restore(kept);
        assert_eq!(after.mute_for("@u", 10, 500), 20, "within the window: doubled");
        let mut late = Escalation::new(limits);
        late.restore(vec![("@u".to_owned(), 0, 10)]);
        assert_eq!(late.mute_for("@u", 10, 1000), 10, "outside it: the base");
    }

    #[test]
    fn a_protection_watches_every_room_or_those_listed() {
        assert!(Watched::All.watches("!a:x"));
        let only = Watched::Only(["!a:x".to_owned()].into());
        assert!(only.watches("!a:x"));
        assert!(!only.watches("!b:x"));
    }

    #[test]
    fn without_escalation_every_trigger_is_the_base() {
        let mut e = Escalation::new(None);
        assert_eq!(e.mute_for("@u", 5, 0), 5);
        assert_eq!(e.mute_for("@u", 5, 1), 5);
    }
}
