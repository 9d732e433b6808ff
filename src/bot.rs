//! Wiring: start-up, event handlers, the sync loop and a clean shutdown on SIGINT/SIGTERM.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, Relation};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use matrix_sdk::{Client, Room, RoomState};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::management::{self, Reply};
use crate::matrix;

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
    /// Whether the start-up notice went out to the management room.
    pub announced: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the bot until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
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
    let bot = Arc::new(Bot {
        config,
        client: client.clone(),
        own_user,
        started: Instant::now(),
        started_at_ms: now_ms(),
        management_room: RwLock::new(None),
        configured: RwLock::new(HashSet::new()),
        announced: AtomicBool::new(false),
    });
    client.add_event_handler_context(bot.clone());
    client.add_event_handler(on_invite);
    client.add_event_handler(on_room_message);

    // Join what we can now; the rest is retried in the background until it works.
    let joiner = tokio::spawn(join_configured_rooms(bot.clone(), stop_rx.clone()));
    info!(user_id = %bot.own_user, homeserver = %bot.config.homeserver_url, "hush is running");
    matrix::sync_until(&client, stop_rx).await;
    joiner.abort();
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
    let mut backoff = Duration::from_secs(1);
    loop {
        match matrix::connect(config).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if is_transient(&e) => {
                warn!("cannot reach the homeserver, retrying in {}s: {e:#}", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
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

/// Resolves and joins every configured room, retrying the ones that fail.
async fn join_configured_rooms(bot: Arc<Bot>, stop: watch::Receiver<bool>) {
    let mut pending: Vec<String> = bot.config.configured_rooms();
    let mut backoff = Duration::from_secs(2);
    while !pending.is_empty() && !*stop.borrow() {
        let mut failed = Vec::new();
        for room in pending {
            match matrix::resolve(&bot.client, &room).await {
                Ok(room_id) => {
                    bot.configured.write().unwrap_or_else(|e| e.into_inner()).insert(room_id.clone());
                    if room == bot.config.management_room {
                        *bot.management_room.write().unwrap_or_else(|e| e.into_inner()) = Some(room_id.clone());
                    }
                    let joined = bot.client.get_room(&room_id).is_some_and(|r| r.state() == RoomState::Joined);
                    if joined {
                        announce_start(&bot, &room_id).await;
                        continue;
                    }
                    match matrix::join(&bot.client, room_id.as_str()).await {
                        Ok(_) => {
                            info!(%room, "joined");
                            announce_start(&bot, &room_id).await;
                        }
                        Err(e) => {
                            warn!(%room, "cannot join yet (an invite will also do): {e:#}");
                            failed.push(room);
                        }
                    }
                }
                Err(e) => {
                    warn!(%room, "cannot resolve yet: {e:#}");
                    failed.push(room);
                }
            }
        }
        pending = failed;
        if !pending.is_empty() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
    }
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
    let html = management::escape_html(&text);
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
    let mut delay = Duration::from_secs(1);
    for _ in 0..6 {
        match room.join().await {
            Ok(()) => {
                info!(room = %room.room_id(), inviter = %ev.sender, "joined on invite");
                announce_start(&bot, room.room_id()).await;
                return;
            }
            Err(e) => {
                warn!(room = %room.room_id(), "cannot join on invite, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Reads commands in the management room.
async fn on_room_message(ev: OriginalSyncRoomMessageEvent, room: Room, bot: Ctx<Arc<Bot>>) {
    let is_management = bot.management_room.read().unwrap_or_else(|e| e.into_inner()).as_deref() == Some(room.room_id());
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
    let reply = management::handle(&bot, parsed).await;
    send_reply(&room, &ev, reply).await;
}

async fn send_reply(room: &Room, ev: &OriginalSyncRoomMessageEvent, reply: Reply) {
    if let Err(e) = matrix::send_notice(room, &reply.plain, &reply.html).await {
        warn!(room = %room.room_id(), "cannot send a reply: {e:#}");
    }
    if reply.ok {
        if let Err(e) = matrix::react(room, &ev.event_id, "✅").await {
            debug!("cannot react: {e:#}");
        }
    }
}
