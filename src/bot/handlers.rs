//! What comes from sync: state events in order to the engine, invites, commands in the management room and their replies, and the start-up notice.

use super::rooms::{announce_start, follow_upgrade};
use super::*;
use crate::backoff::Backoff;
use crate::engine::Input;
use crate::management::{self, Reply};
use crate::matrix;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, Relation};
use matrix_sdk::{Room, RoomState};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Forwards what one sync response changed to the engine, room by room: its state events
/// (the engine keeps what concerns it) in the order `rooms::in_order` gives (no older
/// event after a newer one of the same type and state key; hush's own events always),
/// then its redactions (a redacted policy rule is a removed rule). A redaction goes after
/// the state: it matters only for a rule still in force then. A tombstone in a followed
/// room starts following its replacement.
pub(super) fn forward_sync(bot: &Arc<Bot>, response: &matrix_sdk::sync::SyncResponse) {
    forward_rooms(bot, response);
    bot.synced.send_modify(|s| {
        s.first = true;
        s.rooms.extend(response.rooms.joined.keys().cloned());
    });
}

fn forward_rooms(bot: &Arc<Bot>, response: &matrix_sdk::sync::SyncResponse) {
    let max_mentions = bot.config.protections.mention_spam.as_ref().map(|m| m.max_mentions);
    for update in matrix::room_updates(response, bot.own_user.as_str(), max_mentions) {
        let room_id = update.room_id.to_string();
        for event in update.state {
            if let Some(replacement) = crate::rooms::tombstone_replacement(&event).transpose() {
                follow_upgrade(bot, update.room_id, replacement);
            }
            let _ = bot.engine.send(Input::State { room_id: room_id.clone(), event });
        }
        for redacts in update.redacted {
            let _ = bot.engine.send(Input::Redaction { room_id: room_id.clone(), redacts });
        }
        if update.gap && is_list(bot, update.room_id) {
            reread_list(bot, update.room_id);
        }
        if bot.config.protections.flood.is_some() {
            // Events from before the start (the first sync's timeline) are not counted.
            let events: Vec<(String, u64)> =
                update.activity.into_iter().filter(|(_, ts)| *ts >= bot.started_at_ms).collect();
            if !events.is_empty() {
                let _ = bot.engine.send(Input::Activity { room_id: room_id.clone(), events });
            }
        }
        // Only messages that may trip mention spam are here; those from before the start are not judged.
        let messages: Vec<_> = update.mentions.into_iter().filter(|m| m.ts >= bot.started_at_ms).collect();
        if !messages.is_empty() {
            let _ = bot.engine.send(Input::Mentions { room_id, messages });
        }
    }
}

/// Accepts invites to configured rooms; ignores the rest.
pub(super) async fn on_invite(ev: StrippedRoomMemberEvent, room: Room, bot: Ctx<Arc<Bot>>) {
    if ev.state_key != bot.own_user || room.state() != RoomState::Invited {
        return;
    }
    let wanted = bot.configured.read().unwrap_or_else(|e| e.into_inner()).contains(room.room_id());
    if !wanted {
        debug!(room = %room.room_id(), inviter = %ev.sender, "ignoring an invite to a room that is not configured");
        return;
    }
    // Six tries, 1 s doubling (the last wait is 32 s).
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(32));
    for _ in 0..6 {
        match room.join().await {
            Ok(()) => {
                info!(room = %room.room_id(), inviter = %ev.sender, "joined on invite");
                announce_start(&bot, room.room_id()).await;
                return;
            }
            Err(e) => {
                warn!(room = %room.room_id(), "cannot join on invite, retrying: {e}");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// Reads commands in the management room.
pub(super) async fn on_room_message(ev: OriginalSyncRoomMessageEvent, room: Room, bot: Ctx<Arc<Bot>>) {
    let is_management =
        bot.management_room.read().unwrap_or_else(|e| e.into_inner()).as_deref() == Some(room.room_id());
    if !is_management || ev.sender == bot.own_user {
        return;
    }
    if u64::from(ev.origin_server_ts.0) < bot.started_at_ms {
        debug!(event_id = %ev.event_id, "ignoring a message sent before hush started");
        return;
    }
    if matches!(ev.content.relates_to, Some(Relation::Replacement(_))) {
        debug!(event_id = %ev.event_id, "ignoring an edit");
        return;
    }
    let MessageType::Text(text) = &ev.content.msgtype else { return };
    let formatted = text.formatted.as_ref().map(|f| f.body.as_str());
    let parsed = hush_core::commands::parse(&bot.config.command_prefix, &text.body, formatted);
    if matches!(parsed, hush_core::commands::Parsed::NotACommand) {
        return;
    }
    match matrix::is_moderator(&room, &ev.sender, bot.config.moderator_power_level).await {
        Ok(true) => {}
        Ok(false) => {
            debug!(sender = %ev.sender, "ignoring a command from a non-moderator");
            return;
        }
        Err(e) => {
            warn!(sender = %ev.sender, "cannot check the sender's power level, ignoring the command: {e:#}");
            return;
        }
    }
    let reply = management::handle(&bot.commands(), parsed, ev.sender.as_str()).await;
    send_reply(&room, &ev, reply).await;
}

pub(super) async fn send_reply(room: &Room, ev: &OriginalSyncRoomMessageEvent, reply: Reply) {
    for piece in management::split_reply(&reply, 30_000) {
        if let Err(e) = matrix::send_notice(room, &piece.plain, &piece.html).await {
            warn!(room = %room.room_id(), "cannot send a reply: {e:#}");
        }
    }
    if reply.ok {
        if let Err(e) = matrix::react(room, &ev.event_id, "✅").await {
            debug!("cannot react: {e:#}");
        }
    }
}

/// Whether hush follows `room` as a policy list.
fn is_list(bot: &Arc<Bot>, room: &matrix_sdk::ruma::RoomId) -> bool {
    let roles = bot.roles.read().unwrap_or_else(|e| e.into_inner());
    roles.get(room).is_some_and(|r| r.contains(&Role::List))
}

/// Reads a policy list's whole state again after a gap in sync (engine/list_gaps.rs): the
/// engine applies what sync missed. A failed read is retried once a little later, then
/// left to the next gap (the list's rules are still those sync brought).
fn reread_list(bot: &Arc<Bot>, room: &matrix_sdk::ruma::RoomId) {
    let _ = bot.engine.send(Input::ListGap { room_id: room.to_string() });
    let (bot, room) = (Arc::clone(bot), room.to_owned());
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..5 {
            match matrix::room_state(&bot.client, &room).await {
                Ok(events) => {
                    debug!(list = %room, "read again after a gap in sync");
                    let _ = bot.engine.send(Input::ListReread { room_id: room.to_string(), events });
                    return;
                }
                Err(e) => {
                    warn!(list = %room, "cannot read the list again after a gap in sync, retrying: {e}");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
        warn!(list = %room, "cannot read the list again after a gap in sync: rules sent on a fork of its history may be missing until the next gap or restart");
        let _ = bot.engine.send(Input::ListReread { room_id: room.to_string(), events: Vec::new() });
    });
}
