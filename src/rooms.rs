//! What hush knows of each protected room (version, creators, power levels, members, server ACL), kept current from sync, and the order a sync response's state events are applied in.

use std::collections::{HashMap, HashSet};

use hush_core::reconcile::{Membership, MuteStrategy};
use serde_json::Value;

mod acl;
mod member_events;
mod own_members;
pub use acl::AclView;
pub use member_events::MemberEvents;
pub use own_members::OwnMemberWrites;

/// The room an `m.room.tombstone` state event points to: `Ok(None)` for any other event,
/// `Err` (saying why) for a tombstone whose `replacement_room` is missing or not a room id.
pub fn tombstone_replacement(ev: &Value) -> Result<Option<String>, String> {
    let is_tombstone = ev.get("type").and_then(Value::as_str) == Some("m.room.tombstone")
        && ev.get("state_key").and_then(Value::as_str) == Some("");
    if !is_tombstone {
        return Ok(None);
    }
    match ev.pointer("/content/replacement_room") {
        Some(Value::String(r)) if matrix_sdk::ruma::RoomId::parse(r).is_ok() => Ok(Some(r.clone())),
        Some(Value::String(r)) => Err(format!("its replacement_room `{r}` is not a room id")),
        Some(_) => Err("its replacement_room is not a string".to_owned()),
        None => Err("it has no replacement_room".to_owned()),
    }
}

/// The state events of one room's sync update (its `state` section and its timeline, both
/// as JSON events) in the order the engine must apply them, so that no older event undoes
/// a newer one.
///
/// `state_is_after`: the state section is the room's state at the end of the timeline
/// (`state_after`, which matrix-sdk asks for with `use_state_after`). It then holds, for
/// each (type, state key) that changed, the event in force at the end: any other timeline
/// event for that key is older. Those are dropped, except hush's own (`own_user`), whose
/// echo the engine may be waiting for: they go first, before anything that may replace
/// them. Then come the state section's events the timeline does not hold (a gap before a
/// `limited` timeline, or a fork), then the timeline's state events in timeline order.
///
/// Otherwise (legacy `state`, the state at the start of the timeline) the state section
/// comes first and the timeline's state events follow in order: each is newer than the
/// state section.
pub fn in_order(state: Vec<Value>, state_is_after: bool, timeline: Vec<Value>, own_user: &str) -> Vec<Value> {
    let timeline = timeline.into_iter().filter(|e| state_key_of(e).is_some());
    if !state_is_after {
        return state.into_iter().chain(timeline).collect();
    }
    let event_id = |e: &Value| e.get("event_id").and_then(Value::as_str).map(str::to_owned);
    let final_ids: HashMap<(String, String), Option<String>> = state
        .iter()
        .filter_map(|e| state_key_of(e).map(|(t, k)| ((t.to_owned(), k.to_owned()), event_id(e))))
        .collect();
    let (mut out, mut kept, mut in_timeline) = (Vec::new(), Vec::new(), HashSet::new());
    for e in timeline {
        let id = event_id(&e);
        in_timeline.extend(id.clone());
        let Some((t, k)) = state_key_of(&e) else { continue };
        match final_ids.get(&(t.to_owned(), k.to_owned())) {
            None => kept.push(e),
            Some(final_id) if *final_id == id => kept.push(e),
            Some(_) if e.get("sender").and_then(Value::as_str) == Some(own_user) => out.push(e),
            Some(_) => {}
        }
    }
    out.extend(state.into_iter().filter(|e| event_id(e).is_none_or(|id| !in_timeline.contains(&id))));
    out.extend(kept);
    out
}

/// An event's (type, state key), if it is a state event.
fn state_key_of(ev: &Value) -> Option<(&str, &str)> {
    Some((ev.get("type")?.as_str()?, ev.get("state_key")?.as_str()?))
}

