//! Power-level arithmetic for mutes: the level that silences a user, and exact edits of `m.room.power_levels` content.
//!
//! Works on the raw JSON content so that a restore is exact: an absent `users` entry stays
//! absent, an explicit entry equal to `users_default` stays explicit, and keys hush does
//! not know survive untouched.

use serde_json::{Map, Value};

/// State event types that can appear in `events` and do not gate sending messages.
const STATE_TYPES: &[&str] = &[
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.create",
    "m.room.encryption",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.member",
    "m.room.name",
    "m.room.pinned_events",
    "m.room.power_levels",
    "m.room.server_acl",
    "m.room.third_party_invite",
    "m.room.tombstone",
    "m.room.topic",
    "m.space.child",
    "m.space.parent",
    "m.room.policy",
    "m.policy.rule.user",
    "m.policy.rule.room",
    "m.policy.rule.server",
    "im.vector.modular.widgets",
];

/// Reads an integer the way room versions accept them: a JSON number, or (old room
/// versions) a string holding one.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `events_default` (default 0).
pub fn events_default(content: &Value) -> i64 {
    content.get("events_default").and_then(int).unwrap_or(0)
}

/// `users_default` (default 0).
pub fn users_default(content: &Value) -> i64 {
    content.get("users_default").and_then(int).unwrap_or(0)
}

/// A user's explicit entry in `users`, if any.
pub fn user_entry(content: &Value, user_id: &str) -> Option<i64> {
    content.get("users")?.get(user_id).and_then(int)
}

/// A user's effective level (explicit entry or `users_default`); room creators of room
/// version 12 and later are handled by the caller (they have no entry and unlimited power).
pub fn user_level(content: &Value, user_id: &str) -> i64 {
    user_entry(content, user_id).unwrap_or_else(|| users_default(content))
}

/// The lowest level that lets anyone send some message event: `events_default` and every
/// entry of `events` that is not a known state event type.
pub fn lowest_send_level(content: &Value) -> i64 {
    let mut lowest = events_default(content);
    if let Some(Value::Object(events)) = content.get("events") {
        for (event_type, level) in events {
            if STATE_TYPES.contains(&event_type.as_str()) {
                continue;
            }
            if let Some(l) = int(level) {
                lowest = lowest.min(l);
            }
        }
    }
    lowest
}

/// The level that mutes: one below the lowest send level.
pub fn mute_level(content: &Value) -> i64 {
    lowest_send_level(content).saturating_sub(1)
}

/// Whether a user at `level` can send no message event at all.
pub fn is_muted_level(content: &Value, level: i64) -> bool {
    level < lowest_send_level(content)
}

/// The level needed to send `m.room.power_levels` (from `events`, else `state_default`, default 50).
pub fn power_levels_send_level(content: &Value) -> i64 {
    content
        .get("events")
        .and_then(|e| e.get("m.room.power_levels"))
        .and_then(int)
        .or_else(|| content.get("state_default").and_then(int))
        .unwrap_or(50)
}

/// `ban` (default 50).
pub fn ban_level(content: &Value) -> i64 {
    content.get("ban").and_then(int).unwrap_or(50)
}

/// The level from which a user counts as one of the room's moderators: the lowest of
/// `kick`, `ban` and `redact` (each 50 by default). hush never restricts such a user.
pub fn moderator_level(content: &Value) -> i64 {
    let level = |key: &str| content.get(key).and_then(int).unwrap_or(50);
    level("kick").min(level("ban")).min(level("redact"))
}

/// Users whose standing may differ between two `m.room.power_levels` contents: those whose
/// `users` entry changed, or `None` (everyone) when a default or a moderation level
/// (`users_default`, `kick`, `ban`, `redact`) changed.
pub fn users_with_changed_standing(old: &Value, new: &Value) -> Option<Vec<String>> {
    for key in ["users_default", "kick", "ban", "redact"] {
        if old.get(key).and_then(int) != new.get(key).and_then(int) {
            return None;
        }
    }
    let users = |c: &Value| c.get("users").and_then(Value::as_object).cloned().unwrap_or_default();
    let (o, n) = (users(old), users(new));
    let mut changed: Vec<String> =
        o.keys().chain(n.keys()).filter(|u| o.get(*u).and_then(int) != n.get(*u).and_then(int)).cloned().collect();
    changed.sort();
    changed.dedup();
    Some(changed)
}

