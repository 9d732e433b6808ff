//! Test harness: a real local Synapse (started by scripts/synapse), real clients, and hush as a real process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room};
use tokio::sync::Notify;

/// How long any wait for the homeserver or the bot may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The test homeserver: the one `scripts/test` started (HUSH_TEST_HS_DIR), or one this
/// process starts in target/test-homeserver (left running; `scripts/synapse stop` ends it).
pub struct Homeserver {
    pub url: String,
    pub dir: PathBuf,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn homeserver() -> Homeserver {
    static HS: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();
    let (url, dir) = HS.get_or_init(|| {
        let dir = std::env::var_os("HUSH_TEST_HS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/test-homeserver"));
        start_homeserver(&dir, false)
    });
    Homeserver { url: url.clone(), dir: dir.clone() }
}

/// A second test homeserver with MSC4293 (redact on ban) enabled: in `msc4293/` under
/// the one `scripts/test` started (which stops it too), or target/test-homeserver-msc4293.
pub fn homeserver_msc4293() -> Homeserver {
    static HS: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();
    let (url, dir) = HS.get_or_init(|| {
        let dir = std::env::var_os("HUSH_TEST_HS_DIR")
            .map(|d| PathBuf::from(d).join("msc4293"))
            .unwrap_or_else(|| repo_root().join("target/test-homeserver-msc4293"));
        start_homeserver(&dir, true)
    });
    Homeserver { url: url.clone(), dir: dir.clone() }
}

/// A third test homeserver with Synapse's default `rc_message` (0.2 events a second after
/// a burst of 10; the other limits stay lifted): in `rate-limited/` under the one
/// `scripts/test` started (which stops it too), or target/test-homeserver-rate-limited.
pub fn homeserver_rate_limited() -> Homeserver {
    static HS: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();
    let (url, dir) = HS.get_or_init(|| {
        let dir = std::env::var_os("HUSH_TEST_HS_DIR")
            .map(|d| PathBuf::from(d).join("rate-limited"))
            .unwrap_or_else(|| repo_root().join("target/test-homeserver-rate-limited"));
        start_homeserver_with(&dir, false, true)
    });
    Homeserver { url: url.clone(), dir: dir.clone() }
}

/// `scripts/synapse start DIR` (with MSC4293 enabled if asked); returns the URL and DIR.
fn start_homeserver(dir: &Path, msc4293: bool) -> (String, PathBuf) {
    start_homeserver_with(dir, msc4293, false)
}

/// `scripts/synapse start DIR`, with MSC4293 and Synapse's default `rc_message` if asked.
fn start_homeserver_with(dir: &Path, msc4293: bool, rate_limited: bool) -> (String, PathBuf) {
    let out = Command::new(repo_root().join("scripts/synapse"))
        .arg("start")
        .arg(dir)
        .env("HUSH_SYNAPSE_MSC4293", if msc4293 { "1" } else { "" })
        .env("HUSH_SYNAPSE_RATE_LIMITED", if rate_limited { "1" } else { "" })
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/synapse start");
    assert!(out.status.success(), "scripts/synapse start failed");
    let url = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    (url, dir.to_owned())
}

/// Percent-encodes a query value (a `/messages` filter, a pagination token).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A homeserver admin: registered with the script (shared secret), logged in for a token.
pub async fn admin_token(hs: &Homeserver) -> String {
    let name = unique("admin");
    let password = format!("pw-{name}");
    let status = Command::new(repo_root().join("scripts/synapse"))
        .args(["register"])
        .arg(&hs.dir)
        .args([&name, &password, "--admin"])
        .status()
        .expect("run scripts/synapse register");
    assert!(status.success(), "scripts/synapse register --admin failed");
    let client = matrix_sdk::Client::builder().homeserver_url(&hs.url).build().await.unwrap();
    let resp = client.matrix_auth().login_username(&name, &password).send().await.expect("admin login");
    resp.access_token
}

/// A name unique across test processes and runs.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

/// A real client of the test homeserver, syncing in the background, recording what it sees.
#[derive(Clone)]
pub struct TestUser {
    pub client: Client,
    pub user_id: OwnedUserId,
    pub password: String,
    pub seen: Arc<Seen>,
}

/// Messages and reactions a test user has seen, and a notification when more arrive.
#[derive(Default)]
pub struct Seen {
    pub messages: Mutex<Vec<SeenMessage>>,
    pub reactions: Mutex<Vec<(OwnedRoomId, OwnedUserId, OwnedEventId, String)>>,
    pub notify: Notify,
}

