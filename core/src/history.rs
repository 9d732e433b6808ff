//! The action log's vocabulary: what hush did or refused ([`Logged`]), why ([`Cause`]), how
//! it ended ([`Outcome`]), and how `undo` reverts one action ([`undo_plan`]).
//!
//! Pure: the shell's ledger stores a [`Logged`] in typed columns (the `as_str` names are
//! what is on disk), the engine fills it where it carries out an action, and `!hush
//! history` renders it. Nothing here reads a clock or a file.

use crate::policy::RuleId;
use crate::record::{Entry, Kind, Phase, Scope};

/// What an action was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum What {
    /// MSC3909 `mute` membership.
    MuteMembership,
    /// A mute by power level.
    MutePowerLevel,
    /// A mute refused or held before its strategy was chosen.
    Mute,
    Ban,
    /// An account suspension.
    Suspension,
    /// A `deny` entry of a room's server ACL (the target is a server glob).
    ServerDeny,
    /// A redaction of a member's recent events.
    Redaction,
    /// A moderator's command (the target is what it named; the rule, if any, what it wrote).
    Command,
}

impl What {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            What::MuteMembership => "mute-membership",
            What::MutePowerLevel => "mute-power-level",
            What::Mute => "mute",
            What::Ban => "ban",
            What::Suspension => "suspension",
            What::ServerDeny => "server-deny",
            What::Redaction => "redaction",
            What::Command => "command",
        }
    }

    /// The value a stored name stands for; None for anything else.
    pub fn parse(s: &str) -> Option<What> {
        [
            What::MuteMembership,
            What::MutePowerLevel,
            What::Mute,
            What::Ban,
            What::Suspension,
            What::ServerDeny,
            What::Redaction,
            What::Command,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }

    /// In words, for a moderator: "mute (power level)", "server deny".
    pub fn words(self) -> &'static str {
        match self {
            What::MuteMembership => "mute (membership)",
            What::MutePowerLevel => "mute (power level)",
            What::Mute => "mute",
            What::Ban => "ban",
            What::Suspension => "suspension",
            What::ServerDeny => "server deny",
            What::Redaction => "redaction",
            What::Command => "command",
        }
    }

    /// The record's kind this is about, if it is one hush keeps in force.
    pub fn kind(self) -> Option<Kind> {
        Some(match self {
            What::MuteMembership => Kind::MuteMembership,
            What::MutePowerLevel => Kind::MutePowerLevel,
            What::Ban => Kind::Ban,
            What::Suspension => Kind::Suspension,
            What::ServerDeny => Kind::ServerDeny,
            What::Redaction => Kind::Redaction,
            What::Mute | What::Command => return None,
        })
    }
}

impl From<Kind> for What {
    fn from(k: Kind) -> What {
        match k {
            Kind::MuteMembership => What::MuteMembership,
            Kind::MutePowerLevel => What::MutePowerLevel,
            Kind::Ban => What::Ban,
            Kind::Suspension => What::Suspension,
            Kind::ServerDeny => What::ServerDeny,
            Kind::Redaction => What::Redaction,
        }
    }
}

/// Which way the action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A restriction applied (or a redaction started).
    Apply,
    /// A restriction lifted.
    Lift,
    /// hush would not do it (the detail says why).
    Refused,
    /// The safety guard held it (the detail names the hold).
    Held,
    /// A moderator's command ([`What::Command`]).
    Command,
}

impl Change {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Apply => "apply",
            Change::Lift => "lift",
            Change::Refused => "refused",
            Change::Held => "held",
            Change::Command => "command",
        }
    }

    /// The value a stored name stands for; None for anything else.
    pub fn parse(s: &str) -> Option<Change> {
        [Change::Apply, Change::Lift, Change::Refused, Change::Held, Change::Command]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// Why hush acted. The rule (when there is one) is [`Logged::rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A rule of a policy list; `written_by` names the moderator and command that last wrote
    /// or removed it through hush, when one did.
    Rule { sender: String, written_by: Option<(String, String)> },
    /// A rule in the local list (a protection's, or an undo's exception).
    Protection,
    /// A moderator's command: who, and the command (`mute`, `undo 3`).
    Command { moderator: String, command: String },
    /// The rule's expiry passed.
    Expiry,
}

impl Cause {
    /// The stored name of the variant.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::Rule { .. } => "rule",
            Cause::Protection => "protection",
            Cause::Command { .. } => "command",
            Cause::Expiry => "expiry",
        }
    }
}

/// How the action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer yet (or hush stopped before the answer).
    Pending,
    Done,
    /// It failed, with the error.
    Failed(String),
    /// Dry run: reported, nothing changed.
    DryRun,
}

