//! An in-memory homeserver for engine tests: rooms with power levels, memberships and server ACLs, MSC3909 transitions checked, every write recorded, faults injectable.
//!
//! It implements [`RoomWriter`] the way `matrix::MatrixWriter` talks to a real server:
//! the member event content it records is exactly what `MatrixWriter` would send. Writes it
//! accepts become state events (with event ids) that a test feeds back to the engine as
//! sync would ([`FakeHomeserver::take_sync`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_core::power_levels;
use serde_json::{json, Value};

use crate::enforce::{RecentEvent, RoomWriter, WriteError};

/// A fault injected into the next room write (power levels, membership, ban, unban).
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    RateLimited(u64),
    /// 502 or a dropped connection.
    ServerError,
    /// A refusal with this errcode.
    Permanent(&'static str),
    /// Just before the next power-levels write lands, a moderator (`sender`) sets `user` to
    /// `level`: hush's write, built on what it read before, replaces their change.
    ConcurrentLevel { sender: &'static str, user: &'static str, level: i64 },
    /// The write is applied, but the answer is lost (a dropped connection): the caller
    /// sees a transient error for a write that happened.
    LostAnswer,
}

/// One write request that reached the server, accepted or not.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    PowerLevels {
        room: String,
        content: Value,
    },
    ServerAcl {
        room: String,
        content: Value,
    },
    Member {
        room: String,
        user: String,
        content: Value,
    },
    Ban {
        room: String,
        user: String,
    },
    Unban {
        room: String,
        user: String,
    },
    Notice {
        room: String,
        text: String,
    },
    Redact {
        room: String,
        event_id: String,
    },
    /// A state event in a room that is not protected (a rule published to a list).
    State {
        room: String,
        event_type: String,
        state_key: String,
        content: Value,
    },
}

/// A write request and what the server answered.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub write: Write,
    pub result: Result<(), WriteError>,
    /// When it reached the server (the test's paused clock).
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct Room {
    creator: String,
    version: String,
    power_levels: Value,
    members: HashMap<String, String>,
    /// The `m.room.server_acl` content, if the room has one.
    acl: Option<Value>,
    /// Messages: (event id, sender, origin_server_ts, redacted), oldest first.
    messages: Vec<(String, String, u64, bool)>,
}

#[derive(Default)]
struct Inner {
    own_user: String,
    rooms: HashMap<String, Room>,
    attempts: Vec<Attempt>,
    faults: VecDeque<Fault>,
    /// What each power-levels event replaced (its `unsigned.prev_content`).
    replaced: HashMap<String, Value>,
    sync: Vec<(String, Value)>,
    next_event: u64,
    /// hush's own account is suspended (MSC3823): every room write fails.
    suspended: bool,
    /// Membership writes (bans, unbans, memberships) being answered now, and the most
    /// there ever were at once.
    member_writes_in_flight: usize,
    max_member_writes_in_flight: usize,
    /// The server implements MSC4293: a ban with `redact_events` redacts the user's messages.
    msc4293: bool,
    /// `recent_events` look-ups answered.
    lookups: usize,
    /// The write being answered now is applied but its answer is lost ([`Fault::LostAnswer`]).
    lose_answer: bool,
}

/// The fake; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeHomeserver {
    inner: Arc<Mutex<Inner>>,
}

/// Whether MSC3909 (and the ordinary rules for the memberships hush sets) allow a
/// membership change from `from` to `to` done by a moderator to another user.
pub fn transition_allowed(from: &str, to: &str) -> bool {
    match (from, to) {
        ("mute", t) => matches!(t, "leave-mute" | "join" | "leave" | "ban"),
        ("leave-mute", t) => matches!(t, "invite" | "leave-mute" | "leave" | "ban"),
        ("join", "mute") => true,
        (_, "mute") | (_, "leave-mute") => false,
        // Plain memberships: what a moderator may do to someone else.
        (_, "ban") => true,
        ("ban", "leave") => true,
        ("join" | "invite" | "knock", "leave") => true,
        ("leave" | "knock", "invite") => true,
        _ => false,
    }
}

impl FakeHomeserver {
    pub fn new(own_user: &str) -> FakeHomeserver {
        let hs = FakeHomeserver::default();
        hs.inner.lock().unwrap().own_user = own_user.to_owned();
        hs
    }

