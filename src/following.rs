//! Following configured rooms safely: aliases pinned to the room they first resolved to,
//! follows that can be cancelled while they still retry, and upgrades checked against the
//! replacement room's `m.room.create` before hush follows them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::RoomState;
use serde_json::Value;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::runtime::{Pin, RoomOverrides};

/// What a configured room is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Management,
    List,
    Protected,
}

/// What following needs from the running bot (implemented by `bot::Bot`, so this module
/// does not depend on `bot`).
pub trait Host: Send + Sync + 'static {
    fn client(&self) -> &matrix_sdk::Client;
    /// Lists and rooms changed by commands, and the alias pins (saved in `data_dir`).
    fn overrides(&self) -> &Mutex<RoomOverrides>;
    fn data_dir(&self) -> &std::path::Path;
    fn follows(&self) -> &Follows;
    /// The management room, once known.
    fn management_room(&self) -> Option<OwnedRoomId>;
    /// Whether hush follows `room` in some role.
    fn is_followed(&self, room: &RoomId) -> bool;
}

/// The follows still under way (resolving, joining, retrying), so that `unwatch` and
/// `rooms remove` can stop them.
#[derive(Default)]
pub struct Follows {
    inner: Mutex<Inner>,
    /// What `report_once` has reported in this run.
    reported: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Follow>,
}

struct Follow {
    /// The room as configured or commanded (alias or id), then the id it resolved to.
    names: Vec<String>,
    roles: Vec<Role>,
    /// The room this one replaces, for the follow of an upgrade.
    upgrade_of: Option<String>,
    abort: Option<AbortHandle>,
}

/// A follow that lost some of its roles and goes on with the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub room: String,
    pub roles: Vec<Role>,
    pub upgrade_of: Option<String>,
}

/// The follow was cancelled (`unwatch`, `rooms remove`): it stops without a trace.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the follow was cancelled")
    }
}

impl std::error::Error for Cancelled {}

impl Follows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a follow about to start; returns its ticket.
    pub fn register(&self, room: &str, roles: &[Role], upgrade_of: Option<&str>) -> u64 {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        let follow = Follow {
            names: vec![room.to_owned()],
            roles: roles.to_vec(),
            upgrade_of: upgrade_of.map(str::to_owned),
            abort: None,
        };
        inner.live.insert(id, follow);
        id
    }

    /// The task's abort handle; a follow cancelled before it had one is aborted now.
    pub fn set_abort(&self, ticket: u64, abort: AbortHandle) {
        match self.lock().live.get_mut(&ticket) {
            Some(f) => f.abort = Some(abort),
            // Finished (aborting it is a no-op) or cancelled already.
            None => abort.abort(),
        }
    }

    /// The room id the follow resolved to: another name it can be cancelled by.
    pub fn resolved(&self, ticket: u64, room_id: &str) {
        if let Some(f) = self.lock().live.get_mut(&ticket) {
            if !f.names.iter().any(|n| n == room_id) {
                f.names.push(room_id.to_owned());
            }
        }
    }

    /// The follow ended (followed, or refused for good).
    pub fn done(&self, ticket: u64) {
        self.lock().live.remove(&ticket);
    }

    /// Runs `f` if the follow was not cancelled, under the registry's lock: what `f` sends
    /// reaches the engine before anything sent after a cancellation.
    pub fn if_live<T>(&self, ticket: u64, f: impl FnOnce() -> T) -> Result<T, Cancelled> {
        let inner = self.lock();
        if !inner.live.contains_key(&ticket) {
            return Err(Cancelled);
        }
        let out = f();
        drop(inner);
        Ok(out)
    }

    /// Whether a follow of `room` (by any name) is under way.
    pub fn is_following(&self, room: &str) -> bool {
        self.lock().live.values().any(|f| f.names.iter().any(|n| n == room))
    }

    /// The names (alias, resolved ids) of the follows under way that share one with `names`.
    pub fn spellings(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let inner = self.lock();
        let mut out = names.clone();
        for f in inner.live.values().filter(|f| f.names.iter().any(|n| names.contains(n))) {
            out.extend(f.names.iter().cloned());
        }
        out
    }

    /// Stops the follows of a room known by `names`, and the follows of its replacement,
    /// in every role not in `keep`. A follow with roles left is returned, to start again
    /// with those.
    pub fn cancel(&self, names: &BTreeSet<String>, keep: &[Role]) -> Vec<Restart> {
        let mut inner = self.lock();
        let hit: Vec<u64> = inner
            .live
            .iter()
            .filter(|(_, f)| {
                let named = f.names.iter().any(|n| names.contains(n))
                    || f.upgrade_of.as_ref().is_some_and(|o| names.contains(o));
                named && f.roles.iter().any(|r| !keep.contains(r))
            })
            .map(|(t, _)| *t)
            .collect();
        let mut restarts = Vec::new();
        for ticket in hit {
            let Some(f) = inner.live.remove(&ticket) else { continue };
            if let Some(abort) = &f.abort {
                abort.abort();
            }
            let roles: Vec<Role> = f.roles.iter().copied().filter(|r| keep.contains(r)).collect();
            info!(room = %f.names[0], ?roles, "a follow still under way is cancelled");
            if !roles.is_empty() {
                restarts.push(Restart { room: f.names[0].clone(), roles, upgrade_of: f.upgrade_of });
            }
        }
        restarts
    }
}