impl Outcome {
    /// The stored name (the error of `Failed` is stored apart).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::DryRun => "dry-run",
        }
    }

    /// The outcome a stored name and error stand for; None for anything else.
    pub fn parse(s: &str, error: &str) -> Option<Outcome> {
        Some(match s {
            "pending" => Outcome::Pending,
            "done" => Outcome::Done,
            "failed" => Outcome::Failed(error.to_owned()),
            "dry-run" => Outcome::DryRun,
            _ => return None,
        })
    }

    /// In words: "done", "under way", "failed: ...", "dry run".
    pub fn words(&self) -> String {
        match self {
            Outcome::Pending => "under way".to_owned(),
            Outcome::Done => "done".to_owned(),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::DryRun => "dry run".to_owned(),
        }
    }
}

/// One row of the action log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Shown as `#id`; 0 before the ledger assigned one.
    pub id: u64,
    pub at_ms: u64,
    /// The room or the account; None for a command (it acts through a list, not a room).
    pub scope: Option<Scope>,
    /// The user, or the server glob of a server deny.
    pub target: String,
    pub what: What,
    pub change: Change,
    /// The rule behind it (the one a command wrote or removed, for a command).
    pub rule: Option<RuleId>,
    pub cause: Cause,
    pub outcome: Outcome,
    /// A refusal's reason, a hold's id and reason; empty otherwise.
    pub detail: String,
}

/// How `undo` reverts an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Nothing is done, for this reason.
    Refuse(String),
    /// Take this rule out of the local list (which lifts what it caused).
    RemoveLocalRule(RuleId),
    /// Take this rule out of its list, which hush writes (as `unmute`/`unban` do).
    RemoveListRule(RuleId),
    /// Another list's rule: write a local exception (an allow rule) for this user.
    LocalException { user: String },
}

/// Who wrote the rule behind what is in force, and the lists hush writes to.
#[derive(Debug, Clone, Copy)]
pub struct Writers<'a> {
    /// The sender of the rule the record's entry names now (None: unknown, the rule is gone).
    pub rule_sender: Option<&'a str>,
    /// hush's own user id.
    pub own_user: &'a str,
    /// The lists hush writes to (`default_policy_list`, lists marked `write: true`).
    pub writable: &'a [String],
    /// The local list's id.
    pub local: &'a str,
}