/// A protected room as hush sees it.
#[derive(Debug, Clone)]
pub struct RoomState {
    pub room_id: String,
    pub version: String,
    /// The room's creators in every room version: the `m.room.create` sender (and the
    /// legacy `creator` field), plus `additional_creators` from room version 12 on.
    pub creators: Vec<String>,
    /// Whether creators have unlimited power and no `users` entry (room version 12+).
    pub creators_privileged: bool,
    pub power_levels: Value,
    pub members: HashMap<String, Membership>,
    /// The power-levels event hush sent last and has not yet seen come back through
    /// sync: older power-levels events arriving meanwhile are stale and ignored. An event
    /// that replaces it (or replaces one applied after it) is newer and applied.
    pub awaiting_own_power_levels: Option<String>,
    /// The latest power-levels events applied (newest last), each with the event it names as
    /// replaced (`unsigned.replaces_state`): a write result arriving after its own event, or
    /// after an event replacing it, came back through sync is recognised, and an event some
    /// applied event replaced is stale.
    pub recent_power_levels: Vec<(String, Option<String>)>,
    /// Ids of the power-levels events applied since hush's awaited write (bounded like
    /// `recent_power_levels`): an event replacing one of them is newer than the write.
    pub after_own_power_levels: Vec<String>,
    /// The room's `m.room.server_acl`.
    pub server_acl: AclView,
    /// Member events hush wrote and has not yet seen come back through sync, by user:
    /// older member events of that user arriving meanwhile are stale and ignored (a
    /// rename from before a ban must not read as an unban).
    pub awaiting_own_member: HashMap<String, String>,
    /// The latest member events applied, per member, so a write answered after its event
    /// came back, and an older event delivered again, are recognised.
    pub recent_members: MemberEvents,
    /// hush's membership writes whose events sync has not brought back yet.
    pub own_members: OwnMemberWrites,
}

/// How many power-levels event ids `recent_power_levels` keeps.
const RECENT_POWER_LEVELS: usize = 16;

/// Room versions in which creators have unlimited power and no `users` entry.
fn creators_are_privileged(version: &str) -> bool {
    version.parse::<u32>().is_ok_and(|v| v >= 12) || version == "org.matrix.hydra.11"
}

impl RoomState {
    /// Builds the view from the room's full state (client-server `/state` events as JSON).
    pub fn from_state(room_id: &str, events: &[Value]) -> RoomState {
        let mut room = RoomState {
            room_id: room_id.to_owned(),
            version: "1".to_owned(),
            creators: Vec::new(),
            creators_privileged: false,
            power_levels: Value::Object(Default::default()),
            members: HashMap::new(),
            awaiting_own_power_levels: None,
            recent_power_levels: Vec::new(),
            awaiting_own_member: HashMap::new(),
            recent_members: MemberEvents::default(),
            after_own_power_levels: Vec::new(),
            server_acl: AclView::default(),
            own_members: OwnMemberWrites::default(),
        };
        for ev in events {
            room.apply_state(ev);
        }
        room
    }