    /// Creates a room of `version` by `creator`, with these power levels and members
    /// (all joined).
    pub fn create_room(&self, room: &str, version: &str, creator: &str, power_levels: Value, members: &[&str]) {
        let mut inner = self.inner.lock().unwrap();
        let mut r = Room { creator: creator.to_owned(), version: version.to_owned(), power_levels, ..Room::default() };
        r.members.insert(creator.to_owned(), "join".to_owned());
        for m in members {
            r.members.insert((*m).to_owned(), "join".to_owned());
        }
        inner.rooms.insert(room.to_owned(), r);
    }

    /// The room's full state as the engine loads it.
    pub fn state(&self, room: &str) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        let r = &inner.rooms[room];
        let mut out = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": r.creator, "event_id": "$create",
                   "content": {"room_version": r.version}}),
            json!({"type": "m.room.power_levels", "state_key": "", "sender": r.creator, "event_id": "$pl0",
                   "content": r.power_levels}),
        ];
        if let Some(acl) = &r.acl {
            out.push(json!({"type": "m.room.server_acl", "state_key": "", "sender": r.creator, "event_id": "$acl0",
                            "content": acl}));
        }
        for (user, m) in &r.members {
            out.push(json!({"type": "m.room.member", "state_key": user, "sender": user,
                            "event_id": format!("$m0-{user}"), "content": {"membership": m}}));
        }
        out
    }

    pub fn power_levels_now(&self, room: &str) -> Value {
        self.inner.lock().unwrap().rooms[room].power_levels.clone()
    }

    pub fn acl_now(&self, room: &str) -> Option<Value> {
        self.inner.lock().unwrap().rooms[room].acl.clone()
    }

    /// Sets the room's ACL as part of its initial state (no sync event).
    pub fn put_acl(&self, room: &str, content: Value) {
        self.inner.lock().unwrap().rooms.get_mut(room).expect("room").acl = Some(content);
    }

    /// Someone else (a moderator, `sender`) sends a server ACL; returns the state event.
    pub fn set_acl_as(&self, room: &str, sender: &str, content: Value) -> Value {
        let mut inner = self.inner.lock().unwrap();
        inner.rooms.get_mut(room).expect("room").acl = Some(content.clone());
        inner.event(room, sender, "m.room.server_acl", "", content)
    }

    /// Accepted `m.room.server_acl` contents sent to `room`.
    pub fn acl_events(&self, room: &str) -> Vec<Value> {
        self.writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::ServerAcl { room: r, content } if r == room => Some(content),
                _ => None,
            })
            .collect()
    }

    pub fn membership(&self, room: &str, user: &str) -> Option<String> {
        self.inner.lock().unwrap().rooms[room].members.get(user).cloned()
    }

    /// Makes the next `n` room writes fail with `fault`.
    pub fn inject(&self, fault: Fault, n: usize) {
        let mut inner = self.inner.lock().unwrap();
        for _ in 0..n {
            inner.faults.push_back(fault.clone());
        }
    }

    /// Suspends (or unsuspends) hush's own account: room writes fail with `M_USER_SUSPENDED`.
    pub fn set_suspended(&self, on: bool) {
        self.inner.lock().unwrap().suspended = on;
    }

    /// The most membership writes (bans, unbans, memberships) the server was answering at once.
    pub fn max_member_writes_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_member_writes_in_flight
    }

    /// Answers a membership write the way a real server does, after an await point, so
    /// that requests sent together are in flight together (and counted).
    async fn member_write(
        &self,
        write: impl FnOnce(&mut Inner) -> Result<String, WriteError>,
    ) -> Result<Option<String>, WriteError> {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.member_writes_in_flight += 1;
            inner.max_member_writes_in_flight = inner.max_member_writes_in_flight.max(inner.member_writes_in_flight);
        }
        tokio::task::yield_now().await;
        let mut inner = self.inner.lock().unwrap();
        inner.member_writes_in_flight -= 1;
        write(&mut inner).map(Some)
    }

    /// A message `sender` sent to `room` at `ts` (ms since the epoch); returns its event id.
    pub fn post(&self, room: &str, sender: &str, ts: u64) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.next_event += 1;
        let id = format!("$msg{}", inner.next_event);
        inner.rooms.get_mut(room).expect("room").messages.push((id.clone(), sender.to_owned(), ts, false));
        id
    }

    /// The event ids of `room`'s messages that are redacted, oldest first.
    pub fn redacted(&self, room: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner.rooms[room].messages.iter().filter(|m| m.3).map(|m| m.0.clone()).collect()
    }

    /// Makes the server implement MSC4293 (or not).
    pub fn set_msc4293(&self, on: bool) {
        self.inner.lock().unwrap().msc4293 = on;
    }

    /// How many times hush looked up a user's recent events.
    pub fn lookups(&self) -> usize {
        self.inner.lock().unwrap().lookups
    }

    /// Every write request so far, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// The accepted writes.
    pub fn writes(&self) -> Vec<Write> {
        self.attempts().into_iter().filter(|a| a.result.is_ok()).map(|a| a.write).collect()
    }

    /// Accepted `m.room.power_levels` contents sent to `room`.
    pub fn power_level_events(&self, room: &str) -> Vec<Value> {
        self.writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::PowerLevels { room: r, content } if r == room => Some(content),
                _ => None,
            })
            .collect()
    }

    /// Texts of the notices sent to `room`.
    pub fn notices(&self, room: &str) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::Notice { room: r, text } if r == room => Some(text),
                _ => None,
            })
            .collect()
    }

    /// State events accepted since the last call, as sync would deliver them: (room, event).
    pub fn take_sync(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.inner.lock().unwrap().sync)
    }

    /// Puts events taken by [`FakeHomeserver::take_sync`] back in front, undelivered.
    pub fn requeue_sync(&self, mut events: Vec<(String, Value)>) {
        let mut inner = self.inner.lock().unwrap();
        events.append(&mut inner.sync);
        inner.sync = events;
    }

    /// Someone else (a moderator, `sender`) sets a user's level; returns the state event.
    pub fn set_level_as(&self, room: &str, sender: &str, user: &str, level: i64) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let content = {
            let r = inner.rooms.get_mut(room).expect("room");
            r.power_levels["users"][user] = level.into();
            r.power_levels.clone()
        };
        inner.event(room, sender, "m.room.power_levels", "", content)
    }

    /// Someone else (`sender`) sends a whole power-levels content, as a client does; the
    /// event carries `unsigned.prev_content` = `prev_content`, the state the client's event
    /// replaced (what it was built on). Returns the state event.
    pub fn put_levels_as(&self, room: &str, sender: &str, content: Value, prev_content: Value) -> Value {
        let mut inner = self.inner.lock().unwrap();
        inner.rooms.get_mut(room).expect("room").power_levels = content.clone();
        let mut ev = inner.event(room, sender, "m.room.power_levels", "", content);
        ev["unsigned"] = json!({ "prev_content": prev_content });
        if let Some((_, last)) = inner.sync.last_mut() {
            *last = ev.clone();
        }
        ev
    }

    /// The user changes their own membership (a muted user leaving becomes `leave-mute`).
    /// Sets a membership as part of the room's initial state (no sync event), as a room
    /// upgrade copies bans.
    pub fn put_membership(&self, room: &str, user: &str, membership: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.rooms.get_mut(room).expect("room").members.insert(user.to_owned(), membership.to_owned());
    }

    /// The user joins `room` if the server lets them (not banned, not `leave-mute`);
    /// returns the state event, or None when refused.
    pub fn user_joins(&self, room: &str, user: &str) -> Option<Value> {
        let mut inner = self.inner.lock().unwrap();
        let r = inner.rooms.get_mut(room).expect("room");
        let from = r.members.get(user).cloned().unwrap_or_else(|| "leave".to_owned());
        if !matches!(from.as_str(), "leave" | "invite") {
            return None;
        }
        r.members.insert(user.to_owned(), "join".to_owned());
        Some(inner.event(room, user, "m.room.member", user, json!({"membership": "join"})))
    }

    /// Faults injected and not yet met by a write.
    pub fn pending_faults(&self) -> usize {
        self.inner.lock().unwrap().faults.len()
    }

    /// The user changes their display name: a `join` member event of their own.
    pub fn user_renames(&self, room: &str, user: &str, name: &str) -> Value {
        let mut inner = self.inner.lock().unwrap();
        inner.event(room, user, "m.room.member", user, json!({"membership": "join", "displayname": name}))
    }

    pub fn user_leaves(&self, room: &str, user: &str) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let r = inner.rooms.get_mut(room).expect("room");
        let from = r.members.get(user).cloned().unwrap_or_else(|| "leave".to_owned());
        let to = if from == "mute" || from == "leave-mute" { "leave-mute" } else { "leave" };
        r.members.insert(user.to_owned(), to.to_owned());
        inner.event(room, user, "m.room.member", user, json!({"membership": to}))
    }
}

