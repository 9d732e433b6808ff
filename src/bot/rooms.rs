//! Following the configured rooms (retried until joined and loaded) and their upgrades: a tombstone's replacement is followed in the same roles once its `m.room.create` names the old room.

use super::*;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::engine::Input;
use crate::following::{self, Cancelled};
use crate::matrix;
use crate::runtime::RoomOverrides;
use anyhow::Result;
use hush_core::policy::ListTrust;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::RoomState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Every configured room with its roles (a room may be both a list and protected).
pub(super) fn configured_roles(config: &Config, overrides: &RoomOverrides) -> Vec<(String, Vec<Role>)> {
    let mut out: Vec<(String, Vec<Role>)> = Vec::new();
    let mut add = |room: &str, role: Role| match out.iter_mut().find(|(r, _)| r == room) {
        Some((_, roles)) if !roles.contains(&role) => roles.push(role),
        Some(_) => {}
        None => out.push((room.to_owned(), vec![role])),
    };
    add(&config.management_room, Role::Management);
    for l in &overrides.effective_lists(&config.policy_list_rooms()) {
        add(l, Role::List);
    }
    for r in &overrides.effective_rooms(&config.protected_rooms) {
        add(r, Role::Protected);
    }
    out
}

/// Follows every configured room in its own task, and tells the engine when each list's
/// first attempt has resolved its room id or failed (so it knows which lists exist).
pub(super) async fn follow_configured_rooms(bot: Arc<Bot>) {
    let rooms = {
        let overrides = bot.overrides.lock().unwrap_or_else(|e| e.into_inner());
        configured_roles(&bot.config, &overrides)
    };
    let mut list_resolvers = Vec::new();
    for (i, (room, roles)) in rooms.into_iter().enumerate() {
        if i == 1 {
            // The management room is first. Its moderators are never restricted, so the
            // engine should know them before any list or room is loaded: wait a little
            // (not for ever: a management room hush cannot join must not stop enforcement).
            let _ = tokio::time::timeout(Duration::from_secs(15), bot.management_loaded.notified()).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if roles.contains(&Role::List) {
            list_resolvers.push(rx);
        }
        bot.spawn_follow(room, roles, None, Some(tx));
    }
    // Each list's first attempt has resolved its room id or failed (its follow retries);
    // a list whose follow is cancelled before that drops its sender: known too.
    for rx in list_resolvers {
        let _ = rx.await;
    }
    // A list resolved in an earlier run stays known by its pin, even if it cannot be
    // followed now. Sent under the lock: an `unwatch` saved after this read reaches the
    // engine after ListsKnown.
    let overrides = bot.overrides.lock().unwrap_or_else(|e| e.into_inner());
    let pinned = overrides.pinned_lists(&bot.config.policy_list_rooms());
    let _ = bot.engine.send(Input::ListsKnown { pinned });
}

/// Resolves (an alias through its pin), joins and loads one configured room, retrying
/// with backoff (reported to the management room) until it works or is cancelled. The
/// replacement of an upgraded room (`upgrade_of`) is checked first and may be refused.
pub(super) async fn follow_room(
    bot: Arc<Bot>,
    room: String,
    roles: Vec<Role>,
    resolved: Option<tokio::sync::oneshot::Sender<()>>,
    upgrade_of: Option<OwnedRoomId>,
    ticket: u64,
) {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
    let mut resolved = resolved;
    loop {
        let attempt = async {
            let room_id = following::resolve_pinned(&bot, &room).await?;
            bot.follows.resolved(ticket, room_id.as_str());
            if let Some(old) = &upgrade_of {
                // Named so that an invite to it is accepted (it is checked before use).
                bot.configured.write().unwrap_or_else(|e| e.into_inner()).insert(room_id.clone());
                if let Err(why) = following::verify_replacement(&bot, &room_id, old).await? {
                    refuse_upgrade(&bot, old, &room_id, &roles, &why, ticket).await?;
                    return anyhow::Ok(());
                }
                bot.follows.if_live(ticket, || commit_upgrade(&bot, old, &room_id, &roles))?;
            }
            let id = room_id.to_string();
            let trust = if roles.contains(&Role::List) { list_trust(&bot, &room, &room_id).await } else { None };
            bot.follows.if_live(ticket, || {
                bot.configured.write().unwrap_or_else(|e| e.into_inner()).insert(room_id.clone());
                let mut all = bot.roles.write().unwrap_or_else(|e| e.into_inner());
                let have = all.entry(room_id.clone()).or_default();
                have.extend(roles.iter().filter(|r| !have.contains(r)).copied().collect::<Vec<_>>());
                drop(all);
                if roles.contains(&Role::Management) {
                    *bot.management_room.write().unwrap_or_else(|e| e.into_inner()) = Some(room_id.clone());
                }
                let _ = bot.engine.send(Input::Configure {
                    management_room: roles.contains(&Role::Management).then(|| id.clone()),
                    lists: trust.map(|t| (id.clone(), t)).into_iter().collect(),
                    protected: if roles.contains(&Role::Protected) { vec![id.clone()] } else { vec![] },
                });
                if let Some(tx) = resolved.take() {
                    let _ = tx.send(());
                }
            })?;
            let joined = bot.client.get_room(&room_id).is_some_and(|r| r.state() == RoomState::Joined);
            if !joined {
                matrix::join(&bot.client, room_id.as_str()).await?;
                info!(%room, "joined");
            }
            if roles.contains(&Role::Management) {
                let events = matrix::room_state(&bot.client, &room_id).await?;
                if let Some(room) = bot.client.get_room(&room_id) {
                    matrix::note_encryption_state(&room, &events).await;
                }
                announce_start(&bot, &room_id).await;
                let _ = bot.engine.send(Input::ManagementLoaded { room_id: id.clone(), events });
                bot.management_loaded.notify_one();
            }
            if roles.contains(&Role::List) || roles.contains(&Role::Protected) {
                // Read once the sync that brought the room went to the engine (the first sync,
                // for a room joined before the start), and what sync brought of it until now
                // is dropped: the state read now holds it. Replayed after that state, a cold
                // start's or a join's history (a ban rule, then its removal) banned and
                // unbanned members, a kick (found by the 200-room benchmark).
                let mut synced = bot.synced.subscribe();
                let _ = synced.wait_for(|s| s.first && (joined || s.rooms.contains(&room_id))).await;
                let _ = bot.engine.send(Input::Loading { room_id: id.clone() });
                let mut events = matrix::room_state(&bot.client, &room_id).await?;
                let tombstone = events.iter().find_map(|e| crate::rooms::tombstone_replacement(e).transpose());
                // A list's state can be large: copied only for a room that is both.
                let (is_list, is_protected) = (roles.contains(&Role::List), roles.contains(&Role::Protected));
                let for_list = match (is_list, is_protected) {
                    (true, true) => Some(events.clone()),
                    (true, false) => Some(std::mem::take(&mut events)),
                    _ => None,
                };
                bot.follows.if_live(ticket, || {
                    if let Some(events) = for_list {
                        let _ = bot.engine.send(Input::ListLoaded { room_id: id.clone(), events });
                    }
                    if is_protected {
                        let _ = bot.engine.send(Input::RoomLoaded { room_id: id.clone(), events });
                    }
                })?;
                // Upgraded while hush was not looking: follow the replacement now.
                if let Some(replacement) = tombstone {
                    follow_upgrade(&bot, &room_id, replacement);
                }
            }
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) if e.is::<Cancelled>() => return,
            Err(e) => {
                let wait = backoff.next();
                warn!(%room, "cannot follow yet, retrying in {}s: {e:#}", wait.as_secs());
                if let Some(tx) = resolved.take() {
                    // The first attempt could not resolve the room: the lists are known
                    // without it (one unresolvable list must not hold everything for ever).
                    if roles.contains(&Role::List) {
                        warn!(%room, "this list's room id is not known (its alias does not resolve now and has no usable pin): what it caused in earlier runs, if anything, is not held");
                    }
                    let _ = tx.send(());
                }
                let error = format!("{e:#}");
                if roles.contains(&Role::List) {
                    let _ = bot.engine.send(Input::ListUnavailable { room: room.clone(), error: error.clone() });
                }
                if roles.contains(&Role::Protected) {
                    let _ = bot.engine.send(Input::RoomUnavailable { room: room.clone(), error });
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// What a followed list may make hush do: as configured, else everything for the
/// community's own list (`default_policy_list`, by name or by room id) and bans and mutes
/// for any other.
pub(super) async fn list_trust(bot: &Bot, room: &str, room_id: &matrix_sdk::ruma::RoomId) -> Option<ListTrust> {
    if let Some(actions) = bot.watched_actions(room, room_id.as_str()) {
        return Some(actions);
    }
    let configured = bot.config.list_trust(room);
    if configured != ListTrust::OTHER_LIST || bot.config.default_policy_list.is_none() {
        return Some(configured);
    }
    let default = bot.config.default_policy_list.as_deref().unwrap_or_default();
    let is_default = default == room_id.as_str()
        || matrix::resolve(&bot.client, default).await.is_ok_and(|id| id.as_str() == room_id.as_str());
    Some(if is_default { ListTrust::DEFAULT_LIST } else { configured })
}

/// A followed room was upgraded (tombstone): follow its replacement in the same roles,
/// once its `m.room.create` names the old room as its predecessor (checked by the follow;
/// see `commit_upgrade` and `refuse_upgrade`). A tombstone in a room hush no longer
/// follows is ignored. A protected room's old room is dropped at once (nobody can talk
/// there any more); it is protected again if the replacement is refused.
pub(super) fn follow_upgrade(bot: &Arc<Bot>, old: &RoomId, replacement: Result<String, String>) {
    let new = match replacement.map(|r| RoomId::parse(&r).map_err(|e| format!("`{r}`: {e}"))) {
        Ok(Ok(new)) => new,
        Ok(Err(why)) | Err(why) => {
            warn!(room = %old, state_key = "", "ignoring a malformed m.room.tombstone: {why}");
            return;
        }
    };
    let Some(roles) = bot.roles.read().unwrap_or_else(|e| e.into_inner()).get(old).cloned() else {
        debug!(%old, %new, "ignoring the tombstone of a room hush does not follow");
        return;
    };
    let already = {
        let overrides = bot.overrides.lock().unwrap_or_else(|e| e.into_inner());
        overrides.watched.iter().chain(&overrides.protected).any(|r| r == new.as_str())
    };
    if already || bot.follows.is_following(new.as_str()) {
        // A restart: the replacement is followed from rooms.json already (or being checked).
        debug!(%old, %new, "the replacement of an upgraded room is already followed");
        return;
    }
    info!(%old, %new, ?roles, "a followed room was upgraded; checking its replacement before following it");
    if roles.contains(&Role::Protected) {
        let _ = bot.engine.send(Input::Unprotect { room_id: old.to_string() });
    }
    bot.spawn_follow(new.to_string(), roles, Some(old.to_owned()), None);
}

/// The replacement names the old room as its predecessor: it takes over the old room's
/// roles, saved in rooms.json. A policy list's old room stays followed too (its rules do
/// not move by themselves) and is recorded as watched so it stays followed when the
/// list's alias moves to the new room; what hush did in an old protected room that the
/// upgrade copied is carried over to the new room.
pub(super) fn commit_upgrade(bot: &Bot, old: &RoomId, new: &RoomId, roles: &[Role]) {
    {
        let mut overrides = bot.overrides.lock().unwrap_or_else(|e| e.into_inner());
        if roles.contains(&Role::List) {
            overrides.watch(old.as_str());
            overrides.watch(new.as_str());
        }
        if roles.contains(&Role::Protected) {
            overrides.protect(new.as_str());
            overrides.unprotect(old.as_str());
        }
        if let Err(e) = overrides.save(&bot.config.data_dir) {
            warn!("cannot save the upgraded room: {e:#}");
        }
    }
    if roles.contains(&Role::Protected) {
        let _ = bot.engine.send(Input::RoomUpgraded { old: old.to_string(), new: new.to_string() });
        let mut all = bot.roles.write().unwrap_or_else(|e| e.into_inner());
        if let Some(have) = all.get_mut(old) {
            have.retain(|r| *r != Role::Protected);
            if have.is_empty() {
                all.remove(old);
            }
        }
    }
    info!(%old, %new, ?roles, "the replacement names the upgraded room as its predecessor; following it");
    if roles.contains(&Role::Management) {
        warn!(%old, %new, "the management room was upgraded; hush moves there now, but update management_room in the config");
    }
}

/// The replacement does not name the old room as its predecessor: not followed, said in
/// the log and the management room; the old room stays followed as it was. (`Err`: the
/// old room's state cannot be read again yet; the follow retries, checking again.)
pub(super) async fn refuse_upgrade(
    bot: &Arc<Bot>,
    old: &RoomId,
    new: &RoomId,
    roles: &[Role],
    why: &str,
    ticket: u64,
) -> Result<()> {
    warn!(%old, %new, "not following the replacement of an upgraded room: {why}");
    let text = format!(
        "{old} was upgraded (tombstone) to {new}, but hush does not follow {new}: {why}. hush goes on \
         following {old} as before. If {new} is meant, add it by hand (`watch` or `rooms add`)."
    );
    following::report_once(bot, &format!("refused|{old}|{new}"), text);
    if !bot.roles.read().unwrap_or_else(|e| e.into_inner()).contains_key(new) {
        bot.configured.write().unwrap_or_else(|e| e.into_inner()).remove(new);
    }
    if roles.contains(&Role::Protected) {
        // Dropped at the tombstone: protected again, from its current state.
        bot.follows.if_live(ticket, || {
            let protected = vec![old.to_string()];
            let _ = bot.engine.send(Input::Configure { management_room: None, lists: vec![], protected });
        })?;
        let events = matrix::room_state(&bot.client, old).await?;
        bot.follows.if_live(ticket, || {
            let _ = bot.engine.send(Input::RoomLoaded { room_id: old.to_string(), events });
        })?;
    }
    Ok(())
}

/// Tells the management room, once per run, that hush is up and taking commands.
pub(super) async fn announce_start(bot: &Bot, room_id: &matrix_sdk::ruma::RoomId) {
    let is_management = bot.management_room.read().unwrap_or_else(|e| e.into_inner()).as_deref() == Some(room_id);
    if !is_management || bot.announced.swap(true, Ordering::SeqCst) {
        return;
    }
    let Some(room) = bot.client.get_room(room_id) else { return };
    let text = format!(
        "hush {} started{}. Type `{} help` for the commands.",
        env!("CARGO_PKG_VERSION"),
        if bot.config.dry_run { " in dry-run mode (nothing will be changed)" } else { "" },
        bot.config.command_prefix
    );
    let html = hush_core::commands::html_escape(&text);
    // A sync response in flight while hush joined can still list the room as an invite and
    // be applied after the join, so the SDK refuses to send ("expected: Joined, got:
    // Invited"): join again (a no-op on the homeserver) and retry.
    for attempt in 1..=3 {
        if room.state() != RoomState::Joined {
            if let Err(e) = matrix::join(&bot.client, room_id.as_str()).await {
                debug!("joining the management room again before announcing the start: {e:#}");
            }
        }
        match matrix::send_notice(&room, &text, &html).await {
            Ok(()) => return,
            Err(_) if attempt < 3 && room.state() != RoomState::Joined => continue,
            Err(e) => {
                warn!("cannot announce the start in the management room: {e:#}");
                bot.announced.store(false, Ordering::SeqCst);
                return;
            }
        }
    }
}
