//! Wiring: start-up, event handlers, the sync loop and a clean shutdown on SIGINT/SIGTERM.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, Relation};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::{Client, Room, RoomState};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, Input};
use crate::following::{self, Cancelled, Follows};
use crate::ledger::Ledger;
use crate::management::{self, Reply};
use crate::matrix;
use crate::runtime::RoomOverrides;
use hush_core::policy::ListTrust;

/// Everything the event handlers share.
pub struct Bot {
    pub config: Config,
    pub client: Client,
    pub own_user: OwnedUserId,
    pub started: Instant,
    /// Commands sent before this moment (milliseconds since the epoch) are history, not orders.
    pub started_at_ms: u64,
    pub management_room: RwLock<Option<OwnedRoomId>>,
    /// Room ids of every configured room (management, lists, protected), as far as resolved.
    pub configured: RwLock<HashSet<OwnedRoomId>>,
    /// What each followed room is for, by room id (to follow it across an upgrade).
    pub roles: RwLock<std::collections::HashMap<OwnedRoomId, Vec<Role>>>,
    /// Whether the start-up notice went out to the management room.
    pub announced: AtomicBool,
    /// The management room's state went to the engine (its moderators are known).
    pub management_loaded: tokio::sync::Notify,
    /// The engine's inbox: every trigger goes there.
    pub engine: mpsc::UnboundedSender<Input>,
    /// Lists and rooms changed by commands at run time (persisted in data_dir), and the
    /// room id each alias is pinned to.
    pub overrides: std::sync::Mutex<RoomOverrides>,
    /// The follows still under way, so that `unfollow` can cancel them.
    pub follows: Follows,
}

impl management::Follow for Arc<Bot> {
    fn watch(&self, room: String) {
        self.follow(room, vec![Role::List]);
    }

    fn protect(&self, room: String) {
        self.follow(room, vec![Role::Protected]);
    }

    fn unfollow(&self, room: &str) {
        Bot::unfollow(self, room);
    }
}

impl Bot {
    /// What management commands may use.
    fn commands(self: &Arc<Self>) -> management::Context<'_> {
        management::Context {
            config: &self.config,
            client: &self.client,
            own_user: &self.own_user,
            started: self.started,
            management_room: &self.management_room,
            engine: &self.engine,
            overrides: &self.overrides,
            follows: self,
        }
    }

    /// The actions given with `watch --actions` for this list, if any.
    pub fn watched_actions(&self, room: &str, room_id: &str) -> Option<ListTrust> {
        let overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        overrides.actions_of(room).or_else(|| overrides.actions_of(room_id))
    }

    /// Starts following a room in the background (joined, loaded, retried until it works
    /// or `unfollow` cancels it).
    pub fn follow(self: &Arc<Self>, room: String, roles: Vec<Role>) {
        self.spawn_follow(room, roles, None, None);
    }

    /// Follows `room` in a task `unfollow` can cancel; `upgrade_of` is the room it
    /// replaces (it is followed only if its `m.room.create` names that room).
    fn spawn_follow(
        self: &Arc<Self>,
        room: String,
        roles: Vec<Role>,
        upgrade_of: Option<OwnedRoomId>,
        resolved: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let ticket = self.follows.register(&room, &roles, upgrade_of.as_deref().map(RoomId::as_str));
        let bot = self.clone();
        let task = tokio::spawn(async move {
            follow_room(bot.clone(), room, roles, resolved, upgrade_of, ticket).await;
            bot.follows.done(ticket);
        });
        self.follows.set_abort(ticket, task.abort_handle());
    }

    /// Stops following `room` (alias or id) in the roles that the config and the run-time
    /// changes no longer give it; call it after changing `overrides` (`unwatch`, `rooms
    /// remove`). A follow still retrying is cancelled, the dropped roles are forgotten (so
    /// a tombstone there is ignored from now on) and the engine told, and an alias that
    /// nothing names any more loses its pin (added again, it is resolved anew).
    pub fn unfollow(self: &Arc<Self>, room: &str) {
        let (entries, pins) = {
            let overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            (configured_roles(&self.config, &overrides), overrides.pinned.clone())
        };
        // Every spelling of the room: as given, its pinned id, the ids its follows resolved.
        let mut names = BTreeSet::from([room.to_owned()]);
        names.extend(pins.get(room).cloned());
        let names = self.follows.spellings(&names);
        let mut wanted: Vec<Role> = Vec::new();
        for (entry, roles) in &entries {
            if names.contains(entry) || pins.get(entry).is_some_and(|id| names.contains(id)) {
                wanted.extend(roles.iter().filter(|r| !wanted.contains(r)).copied().collect::<Vec<_>>());
            }
        }
        for again in self.follows.cancel(&names, &wanted) {
            let upgrade_of = again.upgrade_of.and_then(|o| RoomId::parse(o).ok());
            self.spawn_follow(again.room, again.roles, upgrade_of, None);
        }
        for id in names.iter().filter_map(|n| RoomId::parse(n).ok()) {
            let dropped: Vec<Role> = {
                let mut all = self.roles.write().unwrap_or_else(|e| e.into_inner());
                let dropped = all.get(&id).map(|have| have.iter().filter(|r| !wanted.contains(r)).copied().collect());
                if let Some(have) = all.get_mut(&id) {
                    have.retain(|r| wanted.contains(r));
                    if have.is_empty() {
                        all.remove(&id);
                    }
                }
                if !all.contains_key(&id) {
                    self.configured.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
                dropped.unwrap_or_default()
            };
            for role in dropped {
                info!(room = %id, ?role, "no longer followed in this role");
                let room_id = id.to_string();
                let _ = match role {
                    Role::List => self.engine.send(Input::Unwatch { room_id }),
                    Role::Protected => self.engine.send(Input::Unprotect { room_id }),
                    Role::Management => Ok(()),
                };
            }
        }
        if !entries.iter().any(|(entry, _)| entry == room) {
            let mut overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            if overrides.unpin(room) {
                if let Err(e) = overrides.save(&self.config.data_dir) {
                    warn!(alias = room, "cannot save the removed pin: {e:#}");
                }
            }
        }
    }
}

