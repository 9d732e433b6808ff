//! Redactions of a restricted member's recent events: those under way and those waiting for the member's write in flight (the engine's `redactions`); the `redact` command, starting, resuming after a crash, and what a finished redaction reports.
//!
//! A redaction is planned like any action (core's `plan_redactions` next to a ban, or
//! the `redact` command) and carried out by the consequences: enforcing writes the
//! ledger's [`Kind::Redaction`] entry first, then starts the work after the commit; its
//! end removes the entry. An entry left by a crash is resumed when its room loads.

use std::collections::BTreeSet;

use hush_core::policy::{EntityKind, RuleId};
use hush_core::reconcile::{refusal, Action};
use hush_core::record::{Entry, Kind, Scope};
use hush_core::schedule::Clock;
use tracing::{info, warn};

use super::{Engine, Input};
use crate::enforce::{RoomWriter, WriteError};
use crate::redaction::{self, Redacted};

/// The redactions the engine started, by (room, user).
#[derive(Default)]
pub(super) struct Redactions {
    /// Under way: not started again until done.
    running: BTreeSet<(String, String)>,
    /// Waiting for the member's write in flight (the ban that asks MSC4293 to redact goes first).
    waiting: BTreeSet<(String, String)>,
    /// Outcomes not reported yet (key, template, room): reported together when none is left
    /// under way, so a ban over many members is one notice, not one per member.
    unreported: Vec<(String, String, String)>,
}

