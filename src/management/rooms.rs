//! Room commands: `watch`/`unwatch`, `rooms add`/`remove`, `preview` and the room list: looking at a room, checking the moderator may protect it, and saving the change.

use std::fmt::Write;

use hush_core::commands::RoomRef;
use hush_core::policy::ListTrust;
use matrix_sdk::RoomState;
use tokio::sync::oneshot;

use super::{engine_status, Context, Reply};
use crate::engine::Input;

/// Reads a room's state for a look, joining it if needed. hush stays joined: an
/// invite-only list could not be joined again for a later `watch`.
async fn peek(
    ctx: &Context<'_>,
    room: &str,
) -> Result<(matrix_sdk::ruma::OwnedRoomId, Vec<serde_json::Value>), String> {
    let room_id =
        crate::matrix::resolve(ctx.client, room).await.map_err(|e| format!("Cannot resolve {room}: {e:#}"))?;
    let joined = ctx.client.get_room(&room_id).is_some_and(|r| r.state() == RoomState::Joined);
    if !joined {
        crate::matrix::join(ctx.client, room_id.as_str()).await.map_err(|e| format!("Cannot read {room}: {e:#}"))?;
    }
    let state =
        crate::matrix::room_state(ctx.client, &room_id).await.map_err(|e| format!("Cannot read {room}: {e:#}"))?;
    Ok((room_id, state))
}

/// `preview`: what a list would do, without following it.
pub(super) async fn preview(ctx: &Context<'_>, room: &RoomRef, actions: Option<ListTrust>) -> Result<String, String> {
    let (room_id, events) = peek(ctx, room.as_str()).await?;
    let trust = actions.unwrap_or_else(|| ctx.config.list_trust(room.as_str()));
    let (tx, rx) = oneshot::channel();
    ctx.engine
        .send(Input::Preview { room_id: room_id.to_string(), events, trust, reply: tx })
        .map_err(|_| "The engine is not running.".to_owned())?;
    rx.await.map_err(|_| "The engine is not running.".to_owned())
}

/// `watch`: the preview first, then follow. Rules beyond the safety guard are held when
/// the list loads, until a moderator confirms them.
pub(super) async fn watch(ctx: &Context<'_>, room: &RoomRef, actions: Option<ListTrust>) -> Reply {
    // A list hush cannot read yet (not invited yet) is still followed, retried until it
    // can be joined; the guard judges its rules when they load.
    let look = match preview(ctx, room, actions).await {
        Ok(text) => text,
        Err(e) => format!("No preview: {e}. Rules beyond the safety guard will be held when it loads."),
    };
    if let Some(trust) = actions {
        let mut overrides = ctx.overrides.lock().unwrap_or_else(|e| e.into_inner());
        overrides.set_actions(room.as_str(), trust);
    }
    let reply = change_rooms(ctx, Change::Watch, room).await;
    if !reply.ok {
        return reply;
    }
    Reply::ok(format!("{}\n{look}", reply.plain))
}

/// `rooms add` is for the room's own moderators: the commanding moderator must be at least
/// at the room's ban level there.
pub(super) async fn may_protect(ctx: &Context<'_>, room: &RoomRef, sender: &str) -> Result<(), String> {
    let (room_id, events) = peek(ctx, room.as_str()).await?;
    let state = crate::rooms::RoomState::from_state(room_id.as_str(), &events);
    if state.creators_privileged && state.creators.iter().any(|c| c == sender) {
        return Ok(());
    }
    let level = hush_core::power_levels::user_level(&state.power_levels, sender);
    let needed = hush_core::power_levels::ban_level(&state.power_levels);
    if level >= needed {
        Ok(())
    } else {
        Err(format!(
            "Not protecting {room}: you ({sender}) have power level {level} there, and protecting a room is for those who may ban in it (level {needed})."
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Watch,
    Unwatch,
    Protect,
    Unprotect,
}

pub(super) async fn change_rooms(ctx: &Context<'_>, change: Change, room: &RoomRef) -> Reply {
    let room = room.as_str().to_owned();
    let room_id = match crate::matrix::resolve(ctx.client, &room).await {
        Ok(id) => id,
        Err(e) => return Reply::error(format!("Cannot resolve {room}: {e:#}")),
    };
    let result = {
        let mut overrides = ctx.overrides.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Watch => overrides.watch(&room),
            Change::Unwatch => overrides.unwatch(&room),
            Change::Protect => overrides.protect(&room),
            Change::Unprotect => overrides.unprotect(&room),
        }
        // Remove a second spelling (id vs alias) of the same room as well.
        if room != room_id.as_str() {
            match change {
                Change::Unwatch => overrides.unwatch(room_id.as_str()),
                Change::Unprotect => overrides.unprotect(room_id.as_str()),
                _ => {}
            }
        }
        overrides.save(&ctx.config.data_dir)
    };
    if let Err(e) = result {
        return Reply::error(format!("Cannot save the change: {e:#}"));
    }
    if matches!(change, Change::Unwatch | Change::Unprotect) {
        ctx.follows.unfollow(&room);
    }
    let id = room_id.to_string();
    match change {
        Change::Watch => {
            ctx.follows.watch(room.clone());
            Reply::ok(format!("Now following the policy list {room}. This survives restarts."))
        }
        Change::Protect => {
            ctx.follows.protect(room.clone());
            Reply::ok(format!("Now protecting {room}. This survives restarts."))
        }
        Change::Unwatch => {
            let _ = ctx.engine.send(Input::Unwatch { room_id: id });
            Reply::ok(format!(
                "No longer following {room}; what its rules caused is lifted unless another list says the same. This survives restarts."
            ))
        }
        Change::Unprotect => {
            let _ = ctx.engine.send(Input::Unprotect { room_id: id });
            Reply::ok(format!(
                "No longer protecting {room}. Restrictions hush applied there stay as they are. This survives restarts."
            ))
        }
    }
}

pub(super) async fn rooms(ctx: &Context<'_>) -> Reply {
    let Some(s) = engine_status(ctx).await else {
        return Reply::error("The engine is not running.".to_owned());
    };
    let mut text = format!("protected rooms ({}):\n", s.protected_rooms.len());
    for (room, loaded) in &s.protected_rooms {
        let name = matrix_sdk::ruma::RoomId::parse(room)
            .ok()
            .and_then(|id| ctx.client.get_room(&id))
            .and_then(|r| r.name())
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let _ = writeln!(text, "  {room}{name}{}", if *loaded { "" } else { " (not joined yet)" });
    }
    Reply::ok(text.trim_end().to_owned())
}