/// Resolves a configured room (alias or id) to the room id hush follows: an alias is
/// pinned to the room it resolved to the first time, and stays there when it moves (said
/// in the log and the management room). An alias that no longer resolves keeps its pin.
pub async fn resolve_pinned<H: Host>(bot: &Arc<H>, room: &str) -> Result<OwnedRoomId> {
    if let Ok(id) = RoomId::parse(room) {
        return Ok(id);
    }
    let resolved = crate::matrix::resolve(bot.client(), room).await;
    let pin = {
        let mut overrides = bot.overrides().lock().unwrap_or_else(|e| e.into_inner());
        let resolved = match resolved {
            Ok(id) => id,
            Err(e) => match overrides.pinned.get(room) {
                Some(pinned) => {
                    warn!(alias = room, %pinned, "the alias does not resolve now; keeping its pinned room: {e:#}");
                    return RoomId::parse(pinned.as_str())
                        .with_context(|| format!("the pin of {room} is not a room id"));
                }
                None => return Err(e),
            },
        };
        let pin = overrides.pin(room, resolved.as_str());
        if let Pin::New(_) = pin {
            if let Err(e) = overrides.save(bot.data_dir()) {
                warn!(alias = room, "cannot save the alias's pinned room: {e:#}");
            }
        }
        pin
    };
    match &pin {
        Pin::New(id) => info!(alias = room, room_id = %id, "alias pinned to the room it resolves to"),
        Pin::Same(_) => {}
        Pin::Moved { pinned, now } => {
            let text = pin.warning(room).unwrap_or_default();
            warn!(alias = room, %pinned, %now, "the alias now points to another room; hush keeps the pinned one");
            report_once(bot, &format!("moved|{room}|{now}"), text);
        }
    }
    RoomId::parse(pin.room_id()).with_context(|| format!("the pin of {room} is not a room id"))
}

