//! The benchmark's Synapse (started and stopped through `scripts/synapse`) and its plain clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::membership::{ban_user, get_member_events, join_room_by_id, unban_user};
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use matrix_sdk::Client;
use serde_json::{json, Value};

use crate::{now_ms, repo_root};

/// The Synapse this run started; stopped when dropped.
pub struct Synapse {
    pub dir: PathBuf,
    pub url: String,
}

impl Synapse {
    /// Starts Synapse in `dir` (a new one, or the one a previous run filled).
    pub fn start(dir: &Path) -> Result<Synapse> {
        let out = Command::new(repo_root().join("scripts/synapse"))
            .arg("start")
            .arg(dir)
            .stderr(Stdio::inherit())
            .output()
            .context("run scripts/synapse start")?;
        if !out.status.success() {
            bail!("scripts/synapse start failed");
        }
        let url = String::from_utf8(out.stdout)?.trim().to_owned();
        if !url.starts_with("http://127.0.0.1:") {
            bail!("unexpected homeserver url {url}");
        }
        Ok(Synapse { dir: dir.to_owned(), url })
    }

    pub fn database(&self) -> PathBuf {
        self.dir.join("homeserver.db")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/synapse")).arg("stop").arg(&self.dir).status();
    }
}

/// A logged-in account with a plain matrix-sdk client (no sync, no store).
#[derive(Clone)]
pub struct Account {
    pub client: Client,
    pub user_id: OwnedUserId,
    pub password: String,
}

async fn new_client(url: &str) -> Result<Client> {
    Ok(Client::builder()
        .homeserver_url(url)
        .request_config(RequestConfig::new().retry_limit(3).timeout(Duration::from_secs(120)))
        .build()
        .await?)
}

pub async fn register_account(url: &str, name: &str) -> Result<Account> {
    let password = format!("pw-{name}-{}", now_ms());
    let client = new_client(url).await?;
    let mut req = register::v3::Request::new();
    req.username = Some(name.to_owned());
    req.password = Some(password.clone());
    req.initial_device_display_name = Some("e2e_bench".into());
    req.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(req).await.with_context(|| format!("register {name}"))?;
    let user_id = client.user_id().context("no user id")?.to_owned();
    Ok(Account { client, user_id, password })
}

/// Logs an account a previous run registered in again (a new device).
pub async fn login(url: &str, user_id: &str, password: &str) -> Result<Account> {
    let client = new_client(url).await?;
    client
        .matrix_auth()
        .login_username(user_id, password)
        .initial_device_display_name("e2e_bench")
        .send()
        .await
        .with_context(|| format!("log {user_id} in"))?;
    let user_id = client.user_id().context("no user id")?.to_owned();
    Ok(Account { client, user_id, password: password.to_owned() })
}

impl Account {
    pub async fn create_room(&self, name: &str, power_users: Value) -> Result<OwnedRoomId> {
        let mut req = create_room::v3::Request::new();
        req.name = Some(name.to_owned());
        req.preset = Some(create_room::v3::RoomPreset::PublicChat);
        req.power_level_content_override = Some(Raw::new(&json!({ "users": power_users }))?.cast_unchecked());
        Ok(self.client.send(req).await.with_context(|| format!("create room {name}"))?.room_id)
    }

    pub async fn join(&self, room: &OwnedRoomId) -> Result<()> {
        self.client
            .send(join_room_by_id::v3::Request::new(room.clone()))
            .await
            .with_context(|| format!("{} joins {room}", self.user_id))?;
        Ok(())
    }

    pub async fn ban(&self, room: &OwnedRoomId, user: &OwnedUserId) -> Result<()> {
        let mut req = ban_user::v3::Request::new(room.clone(), user.clone());
        req.reason = Some("bench".to_owned());
        self.client.send(req).await.with_context(|| format!("ban {user} in {room}"))?;
        Ok(())
    }