    /// Applies one state event; returns the member whose membership changed, if any.
    pub fn apply_state(&mut self, ev: &Value) -> StateChange {
        let ty = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        let state_key = ev.get("state_key").and_then(Value::as_str);
        let content = ev.get("content").cloned().unwrap_or(Value::Null);
        match (ty, state_key) {
            ("m.room.create", Some("")) => {
                self.version = content.get("room_version").and_then(Value::as_str).unwrap_or("1").to_owned();
                self.creators.clear();
                self.creators_privileged = creators_are_privileged(&self.version);
                let legacy = content.get("creator").and_then(Value::as_str).filter(|_| !self.creators_privileged);
                for c in ev.get("sender").and_then(Value::as_str).into_iter().chain(legacy) {
                    if !self.creators.iter().any(|x| x == c) {
                        self.creators.push(c.to_owned());
                    }
                }
                if self.creators_privileged {
                    if let Some(Value::Array(more)) = content.get("additional_creators") {
                        self.creators.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
                StateChange::Other
            }
            ("m.room.power_levels", Some("")) => {
                let event_id = ev.get("event_id").and_then(Value::as_str);
                let replaces = ev.pointer("/unsigned/replaces_state").and_then(Value::as_str);
                // An event an applied one replaced is older: it must not undo the newer.
                if event_id.is_some_and(|id| self.recent_power_levels.iter().any(|(_, r)| r.as_deref() == Some(id))) {
                    if event_id == self.awaiting_own_power_levels.as_deref() {
                        self.awaiting_own_power_levels = None;
                    }
                    return StateChange::Stale;
                }
                if let Some(awaited) = &self.awaiting_own_power_levels {
                    if event_id == Some(awaited.as_str()) {
                        self.awaiting_own_power_levels = None;
                    } else if !replaces.is_some_and(|r| self.is_own_write_or_after(r)) {
                        return StateChange::Stale;
                    }
                }
                self.power_levels = if content.is_object() { content } else { Value::Object(Default::default()) };
                if let Some(id) = event_id {
                    if self.recent_power_levels.len() >= RECENT_POWER_LEVELS {
                        self.recent_power_levels.remove(0);
                    }
                    self.recent_power_levels.push((id.to_owned(), replaces.map(str::to_owned)));
                    if self.awaiting_own_power_levels.is_some() {
                        if self.after_own_power_levels.len() >= RECENT_POWER_LEVELS {
                            self.after_own_power_levels.remove(0);
                        }
                        self.after_own_power_levels.push(id.to_owned());
                    }
                }
                StateChange::PowerLevels
            }
            ("m.room.member", Some(user)) => {
                let event_id = ev.get("event_id").and_then(Value::as_str);
                let replaces = ev.pointer("/unsigned/replaces_state").and_then(Value::as_str);
                // An event an applied one replaced is older (sync may deliver it again after
                // the newer, as the chaos run saw): it must not undo the newer.
                if event_id.is_some_and(|id| self.recent_members.replaced(user, id)) {
                    tracing::debug!(room = %self.room_id, user, ?event_id, "a member event a newer one replaced: ignored");
                    return StateChange::Stale;
                }
                if let Some(id) = event_id {
                    self.recent_members.applied(user, id, replaces);
                }
                if let Some(awaited) = self.awaiting_own_member.get(user) {
                    if event_id == Some(awaited.as_str()) || replaces == Some(awaited.as_str()) {
                        // hush's own event, or one replacing it: from here on, in order.
                        self.awaiting_own_member.remove(user);
                    } else {
                        tracing::debug!(room = %self.room_id, user, ?event_id, awaited = %awaited, "an older member event: ignored");
                        return StateChange::Stale;
                    }
                }
                let membership = content
                    .get("membership")
                    .and_then(Value::as_str)
                    .and_then(Membership::parse)
                    .unwrap_or(Membership::Leave);
                if self.own_members.is_stale_echo(user, membership, event_id) {
                    return StateChange::Stale;
                }
                let old = self.members.insert(user.to_owned(), membership);
                tracing::trace!(room = %self.room_id, user, ?old, new = ?membership, ?event_id, "member event");
                if old == Some(membership) {
                    StateChange::Other
                } else {
                    StateChange::Member(user.to_owned())
                }
            }
            ("m.room.server_acl", Some("")) => {
                if self.server_acl.apply(ev) {
                    StateChange::ServerAcl
                } else {
                    StateChange::Stale
                }
            }
            _ => StateChange::Other,
        }
    }

    /// Records what hush's own power-levels write put in the room. When sync already
    /// delivered that event (and maybe newer ones), the view is already as fresh or fresher
    /// and is left alone; otherwise it takes the written content and ignores older events
    /// until its own comes back.
    pub fn own_power_levels_written(&mut self, content: Value, event_id: Option<String>) {
        let seen = |id: &String| self.recent_power_levels.iter().any(|(e, r)| e == id || r.as_ref() == Some(id));
        if event_id.as_ref().is_some_and(seen) {
            return;
        }
        self.power_levels = content;
        if event_id.is_some() {
            self.awaiting_own_power_levels = event_id;
            self.after_own_power_levels.clear();
        }
    }

    /// Records the membership hush's own member write set. When sync already delivered that
    /// event (or one replacing it), the view is as fresh or fresher and is left alone;
    /// otherwise it takes the written membership and ignores the user's older member events
    /// until its own comes back.
    /// Returns whether the view took the write (false: sync had brought it back already).
    pub fn own_member_written(&mut self, user: &str, membership: Membership, event_id: Option<String>) -> bool {
        if event_id.as_ref().is_some_and(|id| self.recent_members.seen(user, id)) {
            tracing::debug!(room = %self.room_id, user, ?event_id, now = ?self.members.get(user), "hush's member event came back before its answer");
            return false;
        }
        self.members.insert(user.to_owned(), membership);
        if let Some(id) = event_id {
            self.awaiting_own_member.insert(user.to_owned(), id);
        }
        true
    }

    /// Whether `id` is the power-levels event hush awaits, or one applied after it: an event
    /// replacing it is newer than hush's write.
    fn is_own_write_or_after(&self, id: &str) -> bool {
        self.awaiting_own_power_levels.as_deref() == Some(id) || self.after_own_power_levels.iter().any(|e| e == id)
    }

    pub fn membership(&self, user: &str) -> Membership {
        self.members.get(user).copied().unwrap_or(Membership::Leave)
    }

    pub fn strategy(&self, membership_room_versions: &[String]) -> MuteStrategy {
        if membership_room_versions.iter().any(|v| v == &self.version) {
            MuteStrategy::Membership
        } else {
            MuteStrategy::PowerLevel
        }
    }

    /// hush's own level here; None when it is a creator (unlimited).
    pub fn own_level(&self, own_user: &str) -> Option<i64> {
        if self.creators_privileged && self.creators.iter().any(|c| c == own_user) {
            None
        } else {
            Some(hush_core::power_levels::user_level(&self.power_levels, own_user))
        }
    }
}

/// What one state event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    Member(String),
    PowerLevels,
    /// An older power-levels, server ACL or membership event, superseded by hush's own newer one.
    Stale,
    /// The room's `m.room.server_acl` changed.
    ServerAcl,
    Other,
}

#[cfg(test)]
mod tests {
    #[test]
    fn tombstones_name_a_valid_replacement_or_say_what_is_wrong() {
        use super::tombstone_replacement as t;
        use serde_json::json;
        let ts = |content: Value| json!({"type": "m.room.tombstone", "state_key": "", "content": content});
        assert_eq!(t(&ts(json!({"replacement_room": "!new:x"}))), Ok(Some("!new:x".to_owned())));
        assert_eq!(t(&ts(json!({"replacement_room": "!v12roomid"}))), Ok(Some("!v12roomid".to_owned())));
        assert_eq!(t(&json!({"type": "m.room.name", "state_key": "", "content": {}})), Ok(None));
        let other_key = json!({"type": "m.room.tombstone", "state_key": "x", "content": {"replacement_room": "!n:x"}});
        assert_eq!(t(&other_key), Ok(None), "a tombstone has an empty state key");
        assert_eq!(t(&ts(json!({"body": "moved"}))), Err("it has no replacement_room".to_owned()));
        assert_eq!(t(&ts(json!({"replacement_room": 5}))), Err("its replacement_room is not a string".to_owned()));
        assert_eq!(
            t(&ts(json!({"replacement_room": "#alias:x"}))),
            Err("its replacement_room `#alias:x` is not a room id".to_owned())
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn reads_version_creators_levels_and_members() {
        let state = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@c:x", "content": {"room_version": "12", "additional_creators": ["@d:x"]}}),
            json!({"type": "m.room.power_levels", "state_key": "", "sender": "@c:x", "content": {"users": {"@hush:x": 100}}}),
            json!({"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "content": {"membership": "join"}}),
            json!({"type": "m.room.member", "state_key": "@b:x", "sender": "@b:x", "content": {"membership": "leave"}}),
        ];
        let r = RoomState::from_state("!r", &state);
        assert_eq!(r.version, "12");
        assert_eq!(r.creators, vec!["@c:x", "@d:x"]);
        assert_eq!(r.own_level("@hush:x"), Some(100));
        assert_eq!(r.own_level("@c:x"), None);
        assert_eq!(r.membership("@a:x"), Membership::Join);
        assert_eq!(r.membership("@nobody:x"), Membership::Leave);
        assert_eq!(r.strategy(&[]), MuteStrategy::PowerLevel);
        assert_eq!(r.strategy(&["12".into()]), MuteStrategy::Membership);
    }

    #[test]
    fn old_versions_have_creators_without_privilege() {
        let state = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@c:x", "content": {"room_version": "10", "creator": "@c:x"}}),
            json!({"type": "m.room.power_levels", "state_key": "", "sender": "@c:x", "content": {"users": {"@c:x": 100}}}),
        ];
        let r = RoomState::from_state("!r", &state);
        assert_eq!(r.creators, vec!["@c:x"]);
        assert!(!r.creators_privileged);
        assert_eq!(r.own_level("@c:x"), Some(100));
    }

    #[test]
    fn stale_power_levels_are_ignored_until_our_own_comes_back() {
        let mut r = RoomState::from_state("!r", &[]);
        r.power_levels = json!({"users": {"@a:x": -1}});
        r.awaiting_own_power_levels = Some("$ours".into());
        let older =
            json!({"type": "m.room.power_levels", "state_key": "", "event_id": "$old", "content": {"users": {}}});
        assert_eq!(r.apply_state(&older), StateChange::Stale);
        assert_eq!(r.power_levels, json!({"users": {"@a:x": -1}}));
        let ours = json!({"type": "m.room.power_levels", "state_key": "", "event_id": "$ours", "content": {"users": {"@a:x": -1}}});
        assert_eq!(r.apply_state(&ours), StateChange::PowerLevels);
        assert!(r.awaiting_own_power_levels.is_none());
    }

    #[test]
    fn a_write_result_after_its_echo_does_not_roll_the_view_back() {
        let mut r = RoomState::from_state("!r", &[]);
        let ours = json!({"type": "m.room.power_levels", "state_key": "", "event_id": "$ours", "content": {"users": {"@a:x": -1}}});
        let later = json!({"type": "m.room.power_levels", "state_key": "", "event_id": "$mod", "content": {"users": {"@a:x": 25}}});
        assert_eq!(r.apply_state(&ours), StateChange::PowerLevels);
        assert_eq!(r.apply_state(&later), StateChange::PowerLevels);
        r.own_power_levels_written(json!({"users": {"@a:x": -1}}), Some("$ours".into()));
        assert_eq!(r.power_levels, json!({"users": {"@a:x": 25}}));
        assert!(r.awaiting_own_power_levels.is_none());
        r.own_power_levels_written(json!({"users": {"@a:x": -1}}), Some("$new".into()));
        assert_eq!(r.awaiting_own_power_levels.as_deref(), Some("$new"));
    }

    fn pl(id: &str, replaces: Option<&str>, level: i64) -> Value {
        let mut ev = json!({"type": "m.room.power_levels", "state_key": "", "event_id": id, "content": {"users": {"@a:x": level}}});
        if let Some(r) = replaces {
            ev["unsigned"] = json!({"replaces_state": r});
        }
        ev
    }

    /// Issue 13: hush's echo lost in a gappy sync must not freeze the view.
    #[test]
    fn events_after_our_write_are_applied_while_its_echo_is_missing() {
        let mut r = RoomState::from_state("!r", &[pl("$0", None, 10)]);
        r.own_power_levels_written(json!({"users": {"@a:x": -1}}), Some("$ours".into()));
        assert_eq!(r.apply_state(&pl("$old", Some("$0"), 0)), StateChange::Stale, "older than our write");
        assert_eq!(r.apply_state(&pl("$mod", Some("$ours"), 50)), StateChange::PowerLevels);
        assert_eq!(r.power_levels["users"]["@a:x"], json!(50));
        assert_eq!(r.apply_state(&pl("$mod2", Some("$mod"), 60)), StateChange::PowerLevels, "replaces a newer one");
        assert_eq!(r.power_levels["users"]["@a:x"], json!(60));
        assert_eq!(r.apply_state(&pl("$ours", Some("$0"), -1)), StateChange::Stale, "a late echo undoes nothing");
        assert!(r.awaiting_own_power_levels.is_none());
        assert_eq!(r.power_levels["users"]["@a:x"], json!(60));
    }

    /// Sync gives the room's final state before its timeline: an event the applied one
    /// replaced comes after it and must not roll the view back.
    #[test]
    fn an_event_already_replaced_does_not_undo_its_replacement() {
        let mut r = RoomState::from_state("!r", &[pl("$0", None, 10)]);
        assert_eq!(r.apply_state(&pl("$2", Some("$1"), 30)), StateChange::PowerLevels);
        assert_eq!(r.apply_state(&pl("$1", Some("$0"), 20)), StateChange::Stale);
        assert_eq!(r.power_levels["users"]["@a:x"], json!(30));
    }

    #[test]
    fn a_write_result_after_an_event_replacing_it_keeps_the_newer_view() {
        let mut r = RoomState::from_state("!r", &[pl("$0", None, 10)]);
        assert_eq!(r.apply_state(&pl("$mod", Some("$ours"), 50)), StateChange::PowerLevels);
        r.own_power_levels_written(json!({"users": {"@a:x": -1}}), Some("$ours".into()));
        assert_eq!(r.power_levels["users"]["@a:x"], json!(50));
        assert!(r.awaiting_own_power_levels.is_none());
    }

    const HUSH: &str = "@hush:x";

    fn ev(ty: &str, state_key: &str, id: &str, sender: &str) -> Value {
        json!({"type": ty, "state_key": state_key, "event_id": id, "sender": sender, "content": {"n": id}})
    }

    fn ids(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["event_id"].as_str().unwrap_or("?")).collect()
    }

    /// Issue 13: with `state_after`, matrix-sdk's handlers saw the state section (the final
    /// event per key) and then every timeline event, so an older event came after the newest
    /// and undid it. Policy rules, memberships and power levels alike.
    #[test]
    fn an_older_timeline_event_never_follows_the_final_state_of_its_key() {
        let rule = "m.policy.rule.user";
        for (ty, key) in [(rule, "rule-1"), ("m.room.member", "@a:x"), ("m.room.power_levels", "")] {
            let (older, newest) = (ev(ty, key, "$older", "@m:x"), ev(ty, key, "$newest", "@m:x"));
            let state = vec![newest.clone()];
            let timeline = vec![older.clone(), newest.clone()];
            let seen = in_order(state, true, timeline, HUSH);
            assert_eq!(ids(&seen), ["$newest"], "{ty}: the older event is not delivered at all");
            // A gappy sync whose timeline holds only the older event (the newest came from a
            // fork or the state section alone): the older one must not come last either.
            let seen = in_order(vec![newest], true, vec![older], HUSH);
            assert_eq!(ids(&seen), ["$newest"], "{ty}");
        }
    }

    #[test]
    fn hushs_own_superseded_event_is_delivered_before_the_final_one() {
        let pl = "m.room.power_levels";
        let (ours, newest) = (ev(pl, "", "$ours", HUSH), ev(pl, "", "$mod", "@m:x"));
        let other = ev("m.room.member", "@a:x", "$join", "@a:x");
        let seen = in_order(vec![newest.clone(), other.clone()], true, vec![ours.clone(), other, newest], HUSH);
        assert_eq!(ids(&seen), ["$ours", "$join", "$mod"], "the echo ends hush's wait; the final state stays");
        // Also when the final event is only in the state section (the timeline is gappy).
        let seen = in_order(vec![ev(pl, "", "$mod", "@m:x")], true, vec![ours], HUSH);
        assert_eq!(ids(&seen), ["$ours", "$mod"]);
    }

    #[test]
    fn events_of_different_keys_keep_timeline_order_and_gap_state_comes_first() {
        let rule = "m.policy.rule.user";
        let timeline = vec![
            ev(rule, "r1", "$1", "@m:x"),
            json!({"type": "m.room.message", "event_id": "$msg", "sender": "@m:x", "content": {"body": "hi"}}),
            ev("m.room.member", "@a:x", "$2", "@a:x"),
            ev(rule, "r2", "$3", "@m:x"),
        ];
        // state_after holds every key changed since the last sync, timeline events included;
        // `$gap` changed in the gap before a limited timeline.
        let mut state = vec![ev(rule, "r2", "$3", "@m:x"), ev(rule, "r0", "$gap", "@m:x")];
        state.extend([ev("m.room.member", "@a:x", "$2", "@a:x"), ev(rule, "r1", "$1", "@m:x")]);
        let seen = in_order(state, true, timeline, HUSH);
        assert_eq!(ids(&seen), ["$gap", "$1", "$2", "$3"], "each event once, messages left out");
    }

    #[test]
    fn legacy_state_before_keeps_state_first_then_the_timeline() {
        let rule = "m.policy.rule.user";
        let state = vec![ev(rule, "r1", "$before", "@m:x"), ev("m.room.member", "@a:x", "$m", "@a:x")];
        let timeline = vec![
            ev(rule, "r1", "$t1", "@m:x"),
            json!({"type": "m.room.message", "event_id": "$msg", "sender": "@m:x", "content": {}}),
            ev(rule, "r1", "$t2", "@m:x"),
        ];
        assert_eq!(ids(&in_order(state, false, timeline, HUSH)), ["$before", "$m", "$t1", "$t2"]);
    }

    #[test]
    fn a_key_the_state_after_does_not_name_keeps_its_timeline_events() {
        let timeline = vec![ev("m.room.name", "", "$n1", "@m:x"), ev("m.room.name", "", "$n2", "@m:x")];
        assert_eq!(ids(&in_order(vec![], true, timeline, HUSH)), ["$n1", "$n2"]);
    }

    #[test]
    fn membership_changes_are_reported_once() {
        let mut r = RoomState::from_state("!r", &[]);
        let join = json!({"type": "m.room.member", "state_key": "@a:x", "content": {"membership": "join"}});
        assert_eq!(r.apply_state(&join), StateChange::Member("@a:x".into()));
        assert_eq!(r.apply_state(&join), StateChange::Other);
        let bad = json!({"type": "m.room.member", "state_key": "@a:x", "content": {"membership": 7}});
        assert_eq!(r.apply_state(&bad), StateChange::Member("@a:x".into()));
        assert_eq!(r.membership("@a:x"), Membership::Leave);
    }

    /// Found by the chaos run: sync delivered a member's join again after hush's ban that
    /// replaced it; read as newer, it looked like an unban and the ban was marked overridden,
    /// so it was never lifted.
    #[test]
    fn a_member_event_a_newer_one_replaced_does_not_undo_it() {
        let mut r = RoomState::from_state("!r", &[]);
        let join = json!({"type": "m.room.member", "state_key": "@a:x", "event_id": "$join",
                          "content": {"membership": "join"}});
        let ban = json!({"type": "m.room.member", "state_key": "@a:x", "event_id": "$ban", "sender": "@hush:x",
                         "unsigned": {"replaces_state": "$join"}, "content": {"membership": "ban"}});
        assert_eq!(r.apply_state(&join), StateChange::Member("@a:x".into()));
        assert_eq!(r.apply_state(&ban), StateChange::Member("@a:x".into()));
        assert_eq!(r.apply_state(&join), StateChange::Stale);
        assert_eq!(r.membership("@a:x"), Membership::Ban);
    }

    /// Found by the chaos run (seed 1796049561450): after a restart, a room's load and a
    /// storm of other members rejoining pushed the ban out of a per-room memory of 64 member
    /// events; the join it replaced, delivered again, read as an unban and hush forgot its ban.
    #[test]
    fn a_replaced_member_event_stays_stale_after_many_other_members_change() {
        let member = |user: &str, id: &str, replaces: Option<&str>, m: &str| {
            let mut ev = json!({"type": "m.room.member", "state_key": user, "event_id": id,
                                "content": {"membership": m}});
            if let Some(r) = replaces {
                ev["unsigned"] = json!({"replaces_state": r});
            }
            ev
        };
        let mut r = RoomState::from_state("!r", &[member("@a:x", "$ban", Some("$join"), "ban")]);
        for i in 0..500 {
            let user = format!("@u{}:x", i % 50);
            r.apply_state(&member(
                &user,
                &format!("$e{i}"),
                (i >= 50).then(|| format!("$e{}", i - 50)).as_deref(),
                "join",
            ));
        }
        assert_eq!(r.apply_state(&member("@a:x", "$join", None, "join")), StateChange::Stale);
        assert_eq!(r.membership("@a:x"), Membership::Ban);
        // hush's answer to the ban, arriving after all that, finds its event already applied.
        assert!(!r.own_member_written("@a:x", Membership::Ban, Some("$ban".into())));
    }
}