/// Reports to the management room, once per run for a `key`, as soon as hush is in it
/// (it may not be yet at start-up); given up after ten minutes (the log has it anyway).
pub fn report_once<H: Host>(bot: &Arc<H>, key: &str, text: String) {
    if !bot.follows().reported.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned()) {
        return;
    }
    let bot = bot.clone();
    tokio::spawn(async move {
        let html = hush_core::commands::html_escape(&text);
        for _ in 0..300 {
            let management = bot.management_room();
            let room = management.and_then(|id| bot.client().get_room(&id)).filter(|r| r.state() == RoomState::Joined);
            if let Some(room) = room {
                if let Err(e) = crate::matrix::send_notice(&room, &text, &html).await {
                    warn!("cannot report to the management room: {e:#}");
                }
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// The room an `m.room.create` content names as its predecessor.
pub fn predecessor(create_content: &Value) -> Option<&str> {
    create_content.pointer("/predecessor/room_id").and_then(Value::as_str)
}

/// Whether a replacement may be followed: its `m.room.create` must name `old` as its
/// predecessor. `Err` says what it names instead.
pub fn check_predecessor(create_content: &Value, old: &str) -> Result<(), String> {
    match predecessor(create_content) {
        Some(p) if p == old => Ok(()),
        Some(p) => Err(format!("its m.room.create names {p} as its predecessor, not {old}")),
        None => Err(format!("its m.room.create names no predecessor (hush expected {old})")),
    }
}

/// A room's `m.room.create` content, if hush may read it (joined, or world-readable).
async fn read_create(bot: &impl Host, room: &RoomId) -> Result<Value> {
    let req = get_state_event_for_key::v3::Request::new(room.to_owned(), "m.room.create".into(), String::new());
    let resp = bot.client().send(req).await.with_context(|| format!("cannot read the m.room.create of {room}"))?;
    Ok(serde_json::from_str(resp.event_or_content.get())?)
}

/// Checks that `new` is the replacement of `old`. Its `m.room.create` is read without
/// joining when it can be (world-readable, or joined already); otherwise hush joins
/// first (the moderators invite it to an upgraded room anyway). A replacement that is
/// refused is left again (or its invite declined) unless hush follows it for another reason. `Err` is "not yet" (cannot
/// read, cannot join: retried); `Ok(Err(why))` is a refusal for good.
pub async fn verify_replacement<H: Host>(bot: &Arc<H>, new: &RoomId, old: &RoomId) -> Result<Result<(), String>> {
    let create = match read_create(&**bot, new).await {
        Ok(c) => c,
        Err(e) if bot.client().get_room(new).is_some_and(|r| r.state() == RoomState::Joined) => return Err(e),
        Err(_) => {
            crate::matrix::join(bot.client(), new.as_str()).await?;
            info!(room = %new, "joined the replacement room to check its predecessor");
            read_create(&**bot, new).await?
        }
    };
    let verdict = check_predecessor(&create, old.as_str());
    if verdict.is_err() {
        leave_unless_followed(&**bot, new).await;
    }
    Ok(verdict)
}

/// Leaves a room hush joined only to check it, unless it follows it for another reason.
async fn leave_unless_followed(bot: &impl Host, room: &RoomId) {
    if bot.is_followed(room) {
        return;
    }
    let room = bot.client().get_room(room).filter(|r| matches!(r.state(), RoomState::Joined | RoomState::Invited));
    if let Some(r) = room {
        if let Err(e) = r.leave().await {
            warn!(room = %r.room_id(), "cannot leave a refused replacement room: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_follow_is_cancelled_by_its_alias_or_its_resolved_id() {
        let f = Follows::default();
        let a = f.register("#list:x", &[Role::List], None);
        f.resolved(a, "!list:x");
        let b = f.register("#other:x", &[Role::List], None);
        assert!(f.is_following("!list:x"));
        assert_eq!(f.spellings(&names(&["#list:x"])), names(&["#list:x", "!list:x"]));
        assert_eq!(f.cancel(&names(&["!list:x"]), &[]), vec![]);
        assert!(f.if_live(a, || ()).is_err(), "cancelled");
        assert!(f.if_live(b, || ()).is_ok(), "another room is untouched");
        assert!(!f.is_following("#list:x"));
    }

    #[test]
    fn a_follow_keeps_the_roles_still_wanted() {
        let f = Follows::default();
        let t = f.register("#both:x", &[Role::List, Role::Protected], None);
        // Still a list and protected: nothing to do.
        assert!(f.cancel(&names(&["#both:x"]), &[Role::List, Role::Protected]).is_empty());
        assert!(f.if_live(t, || ()).is_ok());
        // Unwatched but still protected: started again as protected only.
        let restarts = f.cancel(&names(&["#both:x"]), &[Role::Protected]);
        assert_eq!(
            restarts,
            vec![Restart { room: "#both:x".to_owned(), roles: vec![Role::Protected], upgrade_of: None }]
        );
        assert!(f.if_live(t, || ()).is_err());
    }

    #[test]
    fn unfollowing_a_room_cancels_the_follow_of_its_replacement() {
        let f = Follows::default();
        let t = f.register("!new:x", &[Role::Protected], Some("!old:x"));
        assert!(f.cancel(&names(&["!old:x"]), &[]).is_empty());
        assert!(f.if_live(t, || ()).is_err());
        // A finished follow is not cancelled (nothing to cancel) and its ticket is gone.
        let done = f.register("!r:x", &[Role::List], None);
        f.done(done);
        assert!(f.cancel(&names(&["!r:x"]), &[]).is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_follow_is_aborted_even_before_its_handle_is_known() {
        let f = Follows::default();
        let t = f.register("!r:x", &[Role::List], None);
        f.cancel(&names(&["!r:x"]), &[]);
        let task = tokio::spawn(std::future::pending::<()>());
        f.set_abort(t, task.abort_handle());
        assert!(task.await.unwrap_err().is_cancelled());
        let t = f.register("!s:x", &[Role::List], None);
        let task = tokio::spawn(std::future::pending::<()>());
        f.set_abort(t, task.abort_handle());
        f.cancel(&names(&["!s:x"]), &[]);
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[test]
    fn a_replacement_must_name_the_old_room_as_predecessor() {
        let good = serde_json::json!({"room_version": "12", "predecessor": {"room_id": "!old:x"}});
        assert_eq!(check_predecessor(&good, "!old:x"), Ok(()));
        let other = serde_json::json!({"predecessor": {"room_id": "!elsewhere:x", "event_id": "$e"}});
        let why = check_predecessor(&other, "!old:x").unwrap_err();
        assert!(why.contains("!elsewhere:x") && why.contains("!old:x"), "{why}");
        let none = serde_json::json!({"room_version": "12"});
        assert!(check_predecessor(&none, "!old:x").unwrap_err().contains("no predecessor"));
        let malformed = serde_json::json!({"predecessor": "!old:x"});
        assert!(check_predecessor(&malformed, "!old:x").is_err());
    }
}