#[derive(Clone, Debug)]
pub struct SeenMessage {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_id: OwnedEventId,
    pub body: String,
    pub html: Option<String>,
    /// The message's intentional mentions (`m.mentions`), if it has the field.
    pub mentions: Option<matrix_sdk::ruma::events::Mentions>,
}

/// Registers a fresh account (open registration on the test server) and starts syncing.
pub async fn register_user(hs: &Homeserver, prefix: &str) -> Result<TestUser> {
    let (client, user_id, password) = register(hs, prefix).await?;
    Ok(start_syncing(client, user_id, password).await)
}

/// Only registers an account (its registration device is logged out again), for the bot.
pub async fn register_account(hs: &Homeserver, prefix: &str) -> Result<(OwnedUserId, String)> {
    let (client, user_id, password) = register(hs, prefix).await?;
    client.matrix_auth().logout().await.context("logout")?;
    Ok((user_id, password))
}

/// Registers `n` accounts (unique names from `prefix`) and joins each to the (public)
/// rooms; no sync. A few at a time: Synapse hashes each password.
pub async fn joined_accounts(
    hs: &Homeserver,
    prefix: &str,
    n: usize,
    rooms: &[OwnedRoomId],
) -> Result<Vec<OwnedUserId>> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let hs = Homeserver { url: hs.url.clone(), dir: hs.dir.clone() };
        let prefix = prefix.to_owned();
        let rooms = rooms.to_vec();
        tasks.spawn(async move {
            let (client, user_id, _) = register(&hs, &prefix).await?;
            for r in rooms {
                client.join_room_by_id(&r).await.with_context(|| format!("join {r}"))?;
            }
            anyhow::Ok(user_id)
        });
        if tasks.len() >= 8 {
            out.push(tasks.join_next().await.expect("a task")??);
        }
    }
    while let Some(r) = tasks.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

async fn register(hs: &Homeserver, prefix: &str) -> Result<(Client, OwnedUserId, String)> {
    let name = unique(prefix);
    let password = format!("pw-{name}");
    let client = Client::builder().homeserver_url(&hs.url).build().await?;
    let mut req = register::v3::Request::new();
    req.username = Some(name.clone());
    req.password = Some(password.clone());
    req.initial_device_display_name = Some("test".into());
    req.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(req).await.context("register")?;
    let user_id = client.user_id().context("no user id")?.to_owned();
    Ok((client, user_id, password))
}

async fn start_syncing(client: Client, user_id: OwnedUserId, password: String) -> TestUser {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
        let s = s.clone();
        async move {
            let (body, html) = match &ev.content.msgtype {
                MessageType::Text(t) => (t.body.clone(), t.formatted.as_ref().map(|f| f.body.clone())),
                MessageType::Notice(t) => (t.body.clone(), t.formatted.as_ref().map(|f| f.body.clone())),
                _ => return,
            };
            s.messages.lock().unwrap().push(SeenMessage {
                room_id: room.room_id().to_owned(),
                sender: ev.sender,
                event_id: ev.event_id,
                body,
                html,
                mentions: ev.content.mentions.clone(),
            });
            s.notify.notify_waiters();
        }
    });
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncReactionEvent, room: Room| {
        let s = s.clone();
        async move {
            s.reactions.lock().unwrap().push((
                room.room_id().to_owned(),
                ev.sender,
                ev.content.relates_to.event_id,
                ev.content.relates_to.key,
            ));
            s.notify.notify_waiters();
        }
    });
    let c = client.clone();
    tokio::spawn(async move {
        let _ = c.sync(SyncSettings::default().timeout(Duration::from_secs(5))).await;
    });
    TestUser { client, user_id, password, seen }
}

