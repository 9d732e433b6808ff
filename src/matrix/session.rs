//! Logging in: the client and its store in `data_dir`, the session kept in `session.json` so restarts reuse the device, and a store set aside when its token is refused.

use super::*;
use crate::config::{Config, Credentials};
use anyhow::{Context, Result};
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::UserId;
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, SessionMeta, SessionTokens};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// The device display name hush registers.
pub(super) const DEVICE_NAME: &str = "hush";

/// What hush keeps in `data_dir/session.json` so that a restart reuses its device
/// (and with it the encryption keys in the store).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSession {
    homeserver_url: String,
    session: MatrixSession,
    /// Whether the session came from a configured access token (then a changed token in
    /// the config replaces it) or from a password login.
    from_access_token: bool,
}

pub(super) fn session_path(data_dir: &Path) -> PathBuf {
    data_dir.join("session.json")
}

pub(super) fn store_path(data_dir: &Path) -> PathBuf {
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

pub(super) async fn build_client(config: &Config) -> Result<Client> {
    Client::builder()
        .homeserver_url(&config.homeserver_url)
        // The SDK's low-memory store settings (a connection pool the size of the CPU count
        // instead of four times it, smaller page caches): hush is a bot, not a client with
        // a timeline to scroll (BENCHMARKS.md, "200 rooms").
        .sqlite_store_with_config_and_cache_path(
            matrix_sdk::SqliteStoreConfig::with_low_memory_config(store_path(&config.data_dir)),
            None::<PathBuf>,
        )
        // The SDK retries 5xx and 429 forever by default; bound it so a permanent
        // failure surfaces and our own loops decide what to do.
        .request_config(RequestConfig::new().retry_limit(3).timeout(Duration::from_secs(60)))
        .build()
        .await
        .context("cannot open the client store")
}

/// Whether the homeserver said the access token is not (or no longer) valid.
pub(super) fn is_unknown_token(e: &matrix_sdk::HttpError) -> bool {
    matches!(e.client_api_error_kind(), Some(matrix_sdk::ruma::api::error::ErrorKind::UnknownToken { .. }))
}

/// Moves the store of a device hush can no longer use out of the way (kept, not deleted:
/// it holds that device's encryption keys) and forgets its session.
pub(super) fn set_store_aside(data_dir: &Path) -> Result<()> {
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

pub(super) fn load_session(data_dir: &Path) -> Result<Option<StoredSession>> {
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

pub(super) fn save_session(data_dir: &Path, session: &StoredSession) -> Result<()> {
    let path = session_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(session)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    restrict_permissions(&tmp, 0o600);
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(super) fn restrict_permissions(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        warn!("cannot restrict permissions of {}: {e}", path.display());
    }
}
