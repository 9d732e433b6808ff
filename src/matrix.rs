//! The homeserver connection: client construction, login and session persistence, sync with backoff, joins, sends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::ruma::api::client::membership::{ban_user, unban_user};
use matrix_sdk::ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::room::power_levels::UserPowerLevel;
use matrix_sdk::ruma::events::room::redaction::OriginalSyncRoomRedactionEvent;
use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::events::{AnyStateEventContent, AnySyncTimelineEvent};
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{EventId, OwnedRoomId, RoomId, RoomOrAliasId, UserId};
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::sync::{State as SyncState, SyncResponse};
use matrix_sdk::{Client, Room, SessionMeta, SessionTokens};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::{Config, Credentials};
use crate::enforce::{RoomWriter, WriteError};

/// The device display name hush registers.
const DEVICE_NAME: &str = "hush";

/// What hush keeps in `data_dir/session.json` so that a restart reuses its device
/// (and with it the encryption keys in the store).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    homeserver_url: String,
    session: MatrixSession,
    /// Whether the session came from a configured access token (then a changed token in
    /// the config replaces it) or from a password login.
    from_access_token: bool,
}

fn session_path(data_dir: &Path) -> PathBuf {
    data_dir.join("session.json")
}

fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

/// Builds a client, restores the saved session or logs in, and saves the session.
///
/// A saved session the homeserver refuses (the device was logged out or deleted) is
/// replaced by a fresh password login; the old device's store (its encryption keys) is
/// kept aside as `store.refused-<time>`, because a store belongs to one device.
pub async fn connect(config: &Config) -> Result<Client> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    restrict_permissions(&config.data_dir, 0o700);

    let saved = load_session(&config.data_dir)?;
    let had_session = saved.is_some();
    let reuse = saved.filter(|s| {
        s.homeserver_url == config.homeserver_url
            && s.session.meta.user_id.as_str() == config.user_id
            && match &config.credentials {
                Credentials::Password(_) => !s.from_access_token,
                Credentials::AccessToken(t) => s.from_access_token && s.session.tokens.access_token == t.expose(),
            }
    });
    if let Some(saved) = reuse {
        let client = build_client(config).await?;
        info!(device_id = %saved.session.meta.device_id, "restoring the saved session");
        client
            .matrix_auth()
            .restore_session(saved.session, RoomLoadSettings::default())
            .await
            .context("cannot restore the saved session")?;
        match client.whoami().await {
            Ok(_) => return Ok(client),
            Err(e) if is_unknown_token(&e) && matches!(config.credentials, Credentials::Password(_)) => {
                warn!("the homeserver refused the saved session (its device was logged out); logging in again");
                drop(client);
                set_store_aside(&config.data_dir)?;
            }
            Err(e) if is_unknown_token(&e) => {
                anyhow::bail!("the homeserver refused the configured access token: {}", classify(&e))
            }
            // Unreachable or failing homeserver: the session may well be fine; sync retries.
            Err(e) => {
                warn!("cannot check the saved session yet: {}", classify(&e));
                return Ok(client);
            }
        }
    } else if had_session && store_path(&config.data_dir).exists() {
        // The saved session is for other credentials (they changed in the config): the
        // store belongs to that device and the SDK would refuse it for the new one. (A
        // store without any session is from a login that failed: it holds no device.)
        set_store_aside(&config.data_dir)?;
    }
    let client = build_client(config).await?;
    let auth = client.matrix_auth();
    let (session, from_access_token) = match &config.credentials {
        Credentials::Password(password) => {
            info!(user_id = %config.user_id, "logging in with a password");
            let response = auth
                .login_username(&config.user_id, password.expose())
                .initial_device_display_name(DEVICE_NAME)
                .send()
                .await
                .context("login failed")?;
            info!(device_id = %response.device_id, "logged in as a new device");
            (auth.session().context("no session after login")?, false)
        }
        Credentials::AccessToken(token) => {
            let user_id = UserId::parse(&config.user_id).context("user_id")?;
            // Ask the homeserver which device the token belongs to.
            let probe = Client::builder().homeserver_url(&config.homeserver_url).build().await?;
            probe
                .matrix_auth()
                .restore_session(
                    MatrixSession {
                        meta: SessionMeta { user_id: user_id.clone(), device_id: "PROBE".into() },
                        tokens: SessionTokens { access_token: token.expose().to_owned(), refresh_token: None },
                    },
                    RoomLoadSettings::default(),
                )
                .await?;
            let whoami = probe.whoami().await.context("the access token was refused")?;
            if whoami.user_id != user_id {
                anyhow::bail!("the access token belongs to {}, not to user_id {}", whoami.user_id, config.user_id);
            }
            let device_id = whoami.device_id.context("the access token has no device")?;
            let session = MatrixSession {
                meta: SessionMeta { user_id, device_id },
                tokens: SessionTokens { access_token: token.expose().to_owned(), refresh_token: None },
            };
            auth.restore_session(session.clone(), RoomLoadSettings::default()).await?;
            (session, true)
        }
    };
    save_session(
        &config.data_dir,
        &StoredSession { homeserver_url: config.homeserver_url.clone(), session, from_access_token },
    )?;
    Ok(client)
}