impl TestUser {
    /// Creates a room, optionally encrypted, inviting `invite`.
    pub async fn create_room(&self, name: &str, invite: &[&UserId], encrypted: bool) -> Result<Room> {
        let mut req = create_room::v3::Request::new();
        req.name = Some(name.to_owned());
        req.invite = invite.iter().map(|u| (*u).to_owned()).collect();
        req.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        if encrypted {
            use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
            use matrix_sdk::ruma::events::InitialStateEvent;
            let ev = InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults());
            req.initial_state = vec![ev.to_raw_any()];
        }
        Ok(self.client.create_room(req).await?)
    }

    /// Waits (up to DEADLINE) until this client knows the room.
    pub async fn room(&self, room_id: &RoomId) -> Result<Room> {
        poll(DEADLINE, || async { self.client.get_room(room_id) }).await.context("room never appeared")
    }

    /// Joins a room it was invited to (waits for the invite to arrive by sync first).
    pub async fn join(&self, room_id: &RoomId) -> Result<Room> {
        let c = self.client.clone();
        let id = room_id.to_owned();
        poll(DEADLINE, || {
            let c = c.clone();
            let id = id.clone();
            async move { c.join_room_by_id(&id).await.ok() }
        })
        .await
        .context("could not join")
    }

    /// Sends a text message and returns its id.
    pub async fn say(&self, room: &Room, text: &str) -> Result<OwnedEventId> {
        Ok(room.send(RoomMessageEventContent::text_plain(text)).await?.response.event_id)
    }

    /// Waits for a message from `from` in `room` that satisfies `pred`.
    pub async fn wait_for_message(
        &self,
        room_id: &RoomId,
        from: &UserId,
        pred: impl Fn(&SeenMessage) -> bool,
    ) -> Result<SeenMessage> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.seen.notify.notified();
            if let Some(m) =
                self.seen.messages.lock().unwrap().iter().find(|m| m.room_id == room_id && m.sender == from && pred(m))
            {
                return Ok(m.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got: Vec<String> =
                    self.seen.messages.lock().unwrap().iter().map(|m| format!("{}: {}", m.sender, m.body)).collect();
                bail!("no matching message from {from} within {DEADLINE:?}; seen: {got:#?}");
            }
        }
    }

    /// Messages from `from` in `room` seen so far.
    pub fn messages_from(&self, room_id: &RoomId, from: &UserId) -> Vec<SeenMessage> {
        self.seen
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.room_id == room_id && m.sender == from)
            .cloned()
            .collect()
    }

    /// Waits for `from` to react to `event_id`.
    pub async fn wait_for_reaction(&self, from: &UserId, event_id: &OwnedEventId) -> Result<String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.seen.notify.notified();
            if let Some(r) = self.seen.reactions.lock().unwrap().iter().find(|r| r.1 == from && &r.2 == event_id) {
                return Ok(r.3.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no reaction from {from} to {event_id}");
            }
        }
    }

    /// Waits until `user` is joined in `room` as seen by this client.
    pub async fn wait_for_join(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let client = self.client.clone();
        poll(DEADLINE, || {
            let client = client.clone();
            async move {
                let room = client.get_room(room_id)?;
                let member = room.get_member_no_sync(user).await.ok()??;
                (member.membership() == &matrix_sdk::ruma::events::room::member::MembershipState::Join).then_some(())
            }
        })
        .await
        .with_context(|| format!("{user} never joined {room_id}"))
    }
}