/// One change to a `users` entry: set it to a level, or remove it (restore "absent").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLevelEdit {
    pub user_id: String,
    pub level: Option<i64>,
    /// The entry hush expects to find before the change (None = no entry): for a mute, the
    /// entry hush saw; for a lift, the level hush set. Another value means someone else
    /// changed it meanwhile, and the edit is not hush's to make ([`still_apply`]).
    pub expected: Option<i64>,
}

/// Splits edits into those that still apply to `content` and the users left out: an edit
/// applies when the user's entry is what hush expected, or already what hush asks (a write
/// of hush's whose answer was lost). Any other entry is a change someone else made since
/// hush looked, which hush must not overwrite.
pub fn still_apply(content: &Value, edits: &[UserLevelEdit]) -> (Vec<UserLevelEdit>, Vec<String>) {
    still_apply_after(content, edits, true)
}

/// [`still_apply`], told whether an earlier attempt of this write may have landed (its
/// answer was lost). If none can have, an entry already what hush asks but not what it
/// expected is someone else's doing too (a moderator who set, by hand, the very level
/// hush's waiting lift restores): left out, their decision, not taken for hush's own.
pub fn still_apply_after(
    content: &Value,
    edits: &[UserLevelEdit],
    own_may_have_landed: bool,
) -> (Vec<UserLevelEdit>, Vec<String>) {
    let mut apply = Vec::new();
    let mut skipped = Vec::new();
    for edit in edits {
        let now = user_entry(content, &edit.user_id);
        if now == edit.expected || (own_may_have_landed && now == edit.level) {
            apply.push(edit.clone());
        } else {
            skipped.push(edit.user_id.clone());
        }
    }
    (apply, skipped)
}

