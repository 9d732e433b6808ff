//! Why hush will not restrict someone: one type for rooms and accounts, and the room's judgement.

use super::{RoomFacts, Shield};
use crate::power_levels;

/// Why hush will not act on a member of a room or on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Itself,
    Creator,
    ProtectedUser,
    ManagementModerator,
    /// The user's level is at or above the lowest of the room's `kick`, `ban` and `redact`
    /// levels: one of the room's moderators.
    RoomModerator {
        level: i64,
        moderator_level: i64,
    },
    /// The target's level is at or above hush's own.
    NotBelowHush {
        target: i64,
        own: i64,
    },
    /// hush cannot change power levels (needs `needed`, has `own`).
    CannotChangePowerLevels {
        needed: i64,
        own: i64,
    },
    CannotBan {
        needed: i64,
        own: i64,
    },
    /// Suspension only: the rule is a glob or a server rule, and suspending needs a user
    /// rule naming the account exactly.
    NotExact {
        entity: String,
    },
    /// Suspension only: the user may not be restricted in this protected room (a creator,
    /// a moderator, at or above hush), so hush does not suspend their account either.
    InRoom {
        room_id: String,
        refusal: Box<Refusal>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Itself => write!(f, "hush never restricts itself"),
            Refusal::Creator => write!(f, "room creators cannot be restricted"),
            Refusal::ProtectedUser => write!(f, "the user is in protected_users"),
            Refusal::ManagementModerator => write!(f, "the user is a moderator of the management room"),
            Refusal::RoomModerator { level, moderator_level } => write!(
                f,
                "the user is a moderator of the room (power level {level}, at or above {moderator_level}, the lowest of kick, ban and redact)"
            ),
            Refusal::NotBelowHush { target, own } => {
                write!(f, "the user's power level ({target}) is not below hush's ({own})")
            }
            Refusal::CannotChangePowerLevels { needed, own } => {
                write!(f, "hush needs power level {needed} to change power levels and has {own}")
            }
            Refusal::CannotBan { needed, own } => write!(f, "hush needs power level {needed} to ban and has {own}"),
            Refusal::NotExact { entity } => write!(
                f,
                "the rule's entity `{entity}` is not exactly the user id (hush suspends only on user rules naming the account exactly, never on globs or server rules)"
            ),
            Refusal::InRoom { room_id, refusal } => write!(f, "{refusal} (in {room_id})"),
        }
    }
}

/// Why hush must not restrict `user_id` in this room, if it must not: hush itself, the
/// room's creators, `protected_users`, moderators of the management room, the room's
/// moderators (at or above [`power_levels::moderator_level`]), and anyone at or above
/// hush's own level.
pub fn refusal(room: &RoomFacts<'_>, user_id: &str, shield: Shield) -> Option<Refusal> {
    if user_id == room.own_user {
        return Some(Refusal::Itself);
    }
    if room.is_creator(user_id) {
        return Some(Refusal::Creator);
    }
    if shield.protected_user {
        return Some(Refusal::ProtectedUser);
    }
    if shield.management_moderator {
        return Some(Refusal::ManagementModerator);
    }
    let level = room.level_of(user_id)?;
    let moderator_level = power_levels::moderator_level(room.power_levels);
    if level >= moderator_level {
        return Some(Refusal::RoomModerator { level, moderator_level });
    }
    if let Some(own) = room.own_level {
        if level >= own {
            return Some(Refusal::NotBelowHush { target: level, own });
        }
    }
    None
}
