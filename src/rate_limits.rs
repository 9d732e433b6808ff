//! hush's own account and the homeserver's rate limits: the first 429 its writes meet in a run (counted in `enforce::with_retries`), Synapse's `override_ratelimit` admin answer at start-up, and the one notice telling the management room how to exempt hush.
//!
//! The write tasks have no engine to ask: the engine runs each of them inside a
//! [`Watch`] (a tokio task-local), and the retry loop calls [`answered_429`], which tells
//! the engine once per watch. The engine reports it once per run (see
//! `engine/own_limits.rs`), whichever way it learnt it first.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

/// What hush learnt of its own account's rate limit.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnLimit {
    /// One of hush's writes was answered 429 `M_LIMIT_EXCEEDED`.
    Answered429,
    /// Synapse's admin API says hush's account has no rate-limit override.
    NoOverride,
    /// Synapse's admin API says hush's account has an override, but a limiting one.
    Override { messages_per_second: f64, burst_count: u64 },
}

/// The engine's ear for 429s in its write tasks: told once, on the first.
#[derive(Clone)]
pub struct Watch {
    tell: Arc<dyn Fn(OwnLimit) + Send + Sync>,
    told: Arc<AtomicBool>,
    /// The account's one gate: after a 429, its writes wait together and go one at a time.
    gate: crate::rate_gate::Gate,
}

tokio::task_local! {
    static WATCH: Watch;
}

impl Watch {
    /// A watch that calls `tell` on the first 429 a task it runs meets.
    pub fn new(tell: impl Fn(OwnLimit) + Send + Sync + 'static) -> Watch {
        Watch { tell: Arc::new(tell), told: Arc::new(AtomicBool::new(false)), gate: Default::default() }
    }

    /// Runs `fut` inside this watch.
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        WATCH.scope(self.clone(), fut)
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("told", &self.told.load(Ordering::Relaxed)).finish()
    }
}

/// Runs `fut` inside the current task's watch, if it has one (for tasks a write task
/// spawns: a task-local does not follow `spawn`).
pub fn inherit<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let watch = WATCH.try_with(Watch::clone).ok();
    async move {
        match watch {
            Some(w) => WATCH.scope(w, fut).await,
            None => fut.await,
        }
    }
}

/// One of hush's writes was answered 429: the first in the current watch tells the engine.
pub fn answered_429() {
    let _ = WATCH.try_with(|w| {
        if !w.told.swap(true, Ordering::SeqCst) {
            (w.tell)(OwnLimit::Answered429);
        }
    });
}

/// The current task's watch's gate, if it runs in one (`enforce::with_retries` waits at it).
pub fn gate() -> Option<crate::rate_gate::Gate> {
    WATCH.try_with(|w| w.gate.clone()).ok()
}

/// With an admin token configured (`suspension.admin_access_token_file`, or
/// `HUSH_ADMIN_ACCESS_TOKEN`), asks Synapse at start-up whether hush's account has a
/// rate-limit override, in the background, and `tell`s when it is not exempt. Without a
/// token, or when the question fails (logged), the first 429 tells instead.
pub fn check_at_start(config: &crate::config::Config, own_user: &str, tell: impl Fn(OwnLimit) + Send + 'static) {
    let Some(token) = config.suspension.admin_access_token.clone() else { return };
    let Some(server) = crate::suspension::server_of(own_user) else { return };
    let api = match crate::suspension::HttpAdminApi::new(&config.homeserver_url, token, server) {
        Ok(api) => api,
        Err(e) => {
            warn!("cannot ask the admin API about hush's rate limit: {e:#}");
            return;
        }
    };
    let own_user = own_user.to_owned();
    tokio::spawn(async move {
        match api.override_ratelimit(&own_user).await {
            Ok(answer) => match judge_override(&answer) {
                Some(seen) => tell(seen),
                None => info!(user = %own_user, "hush's account is exempt from the homeserver's rate limit"),
            },
            Err(e) => warn!("cannot ask the admin API about hush's rate limit (the first 429 will tell): {e}"),
        }
    });
}

/// What Synapse's `GET /_synapse/admin/v1/users/<user>/override_ratelimit` answer means:
/// `None` when hush is exempt (both values 0), else what to tell.
pub fn judge_override(answer: &Value) -> Option<OwnLimit> {
    let per_second = answer.get("messages_per_second").and_then(Value::as_f64);
    let burst = answer.get("burst_count").and_then(Value::as_u64);
    match (per_second, burst) {
        (None, None) => Some(OwnLimit::NoOverride),
        (p, b) if p.unwrap_or(0.0) <= 0.0 && b.unwrap_or(0) == 0 => None,
        (p, b) => Some(OwnLimit::Override { messages_per_second: p.unwrap_or(0.0), burst_count: b.unwrap_or(0) }),
    }
}

/// The admin call that exempts `user_id` from Synapse's message rate limit.
pub fn exempt_call(user_id: &str) -> String {
    format!(
        "POST /_synapse/admin/v1/users/{user_id}/override_ratelimit with \
         {{\"messages_per_second\": 0, \"burst_count\": 0}}"
    )
}

/// The management room's notice: what hush saw, that nothing is lost, how to exempt it.
pub fn notice(user_id: &str, seen: &OwnLimit) -> String {
    let what = match seen {
        OwnLimit::Answered429 => {
            "its writes are being answered 429 M_LIMIT_EXCEEDED (the homeserver's rate limit)".to_owned()
        }
        OwnLimit::NoOverride => "the admin API says it has no rate-limit override, so the homeserver's \
                                 message rate limit applies to it"
            .to_owned(),
        OwnLimit::Override { messages_per_second, burst_count } => format!(
            "the admin API says its rate-limit override is {messages_per_second} messages a second \
             with a burst of {burst_count}"
        ),
    };
    format!(
        "hush's account {user_id} is rate-limited: {what}. Its writes wait and are retried, nothing \
         is lost, but a rule over many members or rooms is enforced only as fast as the limit allows \
         (Synapse's default: 0.2 events a second after a burst of 10). To exempt it, a homeserver \
         admin calls {call} (or raises rc_message in homeserver.yaml for everyone).",
        call = exempt_call(user_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_zero_and_zero_is_exempt() {
        assert_eq!(judge_override(&json!({})), Some(OwnLimit::NoOverride));
        assert_eq!(judge_override(&json!({"messages_per_second": 0, "burst_count": 0})), None);
        assert_eq!(
            judge_override(&json!({"messages_per_second": 1, "burst_count": 5})),
            Some(OwnLimit::Override { messages_per_second: 1.0, burst_count: 5 })
        );
    }

    #[test]
    fn the_notice_names_the_account_and_the_exact_call() {
        let text = notice("@hush:example.org", &OwnLimit::Answered429);
        assert!(text.contains("M_LIMIT_EXCEEDED"), "{text}");
        assert!(text.contains("nothing is lost"), "{text}");
        assert!(
            text.contains(
                "POST /_synapse/admin/v1/users/@hush:example.org/override_ratelimit with \
                 {\"messages_per_second\": 0, \"burst_count\": 0}"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_watch_tells_once_and_follows_spawned_tasks() {
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = told.clone();
        let watch = Watch::new(move |seen| t.lock().unwrap().push(seen));
        answered_429(); // outside any watch: nobody to tell
        watch
            .scope(async {
                answered_429();
                tokio::spawn(inherit(async { answered_429() })).await.unwrap();
            })
            .await;
        assert_eq!(*told.lock().unwrap(), [OwnLimit::Answered429]);
    }
}
