//! Wiring: start-up, the shared `Bot` (what its handlers and commands need), the sync loop and a clean shutdown on SIGINT/SIGTERM; following rooms is in `bot/rooms.rs`, what sync brings in `bot/handlers.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::Client;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, Input};
use crate::following::{self, Follows};
use crate::ledger::Ledger;
use crate::management::{self};
use crate::matrix;
use crate::runtime::RoomOverrides;
use hush_core::policy::ListTrust;

mod handlers;
mod rooms;

use handlers::{forward_sync, on_invite, on_room_message};
use rooms::{configured_roles, follow_configured_rooms, follow_room};

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
    /// What sync responses have brought since the start (see [`Synced`]).
    pub synced: watch::Sender<Synced>,
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

/// What sync responses have brought since the start: a list or protected room is read
/// only once the sync that brought it (or, for a room joined before the start, the first
/// sync) went to the engine, so that sync's timeline, history at a cold start or a join,
/// is dropped rather than replayed over the state read after it.
#[derive(Debug, Default)]
pub struct Synced {
    pub first: bool,
    pub rooms: HashSet<OwnedRoomId>,
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

/// The engine's protection settings from the configuration.
fn protection_settings(config: &Config) -> crate::engine::ProtectionSettings {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let p = &config.protections;
    let reach = |r: &crate::config::Reach| crate::engine::ProtectionReach {
        rooms: r.rooms.clone(),
        publish_to: if r.publish { config.default_policy_list.clone() } else { None },
    };
    crate::engine::ProtectionSettings {
        flood: p.flood.as_ref().map(|f| {
            (hush_core::protections::FloodLimits { max_events: f.max_events, per_ms: ms(f.per) }, ms(f.mute_for))
        }),
        escalation: hush_core::protections::EscalationLimits {
            within_ms: ms(p.escalation.within),
            max_ms: ms(p.escalation.max_mute),
        },
        flood_reach: p.flood.as_ref().map(|f| reach(&f.reach)).unwrap_or_default(),
        mention_spam: p.mention_spam.as_ref().map(|m| crate::engine::MentionSettings {
            max_mentions: m.max_mentions,
            mute_ms: ms(m.mute_for),
            redact: m.redact,
            reach: reach(&m.reach),
        }),
    }
}

/// The aliases the protections name (`rooms`, and the list they publish to), to resolve.
fn protection_aliases(config: &Config) -> Vec<String> {
    let p = &config.protections;
    let reaches = p.flood.iter().map(|f| &f.reach).chain(p.mention_spam.iter().map(|m| &m.reach));
    let mut out: Vec<String> = Vec::new();
    for r in reaches {
        out.extend(r.rooms.iter().flatten().cloned());
        if r.publish {
            out.extend(config.default_policy_list.iter().cloned());
        }
    }
    out.retain(|r| r.starts_with('#'));
    out.sort();
    out.dedup();
    out
}

/// Resolves the protections' aliases (retrying with backoff until each resolves) and
/// tells the engine: a protection acts in an aliased room once its alias is resolved.
async fn resolve_protection_aliases(bot: Arc<Bot>) {
    for alias in protection_aliases(&bot.config) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            match matrix::resolve(&bot.client, &alias).await {
                Ok(id) => {
                    info!(%alias, room = %id, "an alias the protections name is resolved");
                    let _ = bot
                        .engine
                        .send(Input::ProtectionRoomResolved { alias: alias.clone(), room_id: id.to_string() });
                    break;
                }
                Err(e) => {
                    warn!(%alias, "cannot resolve an alias the protections name, retrying: {e:#}");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the bot until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    // Before anything touches data_dir: a second hush on it exits here. Held until run ends.
    let _instance = crate::instance::lock(&config.data_dir)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let listening = match config.metrics.listen {
        Some(addr) => Some(crate::metrics::http::start(addr, metrics.clone()).await?),
        None => None,
    };
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
            redaction: config.redaction.policy(),
            redact_with_msc4293: config.redaction.msc4293,
        },
        matrix::MatrixWriter { client: client.clone() },
        hush_core::schedule::SystemClock,
        ledger,
        timers,
        engine_tx.clone(),
    );
    let local_rules = crate::local_rules::LocalRules::load(&config.data_dir, now_ms())?;
    let (memory, records) = crate::escalation_memory::EscalationMemory::load(
        &config.data_dir,
        now_ms(),
        u64::try_from(config.protections.escalation.within.as_millis()).unwrap_or(u64::MAX),
    )?;
    let engine =
        engine.with_protections(protection_settings(&config), local_rules).with_escalation_memory(memory, records);
    let engine = match crate::suspension::from_config(&config, own_user.as_str())? {
        Some(s) => engine.with_suspension(s),
        None => engine,
    };
    let engine = engine.with_metrics(metrics.clone());
    let engine_task = tokio::spawn(engine.run(engine_rx, expired));
    let inbox = engine_tx.clone();
    crate::rate_limits::check_at_start(&config, own_user.as_str(), move |seen| {
        let _ = inbox.send(Input::OwnRateLimit(seen));
    });
    if let Some(l) = &listening {
        let inbox = engine_tx.clone();
        l.engine_ready(Arc::new(move |reply| inbox.send(Input::Metrics(reply)).is_ok()));
    }
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
        synced: watch::channel(Synced::default()).0,
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
    let resolving = tokio::spawn(resolve_protection_aliases(bot.clone()));
    info!(user_id = %bot.own_user, homeserver = %bot.config.homeserver_url, "hush is running");
    let synced = matrix::sync_until(&client, stop_rx, |response| {
        metrics.synced();
        forward_sync(&bot, response)
    })
    .await;
    followers.abort();
    resolving.abort();
    drop(listening);
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