    pub async fn unban(&self, room: &OwnedRoomId, user: &OwnedUserId) -> Result<()> {
        self.client
            .send(unban_user::v3::Request::new(room.clone(), user.clone()))
            .await
            .with_context(|| format!("unban {user} in {room}"))?;
        Ok(())
    }

    pub async fn put_state(&self, room: &OwnedRoomId, ty: &str, key: &str, content: &Value) -> Result<String> {
        let req = send_state_event::v3::Request::new_raw(
            room.clone(),
            ty.into(),
            key.to_owned(),
            Raw::new(content)?.cast_unchecked(),
        );
        Ok(self.client.send(req).await.with_context(|| format!("put {ty} in {room}"))?.event_id.to_string())
    }

    /// A state event's content, or with `event` the whole event (event_id, sender).
    pub async fn state(&self, room: &OwnedRoomId, ty: &str, key: &str, event: bool) -> Result<Value> {
        let mut req = get_state_event_for_key::v3::Request::new(room.clone(), ty.into(), key.to_owned());
        if event {
            req.format = get_state_event_for_key::v3::StateEventFormat::Event;
        }
        let resp = self.client.send(req).await.with_context(|| format!("get {ty} of {room}"))?;
        Ok(serde_json::from_str(resp.event_or_content.get())?)
    }

    /// The power-levels content, or with `event` the whole event.
    pub async fn power_levels(&self, room: &OwnedRoomId, event: bool) -> Result<Value> {
        self.state(room, "m.room.power_levels", "", event).await
    }

    /// Every state event of a room, as JSON.
    pub async fn all_state(&self, room: &OwnedRoomId) -> Result<Vec<Value>> {
        let resp = self.client.send(get_state_events::v3::Request::new(room.clone())).await?;
        Ok(resp.room_state.iter().filter_map(|raw| serde_json::from_str(raw.json().get()).ok()).collect())
    }

    /// Every `m.room.member` event of a room, as JSON.
    pub async fn members(&self, room: &OwnedRoomId) -> Result<Vec<Value>> {
        let resp = self.client.send(get_member_events::v3::Request::new(room.clone())).await?;
        Ok(resp.chunk.iter().filter_map(|raw| serde_json::from_str(raw.json().get()).ok()).collect())
    }

    /// Read-modify-write of some users' levels (None = remove the entry).
    pub async fn set_levels(&self, room: &OwnedRoomId, levels: &[(&str, Option<i64>)]) -> Result<()> {
        let mut pl = self.power_levels(room, false).await?;
        let users = pl
            .as_object_mut()
            .context("power levels are not an object")?
            .entry("users")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .context("users is not an object")?;
        for (user, level) in levels {
            match level {
                Some(l) => users.insert((*user).to_owned(), (*l).into()),
                None => users.remove(*user),
            };
        }
        self.put_state(room, "m.room.power_levels", "", &pl).await?;
        Ok(())
    }

    pub async fn set_level(&self, room: &OwnedRoomId, user: &str, level: Option<i64>) -> Result<()> {
        self.set_levels(room, &[(user, level)]).await
    }
}

fn level_of(content: &Value, user: &str) -> Option<i64> {
    content.get("users")?.get(user)?.as_i64()
}

pub fn is_muted(content: &Value, user: &str) -> bool {
    let send = content.get("events_default").and_then(Value::as_i64).unwrap_or(0);
    level_of(content, user).is_some_and(|l| l < send)
}

pub fn is_banned(content: &Value) -> bool {
    content.get("membership").and_then(Value::as_str) == Some("ban")
}

/// Runs `f` over `items` with at most `n` in flight; the first error wins.
pub async fn run_concurrently<T, F, Fut>(n: usize, items: Vec<T>, f: F) -> Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let queue =
        std::sync::Arc::new(std::sync::Mutex::new(items.into_iter().collect::<std::collections::VecDeque<T>>()));
    let f = std::sync::Arc::new(f);
    let mut set: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (queue, f) = (queue.clone(), f.clone());
        set.spawn(async move {
            loop {
                let Some(item) = queue.lock().unwrap().pop_front() else { return Ok(()) };
                f(item).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}
