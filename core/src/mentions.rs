//! Mention counting for the mention-spam protection: how many distinct users a message
//! mentions and whether it mentions the whole room, read from a timeline event's JSON.
//! Pure: the event text is borrowed for the check and nothing of it is kept.
//!
//! A message with `m.mentions` (spec v1.7, "user and room mentions") is judged by it
//! alone: `user_ids` (distinct) and `room: true`. A message without it (older clients)
//! is judged by what it shows: the distinct user ids of its pills in `formatted_body`
//! (`https://matrix.to/#/@user:server` links) and the user ids written out in `body`, and
//! `@room` in `body`.

use serde::Deserialize;
use std::borrow::Cow;

/// The event types the mention-spam protection reads (message-like events with a body).
pub const MESSAGE_TYPES: &[&str] = &["m.room.message", "m.sticker"];

/// What one message mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mentioned {
    /// Distinct users mentioned.
    pub users: usize,
    /// The whole room (`@room`).
    pub room: bool,
}

/// A message that trips the mention-spam protection or may (it mentions more users than
/// allowed, or the room), as sync forwards it: the rest of the message is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sender: String,
    pub event_id: String,
    /// `origin_server_ts`.
    pub ts: u64,
    pub mentioned: Mentioned,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

/// A string borrowed from the event's text unless it has escapes (serde borrows a `Cow`
/// only when it is a field of its own, not inside an `Option` or a `Vec`).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    body: Option<Text<'a>>,
    #[serde(borrow, default)]
    formatted_body: Option<Text<'a>>,
    #[serde(borrow, default, rename = "m.mentions")]
    mentions: Option<Mentions<'a>>,
}

#[derive(Deserialize)]
struct Mentions<'a> {
    #[serde(borrow, default)]
    user_ids: Vec<Text<'a>>,
    #[serde(default)]
    room: bool,
}

/// What the message event in `event_json` mentions; `None` when it is not a message
/// ([`MESSAGE_TYPES`]) or not readable. A message that mentions nobody is
/// `Some(Mentioned::default())`.
pub fn in_event(event_json: &str) -> Option<Mentioned> {
    let ev: Event<'_> = serde_json::from_str(event_json).ok()?;
    if !MESSAGE_TYPES.contains(&ev.kind.as_ref()) {
        return None;
    }
    let Some(content) = ev.content else { return Some(Mentioned::default()) };
    Some(match content.mentions {
        Some(m) => {
            let mut ids: Vec<&str> = m.user_ids.iter().map(|t| t.0.as_ref()).filter(|u| u.starts_with('@')).collect();
            ids.sort_unstable();
            ids.dedup();
            Mentioned { users: ids.len(), room: m.room }
        }
        None => {
            in_text(content.body.as_ref().map_or("", |t| &t.0), content.formatted_body.as_ref().map(|t| t.0.as_ref()))
        }
    })
}

/// What a message without `m.mentions` shows: distinct user ids of the pills in
/// `formatted` and of the ids written out in `body`; `@room` as a word in `body`.
pub fn in_text(body: &str, formatted: Option<&str>) -> Mentioned {
    let mut ids: Vec<&str> = Vec::new();
    if let Some(html) = formatted {
        ids.extend(pills(html));
    }
    ids.extend(written_ids(body));
    ids.sort_unstable();
    ids.dedup();
    Mentioned { users: ids.len(), room: words_at(body).any(|w| w == "room") }
}

/// Where a user id's text ends.
fn ends_id(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '?' | ',' | ';' | '(' | ')' | '!' | '&' | '#' | '/')
}

/// `localpart:server` after an `@` (or `%40`): the id without its sigil, when it has both parts.
fn id_at(rest: &str) -> Option<&str> {
    let end = rest.find(ends_id).unwrap_or(rest.len());
    let id = rest[..end].trim_end_matches(['.', ':']);
    let (local, server) = id.split_once(':').or_else(|| id.split_once("%3A")).or_else(|| id.split_once("%3a"))?;
    (!local.is_empty() && !server.is_empty()).then_some(id)
}

/// The user ids of the `matrix.to` pills in HTML (without their sigil, as written).
fn pills(html: &str) -> impl Iterator<Item = &str> {
    html.match_indices("matrix.to/#/").filter_map(move |(at, m)| {
        let rest = &html[at + m.len()..];
        let rest = rest.strip_prefix('@').or_else(|| rest.strip_prefix("%40"))?;
        id_at(rest)
    })
}

