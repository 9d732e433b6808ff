//! Account suspension (MSC3823): the homeserver admin API that suspends local accounts, the calls' retries and outcomes, and what hush does when its own account cannot write.
//!
//! A mute from a policy list, applied at server level to a user of hush's own
//! homeserver, is a read-only account (MSC3907): hush suspends the account with an admin
//! token and lifts the suspension when the rule goes or expires. The decision is core's
//! (`hush_core::reconcile::reconcile_account`); the calls go through [`AdminApi`]
//! ([`HttpAdminApi`] for real, a fake in tests); the engine glue (facts, ledger, reports,
//! timers) is in `engine/accounts.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::config::Secret;

/// A boxed, sendable future (the trait is used as `dyn AdminApi`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an admin call did not go through. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// The homeserver refused the token (403): it is not a server admin's token.
    NotAdmin(String),
    /// The homeserver does not know this user (404 `M_NOT_FOUND`).
    UnknownUser(String),
    /// The user belongs to another homeserver: refused before any call.
    RemoteUser(String),
    /// None of the known suspension endpoints exists on this homeserver.
    Unsupported,
    /// Network error, 5xx or 429: may work later.
    Transient(String),
    /// Anything else the homeserver answered.
    Other { status: u16, errcode: String, message: String },
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotAdmin(m) => {
                write!(f, "the admin access token is not a homeserver admin's (403: {m})")
            }
            AdminError::UnknownUser(u) => write!(f, "the homeserver has no user {u}"),
            AdminError::RemoteUser(u) => write!(f, "{u} is not a user of this homeserver"),
            AdminError::Unsupported => write!(
                f,
                "the homeserver has no suspension API (tried MSC4323, its unstable prefix and Synapse's admin API)"
            ),
            AdminError::Transient(m) => write!(f, "temporary failure: {m}"),
            AdminError::Other { status, errcode, message } => write!(f, "HTTP {status} {errcode}: {message}"),
        }
    }
}

/// What the homeserver says about an account (None = it did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountInfo {
    pub admin: Option<bool>,
    pub suspended: Option<bool>,
}

/// The homeserver admin calls suspension needs.
pub trait AdminApi: Send + Sync + 'static {
    /// Suspends (`true`) or unsuspends (`false`) a local account.
    fn suspend<'a>(&'a self, user_id: &'a str, suspended: bool) -> BoxFuture<'a, Result<(), AdminError>>;
    /// Whether the account is an admin and already suspended, where the server can say
    /// cheaply (Synapse's user admin API); `AccountInfo::default()` when it cannot.
    fn account<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<AccountInfo, AdminError>>;
}

/// The server name of a user id (`@local:server` -> `server`).
pub fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, s)| s)
}

/// Which suspension endpoint a homeserver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `PUT /_matrix/client/v1/admin/suspend/{userId}` `{"suspended": b}` (MSC4323, spec v1.18).
    Standard,
    /// The same under `/_matrix/client/unstable/uk.timedout.msc4323/admin/suspend/{userId}`.
    Unstable,
    /// `PUT /_synapse/admin/v1/suspend/{userId}` `{"suspend": b}`.
    Synapse,
}

impl Endpoint {
    const ALL: [Endpoint; 3] = [Endpoint::Standard, Endpoint::Unstable, Endpoint::Synapse];

    fn segments(self) -> &'static [&'static str] {
        match self {
            Endpoint::Standard => &["_matrix", "client", "v1", "admin", "suspend"],
            Endpoint::Unstable => &["_matrix", "client", "unstable", "uk.timedout.msc4323", "admin", "suspend"],
            Endpoint::Synapse => &["_synapse", "admin", "v1", "suspend"],
        }
    }

    fn body(self, suspended: bool) -> Value {
        match self {
            Endpoint::Standard | Endpoint::Unstable => serde_json::json!({ "suspended": suspended }),
            Endpoint::Synapse => serde_json::json!({ "suspend": suspended }),
        }
    }
}

/// One HTTP answer, reduced to what the decisions need.
struct Answer {
    status: u16,
    errcode: Option<String>,
    message: String,
    body: Value,
}

impl Answer {
    /// The server does not know this endpoint (so try the next one).
    fn unrecognized(&self) -> bool {
        self.errcode.as_deref() == Some("M_UNRECOGNIZED")
            || (self.errcode.is_none() && matches!(self.status, 404 | 405 | 501))
    }

    fn error(&self, user_id: &str) -> AdminError {
        let errcode = self.errcode.clone().unwrap_or_else(|| "M_UNKNOWN".to_owned());
        match self.status {
            401 | 403 => AdminError::NotAdmin(format!("{errcode}: {}", self.message)),
            404 => AdminError::UnknownUser(user_id.to_owned()),
            429 | 500.. => AdminError::Transient(format!("HTTP {} {errcode}: {}", self.status, self.message)),
            status => AdminError::Other { status, errcode, message: self.message.clone() },
        }
    }
}

