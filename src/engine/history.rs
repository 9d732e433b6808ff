//! The action log on the engine's side: what each carried-out action (or refusal, or hold) is and why, written to the ledger's `history` where the action is executed; the write's answer settles its outcome; `history` and `undo` (owns the command an undo is acting for, while it acts).

use hush_core::history::{undo_plan, Cause, Change, Logged, Outcome, Undo, What, Writers};
use hush_core::policy::{Recommendation, Rule, RuleId};
use hush_core::reconcile::{Action, Restriction};
use hush_core::record::{Kind, Scope};
use hush_core::schedule::Clock;
use serde_json::json;
use tracing::warn;

use super::protections::LocalMute;
use super::Engine;
use crate::enforce::RoomWriter;
use crate::ledger::About;
use crate::local_rules::LOCAL_LIST;

/// The state key prefix of an undo's local exception: `hush.undo:<user>`.
pub const UNDO_PREFIX: &str = "hush.undo:";

/// What `undo` did, or leaves to the management side.
#[derive(Debug, Clone)]
pub enum Undone {
    /// Done (or, in dry run, said): the reply.
    Done(String),
    /// A rule hush wrote to a list it writes to: the management side removes it, as
    /// `unmute`/`unban` do (the lift follows through the list's sync).
    RemoveListRule(Rule),
}

/// The history state the engine owns: the command an undo is acting for while it acts,
/// so that what it lifts is logged as caused by that command.
#[derive(Debug, Default)]
pub(super) struct History {
    acting_for: Option<(String, String)>,
}

impl History {
    /// The input is carried out: what comes next is not the undo's.
    pub(super) fn input_done(&mut self) {
        self.acting_for = None;
    }
}