impl Inner {
    fn event(&mut self, room: &str, sender: &str, ty: &str, state_key: &str, content: Value) -> Value {
        self.next_event += 1;
        let ev = json!({"type": ty, "state_key": state_key, "sender": sender,
                        "event_id": format!("$fake{}", self.next_event), "content": content});
        self.sync.push((room.to_owned(), ev.clone()));
        ev
    }

    /// Makes `content` the room's power levels, as an event of `sender` that names the
    /// content it replaced; returns the event id.
    fn store_power_levels(&mut self, room: &str, sender: &str, content: Value) -> String {
        let before = std::mem::replace(&mut self.rooms.get_mut(room).expect("room").power_levels, content.clone());
        let ev = self.event(room, sender, "m.room.power_levels", "", content);
        let id = ev["event_id"].as_str().unwrap_or_default().to_owned();
        self.replaced.insert(id.clone(), before);
        id
    }

    fn fault(&mut self) -> Result<(), WriteError> {
        if self.suspended {
            return Err(WriteError::Suspended("M_USER_SUSPENDED: account is suspended".into()));
        }
        match self.faults.pop_front() {
            None => Ok(()),
            Some(Fault::RateLimited(ms)) => Err(WriteError::RateLimited(Some(Duration::from_millis(ms)))),
            Some(Fault::ServerError) => Err(WriteError::Transient("502 Bad Gateway".into())),
            Some(Fault::Permanent(code)) => {
                Err(WriteError::Permanent { errcode: code.to_owned(), message: "injected".into() })
            }
            // Only a power-levels write takes it; any other write goes through.
            Some(f @ Fault::ConcurrentLevel { .. }) => {
                self.faults.push_front(f);
                Ok(())
            }
            Some(Fault::LostAnswer) => {
                self.lose_answer = true;
                Ok(())
            }
        }
    }

