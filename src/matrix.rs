//! The homeserver connection: client construction, login and session persistence, sync with backoff, joins, sends.

use std::time::Duration;

use anyhow::{Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::state::{get_state_events, send_state_event};
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::room::power_levels::UserPowerLevel;
use matrix_sdk::ruma::events::room::redaction::OriginalSyncRoomRedactionEvent;
use matrix_sdk::ruma::events::AnySyncTimelineEvent;
use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{EventId, OwnedRoomId, RoomId, RoomOrAliasId, UserId};
use matrix_sdk::sync::{State as SyncState, SyncResponse};
use matrix_sdk::{Client, Room};
use serde::de::IgnoredAny;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::backoff::Backoff;

mod session;
mod writer;

pub use session::connect;
use session::is_unknown_token;
use writer::raw_content;
pub use writer::{classify, is_suspension_code, MatrixWriter, REDACT_EVENTS};

/// Syncs until `shutdown` turns true, backing off (1 s doubling to 60 s) while the
/// homeserver is unreachable. Event handlers registered on the client run inside each
/// sync; `on_response` then gets the response (state events go from there, in order: see
/// [`room_updates`]). Returns an error when the session is logged out: retrying cannot
/// help, and the next start logs in again (systemd restarts hush on failure).
pub async fn sync_until(
    client: &Client,
    mut shutdown: watch::Receiver<bool>,
    mut on_response: impl FnMut(&SyncResponse),
) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let settings = SyncSettings::default().timeout(Duration::from_secs(30));
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            result = client.sync_once(settings.clone()) => match result {
                Ok(response) => {
                    backoff.reset();
                    on_response(&response);
                }
                Err(matrix_sdk::Error::Http(e)) if is_unknown_token(&e) => {
                    anyhow::bail!("the homeserver logged this session out ({}); restart hush to log in again", classify(&e));
                }
                Err(e) => {
                    let wait = backoff.next();
                    warn!("sync failed, retrying in {}s: {e}", wait.as_secs());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// What one room's update in a sync response brings hush.
pub struct RoomSync<'a> {
    pub room_id: &'a RoomId,
    /// Its state events, in the order hush applies them (`rooms::in_order`).
    pub state: Vec<serde_json::Value>,
    /// The events its timeline's redactions redact, in timeline order.
    pub redacted: Vec<String>,
    /// The timeline's other events (not state, not redactions) of other senders: sender
    /// and `origin_server_ts`, for the protections' counters.
    pub activity: Vec<(String, u64)>,
    /// The timeline's messages of other senders that mention more than the mention-spam
    /// protection allows, or the room (none when it is off): what the check needs of them.
    pub mentions: Vec<hush_core::mentions::Message>,
    /// The timeline is `limited` and its state is the legacy "state at the start of the
    /// timeline" (no MSC4222 `state_after`): state sent on parallel forks in the gap may be
    /// missing from both (a policy list is then read again).
    pub gap: bool,
}

/// Each room's update in a sync response (joined rooms, then rooms hush left): matrix-sdk
/// asks for `use_state_after`, and its event handlers would see the final state first and
/// older timeline events after it, so state goes from here, in order. Unreadable events
/// are skipped (logged). `max_mentions`: the mention-spam protection's limit (None: off,
/// messages are not read).
pub fn room_updates<'a>(
    response: &'a SyncResponse,
    own_user: &'a str,
    max_mentions: Option<u32>,
) -> impl Iterator<Item = RoomSync<'a>> + 'a {
    let joined = response.rooms.joined.iter().map(|(id, u)| (id, &u.state, &u.timeline));
    let left = response.rooms.left.iter().map(|(id, u)| (id, &u.state, &u.timeline));
    joined.chain(left).map(move |(room_id, state, timeline)| {
        let (state, state_is_after) = match state {
            SyncState::Before(events) => (events, false),
            SyncState::After(events) => (events, true),
        };
        let read = |json: &str| match state_event(json) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(room = %room_id, "skipping an unreadable state event: {e}");
                None
            }
        };
        let state = state.iter().filter_map(|raw| read(raw.json().get())).collect();
        let is_state =
            |raw: &&Raw<AnySyncTimelineEvent>| raw.get_field::<IgnoredAny>("state_key").ok().flatten().is_some();
        let raws = || timeline.events.iter().map(|ev| ev.raw());
        let timeline_state = raws().filter(is_state).filter_map(|raw| read(raw.json().get())).collect();
        let redacted = raws()
            .filter(|raw| raw.get_field::<String>("type").ok().flatten().as_deref() == Some("m.room.redaction"))
            .filter_map(|raw| raw.deserialize_as_unchecked::<OriginalSyncRoomRedactionEvent>().ok())
            .filter_map(|ev| ev.redacts.or(ev.content.redacts).map(|id| id.to_string()))
            .collect();
        let activity = raws()
            .filter(|raw| !is_state(raw))
            .filter(|raw| raw.get_field::<String>("type").ok().flatten().as_deref() != Some("m.room.redaction"))
            .filter_map(|raw| {
                let sender = raw.get_field::<String>("sender").ok().flatten()?;
                let ts = raw.get_field::<u64>("origin_server_ts").ok().flatten()?;
                (sender != own_user).then_some((sender, ts))
            })
            .collect();
        let mentions = match max_mentions {
            Some(max) => raws().filter_map(|raw| mention_spam(raw, own_user, max)).collect(),
            None => Vec::new(),
        };
        let state = crate::rooms::in_order(state, state_is_after, timeline_state, own_user);
        let gap = timeline.limited && !state_is_after;
        RoomSync { room_id: room_id.as_ref(), state, redacted, activity, mentions, gap }
    })
}

