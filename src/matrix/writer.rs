//! The `RoomWriter` over matrix-sdk: power levels, memberships, bans, redactions and notices as client requests, and what a failed request means (`classify`).

use super::*;
use crate::enforce::{RecentEvent, RoomWriter, WriteError};
use anyhow::Result;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::state::{get_state_event_for_key, send_state_event};
use matrix_sdk::ruma::events::AnyStateEventContent;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::Client;
use std::time::Duration;

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

pub(super) fn room_id(room_id: &str) -> Result<OwnedRoomId, WriteError> {
    OwnedRoomId::try_from(room_id)
        .map_err(|e| WriteError::Permanent { errcode: "M_INVALID_PARAM".into(), message: format!("{room_id}: {e}") })
}

pub(super) fn user_id(user_id: &str) -> Result<matrix_sdk::ruma::OwnedUserId, WriteError> {
    matrix_sdk::ruma::OwnedUserId::try_from(user_id)
        .map_err(|e| WriteError::Permanent { errcode: "M_INVALID_PARAM".into(), message: format!("{user_id}: {e}") })
}

pub(super) fn raw_content(v: &serde_json::Value) -> Result<Raw<AnyStateEventContent>, WriteError> {
    Raw::new(v)
        .map(Raw::cast_unchecked)
        .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() })
}

/// The request config of enforcement's reads and writes: no retries inside the SDK, which
/// would wait whatever a 429's `retry_after` says (twice, unbounded) before hush sees it;
/// `enforce::with_retries` retries them, its wait capped at `enforce::MAX_RETRY_AFTER`.
pub(super) fn write_request() -> RequestConfig {
    RequestConfig::new().disable_retry().timeout(Duration::from_secs(60))
}

/// MSC4293's flag in a ban's content (unstable prefix): redact the banned user's events.
pub const REDACT_EVENTS: &str = "org.matrix.msc4293.redact_events";

/// Events asked for per `/messages` page when looking for a user's recent events.
const PAGE: u32 = 100;

/// The most `/messages` pages read for one user's recent events (the `senders` filter can
/// return empty pages while it walks past other users' events).
const MAX_PAGES: usize = 200;

/// A user's event as [`RoomWriter::recent_events`] reports it; None for what is never
/// redacted (state events, redactions).
fn recent_event(ev: &serde_json::Value) -> Option<RecentEvent> {
    let event_id = ev.get("event_id")?.as_str()?.to_owned();
    let ty = ev.get("type").and_then(serde_json::Value::as_str).unwrap_or_default();
    if ev.get("state_key").is_some() || ty == "m.room.redaction" {
        return None;
    }
    let redacted = ev.pointer("/unsigned/redacted_because").is_some()
        || ev.get("content").and_then(serde_json::Value::as_object).is_some_and(|c| c.is_empty());
    Some(RecentEvent { event_id, redacted })
}

/// The homeserver side of enforcement.
#[derive(Clone)]
pub struct MatrixWriter {
    pub client: Client,
}

/// An `m.room.member` content: the membership, and the reason when there is one.
fn member_content(membership: &str, reason: &str) -> serde_json::Value {
    let mut content = serde_json::json!({ "membership": membership });
    if !reason.is_empty() {
        content["reason"] = reason.into();
    }
    content
}

impl MatrixWriter {
    /// Sends another user's `m.room.member` event with this content; returns its event id.
    /// Bans and unbans go this way too (rather than `/ban`, `/unban`, which answer no
    /// event id), so the view can tell hush's own event from older ones.
    async fn put_member(
        &self,
        room: &str,
        user: &str,
        content: serde_json::Value,
    ) -> Result<Option<String>, WriteError> {
        let req = send_state_event::v3::Request::new_raw(
            room_id(room)?,
            StateEventType::RoomMember,
            user_id(user)?.to_string(),
            raw_content(&content)?,
        );
        let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(Some(resp.event_id.to_string()))
    }
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