/// "2026-11-29 10:00 UTC", for reports.
pub(super) fn fmt_since(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// The `redact` command: plans a redaction in each protected room named (or all loaded
    /// ones) for a user hush may restrict there; the input's plan goes through the guard and
    /// the consequences like any other. The reply says what happens and what is refused.
    pub(super) fn redact_command(
        &mut self,
        user: &str,
        room: Option<&str>,
        limit: Option<u32>,
    ) -> Result<String, String> {
        let rooms: Vec<String> = match room {
            Some(r) => match self.view.rooms.get(r) {
                Some(Some(_)) => vec![r.to_owned()],
                Some(None) => return Err(format!("{r} is protected but not loaded yet; try again in a moment.")),
                None => return Err(format!("{r} is not a protected room.")),
            },
            None => self.view.rooms.iter().filter(|(_, s)| s.is_some()).map(|(r, _)| r.clone()).collect(),
        };
        if rooms.is_empty() {
            return Err("No protected room is loaded yet; nothing to redact.".to_owned());
        }
        let shield = self.shield(user);
        let now = self.now();
        let since_ms = self.cfg.redaction.since(now);
        let limit = limit.unwrap_or(self.cfg.redaction.max_per_room);
        let rule = RuleId {
            room_id: self.management_room.clone().unwrap_or_default(),
            kind: EntityKind::User,
            state_key: String::new(),
        };
        let mut planned = Vec::new();
        let mut refused = Vec::new();
        for room_id in rooms {
            let Some(Some(state)) = self.view.rooms.get(&room_id) else { continue };
            if let Some(why) = refusal(&self.facts(state), user, shield) {
                refused.push(format!("not in {room_id}: {why}"));
                continue;
            }
            let action = Action::Redact {
                user_id: user.to_owned(),
                since_ms,
                limit,
                rule: rule.clone(),
                reason: "redacted by a moderator".to_owned(),
                event_ids: Vec::new(),
            };
            self.guard.plan.entry((room_id.clone(), user.to_owned())).or_default().push(action);
            planned.push(room_id);
        }
        if planned.is_empty() {
            return Err(format!("Not redacting {user}: {}.", refused.join("; ")));
        }
        let verb = if self.cfg.dry_run { "[dry run] Would redact" } else { "Redacting" };
        let mut text = format!(
            "{verb} the events {user} sent since {} in {} (at most {limit} per room); the management room hears when it is done.",
            fmt_since(since_ms),
            planned.join(", ")
        );
        if !refused.is_empty() {
            text.push_str(&format!(" Refused {}.", refused.join("; ")));
        }
        Ok(text)
    }

    /// Starts the redaction an entry records, after the input's commit: at once, or when
    /// the member's write in flight is done (a ban first, so that MSC4293 can redact).
    pub(super) fn start_redaction(&mut self, entry: &Entry) {
        let Scope::Room(room_id) = &entry.scope else { return };
        let key = (room_id.clone(), entry.user_id.clone());
        if self.redactions.running.contains(&key) {
            return;
        }
        if self.writes.is_writing(&entry.scope, &entry.user_id) {
            self.redactions.waiting.insert(key);
            return;
        }
        self.redactions.running.insert(key);
        let req = redaction::Request {
            room_id: room_id.clone(),
            user_id: entry.user_id.clone(),
            since_ms: entry.previous_level.map_or(0, |v| v.max(0) as u64),
            limit: entry.applied_level.map_or(self.cfg.redaction.max_per_room, |v| v.clamp(0, u32::MAX.into()) as u32),
            reason: entry.reason.clone(),
            event_ids: entry.event_ids.clone(),
        };
        let (writer, inbox, slots) = (self.writer.clone(), self.inbox.clone(), self.writes.member_slots());
        self.writes.after_commit(async move {
            let (room_id, user_id) = (req.room_id.clone(), req.user_id.clone());
            let result = redaction::redact_recent(writer, req, slots).await;
            let _ = inbox.send(Input::RedactionDone { room_id, user_id, result });
        });
    }

    /// The members' writes in this room are done: start the redactions that waited for them.
    pub(super) fn start_waiting_redactions(&mut self, room_id: &str, users: &[&str]) {
        for user in users {
            if !self.redactions.waiting.remove(&(room_id.to_owned(), (*user).to_owned())) {
                continue;
            }
            let scope = Scope::Room(room_id.to_owned());
            match self.ledger.get(&scope, user, Kind::Redaction) {
                Ok(Some(entry)) => self.start_redaction(&entry),
                Ok(None) => {}
                Err(e) => self.error(format!("cannot read the ledger: {e:#}")),
            }
        }
    }

    /// A protected room loaded: redactions a crash interrupted there start again.
    pub(super) fn resume_redactions(&mut self, room_id: &str) {
        let entries = match self.ledger.for_scope(&Scope::Room(room_id.to_owned())) {
            Ok(entries) => entries,
            Err(e) => return self.error(format!("cannot read the ledger: {e:#}")),
        };
        for entry in entries.into_iter().filter(|e| e.kind == Kind::Redaction) {
            info!(room = room_id, user = %entry.user_id, "resuming an interrupted redaction");
            self.start_redaction(&entry);
        }
    }

    /// A redaction finished: its entry goes, and the management room hears what it did, in
    /// one notice with the others once none is under way (nothing for a member who had
    /// nothing to redact). One stopped by hush's own account (suspended, locked) keeps its
    /// entry: it resumes at the next start.
    pub(super) fn redaction_done(&mut self, room_id: &str, user_id: &str, result: Result<Redacted, WriteError>) {
        self.redactions.running.remove(&(room_id.to_owned(), user_id.to_owned()));
        self.metrics.action(crate::metrics::action_kind(Kind::Redaction, false), crate::metrics::Outcome::of(&result));
        let scope = Scope::Room(room_id.to_owned());
        let started = self.ledger.get(&scope, user_id, Kind::Redaction).ok().flatten().map_or(0, |e| e.applied_at_ms);
        let failed = match &result {
            Ok(r) if r.failed > 0 => Some(format!(
                "{} could not be redacted: {}",
                r.failed,
                r.first_error.as_deref().unwrap_or("unknown error")
            )),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        match result {
            Ok(r) => {
                let mut text = match (r.redacted, r.already) {
                    (0, 0) if r.failed == 0 => {
                        // Nothing to say: a ban over many members who never spoke stays quiet.
                        info!(room = room_id, user = user_id, "no recent event to redact");
                        String::new()
                    }
                    (0, 0) => format!("Redacted no recent event of {user_id} in {{rooms}}"),
                    (0, already) => format!(
                        "The {already} recent event(s) of {user_id} in {{rooms}} were already redacted (by the homeserver, MSC4293, or earlier)"
                    ),
                    (n, 0) => format!("Redacted {n} recent event(s) of {user_id} in {{rooms}}"),
                    (n, already) => format!(
                        "Redacted {n} recent event(s) of {user_id} in {{rooms}}; {already} more were already redacted"
                    ),
                };
                if r.failed > 0 {
                    text.push_str(&format!(
                        "; {} could not be redacted: {}",
                        r.failed,
                        r.first_error.as_deref().unwrap_or("unknown error")
                    ));
                }
                if !text.is_empty() {
                    text.push('.');
                    let key = format!("redacted|{room_id}|{user_id}|{started}");
                    self.redactions.unreported.push((key, text, room_id.to_owned()));
                }
            }
            Err(e) => {
                if self.own_account_error(&e) {
                    warn!(
                        room = room_id,
                        user = user_id,
                        "redaction stopped: hush's account cannot write; resuming at the next start"
                    );
                    return;
                }
                self.error(format!("cannot redact the recent events of {user_id} in {room_id}: {e}"));
            }
        }
        let outcome = match &failed {
            None => hush_core::history::Outcome::Done,
            Some(e) => hush_core::history::Outcome::Failed(e.clone()),
        };
        self.settle_logged(&scope, user_id, Kind::Redaction, false, outcome);
        if let Err(e) = self.ledger.remove(&scope, user_id, Kind::Redaction) {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
        // The entry kept the member tracked; they may have left.
        self.departed.insert(user_id.to_owned());
        if self.redactions.running.is_empty() && self.redactions.waiting.is_empty() {
            for (key, text, room) in std::mem::take(&mut self.redactions.unreported) {
                self.report_in_room(&key, &text, &room);
            }
        }
    }
}
