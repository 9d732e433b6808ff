//! The chaos run's client-server API calls: plain HTTP, each retried through outages and rate limits until it lands (a moderator's client does the same).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::urlencode;

/// An account and its access token.
pub struct Account {
    pub user: String,
    pub token: String,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    txn: AtomicU64,
}

/// How long a call may keep failing (homeserver restarting, rate limited) before the run fails.
const PATIENCE: Duration = Duration::from_secs(180);

impl Api {
    pub fn new(base: &str) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Api { http, base: base.trim_end_matches('/').to_owned(), txn: AtomicU64::new(0) }
    }

    /// One attempt: the JSON answer, or (status, body); status 0 when nothing answered.
    async fn once(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(serde_json::to_vec(b).expect("json"));
        }
        let resp = req.send().await.map_err(|_| (0, Value::Null))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|_| (0, Value::Null))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err((status, v))
        }
    }

    /// Retries through outages (no answer, 5xx) and rate limits (429, after `retry_after_ms`);
    /// another error is returned.
    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (u16, Value)> {
        let end = Instant::now() + PATIENCE;
        loop {
            match self.once(token, method.clone(), path, body).await {
                Err((status, v)) if status == 0 || status == 429 || status >= 500 => {
                    assert!(Instant::now() < end, "{method} {path} kept failing: {status} {v}");
                    let wait = v.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(500).min(10_000);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                other => return other,
            }
        }
    }

    async fn must(&self, acc: &Account, method: Method, path: &str, body: Option<&Value>) -> Value {
        match self.call(Some(&acc.token), method.clone(), path, body).await {
            Ok(v) => v,
            Err((status, v)) => panic!("{method} {path} as {}: {status} {v}", acc.user),
        }
    }

    fn txn(&self) -> u64 {
        self.txn.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn register(&self, name: &str) -> Account {
        self.register_with(name, &format!("{name}-pw")).await
    }

    /// Open registration (the test homeserver allows it), through the dummy stage.
    pub async fn register_with(&self, name: &str, password: &str) -> Account {
        let mut body = json!({"username": name, "password": password, "inhibit_login": false});
        let first = self.call(None, Method::POST, "/_matrix/client/v3/register", Some(&body)).await;
        let v = match first {
            Ok(v) => v,
            Err((401, flows)) => {
                body["auth"] = json!({"type": "m.login.dummy", "session": flows["session"]});
                match self.call(None, Method::POST, "/_matrix/client/v3/register", Some(&body)).await {
                    Ok(v) => v,
                    Err((status, v)) => panic!("register {name}: {status} {v}"),
                }
            }
            Err((status, v)) => panic!("register {name}: {status} {v}"),
        };
        Account {
            user: v["user_id"].as_str().expect("user_id").to_owned(),
            token: v["access_token"].as_str().expect("token").to_owned(),
        }
    }

    pub async fn create_room(&self, acc: &Account, body: Value) -> String {
        let v = self.must(acc, Method::POST, "/_matrix/client/v3/createRoom", Some(&body)).await;
        v["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn state(&self, acc: &Account, room: &str, ty: &str, key: &str) -> Value {
        self.must(acc, Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/{ty}/{key}"), None).await
    }

    pub async fn put_state(&self, acc: &Account, room: &str, ty: &str, key: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{ty}/{key}");
        let v = self.must(acc, Method::PUT, &path, Some(&content)).await;
        v["event_id"].as_str().unwrap_or_default().to_owned()
    }

    /// What the state event `event_id` replaced: its content (`unsigned.prev_content`) and
    /// id (`unsigned.replaces_state`), if the server says.
    pub async fn replaced(&self, acc: &Account, room: &str, event_id: &str) -> (Option<Value>, Option<String>) {
        let v = self.must(acc, Method::GET, &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), None).await;
        let id = v.pointer("/unsigned/replaces_state").and_then(Value::as_str).map(str::to_owned);
        (v.pointer("/unsigned/prev_content").cloned(), id)
    }

    /// The ids of the state events that `sender`'s events of type `ty` in `room` replaced
    /// (`unsigned.replaces_state`), from the room's whole history.
    pub async fn replaced_by(&self, acc: &Account, room: &str, ty: &str, sender: &str) -> Vec<String> {
        let filter = json!({"types": [ty], "senders": [sender]}).to_string();
        let filter: String = urlencode(&filter);
        let mut out = Vec::new();
        let mut from = String::new();
        loop {
            let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=500&filter={filter}{from}");
            let v = self.must(acc, Method::GET, &path, None).await;
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            out.extend(chunk.iter().filter_map(|e| e.pointer("/unsigned/replaces_state")?.as_str().map(str::to_owned)));
            match v["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = format!("&from={}", urlencode(end)),
                _ => return out,
            }
        }
    }

    pub async fn redact(&self, acc: &Account, room: &str, event_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/chaos{}", self.txn());
        self.must(acc, Method::PUT, &path, Some(&json!({"reason": "chaos"}))).await;
    }

    pub async fn join(&self, acc: &Account, room: &str) {
        self.must(acc, Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(&json!({}))).await;
    }

    /// Joins unless refused (banned): a member coming back.
    pub async fn try_join(&self, acc: &Account, room: &str) {
        let _ = self
            .call(Some(&acc.token), Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(&json!({})))
            .await;
    }

    /// Leaves unless refused (not in the room).
    pub async fn leave(&self, acc: &Account, room: &str) {
        let _ = self
            .call(Some(&acc.token), Method::POST, &format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&json!({})))
            .await;
    }

    /// The room's full state, or None if the homeserver does not answer now.
    pub async fn try_room_state(&self, acc: &Account, room: &str) -> Option<Vec<Value>> {
        let v = self
            .once(Some(&acc.token), Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state"), None)
            .await
            .ok()?;
        serde_json::from_value(v).ok()
    }
}