pub use crate::following::Role;

impl following::Host for Bot {
    fn client(&self) -> &Client {
        &self.client
    }

    fn overrides(&self) -> &std::sync::Mutex<RoomOverrides> {
        &self.overrides
    }

    fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    fn follows(&self) -> &Follows {
        &self.follows
    }

    fn management_room(&self) -> Option<OwnedRoomId> {
        self.management_room.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_followed(&self, room: &RoomId) -> bool {
        self.roles.read().unwrap_or_else(|e| e.into_inner()).contains_key(room)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the bot until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    // Before anything touches data_dir: a second hush on it exits here. Held until run ends.
    let _instance = crate::instance::lock(&config.data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    if config.dry_run {
        info!("dry run: hush reports what it would do and changes nothing");
    }
    let client = tokio::select! {
        c = connect_with_backoff(&config, stop_rx.clone()) => match c? {
            Some(c) => c,
            None => return Ok(()),
        },
        _ = wait_true(stop_rx.clone()) => return Ok(()),
    };
    let own_user = client.user_id().map(ToOwned::to_owned).ok_or_else(|| anyhow::anyhow!("no user after login"))?;
    let overrides = RoomOverrides::load(&config.data_dir)?;
    let ledger_path = config.data_dir.join("ledger.sqlite3");
    let ledger = Ledger::open(&ledger_path)?;
    let (timers, expired, _timer_task) = hush_core::schedule::driver::spawn(
        hush_core::schedule::SystemClock,
        hush_core::schedule::DriverOptions::default(),
    );
    let (engine_tx, engine_rx) = mpsc::unbounded_channel();
    let engine = Engine::new(
        EngineConfig {
            own_user: own_user.to_string(),
            protected_users: config.protected_users.clone(),
            membership_room_versions: config.mute.membership_room_versions.clone(),
            batch_window: Duration::from_millis(config.mute.batch_window_ms),
            dry_run: config.dry_run,
            safety: hush_core::guard::Limits {
                max_new_restrictions: config.safety.max_new_restrictions,
                max_room_share: config.safety.max_room_share,
            },

            moderator_power_level: config.moderator_power_level,
            command_prefix: config.command_prefix.clone(),
        },
        matrix::MatrixWriter { client: client.clone() },
        hush_core::schedule::SystemClock,
        ledger,
        timers,
        engine_tx.clone(),
    );
    let engine = match crate::suspension::from_config(&config, own_user.as_str())? {
        Some(s) => engine.with_suspension(s),
        None => engine,
    };
    let engine_task = tokio::spawn(engine.run(engine_rx, expired));
    let bot = Arc::new(Bot {
        config,
        client: client.clone(),
        own_user,
        started: Instant::now(),
        started_at_ms: now_ms(),
        management_room: RwLock::new(None),
        configured: RwLock::new(HashSet::new()),
        roles: RwLock::new(std::collections::HashMap::new()),
        announced: AtomicBool::new(false),
        management_loaded: tokio::sync::Notify::new(),
        engine: engine_tx,
        overrides: std::sync::Mutex::new(overrides),
        follows: Follows::default(),
    });
    client.add_event_handler_context(bot.clone());
    client.add_event_handler(on_invite);
    client.add_event_handler(on_room_message);

    // Join and load what we can now; the rest is retried in the background until it works.
    let followers = tokio::spawn(follow_configured_rooms(bot.clone()));
    info!(user_id = %bot.own_user, homeserver = %bot.config.homeserver_url, "hush is running");
    let synced = matrix::sync_until(&client, stop_rx, |response| forward_sync(&bot, response)).await;
    followers.abort();
    // The ledger is written synchronously before and after every change, so stopping
    // here loses nothing: an interrupted change is settled at the next start.
    engine_task.abort();
    synced?;
    info!("stopped");
    Ok(())
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            // The sender lives as long as the process; treat its loss as "never stop".
            std::future::pending::<()>().await;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            warn!("cannot install signal handlers; only Ctrl-C will stop hush");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs in, retrying with backoff while the homeserver is unreachable. A refused login
/// (wrong password, bad token) is permanent and ends the run.
async fn connect_with_backoff(config: &Config, stop: watch::Receiver<bool>) -> Result<Option<Client>> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match matrix::connect(config).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if is_transient(&e) => {
                let wait = backoff.next();
                warn!("cannot reach the homeserver, retrying in {}s: {e:#}", wait.as_secs());
                tokio::time::sleep(wait).await;
                if *stop.borrow() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(http) = cause.downcast_ref::<matrix_sdk::HttpError>() {
            return http.client_api_error_kind().is_none();
        }
        if let Some(err) = cause.downcast_ref::<matrix_sdk::Error>() {
            return matches!(err, matrix_sdk::Error::Http(h) if h.client_api_error_kind().is_none());
        }
        false
    })
}

/// Every configured room with its roles (a room may be both a list and protected).
fn configured_roles(config: &Config, overrides: &RoomOverrides) -> Vec<(String, Vec<Role>)> {
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
async fn follow_configured_rooms(bot: Arc<Bot>) {
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
async fn follow_room(
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
                announce_start(&bot, &room_id).await;
                let events = matrix::room_state(&bot.client, &room_id).await?;
                let _ = bot.engine.send(Input::ManagementLoaded { room_id: id.clone(), events });
                bot.management_loaded.notify_one();
            }
            if roles.contains(&Role::List) || roles.contains(&Role::Protected) {
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
async fn list_trust(bot: &Bot, room: &str, room_id: &matrix_sdk::ruma::RoomId) -> Option<ListTrust> {
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

/// Forwards what one sync response changed to the engine, room by room: its state events
/// (the engine keeps what concerns it) in the order `rooms::in_order` gives (no older
/// event after a newer one of the same type and state key; hush's own events always),
/// then its redactions (a redacted policy rule is a removed rule). A redaction goes after
/// the state: it matters only for a rule still in force then. A tombstone in a followed
/// room starts following its replacement.
fn forward_sync(bot: &Arc<Bot>, response: &matrix_sdk::sync::SyncResponse) {
    for update in matrix::room_updates(response, bot.own_user.as_str()) {
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
    }
}

/// A followed room was upgraded (tombstone): follow its replacement in the same roles,
/// once its `m.room.create` names the old room as its predecessor (checked by the follow;
/// see `commit_upgrade` and `refuse_upgrade`). A tombstone in a room hush no longer
/// follows is ignored. A protected room's old room is dropped at once (nobody can talk
/// there any more); it is protected again if the replacement is refused.
fn follow_upgrade(bot: &Arc<Bot>, old: &RoomId, replacement: Result<String, String>) {
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
fn commit_upgrade(bot: &Bot, old: &RoomId, new: &RoomId, roles: &[Role]) {
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
async fn refuse_upgrade(
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
async fn announce_start(bot: &Bot, room_id: &matrix_sdk::ruma::RoomId) {
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
    if let Err(e) = matrix::send_notice(&room, &text, &html).await {
        warn!("cannot announce the start in the management room: {e:#}");
        bot.announced.store(false, Ordering::SeqCst);
    }
}

/// Accepts invites to configured rooms; ignores the rest.
async fn on_invite(ev: StrippedRoomMemberEvent, room: Room, bot: Ctx<Arc<Bot>>) {
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
async fn on_room_message(ev: OriginalSyncRoomMessageEvent, room: Room, bot: Ctx<Arc<Bot>>) {
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

async fn send_reply(room: &Room, ev: &OriginalSyncRoomMessageEvent, reply: Reply) {
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
