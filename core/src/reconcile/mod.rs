//! The reconciler: what the policy wants for a member or an account, against what the room and the record say, as a list of actions.
//!
//! Pure: no I/O, no clock. Every trigger (start-up, a rule change, a member joining, a timer
//! firing, a command) ends here, one member of one room at a time ([`reconcile_member`]),
//! or one account ([`reconcile_account`]), so there is one way to restrict and one way to
//! lift, whatever asked for it. Both read hush's record ([`crate::record::Entry`]) and say
//! why they will not act with one [`Refusal`].

use serde_json::Value;

use crate::policy::RuleId;
use crate::power_levels;
use crate::record::Kind;

mod account;
mod acl;
mod member;
mod redact;
mod refusal;

pub use account::{reconcile_account, AccountFacts, AccountShield};
pub use acl::{never_deny, reconcile_server_acl, server_refusal, AclFacts, NeverDeny, ServerRefusal};
pub use member::reconcile_member;
pub use redact::{plan_redactions, RedactPolicy};
pub use refusal::{refusal, Refusal};

/// How a room mutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuteStrategy {
    /// MSC3909 `mute` membership (room versions listed in the config).
    Membership,
    /// A `users` entry below the send level.
    PowerLevel,
}

/// A member's membership, including MSC3909's two new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Join,
    Invite,
    Knock,
    Leave,
    Ban,
    Mute,
    LeaveMute,
}

impl Membership {
    pub fn parse(s: &str) -> Option<Membership> {
        Some(match s {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "knock" => Membership::Knock,
            "leave" => Membership::Leave,
            "ban" => Membership::Ban,
            "mute" => Membership::Mute,
            "leave-mute" => Membership::LeaveMute,
            _ => return None,
        })
    }
    /// In the room or on its way in: the members policy applies to.
    pub fn is_present(self) -> bool {
        matches!(self, Membership::Join | Membership::Invite | Membership::Knock | Membership::Mute)
    }
}

/// What the reconciler knows of a room.
#[derive(Debug, Clone)]
pub struct RoomFacts<'a> {
    pub room_id: &'a str,
    pub strategy: MuteStrategy,
    /// The current `m.room.power_levels` content.
    pub power_levels: &'a Value,
    /// The room's creators, in every room version (the `m.room.create` sender, and from
    /// room version 12 on `additional_creators`): never restricted.
    pub creators: &'a [String],
    /// Whether creators have unlimited power and no `users` entry (room version 12+).
    pub creators_privileged: bool,
    pub own_user: &'a str,
    /// hush's own level; None when hush is a creator (unlimited).
    pub own_level: Option<i64>,
}

impl RoomFacts<'_> {
    /// A user's level; None for creators (unlimited).
    fn level_of(&self, user_id: &str) -> Option<i64> {
        if self.creators_privileged && self.is_creator(user_id) {
            None
        } else {
            Some(power_levels::user_level(self.power_levels, user_id))
        }
    }
    fn is_creator(&self, user_id: &str) -> bool {
        self.creators.iter().any(|c| c == user_id)
    }
    fn own_can(&self, needed: i64) -> bool {
        self.own_level.is_none_or(|l| l >= needed)
    }
}

/// The restriction the policy wants, from the matching index at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    Ban,
    Mute,
}

/// What the policy wants for one user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub restriction: Restriction,
    /// When the rule stops applying (None = permanent).
    pub expires_at_ms: Option<u64>,
    /// The rule, for the record and reports.
    pub rule: RuleId,
    pub reason: String,
}

/// What the shell knows of a user beyond this room, for the refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shield {
    /// Matches `protected_users`.
    pub protected_user: bool,
    /// A moderator of the management room.
    pub management_moderator: bool,
}

/// One thing to do. Room- and account-changing actions carry what the ledger must record.
/// Ledger-only actions name the entry by `kind` (in the room reconciled, or the account for
/// [`Kind::Suspension`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Lower the user's level to `level`; `previous` is the entry to restore later.
    MutePowerLevel {
        user_id: String,
        level: i64,
        previous: Option<i64>,
        wanted: Wanted,
    },
    /// Put the user's entry back to `restore` (None = remove the entry).
    UnmutePowerLevel {
        user_id: String,
        restore: Option<i64>,
    },
    /// MSC3909: `join` -> `mute`.
    MuteMembership {
        user_id: String,
        wanted: Wanted,
    },
    /// MSC3909: `mute` -> `join`, or `leave-mute` -> `leave`.
    UnmuteMembership {
        user_id: String,
        to: Membership,
    },
    Ban {
        user_id: String,
        wanted: Wanted,
    },
    Unban {
        user_id: String,
    },
    /// Ledger only: the change recorded as `Applying` is in the room.
    MarkApplied {
        user_id: String,
        kind: Kind,
    },
    /// Ledger only: a moderator changed what hush did; hush leaves it alone from now on.
    MarkOverridden {
        user_id: String,
        kind: Kind,
        note: String,
    },
    /// Ledger only: the record no longer describes anything hush must undo.
    Forget {
        user_id: String,
        kind: Kind,
    },
    /// Ledger only: the same restriction now has another cause or end.
    UpdateCause {
        user_id: String,
        kind: Kind,
        wanted: Wanted,
    },
    /// Nothing changes; tell the moderators why.
    Refuse {
        user_id: String,
        restriction: Restriction,
        refusal: Refusal,
        /// The rule that asked for it.
        rule: RuleId,
    },
    /// Write an `Applying` suspension entry (replacing a `Lifting` one), then suspend the
    /// account.
    Suspend {
        user_id: String,
        wanted: Wanted,
    },
    /// The suspension entry is `Applying` (a crash, a lost answer): suspend again, with no
    /// new entry; an account found suspended is hush's own suspension.
    Resuspend {
        user_id: String,
    },
    /// Mark the suspension entry `Lifting` (unless it is already), then unsuspend.
    Unsuspend {
        user_id: String,
    },
    /// Write an `Applying` [`Kind::ServerDeny`] entry, then add `server` (a lower-cased
    /// server glob) to the room's `m.room.server_acl` `deny` list. Its ledger-only
    /// actions are the ones above, with the server glob as `user_id`.
    DenyServer {
        server: String,
        wanted: Wanted,
    },
    /// Mark hush's `server` entry `Lifting`, then take it out of the `deny` list.
    UndenyServer {
        server: String,
    },
    /// hush will not deny `server` in this room; tell the moderators why.
    RefuseServerDeny {
        server: String,
        refusal: ServerRefusal,
        /// The rule that asked for it.
        rule: RuleId,
    },
    /// Write a [`Kind::Redaction`] entry, then redact the user's events in the room sent
    /// at or after `since_ms`, at most `limit` of them, newest first (a ban's or mute's
    /// companion, see [`plan_redactions`], or a moderator's `redact` command). Never lifted.
    /// With `event_ids`, exactly those events (a message that tripped a protection).
    Redact {
        user_id: String,
        since_ms: u64,
        limit: u32,
        /// The rule behind the restriction (for a command: the management room, empty key).
        rule: RuleId,
        reason: String,
        /// The events to redact; empty: the user's recent events (`since_ms`, `limit`).
        event_ids: Vec<String>,
    },
}