    async fn membership(&self, room: &str, user: &str) -> Result<Option<String>, WriteError> {
        let req = get_state_event_for_key::v3::Request::new(
            room_id(room)?,
            StateEventType::RoomMember,
            user_id(user)?.to_string(),
        );
        match self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e)) {
            Ok(resp) => {
                let content: serde_json::Value = serde_json::from_str(resp.event_or_content.get())
                    .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() })?;
                Ok(content.get("membership").and_then(serde_json::Value::as_str).map(str::to_owned))
            }
            Err(WriteError::Permanent { errcode, .. }) if errcode == "M_NOT_FOUND" => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn replaced_content(&self, room: &str, event_id: &str) -> Result<Option<serde_json::Value>, WriteError> {
        use matrix_sdk::ruma::api::client::room::get_room_event;
        let event_id = matrix_sdk::ruma::OwnedEventId::try_from(event_id).map_err(|e| WriteError::Permanent {
            errcode: "M_INVALID_PARAM".into(),
            message: format!("{event_id}: {e}"),
        })?;
        let req = get_room_event::v3::Request::new(room_id(room)?, event_id);
        let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        let ev: serde_json::Value = resp
            .event
            .deserialize_as_unchecked()
            .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() })?;
        Ok(ev.pointer("/unsigned/prev_content").cloned())
    }

    async fn set_membership(
        &self,
        room: &str,
        user: &str,
        membership: &str,
        reason: &str,
    ) -> Result<Option<String>, WriteError> {
        self.put_member(room, user, member_content(membership, reason)).await
    }

    async fn ban(&self, room: &str, user: &str, reason: &str) -> Result<Option<String>, WriteError> {
        self.put_member(room, user, member_content("ban", reason)).await
    }

    async fn unban(&self, room: &str, user: &str, reason: &str) -> Result<Option<String>, WriteError> {
        // `leave` over `ban` by someone else is an unban (it needs the ban level).
        self.put_member(room, user, member_content("leave", reason)).await
    }

    async fn server_acl(&self, room: &str) -> Result<Option<serde_json::Value>, WriteError> {
        let req =
            get_state_event_for_key::v3::Request::new(room_id(room)?, StateEventType::RoomServerAcl, String::new());
        match self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e)) {
            Ok(resp) => serde_json::from_str(resp.event_or_content.get())
                .map(Some)
                .map_err(|e| WriteError::Permanent { errcode: "M_BAD_JSON".into(), message: e.to_string() }),
            // The room has no ACL.
            Err(WriteError::Permanent { errcode, .. }) if errcode == "M_NOT_FOUND" => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_server_acl(&self, room: &str, content: &serde_json::Value) -> Result<String, WriteError> {
        let req = send_state_event::v3::Request::new_raw(
            room_id(room)?,
            StateEventType::RoomServerAcl,
            String::new(),
            raw_content(content)?,
        );
        let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(resp.event_id.to_string())
    }

    async fn put_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> Result<(), WriteError> {
        // The request `matrix::put_state` sends for the `mute` command, with the writes'
        // timeout and error classes.
        let req = send_state_event::v3::Request::new_raw(
            room_id(room)?,
            event_type.into(),
            state_key.to_owned(),
            raw_content(content)?,
        );
        self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn ban_redacting(&self, room: &str, user: &str, reason: &str) -> Result<Option<String>, WriteError> {
        // The member event itself (as for MSC3909 memberships): `/ban` takes no extra field
        // in this SDK, and the content is what MSC4293 reads.
        let mut content = member_content("ban", reason);
        content[REDACT_EVENTS] = true.into();
        self.put_member(room, user, content).await
    }

    async fn recent_events(
        &self,
        room: &str,
        user: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<RecentEvent>, WriteError> {
        use matrix_sdk::ruma::api::client::message::get_message_events;
        let (room, user) = (room_id(room)?, user_id(user)?);
        let mut found = Vec::new();
        let mut from: Option<String> = None;
        let mut last: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = get_message_events::v3::Request::backward(room.clone());
            req.from = from.take();
            req.limit = matrix_sdk::ruma::UInt::from(PAGE);
            req.filter.senders = Some(vec![user.clone()]);
            let resp = self.client.send(req).with_request_config(write_request()).await.map_err(|e| classify(&e))?;
            for raw in &resp.chunk {
                let Ok(ev) = raw.deserialize_as_unchecked::<serde_json::Value>() else { continue };
                if ev.get("sender").and_then(|s| s.as_str()) != Some(user.as_str()) {
                    continue;
                }
                let ts = ev.get("origin_server_ts").and_then(serde_json::Value::as_u64).unwrap_or(0);
                if ts < since_ms {
                    return Ok(found);
                }
                if let Some(e) = recent_event(&ev) {
                    found.push(e);
                    if found.len() >= limit as usize {
                        return Ok(found);
                    }
                }
            }
            // No `end`: the start of the room; the same token again: no progress.
            match resp.end {
                Some(end) if Some(&end) != last.as_ref() => {
                    last = Some(end.clone());
                    from = Some(end);
                }
                _ => return Ok(found),
            }
        }
        Ok(found)
    }

    async fn redact(&self, room: &str, event: &str, reason: &str) -> Result<(), WriteError> {
        use matrix_sdk::ruma::api::client::redact::redact_event;
        let event_id = matrix_sdk::ruma::OwnedEventId::try_from(event).map_err(|e| WriteError::Permanent {
            errcode: "M_INVALID_PARAM".into(),
            message: format!("{event}: {e}"),
        })?;
        let mut req = redact_event::v3::Request::new(room_id(room)?, event_id, matrix_sdk::ruma::TransactionId::new());
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