/// Applies edits to a copy of the content. Everything else is kept exactly as it was.
/// Returns None when the edits change nothing (no event needs to be sent).
pub fn apply_edits(content: &Value, edits: &[UserLevelEdit]) -> Option<Value> {
    let mut out = match content {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut users = match out.remove("users") {
        Some(Value::Object(u)) => u,
        _ => Map::new(),
    };
    let mut changed = false;
    for edit in edits {
        match edit.level {
            Some(level) => {
                let new = Value::from(level);
                if users.get(&edit.user_id).and_then(int) != Some(level) {
                    users.insert(edit.user_id.clone(), new);
                    changed = true;
                }
            }
            None => {
                if users.remove(&edit.user_id).is_some() {
                    changed = true;
                }
            }
        }
    }
    out.insert("users".to_owned(), Value::Object(users));
    changed.then_some(Value::Object(out))
}

/// Whether a power-levels event that puts a muted user back at `previous` (the entry hush
/// saw before muting) was written from a state older than hush's mute: the content it
/// replaced (`prev_content`, the writer's base) did not hold hush's `applied` level, and the
/// writer left the user's entry as that base had it. A moderator who lowers the user back
/// after seeing hush's mute has `applied` in `prev_content`: a deliberate decision, not this.
pub fn stale_undo(
    prev_content: &Value,
    content: &Value,
    user_id: &str,
    previous: Option<i64>,
    applied: Option<i64>,
) -> bool {
    let before = user_entry(prev_content, user_id);
    let after = user_entry(content, user_id);
    before != applied && before == previous && after == previous
}

/// Users whose `users` entry differs between two power-levels contents, sorted.
pub fn users_with_changed_entries(a: &Value, b: &Value) -> Vec<String> {
    let keys = |v: &Value| v.get("users").and_then(Value::as_object).map(|u| u.keys().cloned().collect::<Vec<_>>());
    let mut users: Vec<String> = keys(a).unwrap_or_default();
    users.extend(keys(b).unwrap_or_default());
    users.sort();
    users.dedup();
    users.retain(|u| user_entry(a, u) != user_entry(b, u));
    users
}

/// hush read `read`, someone else then wrote `replaced`, and hush's event `written` (built
/// on `read`) replaced theirs. Returns `written` with their change put back: every `users`
/// entry and every other field that differs between `read` and `replaced` takes the value
/// of `replaced` (their change wins, also for a user hush was editing). None when nobody
/// changed anything in between.
pub fn restore_concurrent(read: &Value, replaced: &Value, written: &Value) -> Option<Value> {
    if read == replaced {
        return None;
    }
    let empty = Map::new();
    let (r, p) = (read.as_object().unwrap_or(&empty), replaced.as_object().unwrap_or(&empty));
    let mut out = written.as_object().cloned().unwrap_or_default();
    let mut changed = false;
    let mut fields: Vec<&String> = r.keys().chain(p.keys()).filter(|k| k.as_str() != "users").collect();
    fields.sort();
    fields.dedup();
    for k in fields {
        if r.get(k) != p.get(k) {
            match p.get(k) {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
            changed = true;
        }
    }
    let edits: Vec<UserLevelEdit> = users_with_changed_entries(read, replaced)
        .into_iter()
        .map(|u| UserLevelEdit { level: user_entry(replaced, &u), expected: None, user_id: u })
        .collect();
    let out = Value::Object(out);
    match apply_edits(&out, &edits) {
        Some(v) => Some(v),
        None if changed => Some(out),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_made_between_hushs_read_and_write_is_put_back() {
        let read = json!({"users": {"@hush:x": 100, "@a:x": 0}, "ban": 50});
        // A moderator gave @m:x 20 and took @a:x out meanwhile; hush muted @s:x.
        let replaced = json!({"users": {"@hush:x": 100, "@m:x": 20}, "ban": 50});
        let written = json!({"users": {"@hush:x": 100, "@a:x": 0, "@s:x": -1}, "ban": 50});
        let restored = restore_concurrent(&read, &replaced, &written).unwrap();
        assert_eq!(restored, json!({"users": {"@hush:x": 100, "@m:x": 20, "@s:x": -1}, "ban": 50}));
        assert_eq!(users_with_changed_entries(&read, &replaced), vec!["@a:x".to_owned(), "@m:x".to_owned()]);
        assert_eq!(restore_concurrent(&read, &read, &written), None, "nobody wrote in between");
        // Another field changed meanwhile comes back too.
        let replaced = json!({"users": {"@hush:x": 100, "@a:x": 0}, "ban": 60});
        assert_eq!(restore_concurrent(&read, &replaced, &written).unwrap()["ban"], json!(60));
    }

    #[test]
    fn standing_changes_are_the_changed_entries_or_everyone() {
        let old = json!({"users": {"@a:x": 50, "@b:x": 0}, "ban": 50});
        let new = json!({"users": {"@a:x": 0, "@b:x": 0, "@c:x": 10}, "ban": 50});
        assert_eq!(users_with_changed_standing(&old, &new), Some(vec!["@a:x".to_owned(), "@c:x".to_owned()]));
        assert_eq!(users_with_changed_standing(&old, &json!({"users": {"@a:x": 50, "@b:x": 0}, "ban": 40})), None);
        assert_eq!(users_with_changed_standing(&old, &old), Some(vec![]));
    }

    #[test]
    fn moderator_level_is_the_lowest_of_kick_ban_and_redact() {
        assert_eq!(moderator_level(&json!({})), 50);
        assert_eq!(moderator_level(&json!({"kick": 40, "ban": 60})), 40);
        assert_eq!(moderator_level(&json!({"kick": 90, "ban": 80, "redact": "30"})), 30);
    }

    #[test]
    fn mute_level_is_below_every_message_level() {
        assert_eq!(mute_level(&json!({})), -1);
        assert_eq!(mute_level(&json!({"events_default": 10})), 9);
        // A message type open to lower levels lowers the mute level.
        assert_eq!(mute_level(&json!({"events_default": 10, "events": {"m.reaction": 5}})), 4);
        // State types do not gate messages.
        assert_eq!(mute_level(&json!({"events_default": 0, "events": {"m.room.topic": -50}})), -1);
        // String levels of old room versions are understood.
        assert_eq!(mute_level(&json!({"events_default": "20"})), 19);
        assert!(is_muted_level(&json!({}), -1));
        assert!(!is_muted_level(&json!({}), 0));
    }

    fn edit(user: &str, level: Option<i64>, expected: Option<i64>) -> UserLevelEdit {
        UserLevelEdit { user_id: user.into(), level, expected }
    }

    #[test]
    fn edits_apply_only_where_the_entry_is_as_expected() {
        let c = json!({"users": {"@a:x": 10, "@b:x": 25, "@c:x": -1, "@d:x": 0}});
        let edits = vec![
            edit("@a:x", Some(-1), Some(10)), // as hush saw it: mute
            edit("@b:x", Some(-1), Some(10)), // a moderator set 25 meanwhile: skip
            edit("@c:x", Some(-1), Some(10)), // hush's own write already there: keep
            edit("@d:x", None, Some(-1)),     // a lift, but a moderator set 0: skip
            edit("@e:x", Some(-1), None),     // absent as expected: mute
            edit("@f:x", None, Some(-1)),     // a lift whose entry is gone: nothing to do, no skip
        ];
        let (apply, skipped) = still_apply(&c, &edits);
        let users: Vec<&str> = apply.iter().map(|e| e.user_id.as_str()).collect();
        assert_eq!(users, vec!["@a:x", "@c:x", "@e:x", "@f:x"]);
        assert_eq!(skipped, vec!["@b:x".to_owned(), "@d:x".to_owned()]);
        let out = apply_edits(&c, &apply).unwrap();
        assert_eq!(user_entry(&out, "@b:x"), Some(25), "the moderator's level is kept");
        assert_eq!(user_entry(&out, "@d:x"), Some(0));
        assert_eq!(user_entry(&out, "@a:x"), Some(-1));
        assert_eq!(still_apply(&json!({}), &[edit("@a:x", Some(-1), Some(0))]).1, vec!["@a:x".to_owned()]);
        // Already what hush asks, not what it expected: hush's own lost write only if one
        // may have landed; otherwise someone else's decision.
        let set = json!({"users": {"@a:x": 20}});
        let lift = [edit("@a:x", Some(20), Some(-1))];
        assert!(still_apply_after(&set, &lift, true).1.is_empty());
        assert_eq!(still_apply_after(&set, &lift, false).1, vec!["@a:x".to_owned()]);
    }

    #[test]
    fn a_write_from_before_the_mute_is_stale_and_one_after_it_is_deliberate() {
        let base = json!({"users": {"@a:x": 10, "@m:x": 100}});
        let muted = json!({"users": {"@a:x": -1, "@m:x": 100}});
        let reset = json!({"users": {"@a:x": 10, "@m:x": 100, "@b:x": 5}});
        assert!(stale_undo(&base, &reset, "@a:x", Some(10), Some(-1)), "built on the state before the mute");
        assert!(!stale_undo(&muted, &reset, "@a:x", Some(10), Some(-1)), "built on hush's mute: deliberate");
        let absent = json!({"users": {"@m:x": 100}});
        assert!(stale_undo(&absent, &absent, "@a:x", None, Some(-1)), "an absent entry restored by a stale base");
        assert!(!stale_undo(&base, &json!({"users": {"@a:x": 20}}), "@a:x", Some(10), Some(-1)), "a new level");
    }

    #[test]
    fn edits_restore_exactly() {
        let before = json!({"users": {"@mod:x": 50, "@ten:x": 10}, "users_default": 0, "custom": {"k": 1}});
        let muted = apply_edits(
            &before,
            &[
                UserLevelEdit { user_id: "@ten:x".into(), level: Some(-1), expected: None },
                UserLevelEdit { user_id: "@absent:x".into(), level: Some(-1), expected: None },
            ],
        )
        .unwrap();
        assert_eq!(user_entry(&muted, "@ten:x"), Some(-1));
        assert_eq!(user_entry(&muted, "@absent:x"), Some(-1));
        let restored = apply_edits(
            &muted,
            &[
                UserLevelEdit { user_id: "@ten:x".into(), level: Some(10), expected: None },
                UserLevelEdit { user_id: "@absent:x".into(), level: None, expected: None },
            ],
        )
        .unwrap();
        assert_eq!(restored, before);
    }

    #[test]
    fn explicit_default_entry_stays_explicit() {
        let before = json!({"users": {"@zero:x": 0}, "users_default": 0});
        let muted =
            apply_edits(&before, &[UserLevelEdit { user_id: "@zero:x".into(), level: Some(-1), expected: None }])
                .unwrap();
        let restored =
            apply_edits(&muted, &[UserLevelEdit { user_id: "@zero:x".into(), level: Some(0), expected: None }])
                .unwrap();
        assert_eq!(restored, before);
    }

    #[test]
    fn no_change_means_no_event() {
        let c = json!({"users": {"@a:x": -1}});
        assert_eq!(apply_edits(&c, &[UserLevelEdit { user_id: "@a:x".into(), level: Some(-1), expected: None }]), None);
        assert_eq!(apply_edits(&c, &[UserLevelEdit { user_id: "@b:x".into(), level: None, expected: None }]), None);
    }

    #[test]
    fn malformed_content_does_not_panic() {
        let c = json!({"users": "nope", "events": 3, "events_default": "x"});
        assert_eq!(mute_level(&c), -1);
        assert_eq!(user_entry(&c, "@a:x"), None);
        assert!(apply_edits(&c, &[UserLevelEdit { user_id: "@a:x".into(), level: Some(-1), expected: None }]).is_some());
        assert_eq!(power_levels_send_level(&json!({"state_default": 60})), 60);
        assert_eq!(power_levels_send_level(&json!({"events": {"m.room.power_levels": 100}})), 100);
        assert_eq!(ban_level(&json!({})), 50);
    }
}
