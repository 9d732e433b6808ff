//! Redacting one user's recent events in one room: finding them, then redacting each, a few at a time, each retried on rate limits and faults (owns no state: what is under way is the engine's, in `engine/redactions.rs`).
//!
//! Resumable by construction: an event the homeserver already serves redacted (by an
//! earlier, interrupted run, by a moderator, or by MSC4293 because the ban asked for it)
//! is counted and skipped, so running the same redaction again after `kill -9` redacts
//! only what is left, and never more than the cap.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::enforce::{with_retries, RoomWriter, WriteError};

/// What one redaction did in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redacted {
    /// Events hush redacted now.
    pub redacted: usize,
    /// Events the homeserver already served redacted (MSC4293, an earlier run, a moderator).
    pub already: usize,
    /// Events that could not be redacted, and the first reason.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// What to redact: the user's events in the room sent at or after `since_ms`, at most
/// `limit`; or, when `event_ids` is not empty, exactly those events.
#[derive(Debug, Clone)]
pub struct Request {
    pub room_id: String,
    pub user_id: String,
    pub since_ms: u64,
    pub limit: u32,
    pub reason: String,
    pub event_ids: Vec<String>,
}

/// Finds the user's recent events and redacts those not yet redacted. Every request (the
/// look-up and each redaction) holds one of `slots` while it runs, retries included:
/// the same bound as the engine's member writes, so a large redaction never becomes
/// hundreds of concurrent requests. An error of hush's own account (suspended, locked)
/// stops it and is returned; other refusals are counted per event.
pub async fn redact_recent<W: RoomWriter>(
    writer: W,
    req: Request,
    slots: Arc<Semaphore>,
) -> Result<Redacted, WriteError> {
    let Request { room_id, user_id, since_ms, limit, reason, event_ids } = req;
    let events = if !event_ids.is_empty() {
        // Chosen events: no look-up; one the homeserver already redacted is redacted
        // again harmlessly (a redaction of a redacted event succeeds).
        event_ids.into_iter().map(|event_id| crate::enforce::RecentEvent { event_id, redacted: false }).collect()
    } else {
        let _slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        with_retries(&format!("recent events of {user_id} in {room_id}"), || async {
            writer.recent_events(&room_id, &user_id, since_ms, limit).await
        })
        .await?
    };
    let mut out = Redacted { already: events.iter().filter(|e| e.redacted).count(), ..Redacted::default() };
    debug!(room = %room_id, user = %user_id, found = events.len(), already = out.already, "redacting recent events");
    let mut tasks = JoinSet::new();
    for ev in events.into_iter().filter(|e| !e.redacted) {
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (writer, room_id, reason) = (writer.clone(), room_id.clone(), reason.clone());
        tasks.spawn(crate::rate_limits::inherit(async move {
            let _slot = slot;
            let what = format!("redact {} in {room_id}", ev.event_id);
            with_retries(&what, || async { writer.redact(&room_id, &ev.event_id, &reason).await }).await
        }));
    }
    let mut own_account = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => out.redacted += 1,
            Ok(Err(e @ WriteError::Suspended(_))) => own_account = Some(e),
            Ok(Err(e)) => {
                out.failed += 1;
                out.first_error = out.first_error.take().or_else(|| Some(e.to_string()));
            }
            Err(join) => {
                out.failed += 1;
                out.first_error = out.first_error.take().or_else(|| Some(join.to_string()));
            }
        }
    }
    if let Some(e) = own_account {
        return Err(e);
    }
    info!(room = %room_id, user = %user_id, redacted = out.redacted, already = out.already, failed = out.failed, "redaction done");
    Ok(out)
}