async fn build_client(config: &Config) -> Result<Client> {
    Client::builder()
        .homeserver_url(&config.homeserver_url)
        .sqlite_store(store_path(&config.data_dir), None)
        // The SDK retries 5xx and 429 forever by default; bound it so a permanent
        // failure surfaces and our own loops decide what to do.
        .request_config(RequestConfig::new().retry_limit(3).timeout(Duration::from_secs(60)))
        .build()
        .await
        .context("cannot open the client store")
}

/// Whether the homeserver said the access token is not (or no longer) valid.
fn is_unknown_token(e: &matrix_sdk::HttpError) -> bool {
    matches!(e.client_api_error_kind(), Some(matrix_sdk::ruma::api::error::ErrorKind::UnknownToken { .. }))
}

/// Moves the store of a device hush can no longer use out of the way (kept, not deleted:
/// it holds that device's encryption keys) and forgets its session.
fn set_store_aside(data_dir: &Path) -> Result<()> {
    let store = store_path(data_dir);
    if store.exists() {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = data_dir.join(format!("store.refused-{secs}"));
        std::fs::rename(&store, &aside)
            .with_context(|| format!("cannot move {} to {}", store.display(), aside.display()))?;
        warn!(store = %aside.display(), "the previous device's store is kept aside");
    }
    match std::fs::remove_file(session_path(data_dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context("cannot remove the refused session"),
    }
}

fn load_session(data_dir: &Path) -> Result<Option<StoredSession>> {
    let path = session_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                warn!("ignoring unreadable session file {}: {e}", path.display());
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_session(data_dir: &Path, session: &StoredSession) -> Result<()> {
    let path = session_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(session)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    restrict_permissions(&tmp, 0o600);
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn restrict_permissions(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        warn!("cannot restrict permissions of {}: {e}", path.display());
    }
}

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
}

/// Each room's update in a sync response (joined rooms, then rooms hush left): matrix-sdk
/// asks for `use_state_after`, and its event handlers would see the final state first and
/// older timeline events after it, so state goes from here, in order. Unreadable events
/// are skipped (logged).
pub fn room_updates<'a>(response: &'a SyncResponse, own_user: &'a str) -> impl Iterator<Item = RoomSync<'a>> + 'a {
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
        let state = crate::rooms::in_order(state, state_is_after, timeline_state, own_user);
        RoomSync { room_id: room_id.as_ref(), state, redacted }
    })
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

/// Maps an SDK error to what enforcement needs to know: wait, retry, stop, or give up.
pub fn classify(err: &matrix_sdk::HttpError) -> WriteError {
    use matrix_sdk::ruma::api::error::{ErrorBody, ErrorKind, RetryAfter};
    let Some(api) = err.as_client_api_error() else {
        return WriteError::Transient(err.to_string());
    };
    let status = api.status_code.as_u16();
    let (errcode, message) = match &api.body {
        ErrorBody::Standard(body) => (body.kind.errcode().to_string(), body.message.clone()),
        ErrorBody::Json(v) => (
            v.get("errcode").and_then(|c| c.as_str()).unwrap_or("M_UNKNOWN").to_owned(),
            v.get("error").and_then(|c| c.as_str()).unwrap_or_default().to_owned(),
        ),
        ErrorBody::NotJson { .. } => ("M_UNKNOWN".to_owned(), format!("HTTP {status}")),
    };
    if let Some(ErrorKind::LimitExceeded(data)) = err.client_api_error_kind() {
        let after = match data.retry_after {
            Some(RetryAfter::Delay(d)) => Some(d),
            Some(RetryAfter::DateTime(t)) => t.duration_since(std::time::SystemTime::now()).ok(),
            None => None,
        };
        return WriteError::RateLimited(after);
    }
    if is_suspension_code(&errcode) {
        return WriteError::Suspended(format!("{errcode}: {message}"));
    }
    if status >= 500 || status == 429 {
        return WriteError::Transient(format!("HTTP {status} {errcode}: {message}"));
    }
    WriteError::Permanent { errcode, message }
}

/// Error codes that mean hush's own account cannot write (MSC3823 suspension, locking).
pub fn is_suspension_code(errcode: &str) -> bool {
    matches!(
        errcode,
        "M_USER_SUSPENDED"
            | "ORG.MATRIX.MSC3823.USER_ACCOUNT_SUSPENDED"
            | "ORG.MATRIX.MSC3823.USER_SUSPENDED"
            | "M_USER_LOCKED"
    )
}