/// A refusal or restriction's name, before the room's strategy is known.
fn restriction_what(r: Restriction) -> What {
    match r {
        Restriction::Ban => What::Ban,
        Restriction::Mute => What::Mute,
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Why an action caused by `rule` happened: the command an undo acts for, a local rule
    /// (a protection), an expiry that passed (`expires_at_ms`, for a lift), or the rule
    /// with its sender and the moderator who last wrote it through hush.
    fn cause_of(&self, rule: &RuleId, expired: bool) -> Cause {
        if let Some((moderator, command)) = &self.history.acting_for {
            return Cause::Command { moderator: moderator.clone(), command: command.clone() };
        }
        if expired {
            return Cause::Expiry;
        }
        if let Some((moderator, command)) = self.ledger.last_command_for(rule).ok().flatten() {
            if rule.state_key.is_empty() {
                // A command's own action (`redact`): no rule behind it.
                return Cause::Command { moderator, command };
            }
            let sender = self.index.rule(rule).map(|r| r.sender).unwrap_or_default();
            return Cause::Rule { sender, written_by: Some((moderator, command)) };
        }
        if rule.room_id == LOCAL_LIST {
            return Cause::Protection;
        }
        Cause::Rule { sender: self.index.rule(rule).map(|r| r.sender).unwrap_or_default(), written_by: None }
    }

    /// Appends a row; a refusal or hold like the newest row about the same target and
    /// scope (same change, rule and reason) is not logged again: one row until it changes.
    fn log(&mut self, row: Logged) {
        if matches!(row.change, Change::Refused | Change::Held) {
            if let Some(scope) = &row.scope {
                let last = self.ledger.last_logged_about(scope, &row.target).ok().flatten();
                if last.is_some_and(|l| l.change == row.change && l.rule == row.rule && l.detail == row.detail) {
                    return;
                }
            }
        }
        if let Err(e) = self.ledger.log(&row) {
            warn!("cannot write the action log: {e:#}");
        }
    }

    /// Logs one action about to be carried out (or simulated) in a room or on an account;
    /// ledger-only bookkeeping is not logged.
    pub(super) fn log_action(&mut self, scope: Scope, action: &Action) {
        let now = self.now();
        let pending = if self.cfg.dry_run { Outcome::DryRun } else { Outcome::Pending };
        let room_kind = |a: &Action| -> Option<(String, Kind)> {
            Some(match a {
                Action::UnmutePowerLevel { user_id, .. } => (user_id.clone(), Kind::MutePowerLevel),
                Action::UnmuteMembership { user_id, .. } => (user_id.clone(), Kind::MuteMembership),
                Action::Unban { user_id } => (user_id.clone(), Kind::Ban),
                Action::Unsuspend { user_id } => (user_id.clone(), Kind::Suspension),
                Action::UndenyServer { server } => (server.clone(), Kind::ServerDeny),
                _ => return None,
            })
        };
        let (target, what, change, rule, outcome, detail) = match action {
            Action::MutePowerLevel { user_id, wanted, .. } => {
                (user_id.clone(), What::MutePowerLevel, Change::Apply, wanted.rule.clone(), pending, String::new())
            }
            Action::MuteMembership { user_id, wanted } => {
                (user_id.clone(), What::MuteMembership, Change::Apply, wanted.rule.clone(), pending, String::new())
            }
            Action::Ban { user_id, wanted } => {
                (user_id.clone(), What::Ban, Change::Apply, wanted.rule.clone(), pending, String::new())
            }
            Action::Suspend { user_id, wanted } => {
                (user_id.clone(), What::Suspension, Change::Apply, wanted.rule.clone(), pending, String::new())
            }
            Action::DenyServer { server, wanted } => {
                (server.clone(), What::ServerDeny, Change::Apply, wanted.rule.clone(), pending, String::new())
            }
            Action::Redact { user_id, rule, .. } => {
                (user_id.clone(), What::Redaction, Change::Apply, rule.clone(), pending, String::new())
            }
            Action::Refuse { user_id, restriction, refusal, rule } => {
                let what = if scope == Scope::Account { What::Suspension } else { restriction_what(*restriction) };
                let done = if self.cfg.dry_run { Outcome::DryRun } else { Outcome::Done };
                (user_id.clone(), what, Change::Refused, rule.clone(), done, refusal.to_string())
            }
            Action::RefuseServerDeny { server, refusal, rule } => {
                let done = if self.cfg.dry_run { Outcome::DryRun } else { Outcome::Done };
                (server.clone(), What::ServerDeny, Change::Refused, rule.clone(), done, refusal.to_string())
            }
            lift => {
                let Some((target, kind)) = room_kind(lift) else { return };
                let Some(entry) = self.ledger.get(&scope, &target, kind).ok().flatten() else { return };
                let expired = entry.expires_at_ms.is_some_and(|e| e <= now);
                let cause = self.cause_of(&entry.rule, expired);
                self.log(Logged {
                    id: 0,
                    at_ms: now,
                    scope: Some(scope),
                    target,
                    what: kind.into(),
                    change: Change::Lift,
                    rule: Some(entry.rule),
                    cause,
                    outcome: pending,
                    detail: String::new(),
                });
                return;
            }
        };
        let cause = self.cause_of(&rule, false);
        self.log(Logged {
            id: 0,
            at_ms: now,
            scope: Some(scope),
            target,
            what,
            change,
            rule: Some(rule),
            cause,
            outcome,
            detail,
        });
    }

    /// Logs that the safety guard held `rule` for a member of a room (`detail`: the hold).
    pub(super) fn log_held(
        &mut self,
        room_id: &str,
        user: &str,
        rule: &RuleId,
        restriction: Restriction,
        detail: &str,
    ) {
        let cause = self.cause_of(rule, false);
        self.log(Logged {
            id: 0,
            at_ms: self.now(),
            scope: Some(Scope::Room(room_id.to_owned())),
            target: user.to_owned(),
            what: restriction_what(restriction),
            change: Change::Held,
            rule: Some(rule.clone()),
            cause,
            outcome: Outcome::Done,
            detail: detail.to_owned(),
        });
    }

    /// The answer of a write came: the newest pending row of that action (applying, or
    /// `lifting`) gets its outcome.
    pub(super) fn settle_logged(&mut self, scope: &Scope, target: &str, kind: Kind, lifting: bool, outcome: Outcome) {
        let change = if lifting { Change::Lift } else { Change::Apply };
        if let Err(e) = self.ledger.settle_logged(scope, target, kind.into(), change, &outcome) {
            warn!("cannot write the action log: {e:#}");
        }
    }

    /// A moderator's command, logged before it acts: its row's id.
    pub(super) fn command_started(
        &mut self,
        moderator: String,
        command: String,
        target: String,
        rule: Option<RuleId>,
    ) -> u64 {
        let row = Logged {
            id: 0,
            at_ms: self.now(),
            scope: None,
            target,
            what: What::Command,
            change: Change::Command,
            rule,
            cause: Cause::Command { moderator, command },
            outcome: Outcome::Pending,
            detail: String::new(),
        };
        self.ledger.log(&row).unwrap_or_else(|e| {
            warn!("cannot write the action log: {e:#}");
            0
        })
    }

    pub(super) fn command_finished(&mut self, id: u64, outcome: Outcome) {
        if let Err(e) = self.ledger.settle_logged_id(id, &outcome) {
            warn!("cannot write the action log: {e:#}");
        }
    }

    pub(super) fn history_rows(&self, about: &About, limit: u32) -> Result<Vec<Logged>, String> {
        self.ledger.history(about, limit).map_err(|e| format!("cannot read the history: {e:#}"))
    }

    /// `undo <id>`: reverts one action, the way [`undo_plan`] says, and says which way.
    /// `command` is the undo's own row (it learns its user and rule here).
    pub(super) fn undo(
        &mut self,
        id: u64,
        moderator: &str,
        command: u64,
        writable: &[String],
    ) -> Result<Undone, String> {
        let row = match self.ledger.logged(id) {
            Ok(Some(row)) => row,
            Ok(None) => return Err(format!("No entry #{id} in the history (unknown, or older than what is kept).")),
            Err(e) => return Err(format!("cannot read the history: {e:#}")),
        };
        let in_force = match (&row.scope, row.what.kind()) {
            (Some(scope), Some(kind)) => self.ledger.get(scope, &row.target, kind).ok().flatten(),
            _ => None,
        };
        let sender = in_force.as_ref().and_then(|e| self.index.rule(&e.rule)).map(|r| r.sender);
        let writers =
            Writers { rule_sender: sender.as_deref(), own_user: &self.cfg.own_user, writable, local: LOCAL_LIST };
        let plan = undo_plan(&row, in_force.as_ref(), writers);
        let what = format!("{} of {}", row.what.words(), row.target);
        let dry = if self.cfg.dry_run { "[dry run] would have: " } else { "" };
        match plan {
            Undo::Refuse(why) => Err(why),
            Undo::RemoveListRule(rule_id) => {
                let rule = self.index.rule(&rule_id).ok_or_else(|| {
                    format!("#{id}: the rule `{}` in {} is gone already.", rule_id.state_key, rule_id.room_id)
                })?;
                self.note_undo_subject(command, &row.target, &rule_id);
                if self.cfg.dry_run {
                    return Ok(Undone::Done(format!(
                        "{dry}undo #{id} ({what}): removed the rule `{}` hush wrote to {}.",
                        rule_id.state_key, rule_id.room_id
                    )));
                }
                Ok(Undone::RemoveListRule(rule))
            }
            Undo::RemoveLocalRule(rule_id) => {
                self.note_undo_subject(command, &row.target, &rule_id);
                let kind = self
                    .index
                    .rule(&rule_id)
                    .map_or_else(|| hush_core::policy::RuleFamily::Stable.event_type(rule_id.kind), |r| r.event_type());
                let text = format!(
                    "{dry}undo #{id} ({what}): removed the local rule `{}` ({}); what it caused is lifted.",
                    rule_id.state_key,
                    protection_name(&rule_id.state_key)
                );
                if self.cfg.dry_run {
                    return Ok(Undone::Done(text));
                }
                self.history.acting_for = Some((moderator.to_owned(), format!("undo {id}")));
                // Until the input's plan is carried out (`History::input_done`).
                let removed = self.remove_local_rule(kind, &rule_id.state_key);
                match removed {
                    Ok(true) => Ok(Undone::Done(text)),
                    Ok(false) => Err(format!("#{id}: the local rule `{}` is gone already.", rule_id.state_key)),
                    Err(e) => Err(format!("#{id}: cannot remove the local rule `{}`: {e:#}", rule_id.state_key)),
                }
            }
            Undo::LocalException { user } => {
                let state_key = format!("{UNDO_PREFIX}{user}");
                let rule_id = RuleId {
                    room_id: LOCAL_LIST.to_owned(),
                    kind: hush_core::policy::EntityKind::User,
                    state_key: state_key.clone(),
                };
                self.note_undo_subject(command, &user, &rule_id);
                let cause = in_force.map(|e| format!("`{}` in {}", e.rule.state_key, e.rule.room_id));
                let notice = format!(
                    "{dry}undo #{id} ({what}): wrote the local exception `{state_key}` (an allow rule in {LOCAL_LIST}); the rule {} stays in its list, but no longer applies to {user} in your rooms. `unallow {user}` removes the exception.",
                    cause.unwrap_or_default()
                );
                let event = json!({
                    "type": "m.policy.rule.user",
                    "state_key": state_key,
                    "sender": self.cfg.own_user,
                    "content": {
                        "entity": user,
                        "recommendation": Recommendation::Allow.as_str(),
                        "reason": format!("undo #{id} by {moderator}"),
                    },
                });
                if self.cfg.dry_run {
                    return Ok(Undone::Done(notice));
                }
                if self.protections.local.is_none() {
                    return Err(format!("#{id}: hush has no local list to write an exception to."));
                }
                self.history.acting_for = Some((moderator.to_owned(), format!("undo {id}")));
                // The same path a protection's mute takes: the file first, then the index.
                let consequences = self.consequences.clone();
                // No notice of its own: the reply is the moderator's.
                consequences.local_mute(self, LocalMute { user: user.clone(), event, notice: String::new() });
                match self.protections.local.as_ref().and_then(|l| l.get("m.policy.rule.user", &state_key)) {
                    Some(_) => Ok(Undone::Done(notice)),
                    None => Err(format!("#{id}: cannot write the local exception `{state_key}` (see the log).")),
                }
            }
        }
    }

    fn note_undo_subject(&mut self, command: u64, target: &str, rule: &RuleId) {
        if command == 0 {
            return;
        }
        if let Err(e) = self.ledger.set_logged_subject(command, target, Some(rule)) {
            warn!("cannot write the action log: {e:#}");
        }
    }
}

/// What a local rule is, by its state key: `hush.flood:` is flood protection, `hush.undo:`
/// an undo's exception, another `hush.<name>:` the protection `<name>`.
pub fn protection_name(state_key: &str) -> String {
    match state_key.strip_prefix("hush.").and_then(|k| k.split_once(':')).map(|(name, _)| name) {
        Some("flood") => "flood protection".to_owned(),
        Some("undo") => "local exception (undo)".to_owned(),
        Some("mention") => "mention spam".to_owned(),
        Some(name) => format!("{name} protection"),
        None => "local rule".to_owned(),
    }
}