/// A message of another sender that mentions more than `max` users or the room: its
/// sender, id, time and counts. Any other event is dropped here, its text unkept.
fn mention_spam(raw: &Raw<AnySyncTimelineEvent>, own_user: &str, max: u32) -> Option<hush_core::mentions::Message> {
    let mentioned = hush_core::mentions::in_event(raw.json().get())?;
    if mentioned.users <= max as usize && !mentioned.room {
        return None;
    }
    let sender = raw.get_field::<String>("sender").ok().flatten().filter(|s| s != own_user)?;
    let event_id = raw.get_field::<String>("event_id").ok().flatten()?;
    let ts = raw.get_field::<u64>("origin_server_ts").ok().flatten()?;
    Some(hush_core::mentions::Message { sender, event_id, ts, mentioned })
}

/// Joins a room by id or alias; returns its id.
pub async fn join(client: &Client, room: &str) -> Result<OwnedRoomId> {
    let id = RoomOrAliasId::parse(room).with_context(|| format!("`{room}` is not a room id or alias"))?;
    let joined = client.join_room_by_id_or_alias(&id, &[]).await.with_context(|| format!("cannot join {room}"))?;
    Ok(joined.room_id().to_owned())
}

/// Resolves an alias to a room id (a room id is returned as it is).
pub async fn resolve(client: &Client, room: &str) -> Result<OwnedRoomId> {
    let id = RoomOrAliasId::parse(room).with_context(|| format!("`{room}` is not a room id or alias"))?;
    match OwnedRoomId::try_from(id.as_str()) {
        Ok(room_id) => Ok(room_id),
        Err(_) => {
            let alias = matrix_sdk::ruma::RoomAliasId::parse(id.as_str())?;
            Ok(client.resolve_room_alias(&alias).await.with_context(|| format!("cannot resolve {room}"))?.room_id)
        }
    }
}

/// Whether `user` may command hush in `room`: room creators always; others when their
/// power level reaches `required` or, by default, the level needed to change power levels.
pub async fn is_moderator(room: &Room, user: &UserId, required: Option<i64>) -> Result<bool> {
    let levels = room.power_levels().await?;
    let level = match levels.for_user(user) {
        UserPowerLevel::Infinite => return Ok(true),
        UserPowerLevel::Int(l) => i64::from(l),
        _ => return Ok(false),
    };
    let needed = required.unwrap_or_else(|| i64::from(levels.for_state(StateEventType::RoomPowerLevels)));
    debug!(%user, level, needed, "moderator check");
    Ok(level >= needed)
}

/// The content of every message hush sends: a notice with a plain and an HTML body and
/// empty intentional mentions (`"m.mentions": {}`). Clients that support intentional
/// mentions then ping no one, whatever user ids or `@room` a list's reason holds.
pub fn notice_content(plain: &str, html: &str) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_html(plain, html).add_mentions(Mentions::new())
}

/// Sends a notice with a plain and an HTML body (see [`notice_content`]).
pub async fn send_notice(room: &Room, plain: &str, html: &str) -> Result<()> {
    room.send(notice_content(plain, html)).await?;
    Ok(())
}

/// Reacts to an event (a ✅ acknowledges a command).
pub async fn react(room: &Room, event_id: &EventId, key: &str) -> Result<()> {
    room.send(ReactionEventContent::new(Annotation::new(event_id.to_owned(), key.to_owned()))).await?;
    Ok(())
}