fn room_id(room_id: &str) -> Result<OwnedRoomId, WriteError> {
    OwnedRoomId::try_from(room_id)
        .map_err(|e| WriteError::Permanent { errcode: "M_INVALID_PARAM".into(), message: format!("{room_id}: {e}") })
}

fn user_id(user_id: &str) -> Result<matrix_sdk::ruma::OwnedUserId, WriteError> {
    matrix_sdk::ruma::OwnedUserId::try_from(user_id)
        .map_err(|e| WriteError::Permanent { errcode: "M_INVALID_PARAM".into(), message: format!("{user_id}: {e}") })
}

fn raw_content(v: &serde_json::Value) -> Result<Raw<AnyStateEventContent>, WriteError> {
    Raw::new(v)
        .map(Raw::cast_unchecked)
        .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() })
}

/// The request config of enforcement's reads and writes: no retries inside the SDK, which
/// would wait whatever a 429's `retry_after` says (twice, unbounded) before hush sees it;
/// `enforce::with_retries` retries them, its wait capped at `enforce::MAX_RETRY_AFTER`.
fn write_request() -> RequestConfig {
    RequestConfig::new().disable_retry().timeout(Duration::from_secs(60))
}

/// The homeserver side of enforcement.
#[derive(Clone)]
pub struct MatrixWriter {
    pub client: Client,
}

impl RoomWriter for MatrixWriter {
    async fn power_levels(&self, room: &str) -> Result<serde_json::Value, WriteError> {
        let req =
            get_state_event_for_key::v3::Request::new(room_id(room)?, StateEventType::RoomPowerLevels, String::new());
        let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        serde_json::from_str(resp.event_or_content.get())
            .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() })
    }

    async fn put_power_levels(&self, room: &str, content: &serde_json::Value) -> Result<String, WriteError> {
        let req = send_state_event::v3::Request::new_raw(
            room_id(room)?,
            StateEventType::RoomPowerLevels,
            String::new(),
            raw_content(content)?,
        );
        let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(resp.event_id.to_string())
    }

    async fn set_membership(&self, room: &str, user: &str, membership: &str, reason: &str) -> Result<(), WriteError> {
        let mut content = serde_json::json!({ "membership": membership });
        if !reason.is_empty() {
            content["reason"] = reason.into();
        }
        let req = send_state_event::v3::Request::new_raw(
            room_id(room)?,
            StateEventType::RoomMember,
            user_id(user)?.to_string(),
            raw_content(&content)?,
        );
        self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn ban(&self, room: &str, user: &str, reason: &str) -> Result<(), WriteError> {
        let mut req = ban_user::v3::Request::new(room_id(room)?, user_id(user)?);
        req.reason = (!reason.is_empty()).then(|| reason.to_owned());
        self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn unban(&self, room: &str, user: &str, reason: &str) -> Result<(), WriteError> {
        let mut req = unban_user::v3::Request::new(room_id(room)?, user_id(user)?);
        req.reason = (!reason.is_empty()).then(|| reason.to_owned());
        self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn notice(&self, room: &str, plain: &str, html: &str) -> Result<(), WriteError> {
        let id = room_id(room)?;
        let Some(room) = self.client.get_room(&id) else {
            return Err(WriteError::Permanent {
                errcode: "M_FORBIDDEN".into(),
                message: format!("hush is not in {id}"),
            });
        };
        room.send(notice_content(plain, html)).await.map_err(|e| match e {
            matrix_sdk::Error::Http(h) => classify(&h),
            other => WriteError::Transient(other.to_string()),
        })?;
        Ok(())
    }
}

/// A room's full state as JSON events (for policy lists and protected rooms).
pub async fn room_state(client: &Client, room: &RoomId) -> Result<Vec<serde_json::Value>> {
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
/// rest would double the memory a 20,000-rule list takes while it loads; only
/// `m.room.power_levels` keeps `unsigned.prev_content` (the content the event replaced,
/// which tells whether its writer saw hush's mute) and `unsigned.replaces_state` (the
/// event it replaced, which tells it is newer than hush's own write).
pub fn state_event(json: &str) -> serde_json::Result<serde_json::Value> {
    const FIELDS: &[&str] = &["type", "state_key", "sender", "event_id", "content"];
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    let power_levels = v.get("type").and_then(serde_json::Value::as_str) == Some("m.room.power_levels");
    if let Some(fields) = v.as_object_mut() {
        let kept: serde_json::Map<String, serde_json::Value> = fields
            .get_mut("unsigned")
            .and_then(|u| u.as_object_mut())
            .filter(|_| power_levels)
            .map(|u| {
                ["prev_content", "replaces_state"]
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), u.remove(*k)?)))
                    .collect()
            })
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
        let seen: Vec<(String, Vec<String>, Vec<String>)> = room_updates(&response, "@hush:x")
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