/// Polls `f` every 100 ms until it returns Some or `deadline` passes.
pub async fn poll<T, F, Fut>(deadline: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// hush running as a real process, as an operator runs it.
pub struct BotProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// A bot account and the folder that holds its config and data_dir.
pub struct BotSetup {
    pub user_id: OwnedUserId,
    pub password: String,
    pub dir: tempfile::TempDir,
}

impl BotSetup {
    pub async fn new(hs: &Homeserver) -> Result<BotSetup> {
        let (user_id, password) = register_account(hs, "hush").await?;
        Ok(BotSetup { user_id, password, dir: tempfile::tempdir()? })
    }

    /// Writes a config with the given extra YAML lines and returns its path.
    pub fn write_config(&self, hs: &Homeserver, management_room: &RoomId, extra: &str) -> PathBuf {
        let path = self.dir.path().join("config.yaml");
        let text = format!(
            "homeserver_url: \"{}\"\nuser_id: \"{}\"\npassword: \"{}\"\ndata_dir: \"{}\"\nmanagement_room: \"{}\"\n{extra}",
            hs.url,
            self.user_id,
            self.password,
            self.dir.path().join("data").display(),
            management_room
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn start(&self, config: &Path) -> BotProcess {
        BotProcess::start(config, self.dir.path())
    }
}

impl BotProcess {
    pub fn start(config: &Path, dir: &Path) -> BotProcess {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let log = dir.join(format!("hush-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("HUSH_TEST_LOG").unwrap_or_else(|_| "info,hush=debug,matrix_sdk=warn".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn hush");
        BotProcess { child, dir: dir.to_owned(), log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to DEADLINE) for the exit status.
    pub async fn terminate(mut self) -> Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        self.wait_exit().await
    }

    /// kill -9: no chance to clean up.
    pub fn kill9(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// Waits (up to DEADLINE) for hush to exit by itself; returns its exit status.
    pub async fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= end {
                bail!("hush did not exit; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- hush log ({}) ---\n{}", self.log.display(), self.log_text());
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

impl TestUser {
    /// Sends a state event with raw JSON content; returns the event id.
    pub async fn put_state(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        content: serde_json::Value,
    ) -> Result<OwnedEventId> {
        use matrix_sdk::ruma::api::client::state::send_state_event;
        use matrix_sdk::ruma::serde::Raw;
        let req = send_state_event::v3::Request::new_raw(
            room_id.to_owned(),
            event_type.into(),
            state_key.to_owned(),
            Raw::new(&content)?.cast_unchecked(),
        );
        Ok(self.client.send(req).await?.event_id)
    }

    /// The room's current power levels, fresh from the homeserver.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<serde_json::Value> {
        use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
        let req =
            get_state_event_for_key::v3::Request::new(room_id.to_owned(), "m.room.power_levels".into(), String::new());
        Ok(serde_json::from_str(self.client.send(req).await?.event_or_content.get())?)
    }

    /// Upgrades a room to `version` (as a moderator does from their client); returns the
    /// replacement room.
    pub async fn upgrade_room(&self, room_id: &RoomId, version: &str) -> Result<OwnedRoomId> {
        use matrix_sdk::ruma::api::client::room::upgrade_room;
        let req = upgrade_room::v3::Request::new(room_id.to_owned(), version.try_into()?);
        Ok(self.client.send(req).await.with_context(|| format!("upgrade {room_id}"))?.replacement_room)
    }

    /// Invites `user` to `room_id`.
    pub async fn invite(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        use matrix_sdk::ruma::api::client::membership::invite_user::{self, v3::InviteUserId};
        let req = invite_user::v3::Request::new(room_id.to_owned(), InviteUserId::new(user.to_owned()).into());
        self.client.send(req).await.with_context(|| format!("invite {user} to {room_id}"))?;
        Ok(())
    }

    /// Tries to send a message; Err carries the homeserver's errcode.
    pub async fn try_say(&self, room_id: &RoomId, text: &str) -> std::result::Result<(), String> {
        use matrix_sdk::ruma::api::client::message::send_message_event;
        use matrix_sdk::ruma::TransactionId;
        let content = RoomMessageEventContent::text_plain(text);
        let req = send_message_event::v3::Request::new(room_id.to_owned(), TransactionId::new(), &content)
            .map_err(|e| e.to_string())?;
        match self.client.send(req).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.client_api_error_kind().map(|k| k.errcode().to_string()).unwrap_or_else(|| e.to_string())),
        }
    }

    /// Waits until `f(power levels)` holds.
    pub async fn wait_for_power_levels(
        &self,
        room_id: &RoomId,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            last = self.power_levels(room_id).await.unwrap_or(last);
            if f(&last) {
                return Ok(last);
            }
            if tokio::time::Instant::now() >= end {
                bail!("power levels never satisfied `{what}`; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `users` entry of `user` in power-levels content.
pub fn level_of(pl: &serde_json::Value, user: &UserId) -> Option<i64> {
    pl.get("users")?.get(user.as_str())?.as_i64()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A community as a moderator sets it up: a management room, a policy list and a
/// protected room, with hush invited everywhere and given power in the protected room.
pub struct Community {
    pub hs: Homeserver,
    pub moderator: TestUser,
    pub bot: BotSetup,
    pub management: Room,
    pub list: Room,
    pub protected: Room,
}

impl Community {
    pub async fn new() -> Result<Community> {
        Community::on(homeserver()).await
    }

    /// The same community on another homeserver.
    pub async fn on(hs: Homeserver) -> Result<Community> {
        let moderator = register_user(&hs, "mod").await?;
        let bot = BotSetup::new(&hs).await?;
        let management = moderator.create_room("management", &[&bot.user_id], false).await?;
        let list = moderator.create_room("policies", &[&bot.user_id], false).await?;
        let protected = moderator.create_room("lobby", &[&bot.user_id], false).await?;
        for room in [&protected, &list] {
            let mut pl = moderator.power_levels(room.room_id()).await?;
            pl["users"][bot.user_id.as_str()] = 100.into();
            moderator.put_state(room.room_id(), "m.room.power_levels", "", pl).await?;
        }
        Ok(Community { hs, moderator, bot, management, list, protected })
    }

    /// The config for this community, with extra YAML lines.
    pub fn config(&self, extra: &str) -> PathBuf {
        let lines = format!(
            "policy_lists: [\"{}\"]\ndefault_policy_list: \"{}\"\nprotected_rooms: [\"{}\"]\nmute:\n  batch_window_ms: 50\n{extra}",
            self.list.room_id(),
            self.list.room_id(),
            self.protected.room_id()
        );
        self.bot.write_config(&self.hs, self.management.room_id(), &lines)
    }

    /// Starts hush and waits for its start-up notice (the n-th, counting restarts).
    pub async fn start(&self, config: &Path, nth: usize) -> BotProcess {
        let hush = self.bot.start(config);
        let rid = self.management.room_id().to_owned();
        let seen = poll(DEADLINE, || async {
            (self
                .moderator
                .messages_from(&rid, &self.bot.user_id)
                .iter()
                .filter(|m| m.body.contains(" started"))
                .count()
                >= nth)
                .then_some(())
        })
        .await;
        assert!(seen.is_some(), "hush never announced its start; log:\n{}", hush.log_text());
        hush
    }

    /// A member of the protected room, optionally with an explicit power level.
    pub async fn member(&self, level: Option<i64>) -> Result<TestUser> {
        let u = register_user(&self.hs, "member").await?;
        self.protected.invite_user_by_id(&u.user_id).await?;
        u.join(self.protected.room_id()).await?;
        if let Some(l) = level {
            let mut pl = self.moderator.power_levels(self.protected.room_id()).await?;
            pl["users"][u.user_id.as_str()] = l.into();
            self.moderator.put_state(self.protected.room_id(), "m.room.power_levels", "", pl).await?;
        }
        Ok(u)
    }

    /// Writes a user rule to the policy list.
    pub async fn rule(
        &self,
        state_key: &str,
        entity: &str,
        recommendation: &str,
        expiry_ms: Option<u64>,
    ) -> Result<()> {
        let mut content =
            serde_json::json!({"entity": entity, "recommendation": recommendation, "reason": "test rule"});
        if let Some(e) = expiry_ms {
            content["expiry"] = e.into();
        }
        self.moderator.put_state(self.list.room_id(), "m.policy.rule.user", state_key, content).await?;
        Ok(())
    }

    /// Removes a rule by sending empty content.
    pub async fn remove_rule(&self, state_key: &str) -> Result<()> {
        self.moderator.put_state(self.list.room_id(), "m.policy.rule.user", state_key, serde_json::json!({})).await?;
        Ok(())
    }

    /// Sends a command in the management room and waits for hush's reply to contain `expect`.
    pub async fn command(&self, text: &str, expect: &str) -> SeenMessage {
        let before = self.moderator.messages_from(self.management.room_id(), &self.bot.user_id).len();
        self.moderator.say(&self.management, text).await.unwrap();
        let rid = self.management.room_id().to_owned();
        let found = poll(DEADLINE, || async {
            self.moderator
                .messages_from(&rid, &self.bot.user_id)
                .into_iter()
                .skip(before)
                .find(|m| m.body.contains(expect))
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no reply containing `{expect}` to `{text}`; replies: {:#?}",
                self.moderator.messages_from(&rid, &self.bot.user_id)
            )
        })
    }

    /// A rule's content in the policy list, as the homeserver has it.
    pub async fn rule_content(&self, state_key: &str) -> Option<serde_json::Value> {
        use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
        let req = get_state_event_for_key::v3::Request::new(
            self.list.room_id().to_owned(),
            "m.policy.rule.user".into(),
            state_key.to_owned(),
        );
        let resp = self.moderator.client.send(req).await.ok()?;
        serde_json::from_str(resp.event_or_content.get()).ok()
    }

    /// A user's membership in the protected room, fresh from the homeserver.
    pub async fn membership(&self, user: &UserId) -> Option<String> {
        use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
        let req = get_state_event_for_key::v3::Request::new(
            self.protected.room_id().to_owned(),
            "m.room.member".into(),
            user.to_string(),
        );
        let v: serde_json::Value =
            serde_json::from_str(self.moderator.client.send(req).await.ok()?.event_or_content.get()).ok()?;
        v.get("membership")?.as_str().map(str::to_owned)
    }

    /// Waits until the user's membership in the protected room is `want`.
    pub async fn wait_membership(&self, user: &UserId, want: &str) {
        let seen =
            poll(DEADLINE, || async { (self.membership(user).await.as_deref() == Some(want)).then_some(()) }).await;
        assert!(seen.is_some(), "{user} never reached membership `{want}`; now {:?}", self.membership(user).await);
    }

    pub async fn wait_level(&self, user: &UserId, want: Option<i64>) -> serde_json::Value {
        let what = format!("{user} at {want:?}");
        self.moderator
            .wait_for_power_levels(self.protected.room_id(), &what, |pl| level_of(pl, user) == want)
            .await
            .unwrap()
    }
}