    fn record(&mut self, write: Write, result: Result<(), WriteError>) -> Result<(), WriteError> {
        if result.is_err() {
            self.lose_answer = false;
        }
        self.attempts.push(Attempt { write, result: result.clone(), at: tokio::time::Instant::now() });
        result
    }

    /// The answer to a write that was applied: lost if [`Fault::LostAnswer`] was injected.
    fn answer(&mut self) -> Result<(), WriteError> {
        if std::mem::take(&mut self.lose_answer) {
            return Err(WriteError::Transient("connection reset before the answer (the write was applied)".into()));
        }
        Ok(())
    }

    fn forbidden(message: String) -> WriteError {
        WriteError::Permanent { errcode: "M_FORBIDDEN".into(), message }
    }

    /// The sender's power in a room: None = unlimited (a creator in version 12+).
    fn own_level(&self, room: &Room) -> Option<i64> {
        let privileged = room.version.parse::<u32>().is_ok_and(|v| v >= 12);
        if privileged && room.creator == self.own_user {
            None
        } else {
            Some(power_levels::user_level(&room.power_levels, &self.own_user))
        }
    }

    fn check_power(&self, room: &str, needed: impl Fn(&Value) -> i64) -> Result<(), WriteError> {
        let Some(r) = self.rooms.get(room) else { return Err(Inner::forbidden(format!("not in {room}"))) };
        let needed = needed(&r.power_levels);
        match self.own_level(r) {
            Some(own) if own < needed => Err(Inner::forbidden(format!("user_level ({own}) < send_level ({needed})"))),
            _ => Ok(()),
        }
    }

    /// Returns the member event's id.
    fn membership_write(&mut self, room: &str, user: &str, to: &str, write: Write) -> Result<String, WriteError> {
        let r = self.fault().and_then(|()| {
            self.check_power(room, power_levels::ban_level)?;
            let from = self.rooms[room].members.get(user).cloned().unwrap_or_else(|| "leave".to_owned());
            if !transition_allowed(&from, to) {
                return Err(Inner::forbidden(format!("membership {from} -> {to} is not allowed")));
            }
            Ok(())
        });
        self.record(write.clone(), r)?;
        let content = match &write {
            Write::Member { content, .. } => content.clone(),
            _ => json!({"membership": to}),
        };
        self.rooms.get_mut(room).expect("room").members.insert(user.to_owned(), to.to_owned());
        let sender = self.own_user.clone();
        let ev = self.event(room, &sender, "m.room.member", user, content);
        self.answer()?;
        Ok(ev["event_id"].as_str().unwrap_or_default().to_owned())
    }
}