/// Tells the SDK that a room is not encrypted when its full state, just read, has no
/// `m.room.encryption`. Over `/sync` v3 the SDK learns that a room is encrypted (from the
/// event) but never that it is not, so before the first message it sends into a room
/// joined a moment ago it asks the homeserver (`GET .../state/m.room.encryption`): an
/// expected 404 that the SDK logs as an ERROR. hush has the room's state already; the
/// answer is saved in the SDK's store, so later runs do not ask either.
pub async fn note_encryption_state(room: &Room, state: &[serde_json::Value]) {
    if !room.encryption_state().is_unknown() {
        return;
    }
    let encrypted = state.iter().any(|e| {
        e.get("type").and_then(serde_json::Value::as_str) == Some("m.room.encryption")
            && e.get("state_key").and_then(serde_json::Value::as_str) == Some("")
    });
    if encrypted {
        // The SDK's own look-up finds the event: no error, and it keeps the algorithm.
        return;
    }
    let marked = room
        .update_and_save_room_info(|mut info| {
            info.mark_encryption_state_synced();
            (info, matrix_sdk_base::RoomInfoNotableUpdateReasons::empty())
        })
        .await;
    if let Err(e) = marked {
        debug!(room = %room.room_id(), "cannot save the room's encryption state: {e}");
    }
}

/// A room's full state as JSON events (for policy lists and protected rooms).
pub async fn room_state(client: &Client, room: &RoomId) -> Result<Vec<serde_json::Value>> {
    // A bounded number at a time: at start-up every followed room is read at once, and
    // 200 rooms' responses parsed together made the start-up's peak memory, which the
    // allocator then keeps (BENCHMARKS.md, "200 rooms"). 8 at a time slowed a 200-room
    // warm start (rooms loaded in 8.5 s instead of 1.9 s: the reads queued behind the
    // start-up's writes); 32 keep the homeserver's queue full.
    static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);
    let _turn = READS.acquire().await?;
    let resp = client.send(get_state_events::v3::Request::new(room.to_owned())).await?;
    let mut out = Vec::with_capacity(resp.room_state.len());
    for raw in resp.room_state {
        match state_event(raw.json().get()) {
            Ok(v) => out.push(v),
            Err(e) => warn!(room = %room, "skipping an unreadable state event: {e}"),
        }
    }
    Ok(out)
}

/// A state event as the engine takes it: only the fields it reads. `unsigned` and the
/// rest would double the memory a 20,000-rule list takes while it loads. Only
/// `m.room.power_levels` keeps `unsigned.prev_content` (the content the event replaced,
/// which tells whether its writer saw hush's mute), and it and `m.room.member` keep
/// `unsigned.replaces_state` (the event it replaced: an event sync delivers again after its
/// replacement is older than the view, and a newer one than hush's own write).
pub fn state_event(json: &str) -> serde_json::Result<serde_json::Value> {
    const FIELDS: &[&str] = &["type", "state_key", "sender", "event_id", "content"];
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    let unsigned: &[&str] = match v.get("type").and_then(serde_json::Value::as_str) {
        Some("m.room.power_levels") => &["prev_content", "replaces_state"],
        Some("m.room.member") => &["replaces_state"],
        _ => &[],
    };
    if let Some(fields) = v.as_object_mut() {
        let kept: serde_json::Map<String, serde_json::Value> = fields
            .get_mut("unsigned")
            .and_then(|u| u.as_object_mut())
            .map(|u| unsigned.iter().filter_map(|k| Some(((*k).to_owned(), u.remove(*k)?))).collect())
            .unwrap_or_default();
        fields.retain(|k, _| FIELDS.contains(&k.as_str()));
        if !kept.is_empty() {
            fields.insert("unsigned".to_owned(), serde_json::Value::Object(kept));
        }
    }
    Ok(v)
}