/// The real admin API over HTTP, with the admin's access token.
pub struct HttpAdminApi {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Secret,
    server_name: String,
    /// The endpoint that worked last time (tried first).
    endpoint: Mutex<Option<Endpoint>>,
}

impl HttpAdminApi {
    /// `homeserver_url` is the client-server API base; `server_name` is hush's own (from its user id).
    pub fn new(homeserver_url: &str, token: Secret, server_name: &str) -> anyhow::Result<HttpAdminApi> {
        let base = reqwest::Url::parse(homeserver_url)?;
        if base.cannot_be_a_base() {
            anyhow::bail!("homeserver_url {homeserver_url} cannot be a base URL");
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(HttpAdminApi { http, base, token, server_name: server_name.to_owned(), endpoint: Mutex::new(None) })
    }

    fn url(&self, segments: &[&str], user_id: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments).push(user_id);
        }
        url
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<Answer, AdminError> {
        let mut req = self.http.request(method, url).bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        // reqwest's errors name the URL, never the headers: the token stays out of them.
        let resp = req.send().await.map_err(|e| AdminError::Transient(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| AdminError::Transient(e.without_url().to_string()))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let errcode = body.get("errcode").and_then(Value::as_str).map(str::to_owned);
        let message = body.get("error").and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(Answer { status, errcode, message, body })
    }

    fn local(&self, user_id: &str) -> Result<(), AdminError> {
        if server_of(user_id) == Some(self.server_name.as_str()) {
            Ok(())
        } else {
            Err(AdminError::RemoteUser(user_id.to_owned()))
        }
    }

    async fn put_suspend(&self, user_id: &str, suspended: bool) -> Result<(), AdminError> {
        self.local(user_id)?;
        let remembered = *self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        let order: Vec<Endpoint> = match remembered {
            Some(e) => std::iter::once(e).chain(Endpoint::ALL.into_iter().filter(|x| *x != e)).collect(),
            None => Endpoint::ALL.to_vec(),
        };
        for endpoint in order {
            let url = self.url(endpoint.segments(), user_id);
            let answer = self.call(reqwest::Method::PUT, url, Some(&endpoint.body(suspended))).await?;
            if (200..300).contains(&answer.status) {
                let mut slot = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
                if *slot != Some(endpoint) {
                    info!(?endpoint, "account suspension: using this admin endpoint");
                    *slot = Some(endpoint);
                }
                return Ok(());
            }
            if answer.unrecognized() {
                debug!(?endpoint, status = answer.status, "suspension endpoint not known here; trying the next");
                continue;
            }
            return Err(answer.error(user_id));
        }
        Err(AdminError::Unsupported)
    }

    async fn get_account(&self, user_id: &str) -> Result<AccountInfo, AdminError> {
        self.local(user_id)?;
        let url = self.url(&["_synapse", "admin", "v2", "users"], user_id);
        let answer = self.call(reqwest::Method::GET, url, None).await?;
        if (200..300).contains(&answer.status) {
            return Ok(AccountInfo {
                admin: answer.body.get("admin").and_then(Value::as_bool),
                suspended: answer.body.get("suspended").and_then(Value::as_bool),
            });
        }
        if answer.unrecognized() {
            // Not Synapse: the admin flag cannot be read cheaply.
            return Ok(AccountInfo::default());
        }
        Err(answer.error(user_id))
    }

    /// Synapse's `GET /_synapse/admin/v1/users/<user>/override_ratelimit`: the account's
    /// rate-limit override (`{}` when it has none), for `rate_limits`.
    pub async fn override_ratelimit(&self, user_id: &str) -> Result<Value, AdminError> {
        let mut url = self.url(&["_synapse", "admin", "v1", "users"], user_id);
        if let Ok(mut path) = url.path_segments_mut() {
            path.push("override_ratelimit");
        }
        let answer = self.call(reqwest::Method::GET, url, None).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        Err(answer.error(user_id))
    }
}

impl AdminApi for HttpAdminApi {
    fn suspend<'a>(&'a self, user_id: &'a str, suspended: bool) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(self.put_suspend(user_id, suspended))
    }
    fn account<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<AccountInfo, AdminError>> {
        Box::pin(self.get_account(user_id))
    }
}

/// What the engine keeps for suspension when it is enabled.
pub struct Suspensions {
    pub api: Arc<dyn AdminApi>,
    /// hush's own server name: only its users are suspended.
    pub server_name: String,
    /// The backoff per user whose calls keep failing and whose entry stays (a lift, a
    /// suspension that may have taken effect): the wait before the next try.
    pub(crate) failures: std::collections::HashMap<String, Backoff>,
}