/// How to undo `row`, given the record's entry for what it did (None: nothing in force)
/// and who wrote its rule. The entry's rule is the cause now (a rule that replaced the
/// first keeps the same restriction): that is the rule undone.
pub fn undo_plan(row: &Logged, in_force: Option<&Entry>, w: Writers<'_>) -> Undo {
    let id = row.id;
    let refuse = |why: String| Undo::Refuse(format!("#{id} {why}: nothing to undo."));
    match row.change {
        Change::Refused => return refuse("was a refusal (hush did nothing)".to_owned()),
        Change::Held => return refuse("was held by the safety guard (hush did nothing); use confirm or reject".into()),
        Change::Lift => return refuse("lifted a restriction".to_owned()),
        Change::Command => return refuse("is a command, not an action".to_owned()),
        Change::Apply => {}
    }
    if row.what == What::Redaction {
        return Undo::Refuse(format!("#{id} is a redaction: redacted events cannot be brought back."));
    }
    if row.outcome == Outcome::DryRun {
        return refuse("was a dry run (nothing was changed)".to_owned());
    }
    let Some(entry) = in_force.filter(|e| e.phase != Phase::Lifting && !e.overridden) else {
        return refuse(format!("{} of {} is no longer in force", row.what.words(), row.target));
    };
    let rule = entry.rule.clone();
    if rule.room_id == w.local {
        return Undo::RemoveLocalRule(rule);
    }
    if w.rule_sender == Some(w.own_user) && w.writable.contains(&rule.room_id) {
        return Undo::RemoveListRule(rule);
    }
    match row.what {
        What::ServerDeny => Undo::Refuse(format!(
            "#{id} is a server ACL entry from `{}` in {}: hush makes no local exception for a server; remove the rule there.",
            rule.state_key, rule.room_id
        )),
        What::Suspension => Undo::Refuse(format!(
            "#{id} is a suspension from `{}` in {}: a local exception cannot lift a suspension; remove the rule there.",
            rule.state_key, rule.room_id
        )),
        _ => Undo::LocalException { user: entry.user_id.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EntityKind;

    fn rule(list: &str, key: &str) -> RuleId {
        RuleId { room_id: list.into(), kind: EntityKind::User, state_key: key.into() }
    }

    fn plan(r: &Logged, e: Option<&Entry>, sender: &str, writable: &[String]) -> Undo {
        let w = Writers { rule_sender: Some(sender), own_user: "@hush:x", writable, local: LOCAL };
        undo_plan(r, e, w)
    }

    fn row(change: Change, what: What, sender: &str) -> Logged {
        Logged {
            id: 7,
            at_ms: 1,
            scope: Some(Scope::Room("!r".into())),
            target: "@u:x".into(),
            what,
            change,
            rule: Some(rule("!l", "k")),
            cause: Cause::Rule { sender: sender.into(), written_by: None },
            outcome: Outcome::Done,
            detail: String::new(),
        }
    }

    fn entry(list: &str) -> Entry {
        Entry {
            scope: Scope::Room("!r".into()),
            user_id: "@u:x".into(),
            kind: Kind::MutePowerLevel,
            phase: Phase::Applied,
            previous_level: None,
            applied_level: Some(-1),
            rule: rule(list, "k"),
            reason: String::new(),
            applied_at_ms: 1,
            expires_at_ms: None,
            overridden: false,
            event_ids: Vec::new(),
        }
    }

    const LOCAL: &str = "hush.local";

    #[test]
    fn stored_names_read_back() {
        for w in [
            What::MuteMembership,
            What::MutePowerLevel,
            What::Mute,
            What::Ban,
            What::Suspension,
            What::ServerDeny,
            What::Redaction,
            What::Command,
        ] {
            assert_eq!(What::parse(w.as_str()), Some(w));
        }
        for c in [Change::Apply, Change::Lift, Change::Refused, Change::Held, Change::Command] {
            assert_eq!(Change::parse(c.as_str()), Some(c));
        }
        for o in [Outcome::Pending, Outcome::Done, Outcome::Failed("x".into()), Outcome::DryRun] {
            assert_eq!(Outcome::parse(o.as_str(), "x"), Some(o));
        }
        assert_eq!(What::parse("Ban"), None);
        assert_eq!(Change::parse(""), None);
        assert_eq!(Outcome::parse("ok", ""), None);
    }

    #[test]
    fn undo_removes_a_local_rule_or_a_rule_hush_wrote() {
        let r = row(Change::Apply, What::MutePowerLevel, "@hush:x");
        assert_eq!(plan(&r, Some(&entry(LOCAL)), "@hush:x", &[]), Undo::RemoveLocalRule(rule(LOCAL, "k")));
        let writable = vec!["!l".to_owned()];
        assert_eq!(plan(&r, Some(&entry("!l")), "@hush:x", &writable), Undo::RemoveListRule(rule("!l", "k")));
    }

    #[test]
    fn undo_of_another_lists_rule_is_a_local_exception() {
        let exception = Undo::LocalException { user: "@u:x".into() };
        let theirs = row(Change::Apply, What::MutePowerLevel, "@mod:other");
        let writable = vec!["!l".to_owned()];
        assert_eq!(plan(&theirs, Some(&entry("!l")), "@mod:other", &writable), exception);
        // hush wrote it, but to a list it no longer writes to.
        let ours = row(Change::Apply, What::Ban, "@hush:x");
        assert_eq!(plan(&ours, Some(&entry("!l")), "@hush:x", &[]), exception);
        // The rule in force now is another's (it replaced hush's at the same key).
        assert_eq!(plan(&ours, Some(&entry("!l")), "@mod:other", &writable), exception);
    }

    #[test]
    fn what_cannot_be_undone_says_why() {
        let e = entry("!l");
        let why = |r: Logged, e: Option<&Entry>| match plan(&r, e, "@m", &[]) {
            Undo::Refuse(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(row(Change::Refused, What::Ban, "@m"), Some(&e)).contains("refusal"));
        assert!(why(row(Change::Held, What::Mute, "@m"), Some(&e)).contains("held"));
        assert!(why(row(Change::Lift, What::Ban, "@m"), Some(&e)).contains("lifted"));
        assert!(why(row(Change::Apply, What::Redaction, "@m"), Some(&e)).contains("cannot be brought back"));
        assert!(why(row(Change::Apply, What::Ban, "@m"), None).contains("no longer in force"));
        let lifting = Entry { phase: Phase::Lifting, ..e.clone() };
        assert!(why(row(Change::Apply, What::Ban, "@m"), Some(&lifting)).contains("no longer in force"));
        let dry = Logged { outcome: Outcome::DryRun, ..row(Change::Apply, What::Ban, "@m") };
        assert!(why(dry, Some(&e)).contains("dry run"));
        assert!(why(row(Change::Apply, What::ServerDeny, "@m"), Some(&e)).contains("server"));
    }
}