/// Sends a state event with JSON content (a policy rule, or `{}` to remove one).
pub async fn put_state(
    client: &Client,
    room: &RoomId,
    event_type: &str,
    state_key: &str,
    content: &serde_json::Value,
) -> Result<()> {
    let req = send_state_event::v3::Request::new_raw(
        room.to_owned(),
        event_type.into(),
        state_key.to_owned(),
        raw_content(content).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    client.send(req).await.map_err(|e| anyhow::anyhow!("{}", classify(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_power_levels_keep_their_prev_content() {
        let pl = r#"{"type": "m.room.power_levels", "state_key": "", "sender": "@m:x", "event_id": "$1",
                     "content": {"users": {}}, "origin_server_ts": 5,
                     "unsigned": {"age": 3, "prev_content": {"users": {"@a:x": -1}}, "replaces_state": "$0"}}"#;
        let v = state_event(pl).unwrap();
        assert_eq!(v["unsigned"], serde_json::json!({"prev_content": {"users": {"@a:x": -1}}, "replaces_state": "$0"}));
        assert!(v.get("origin_server_ts").is_none());
        let rule = r#"{"type": "m.policy.rule.user", "state_key": "k", "sender": "@m:x", "event_id": "$2",
                       "content": {}, "unsigned": {"prev_content": {"entity": "@a:x"}, "replaces_state": "$1"}}"#;
        assert!(state_event(rule).unwrap().get("unsigned").is_none());
    }

    /// Found by the chaos run: member events lost `unsigned.replaces_state` here, so the
    /// view's memory of replaced member events (`rooms/member_events.rs`) never knew which
    /// join a ban replaced. Synapse's sync sent a member's older join again after hush's
    /// ban (a fork in the room's history, resolved back in the next sync), hush read it as
    /// an unban, marked its ban overridden and never lifted it.
    #[test]
    fn member_events_keep_the_event_they_replaced_and_nothing_else() {
        let ban = r#"{"type": "m.room.member", "state_key": "@a:x", "sender": "@hush:x", "event_id": "$ban",
                      "content": {"membership": "ban"}, "origin_server_ts": 5,
                      "unsigned": {"age": 3, "prev_content": {"membership": "join"}, "replaces_state": "$join"}}"#;
        let v = state_event(ban).unwrap();
        assert_eq!(v["unsigned"], serde_json::json!({"replaces_state": "$join"}));
        let mut room = crate::rooms::RoomState::from_state("!r:x", &[]);
        let join = r#"{"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "event_id": "$join",
                       "content": {"membership": "join"}}"#;
        room.apply_state(&state_event(join).unwrap());
        room.apply_state(&v);
        room.apply_state(&state_event(join).unwrap());
        assert_eq!(room.membership("@a:x"), hush_core::reconcile::Membership::Ban, "the older join is stale");
    }

    /// Issue 13: matrix-sdk's handlers got a `state_after` response's final state first and
    /// its older timeline events after it; what hush forwards keeps only the final one.
    #[test]
    fn a_state_after_sync_gives_its_state_in_order_then_its_redactions() {
        use matrix_sdk::deserialized_responses::TimelineEvent;
        use matrix_sdk::sync::{JoinedRoomUpdate, LeftRoomUpdate, Timeline};
        fn raw<T>(v: serde_json::Value) -> Raw<T> {
            Raw::new(&v).unwrap().cast_unchecked()
        }
        let pl = |id: &str| {
            serde_json::json!({"type": "m.room.power_levels", "state_key": "", "event_id": id, "sender": "@m:x",
                               "origin_server_ts": 1, "content": {"users": {}}})
        };
        let message = serde_json::json!({"type": "m.room.message", "event_id": "$msg", "sender": "@m:x",
                                         "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "hi"}});
        // Up to room version 10 `redacts` is a top-level field; from 11 on it is in the content.
        let redaction = |id: &str, redacts: &str, v11: bool| {
            let mut ev = serde_json::json!({"type": "m.room.redaction", "event_id": id, "sender": "@m:x",
                                            "origin_server_ts": 1, "content": {}});
            if v11 {
                ev["content"]["redacts"] = redacts.into()
            } else {
                ev["redacts"] = redacts.into()
            }
            ev
        };
        let timeline = |events: Vec<serde_json::Value>| Timeline {
            limited: false,
            prev_batch: None,
            events: events.into_iter().map(|e| TimelineEvent::from_plaintext(raw(e))).collect(),
        };
        let mut response = SyncResponse::default();
        let joined = JoinedRoomUpdate {
            state: SyncState::After(vec![raw(pl("$new"))]),
            timeline: timeline(vec![
                pl("$old"),
                redaction("$r", "$gone", false),
                message.clone(),
                pl("$new"),
                redaction("$r11", "$gone11", true),
            ]),
            ..Default::default()
        };
        response.rooms.joined.insert(OwnedRoomId::try_from("!joined:x").unwrap(), joined);
        let left = LeftRoomUpdate {
            state: SyncState::Before(vec![raw(pl("$before"))]),
            timeline: timeline(vec![message, pl("$leave")]),
            ..Default::default()
        };
        response.rooms.left.insert(OwnedRoomId::try_from("!left:x").unwrap(), left);
        let seen: Vec<(String, Vec<String>, Vec<String>)> = room_updates(&response, "@hush:x", None)
            .map(|u| (u.room_id.to_string(), u.state.iter().map(|e| e["event_id"].to_string()).collect(), u.redacted))
            .collect();
        let ids = |ids: &[&str]| ids.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>();
        let joined = ("!joined:x".to_owned(), ids(&["$new"]), vec!["$gone".to_owned(), "$gone11".to_owned()]);
        let left = ("!left:x".to_owned(), ids(&["$before", "$leave"]), vec![]);
        assert_eq!(seen, [joined, left]);
    }

    #[test]
    fn notices_mention_no_one() {
        let content = notice_content("@alice:example.org @room spam", "<b>@room</b> spam");
        let json = serde_json::to_value(&content).unwrap();
        assert_eq!(json["m.mentions"], serde_json::json!({}), "{json}");
        assert_eq!(json["msgtype"], "m.notice");
        assert_eq!(json["body"], "@alice:example.org @room spam");
        assert_eq!(json["formatted_body"], "<b>@room</b> spam");
    }
}