impl Suspensions {
    pub fn new(api: Arc<dyn AdminApi>, server_name: &str) -> Suspensions {
        Suspensions { api, server_name: server_name.to_owned(), failures: Default::default() }
    }
}

/// Suspension as configured: None when `suspension.enabled` is false.
pub fn from_config(config: &crate::config::Config, own_user: &str) -> anyhow::Result<Option<Suspensions>> {
    if !config.suspension.enabled {
        return Ok(None);
    }
    let token = config
        .suspension
        .admin_access_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("suspension.enabled needs suspension.admin_access_token_file"))?;
    let server = server_of(own_user).ok_or_else(|| anyhow::anyhow!("{own_user} has no server name"))?;
    let api = HttpAdminApi::new(&config.homeserver_url, token, server)?;
    info!(server, "account suspension enabled: exact mute rules on local users suspend their accounts");
    Ok(Some(Suspensions::new(Arc::new(api), server)))
}

/// The result of an admin call, back in the engine.
#[derive(Debug)]
pub struct Done {
    pub user_id: String,
    /// True for a suspension, false for a lift.
    pub suspend: bool,
    pub outcome: Outcome,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The account was already suspended by someone else: hush leaves it to them.
    AlreadySuspended,
    /// The account is a homeserver admin: never suspended.
    IsAdmin,
    Failed(AdminError),
    /// A suspension failed after hush's request went out (its answer lost), or on a retry
    /// of hush's own entry: the account may be suspended by hush, so its entry stays.
    Unknown(AdminError),
    /// Not a call's result: the wait after a failed call is over, look at the account again.
    Retry,
}

/// Suspends (after checking the account is no admin and, when `fresh`, not already
/// suspended by someone else) or unsuspends, retrying temporary failures with backoff.
/// `fresh` is false when the ledger already has hush's entry (a retry after a crash, a
/// lost answer or a half-done lift): the account may be suspended by hush itself then.
/// Within one call, once a suspend request has gone out, a retry that finds the account
/// suspended finds hush's own suspension (the answer was lost, the change made).
pub async fn run_call(api: Arc<dyn AdminApi>, user_id: String, suspend: bool, fresh: bool) -> Done {
    // Six retries, 1 s doubling (the last wait is 32 s).
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(32));
    // The account may be suspended by hush: its entry predates this call, or a suspend
    // request of this call went out.
    let mut mine = !fresh;
    let outcome = loop {
        match attempt(&*api, &user_id, suspend, &mut mine).await {
            Ok(o) => break o,
            Err(AdminError::Transient(e)) if backoff.tries() < 6 => {
                let wait = backoff.next();
                crate::metrics::write_retried();
                tracing::warn!(user = %user_id, "suspension call: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            // A user that does not exist is suspended by nobody.
            Err(e) if suspend && mine && !matches!(e, AdminError::UnknownUser(_)) => break Outcome::Unknown(e),
            Err(e) => break Outcome::Failed(e),
        }
    };
    Done { user_id, suspend, outcome }
}

async fn attempt(api: &dyn AdminApi, user_id: &str, suspend: bool, mine: &mut bool) -> Result<Outcome, AdminError> {
    if suspend {
        let info = api.account(user_id).await?;
        if info.admin == Some(true) {
            return Ok(Outcome::IsAdmin);
        }
        if info.suspended == Some(true) {
            // Before hush's first request it is someone else's; after it, hush's own.
            return Ok(if *mine { Outcome::Done } else { Outcome::AlreadySuspended });
        }
    }
    *mine = true;
    api.suspend(user_id, suspend).await.map(|()| Outcome::Done)
}

/// The waits before trying a failed call again, over failures in a row: 5 s, doubling,
/// at most 5 min.
pub fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(5), Duration::from_secs(300))
}

/// hush's own account: whether it can write, and since when it cannot.
#[derive(Debug, Clone, Default)]
pub struct OwnAccount {
    /// The errcode and message that stopped writes (None = writes work).
    pub blocked: Option<String>,
    pub since_ms: u64,
    /// Bumped on each block, so a stale probe result is ignored.
    pub generation: u64,
}

/// The wait before the n-th probe of hush's own account: 5 s for the first minute, then 30 s.
pub fn probe_interval(n: u32) -> Duration {
    if n < 12 {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    }
}

/// Whether a write error means hush's own account cannot write.
pub fn blocks_writes(e: &crate::enforce::WriteError) -> Option<&str> {
    match e {
        crate::enforce::WriteError::Suspended(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