impl RoomWriter for FakeHomeserver {
    async fn power_levels(&self, room: &str) -> Result<Value, WriteError> {
        let inner = self.inner.lock().unwrap();
        inner.rooms.get(room).map(|r| r.power_levels.clone()).ok_or_else(|| Inner::forbidden(format!("not in {room}")))
    }

    async fn put_power_levels(&self, room: &str, content: &Value) -> Result<String, WriteError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(Fault::ConcurrentLevel { sender, user, level }) = inner.faults.front().cloned() {
            inner.faults.pop_front();
            let mut pl = inner.rooms[room].power_levels.clone();
            pl["users"][user] = level.into();
            inner.store_power_levels(room, sender, pl);
        }
        let write = Write::PowerLevels { room: room.to_owned(), content: content.clone() };
        let r = inner.fault().and_then(|()| inner.check_power(room, power_levels::power_levels_send_level));
        inner.record(write, r)?;
        let sender = inner.own_user.clone();
        let id = inner.store_power_levels(room, &sender, content.clone());
        inner.answer()?;
        Ok(id)
    }

    async fn replaced_content(&self, _room: &str, event_id: &str) -> Result<Option<Value>, WriteError> {
        Ok(self.inner.lock().unwrap().replaced.get(event_id).cloned())
    }

    async fn membership(&self, room: &str, user: &str) -> Result<Option<String>, WriteError> {
        let inner = self.inner.lock().unwrap();
        let r = inner.rooms.get(room).ok_or_else(|| Inner::forbidden(format!("not in {room}")))?;
        Ok(r.members.get(user).cloned())
    }

    async fn set_membership(
        &self,
        room: &str,
        user: &str,
        membership: &str,
        reason: &str,
    ) -> Result<Option<String>, WriteError> {
        // Exactly what MatrixWriter sends.
        let mut content = json!({ "membership": membership });
        if !reason.is_empty() {
            content["reason"] = reason.into();
        }
        let write = Write::Member { room: room.to_owned(), user: user.to_owned(), content };
        self.member_write(|inner| inner.membership_write(room, user, membership, write)).await
    }

    async fn ban(&self, room: &str, user: &str, _reason: &str) -> Result<Option<String>, WriteError> {
        let write = Write::Ban { room: room.to_owned(), user: user.to_owned() };
        self.member_write(|inner| inner.membership_write(room, user, "ban", write)).await
    }

    async fn unban(&self, room: &str, user: &str, _reason: &str) -> Result<Option<String>, WriteError> {
        let write = Write::Unban { room: room.to_owned(), user: user.to_owned() };
        self.member_write(|inner| inner.membership_write(room, user, "leave", write)).await
    }

    async fn server_acl(&self, room: &str) -> Result<Option<Value>, WriteError> {
        let inner = self.inner.lock().unwrap();
        inner.rooms.get(room).map(|r| r.acl.clone()).ok_or_else(|| Inner::forbidden(format!("not in {room}")))
    }

    async fn put_server_acl(&self, room: &str, content: &Value) -> Result<String, WriteError> {
        let mut inner = self.inner.lock().unwrap();
        let write = Write::ServerAcl { room: room.to_owned(), content: content.clone() };
        let needed = |pl: &Value| {
            pl.pointer("/events/m.room.server_acl")
                .and_then(Value::as_i64)
                .or_else(|| pl.get("state_default").and_then(Value::as_i64))
                .unwrap_or(50)
        };
        let r = inner.fault().and_then(|()| inner.check_power(room, needed));
        inner.record(write, r)?;
        inner.rooms.get_mut(room).expect("room").acl = Some(content.clone());
        let sender = inner.own_user.clone();
        let ev = inner.event(room, &sender, "m.room.server_acl", "", content.clone());
        inner.answer()?;
        Ok(ev["event_id"].as_str().unwrap_or_default().to_owned())
    }

    async fn put_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<(), WriteError> {
        let mut inner = self.inner.lock().unwrap();
        let write = Write::State {
            room: room.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.to_owned(),
            content: content.clone(),
        };
        let r = inner.fault();
        inner.record(write, r)
    }

    async fn notice(&self, room: &str, plain: &str, _html: &str) -> Result<(), WriteError> {
        let mut inner = self.inner.lock().unwrap();
        inner.record(Write::Notice { room: room.to_owned(), text: plain.to_owned() }, Ok(()))
    }

    async fn ban_redacting(&self, room: &str, user: &str, reason: &str) -> Result<Option<String>, WriteError> {
        // Exactly what MatrixWriter sends.
        let mut content = json!({ "membership": "ban" });
        content[crate::matrix::REDACT_EVENTS] = true.into();
        if !reason.is_empty() {
            content["reason"] = reason.into();
        }
        let write = Write::Member { room: room.to_owned(), user: user.to_owned(), content };
        self.member_write(|inner| {
            let id = inner.membership_write(room, user, "ban", write)?;
            if inner.msc4293 {
                let r = inner.rooms.get_mut(room).expect("room");
                r.messages.iter_mut().filter(|m| m.1 == user).for_each(|m| m.3 = true);
            }
            Ok(id)
        })
        .await
    }

    async fn recent_events(
        &self,
        room: &str,
        user: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<RecentEvent>, WriteError> {
        let mut inner = self.inner.lock().unwrap();
        inner.lookups += 1;
        let r = inner.rooms.get(room).ok_or_else(|| Inner::forbidden(format!("not in {room}")))?;
        Ok(r.messages
            .iter()
            .rev()
            .filter(|m| m.1 == user && m.2 >= since_ms)
            .take(limit as usize)
            .map(|m| RecentEvent { event_id: m.0.clone(), redacted: m.3 })
            .collect())
    }

    async fn redact(&self, room: &str, event_id: &str, _reason: &str) -> Result<(), WriteError> {
        let write = Write::Redact { room: room.to_owned(), event_id: event_id.to_owned() };
        self.member_write(|inner| {
            let r = inner
                .fault()
                .and_then(|()| inner.check_power(room, |pl| pl.get("redact").and_then(Value::as_i64).unwrap_or(50)));
            inner.record(write, r)?;
            let m = inner.rooms.get_mut(room).expect("room").messages.iter_mut().find(|m| m.0 == event_id);
            m.ok_or_else(|| WriteError::Permanent { errcode: "M_NOT_FOUND".into(), message: event_id.into() })?.3 =
                true;
            Ok(String::new())
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msc3909_transitions() {
        assert!(transition_allowed("join", "mute"));
        for to in ["leave-mute", "join", "leave", "ban"] {
            assert!(transition_allowed("mute", to), "mute -> {to}");
        }
        for to in ["invite", "leave-mute", "leave", "ban"] {
            assert!(transition_allowed("leave-mute", to), "leave-mute -> {to}");
        }
        assert!(!transition_allowed("leave-mute", "join"));
        assert!(!transition_allowed("mute", "invite"));
        assert!(!transition_allowed("leave", "mute"));
        assert!(!transition_allowed("invite", "mute"));
        assert!(!transition_allowed("join", "leave-mute"));
    }

    #[tokio::test]
    async fn rejects_invalid_transitions_and_records_attempts() {
        let hs = FakeHomeserver::new("@hush:x");
        hs.create_room("!r", "10", "@c:x", json!({"users": {"@hush:x": 100}}), &["@a:x"]);
        let err = hs.set_membership("!r", "@a:x", "leave-mute", "").await.unwrap_err();
        assert!(matches!(err, WriteError::Permanent { .. }));
        hs.set_membership("!r", "@a:x", "mute", "spam").await.unwrap();
        assert_eq!(hs.membership("!r", "@a:x").as_deref(), Some("mute"));
        assert_eq!(hs.attempts().len(), 2);
        assert_eq!(hs.take_sync().len(), 1);
    }

    #[tokio::test]
    async fn refuses_power_level_changes_without_power_and_injects_faults() {
        let hs = FakeHomeserver::new("@hush:x");
        hs.create_room("!r", "10", "@c:x", json!({"users": {"@hush:x": 20}}), &[]);
        let err = hs.put_power_levels("!r", &json!({})).await.unwrap_err();
        assert!(matches!(err, WriteError::Permanent { .. }), "{err:?}");
        hs.create_room("!s", "10", "@c:x", json!({"users": {"@hush:x": 100}}), &[]);
        hs.inject(Fault::RateLimited(100), 1);
        assert!(matches!(hs.put_power_levels("!s", &json!({})).await, Err(WriteError::RateLimited(_))));
        assert!(hs.put_power_levels("!s", &json!({"users": {}})).await.is_ok());
    }
}
