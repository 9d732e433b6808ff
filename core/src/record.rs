//! The record of what hush did: one [`Entry`] per change hush made (or is making) to a
//! member of a room or to an account: the vocabulary the reconciler reads, and what the
//! shell's ledger stores as it is (in typed columns).
//!
//! Write-ahead discipline (kept by the shell's ledger): an entry is written in phase
//! [`Phase::Applying`] before the change is sent and marked [`Phase::Applied`] after;
//! lifting marks [`Phase::Lifting`] before and deletes the entry after. [`Kind::as_str`]
//! and [`Phase::as_str`] are the strings stored on disk.

use crate::policy::{classify_event_type, EntityKind, RuleId};

/// Where a change was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// In one room (a mute or a ban): the room id.
    Room(String),
    /// To the user's account, on hush's homeserver (a suspension).
    Account,
}

/// What kind of change hush made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// MSC3909 `mute` membership.
    MuteMembership,
    /// A `users` entry in `m.room.power_levels` lowered below the send level.
    MutePowerLevel,
    Ban,
    /// MSC3823 account suspension (scope [`Scope::Account`]).
    Suspension,
    /// A `deny` entry hush added to the room's `m.room.server_acl`. The entry's subject is
    /// a server glob, not a user: it is carried in [`Entry::user_id`] (see there).
    ServerDeny,
    /// A redaction of the user's recent events in the room, under way: written before the
    /// first event is looked up, removed when done. Never lifted (a redaction cannot be
    /// undone); an entry left by a crash is resumed at start-up. The entry's
    /// `previous_level` holds the start of the window (ms since the epoch) and its
    /// `applied_level` the most events to redact; `event_ids`, when not empty, names the
    /// events to redact instead.
    Redaction,
}

impl Kind {
    /// The stored name: `"mute-membership"`, `"mute-power-level"`, `"ban"`, `"suspension"`,
    /// `"server-deny"`, `"redaction"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MuteMembership => "mute-membership",
            Kind::MutePowerLevel => "mute-power-level",
            Kind::Ban => "ban",
            Kind::Suspension => "suspension",
            Kind::ServerDeny => "server-deny",
            Kind::Redaction => "redaction",
        }
    }

    /// The kind a stored name stands for; None for anything else.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "mute-membership" => Kind::MuteMembership,
            "mute-power-level" => Kind::MutePowerLevel,
            "ban" => Kind::Ban,
            "suspension" => Kind::Suspension,
            "server-deny" => Kind::ServerDeny,
            "redaction" => Kind::Redaction,
            _ => return None,
        })
    }

    /// Whether this kind is a mute (by either strategy).
    pub fn is_mute(self) -> bool {
        matches!(self, Kind::MuteMembership | Kind::MutePowerLevel)
    }

    /// Whether an entry of this kind is about a user (a member or an account); a
    /// [`Kind::ServerDeny`] entry is about a server.
    pub fn is_about_a_user(self) -> bool {
        self != Kind::ServerDeny
    }
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Written before the change was sent; the change may or may not have happened.
    Applying,
    /// The change is in the room.
    Applied,
    /// Written before the undo was sent; the undo may or may not have happened.
    Lifting,
}

impl Phase {
    /// The stored name: `"applying"`, `"applied"`, `"lifting"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Applying => "applying",
            Phase::Applied => "applied",
            Phase::Lifting => "lifting",
        }
    }

    /// The phase a stored name stands for; None for anything else.
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "applying" => Phase::Applying,
            "applied" => Phase::Applied,
            "lifting" => Phase::Lifting,
            _ => return None,
        })
    }
}

/// One change hush made (or is making).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The room, or the account for an account-wide change (suspension).
    pub scope: Scope,
    /// Whom the change is about: a user id, or for [`Kind::ServerDeny`] the server glob
    /// of the `deny` entry (as written to the room, lower-cased). A user id always starts
    /// with `@`, a server glob never does, so the two cannot be mistaken for each other;
    /// the ledger keeps this column's name for both.
    pub user_id: String,
    pub kind: Kind,
    pub phase: Phase,
    /// For power-level mutes: the user's explicit entry before the mute (None = absent).
    pub previous_level: Option<i64>,
    /// For power-level mutes: the level hush set.
    pub applied_level: Option<i64>,
    /// The rule that caused it.
    pub rule: RuleId,
    pub reason: String,
    pub applied_at_ms: u64,
    /// When the restriction ends by itself (None = until the rule goes).
    pub expires_at_ms: Option<u64>,
    /// A moderator changed the user's level while hush's mute was on: hush leaves it alone.
    pub overridden: bool,
    /// For a [`Kind::Redaction`] of chosen events (a message that tripped a protection):
    /// their ids, redacted whatever the window. Empty: the user's recent events.
    pub event_ids: Vec<String>,
}

