//! Enforcement: the room writes hush makes (power levels, memberships, bans, server ACLs), retried on rate limits and faults, never dropped.
//! Enforcement: the room writes hush makes (power levels, memberships, bans, redactions), retried on rate limits and faults, never dropped.

use std::future::Future;
use std::time::Duration;

use hush_core::power_levels::{apply_edits, still_apply_after, UserLevelEdit};
use hush_core::server_acl::{apply_edit, AclEdit};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;

/// Why a write did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// 429 `M_LIMIT_EXCEEDED`: try again after the given time.
    RateLimited(Option<Duration>),
    /// Network error or 5xx: try again later.
    Transient(String),
    /// hush's own account is suspended (MSC3823) or locked: writes cannot succeed.
    Suspended(String),
    /// Any other refusal (403, 404, 400...): retrying will not help.
    Permanent { errcode: String, message: String },
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::RateLimited(d) => write!(f, "rate limited (retry after {d:?})"),
            WriteError::Transient(m) => write!(f, "temporary failure: {m}"),
            WriteError::Suspended(m) => write!(f, "hush's account cannot write: {m}"),
            WriteError::Permanent { errcode, message } => write!(f, "{errcode}: {message}"),
        }
    }
}

/// The writes hush makes to rooms. The real implementation talks to the homeserver
/// (`matrix::MatrixWriter`); tests use an in-memory homeserver.
pub trait RoomWriter: Clone + Send + Sync + 'static {
    /// The current `m.room.power_levels` content, fresh from the homeserver.
    fn power_levels(&self, room_id: &str) -> impl Future<Output = Result<Value, WriteError>> + Send;
    /// Sends a new `m.room.power_levels` content; returns the event id.
    fn put_power_levels(
        &self,
        room_id: &str,
        content: &Value,
    ) -> impl Future<Output = Result<String, WriteError>> + Send;
    /// The content the state event `event_id` replaced (its `unsigned.prev_content`), when
    /// the homeserver says: hush's power-levels write compares it with what it read, to
    /// find a change someone made between its read and its write.
    fn replaced_content(
        &self,
        room_id: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<Value>, WriteError>> + Send;
    /// `user_id`'s current membership in the room (`None`: no member event), fresh from the
    /// homeserver: after a write whose answer was lost, hush looks rather than guesses.
    fn membership(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;
    /// Sends an `m.room.member` event for another user (MSC3909 `mute`, back to `join`...).
    /// Member writes return the event id the homeserver gave (the view waits for it to
    /// come back through sync before it believes older member events again).
    fn set_membership(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;
    fn ban(
        &self,
        room_id: &str,
        user_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;
    fn unban(
        &self,
        room_id: &str,
        user_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;
    /// The current `m.room.server_acl` content, fresh from the homeserver; `None` when the
    /// room has none.
    fn server_acl(&self, room_id: &str) -> impl Future<Output = Result<Option<Value>, WriteError>> + Send;
    /// Sends a new `m.room.server_acl` content; returns the event id.
    fn put_server_acl(&self, room_id: &str, content: &Value)
        -> impl Future<Output = Result<String, WriteError>> + Send;
    /// A notice in a room (the management room's reports).
    fn notice(&self, room_id: &str, plain: &str, html: &str) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Bans with MSC4293's `org.matrix.msc4293.redact_events: true` in the ban's content: a
    /// homeserver (and clients) implementing MSC4293 then redact the user's events in the room.
    fn ban_redacting(
        &self,
        room_id: &str,
        user_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;
    /// The user's most recent events in the room sent at or after `since_ms`, newest first,
    /// at most `limit` (state events and redactions left out), each saying whether the
    /// homeserver already serves it redacted.
    fn recent_events(
        &self,
        room_id: &str,
        user_id: &str,
        since_ms: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RecentEvent>, WriteError>> + Send;
    /// Redacts one event.
    fn redact(
        &self,
        room_id: &str,
        event_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Sends a state event (a protection's rule published to a policy list).
    fn put_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// One of a user's recent events, as [`RoomWriter::recent_events`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    pub event_id: String,
    /// The homeserver already serves it redacted (a redaction, or MSC4293's redaction by the ban).
    pub redacted: bool,
}

/// The longest hush waits on a 429, whatever `retry_after` says: a server (or a proxy)
/// asking for a day must not stop enforcement for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How long to wait on a 429: the server's `retry_after` (else `backoff`), at least
/// 50 ms and at most [`MAX_RETRY_AFTER`] (a longer ask is logged).
fn rate_limit_wait(what: &str, after: Option<Duration>, backoff: Duration) -> Duration {
    let asked = after.unwrap_or(backoff);
    if asked > MAX_RETRY_AFTER {
        warn!("{what}: the server asks to retry after {asked:?}; waiting {MAX_RETRY_AFTER:?} instead");
        return MAX_RETRY_AFTER;
    }
    asked.max(Duration::from_millis(50))
}

/// Runs a write until it succeeds or fails permanently: waits `retry_after` on 429 (at
/// most 10 minutes) and backs off (1 s doubling to 60 s) on network errors and 5xx.
/// Nothing is dropped. Inside the engine's watch, the wait on 429 is the account's one
/// gate ([`crate::rate_gate`]): every write waits until the latest `retry_after`, then
/// they go one at a time until one gets through.
pub async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WriteError>>,
{
    let gate = crate::rate_limits::gate();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let turn = match &gate {
            Some(g) => g.turn().await,
            None => None,
        };
        match op().await {
            Ok(v) => {
                if let Some(g) = &gate {
                    g.opened();
                }
                return Ok(v);
            }
            Err(WriteError::RateLimited(after)) => {
                // The current backoff, without moving it on: 429s do not double it.
                let wait = rate_limit_wait(what, after, backoff.current());
                crate::metrics::rate_limited();
                crate::rate_limits::answered_429();
                crate::metrics::write_retried();
                info!("{what}: rate limited, retrying in {wait:?}");
                match &gate {
                    // The next turn waits for it, with every other write.
                    Some(g) => g.closed_for(wait),
                    None => tokio::time::sleep(wait).await,
                }
            }
            Err(WriteError::Transient(e)) => {
                drop(turn);
                let wait = backoff.next();
                crate::metrics::write_retried();
                warn!("{what}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The outcome of one batched power-levels write.
#[derive(Debug, Clone)]
pub struct PowerLevelsSent {
    /// The content now in the room.
    pub content: Value,
    /// The event hush sent, or None when the room already was as asked.
    pub event_id: Option<String>,
    /// The content hush read and built its event on (None: nothing sent).
    pub read: Option<Value>,
    /// Users left out of the write: their entry was no longer what hush expected (someone
    /// else changed it while the write waited), so hush did not overwrite it.
    pub skipped: Vec<String>,
}

/// Sends all of a room's pending level edits as one `m.room.power_levels` event, built
/// from the freshest content (read, modify, write). Each attempt reads the room anew and
/// leaves out the users whose entry is no longer what hush expected
/// ([`hush_core::power_levels::still_apply`]): a moderator's change made while the write
/// waited behind rate limits stands.
///
/// Before each retry, `more` is asked for the room's edits planned meanwhile (given the
/// users the write holds): they join it, so a burst while the write waits behind a 429 is
/// one event, not one more per rule. Returns every edit the write held, with its result.
pub async fn send_power_levels<W, M, MF>(
    writer: &W,
    room_id: &str,
    edits: Vec<UserLevelEdit>,
    more: M,
) -> (Vec<UserLevelEdit>, Result<PowerLevelsSent, WriteError>)
where
    W: RoomWriter,
    M: Fn(Vec<String>) -> MF,
    MF: Future<Output = Vec<UserLevelEdit>>,
{
    let edits = std::sync::Mutex::new(edits);
    let mut attempts = 0u32;
    // An attempt whose answer was lost (a network error or 5xx after sending) may have landed.
    let lost = std::sync::atomic::AtomicBool::new(false);
    let sent = with_retries(&format!("power levels of {room_id}"), || {
        attempts += 1;
        let joining = (attempts > 1).then(|| more(current_of(&edits.lock().unwrap())));
        let (edits, lost) = (&edits, &lost);
        async move {
            if let Some(joining) = joining {
                let joined = joining.await;
                if !joined.is_empty() {
                    debug!(room = room_id, joined = joined.len(), "edits planned meanwhile join the retried write");
                    edits.lock().unwrap().extend(joined);
                }
            }
            let edits = edits.lock().unwrap().clone();
            let current = writer.power_levels(room_id).await?;
            let (apply, skipped) = still_apply_after(&current, &edits, lost.load(std::sync::atomic::Ordering::Relaxed));
            if !skipped.is_empty() {
                info!(room = room_id, ?skipped, "levels changed by someone else since hush looked: left as they are");
            }
            match apply_edits(&current, &apply) {
                None => Ok(PowerLevelsSent { content: current, event_id: None, read: None, skipped }),
                Some(new) => {
                    let event_id = writer.put_power_levels(room_id, &new).await.inspect_err(|e| {
                        if matches!(e, WriteError::Transient(_)) {
                            lost.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    })?;
                    Ok(PowerLevelsSent { content: new, event_id: Some(event_id), read: Some(current), skipped })
                }
            }
        }
    })
    .await;
    let edits = edits.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = match sent {
        Ok(sent) => restore_overwritten(writer, room_id, sent, &current_of(&edits)).await,
        Err(e) => Err(e),
    };
    (edits, result)
}

/// The users hush edited (their entries are hush's to set).
fn current_of(edits: &[UserLevelEdit]) -> Vec<String> {
    edits.iter().map(|e| e.user_id.clone()).collect()
}

/// Between hush's read and its write, someone else may have changed the power levels; the
/// write then replaced their change (Matrix has no compare-and-swap). The event hush sent
/// names what it replaced (`prev_content`): when that is not what hush read, hush writes
/// their changes back (a moderator's value also wins for a user hush was editing, who is
/// then reported as skipped), and checks that write the same way, a few times at most.
async fn restore_overwritten<W: RoomWriter>(
    writer: &W,
    room_id: &str,
    mut sent: PowerLevelsSent,
    edited: &[String],
) -> Result<PowerLevelsSent, WriteError> {
    for _ in 0..3 {
        let (Some(event_id), Some(read)) = (sent.event_id.clone(), sent.read.clone()) else { return Ok(sent) };
        let Ok(Some(replaced)) = writer.replaced_content(room_id, &event_id).await else { return Ok(sent) };
        let Some(restored) = hush_core::power_levels::restore_concurrent(&read, &replaced, &sent.content) else {
            return Ok(sent);
        };
        let lost = hush_core::power_levels::users_with_changed_entries(&read, &replaced);
        warn!(room = room_id, users = ?lost, "power levels changed by someone else while hush wrote them: writing their change back");
        for u in lost.into_iter().filter(|u| edited.contains(u)) {
            if !sent.skipped.contains(&u) {
                sent.skipped.push(u);
            }
        }
        let event_id =
            with_retries(&format!("power levels of {room_id}"), || writer.put_power_levels(room_id, &restored)).await?;
        sent = PowerLevelsSent {
            read: Some(sent.content),
            content: restored,
            event_id: Some(event_id),
            skipped: sent.skipped,
        };
    }
    Ok(sent)
}

/// The outcome of one batched server ACL write.
#[derive(Debug, Clone)]
pub struct AclSent {
    /// The content now in the room (`None`: the room has no ACL).
    pub content: Option<Value>,
    /// The event hush sent, or None when the room already was as asked.
    pub event_id: Option<String>,
}

/// Sends all of a room's pending `deny` edits as one `m.room.server_acl` event, built from
/// the freshest content (read, modify, write: what others changed meanwhile stays, see
/// [`hush_core::server_acl::apply_edit`]), retried like every room write.
pub async fn send_server_acl<W: RoomWriter>(writer: &W, room_id: &str, edit: &AclEdit) -> Result<AclSent, WriteError> {
    with_retries(&format!("server ACL of {room_id}"), || async {
        let current = writer.server_acl(room_id).await?;
        match apply_edit(current.as_ref(), edit) {
            None => Ok(AclSent { content: current, event_id: None }),
            Some(new) => {
                let event_id = writer.put_server_acl(room_id, &new).await?;
                Ok(AclSent { content: Some(new), event_id: Some(event_id) })
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn retries_rate_limits_and_faults_but_not_refusals() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let r: Result<u32, _> = with_retries("test", || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(WriteError::RateLimited(Some(Duration::from_millis(500)))),
                    1 => Err(WriteError::Transient("502".into())),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(r, Ok(2));
        let r: Result<(), _> = with_retries("test", || async {
            Err(WriteError::Permanent { errcode: "M_FORBIDDEN".into(), message: "no".into() })
        })
        .await;
        assert!(matches!(r, Err(WriteError::Permanent { .. })));
    }

    /// Issue 13: a server asking for a day is waited ten minutes (paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_a_day_is_waited_ten_minutes() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let start = tokio::time::Instant::now();
        let r: Result<u32, _> = with_retries("test", || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(WriteError::RateLimited(Some(Duration::from_secs(24 * 3600)))),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(start.elapsed(), Duration::from_secs(600));
    }
}