/// The text after each `@` that starts a word (start of text or after a character that
/// cannot be in a user id).
fn words_at(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('@').filter_map(move |(at, _)| {
        let starts_word = text[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || "._=-/+".contains(c)));
        if !starts_word {
            return None;
        }
        let rest = &text[at + 1..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// The user ids written out in plain text (`@user:server`, without their sigil).
fn written_ids(body: &str) -> impl Iterator<Item = &str> {
    body.match_indices('@').filter_map(move |(at, _)| {
        let starts_word = body[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || "._=-/+".contains(c)));
        if !starts_word {
            return None;
        }
        id_at(&body[at + 1..])
    })
}

/// Why a message trips the mention-spam protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// More distinct users than allowed.
    Users(usize),
    /// `@room` from a sender below the room's `notifications.room` level.
    Room,
}

/// Whether a message mentioning `m` trips the protection: more than `max_users` distinct
/// users, or `@room` when the sender may not notify the room (`may_notify_room`).
pub fn trips(m: Mentioned, max_users: u32, may_notify_room: bool) -> Option<Tripped> {
    if m.users > max_users as usize {
        return Some(Tripped::Users(m.users));
    }
    (m.room && !may_notify_room).then_some(Tripped::Room)
}

/// The level needed to notify the whole room: `notifications.room` in `m.room.power_levels`
/// (default 50).
pub fn room_notification_level(power_levels: &serde_json::Value) -> i64 {
    power_levels.pointer("/notifications/room").and_then(crate::power_levels::int).unwrap_or(50)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(content: serde_json::Value) -> Mentioned {
        in_event(&json!({"type": "m.room.message", "content": content}).to_string()).unwrap()
    }

    #[test]
    fn m_mentions_user_ids_are_counted_once_each() {
        let m = of(json!({"body": "hi", "m.mentions": {"user_ids": ["@a:x", "@b:x", "@a:x", "not-a-user"]}}));
        assert_eq!(m, Mentioned { users: 2, room: false });
    }

    #[test]
    fn m_mentions_is_trusted_over_the_body() {
        // A client that says whom it mentions: names in the body do not count.
        let m = of(json!({"body": "@a:x @b:x @room", "m.mentions": {}}));
        assert_eq!(m, Mentioned::default());
        let m = of(json!({"body": "everyone", "m.mentions": {"room": true}}));
        assert_eq!(m, Mentioned { users: 0, room: true });
    }

    #[test]
    fn without_m_mentions_pills_and_written_ids_count_distinct() {
        let html = r#"<a href="https://matrix.to/#/@a:x">A</a> <a href="https://matrix.to/#/%40b%3Ax?via=x">B</a> <a href="https://matrix.to/#/@a:x">A again</a> <a href="https://matrix.to/#/!room:x">a room</a>"#;
        let m = of(json!({"body": "A B A, @c:y. and @c:y and me@d:x", "formatted_body": html}));
        // @a:x (twice), %40b%3Ax, @c:y (twice): three; an email-like address is not an id.
        assert_eq!(m, Mentioned { users: 3, room: false });
    }

    #[test]
    fn without_m_mentions_at_room_in_the_body_counts() {
        assert!(of(json!({"body": "hey @room look"})).room);
        assert!(of(json!({"body": "@room"})).room);
        assert!(!of(json!({"body": "@roommates"})).room);
        assert!(!of(json!({"body": "mail me@room.org"})).room);
    }

    #[test]
    fn escaped_text_is_read_too() {
        // Escapes make serde copy the string instead of borrowing it: still counted.
        let ev = r#"{"type":"m.room.message","content":{"body":"\"hi\" \u0040room"}}"#;
        assert_eq!(in_event(ev), Some(Mentioned { users: 0, room: true }));
        let ev = r#"{"type":"m.room.message","content":{"body":"x","m.mentions":{"user_ids":["\u0040a:x","@b:x"]}}}"#;
        assert_eq!(in_event(ev), Some(Mentioned { users: 2, room: false }));
    }

    #[test]
    fn other_events_are_not_messages() {
        assert_eq!(in_event(r#"{"type": "m.reaction", "content": {"body": "@room"}}"#), None);
        assert_eq!(in_event("not json"), None);
        let sticker = json!({"type": "m.sticker", "content": {"body": "x", "m.mentions": {"user_ids": ["@a:x"]}}});
        assert_eq!(in_event(&sticker.to_string()), Some(Mentioned { users: 1, room: false }));
    }

    #[test]
    fn more_users_than_allowed_or_room_without_the_level_trips() {
        let users = |n| Mentioned { users: n, room: false };
        assert_eq!(trips(users(10), 10, false), None, "as many as allowed");
        assert_eq!(trips(users(11), 10, true), Some(Tripped::Users(11)));
        let room = Mentioned { users: 0, room: true };
        assert_eq!(trips(room, 10, true), None, "a member with the level may");
        assert_eq!(trips(room, 10, false), Some(Tripped::Room));
    }

    #[test]
    fn the_room_notification_level_is_read_or_50() {
        assert_eq!(room_notification_level(&json!({})), 50);
        assert_eq!(room_notification_level(&json!({"notifications": {"room": 20}})), 20);
        assert_eq!(room_notification_level(&json!({"notifications": {"room": "0"}})), 0);
    }

    #[test]
    fn odd_content_is_not_a_panic() {
        for content in [json!(null), json!({"body": 5}), json!({"m.mentions": {"user_ids": "@a:x"}}), json!("@")] {
            let _ = in_event(&json!({"type": "m.room.message", "content": content}).to_string());
        }
        assert_eq!(in_text("@", Some("matrix.to/#/@")), Mentioned::default());
        assert_eq!(in_text("@:x @a:", None), Mentioned::default());
    }
}