/// Reads the rule reference the ledger stored before schema version 1, `"list room id|kind|state key"`,
/// into the rule it names (for the ledger's migration to typed rule columns).
///
/// `kind` is what hush has always written, `user`, `room` or `server`; an event type of
/// any rule family (`m.policy.rule.user`, legacy `m.room.rule.user` and
/// `org.matrix.mjolnir.rule.user`, and the same for rooms and servers) is read too, as
/// the ledger's field documentation promised. The state key is everything after the
/// second `|` (it may itself contain `|`); the list room id is everything before the first,
/// as the writer put it. None, never a panic, for anything else: fewer than three parts,
/// an empty list, an unknown kind or event type.
pub fn parse_legacy_rule_ref(s: &str) -> Option<RuleId> {
    let mut parts = s.splitn(3, '|');
    let (room_id, kind, state_key) = (parts.next()?, parts.next()?, parts.next()?);
    if room_id.is_empty() {
        return None;
    }
    let kind = match EntityKind::ALL.into_iter().find(|k| k.as_str() == kind) {
        Some(k) => k,
        None => classify_event_type(kind)?.1,
    };
    Some(RuleId { room_id: room_id.to_owned(), kind, state_key: state_key.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(room: &str, kind: EntityKind, key: &str) -> RuleId {
        RuleId { room_id: room.into(), kind, state_key: key.into() }
    }

    #[test]
    fn stored_names_read_back_and_nothing_else_does() {
        let all = [
            Kind::MuteMembership,
            Kind::MutePowerLevel,
            Kind::Ban,
            Kind::Suspension,
            Kind::ServerDeny,
            Kind::Redaction,
        ];
        for k in all {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for p in [Phase::Applying, Phase::Applied, Phase::Lifting] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Kind::parse("mute"), None);
        assert_eq!(Kind::parse("Ban"), None);
        assert_eq!(Phase::parse(""), None);
        assert!(Kind::MuteMembership.is_mute() && Kind::MutePowerLevel.is_mute());
        assert!(!Kind::Ban.is_mute() && !Kind::Suspension.is_mute() && !Kind::ServerDeny.is_mute());
        assert!(!Kind::ServerDeny.is_about_a_user() && Kind::Ban.is_about_a_user());
        assert!(!Kind::Redaction.is_mute() && Kind::Redaction.is_about_a_user());
    }

    #[test]
    fn reads_what_hush_wrote() {
        assert_eq!(parse_legacy_rule_ref("!list:x|user|spam"), Some(id("!list:x", EntityKind::User, "spam")));
        assert_eq!(parse_legacy_rule_ref("!l:x|server|evil.org"), Some(id("!l:x", EntityKind::Server, "evil.org")));
        assert_eq!(parse_legacy_rule_ref("!l:x|room|r"), Some(id("!l:x", EntityKind::Room, "r")));
        // An empty state key is a state key, and one with `|` in it is kept whole.
        assert_eq!(parse_legacy_rule_ref("!l:x|user|"), Some(id("!l:x", EntityKind::User, "")));
        assert_eq!(parse_legacy_rule_ref("!l:x|user|a|b"), Some(id("!l:x", EntityKind::User, "a|b")));
    }

    #[test]
    fn reads_event_types_of_every_family() {
        for (ty, kind) in [
            ("m.policy.rule.user", EntityKind::User),
            ("m.room.rule.user", EntityKind::User),
            ("org.matrix.mjolnir.rule.user", EntityKind::User),
            ("m.policy.rule.room", EntityKind::Room),
            ("org.matrix.mjolnir.rule.room", EntityKind::Room),
            ("m.room.rule.server", EntityKind::Server),
            ("m.policy.rule.server", EntityKind::Server),
        ] {
            assert_eq!(parse_legacy_rule_ref(&format!("!l:x|{ty}|k")), Some(id("!l:x", kind, "k")), "{ty}");
        }
    }

    #[test]
    fn malformed_references_are_none() {
        for s in [
            "",
            "|",
            "||",
            "!l:x",
            "!l:x|user",
            "|user|k",
            "!l:x||k",
            "!l:x|users|k",
            "!l:x|USER|k",
            "!l:x|m.policy.rule.|k",
            "!l:x|m.policy.rule.users|k",
            "!l:x|m.room.name|k",
            "rule-1",
            "\u{0}|\u{0}|\u{0}",
            "é|ü|ß",
        ] {
            assert_eq!(parse_legacy_rule_ref(s), None, "{s:?}");
        }
    }
}
