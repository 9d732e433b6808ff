//! One account: suspending a local user's account on an exact mute rule (MSC3823, a
//! read-only account as MSC3907 puts it), and lifting that suspension, decided like a room
//! member's mute.
//!
//! The shell's admin client only executes [`Action::Suspend`], [`Action::Resuspend`] and
//! [`Action::Unsuspend`]; the record is the account's [`Kind::Suspension`] entry
//! ([`crate::record::Scope::Account`]).
//!
//! # Held entries
//! An entry whose rule's list is followed but not loaded yet is *held*: its rule may well
//! still be there, so what hush did is not lifted on the list's silence. Whether an entry
//! is held is a fact about the entry's rule ([`Entry::rule`]'s list), judged by the shell
//! with the one predicate the room path uses too (there it keeps a held entry's
//! restriction wanted); the caller passes the answer for this account's entry as
//! [`AccountFacts::held`]. So held, `protected_users` and moderator status are each
//! computed once per user, by the shell's facts builder, for rooms and accounts alike.

use super::{Action, Refusal, Restriction, Shield, Wanted};
use crate::policy::EntityKind;
use crate::record::{Entry, Kind, Phase};

/// What the reconciler knows of one account, beyond the policy's wish and hush's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFacts<'a> {
    /// hush's own user id.
    pub own_user: &'a str,
    /// hush's homeserver: only its users' accounts are suspended.
    pub server_name: &'a str,
    /// The entity of the rule behind the wanted restriction, as the rule states it (None:
    /// the rule is not known, or nothing is wanted).
    pub rule_entity: Option<&'a str>,
    /// The entry's rule is held (its list is followed but not loaded yet): see the module
    /// documentation. Without an entry it changes nothing.
    pub held: bool,
}

/// What the shell knows of a user that forbids suspending them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountShield {
    /// `protected_users`, moderators of the management room: as for rooms.
    pub shield: Shield,
    /// A protected room where the user may never be restricted (hush's [`super::refusal`]
    /// there: a creator, a moderator, at or above hush), and that refusal. Someone hush
    /// may not mute in a room it protects is not suspended either.
    pub protected_room: Option<(String, Refusal)>,
}

/// The actions about one account: suspend a local user's account when the policy mutes
/// them with a user rule naming the account exactly, keep the entry's cause up to date,
/// finish what a crash interrupted, and lift the suspension when that no longer holds
/// (unless the entry is held).
///
/// Only users of `facts.server_name` are considered: a mute of a remote user is a mute in
/// rooms only. A ban does not suspend (it is carried out in the rooms). `entry` is hush's
/// suspension entry for the user (another kind is ignored). A refusal is reported
/// ([`Action::Refuse`]) only when hush has not suspended the account; when it has, the
/// suspension is lifted, as a room restriction is for a user who became a moderator.
pub fn reconcile_account(
    facts: &AccountFacts<'_>,
    user_id: &str,
    wanted: Option<&Wanted>,
    entry: Option<&Entry>,
    shield: &AccountShield,
) -> Vec<Action> {
    let user = || user_id.to_owned();
    let local = user_id.split_once(':').map(|(_, server)| server) == Some(facts.server_name);
    let wanted = wanted.filter(|w| w.restriction == Restriction::Mute && local);
    let judged = match wanted {
        Some(w) => match account_refusal(facts, user_id, w, shield) {
            Some(refusal) => Err((w, refusal)),
            None => Ok(Some(w)),
        },
        None => Ok(None),
    };
    let entry = entry.filter(|e| e.kind == Kind::Suspension);
    match (judged, entry) {
        (Ok(Some(w)), None) => vec![Action::Suspend { user_id: user(), wanted: w.clone() }],
        (Ok(Some(w)), Some(e)) => match e.phase {
            Phase::Applying => vec![Action::Resuspend { user_id: user() }],
            // The lift may have gone through: suspend again, with a new entry.
            Phase::Lifting => vec![Action::Suspend { user_id: user(), wanted: w.clone() }],
            Phase::Applied if e.rule != w.rule || e.expires_at_ms != w.expires_at_ms => {
                vec![Action::UpdateCause { user_id: user(), kind: Kind::Suspension, wanted: w.clone() }]
            }
            Phase::Applied => Vec::new(),
        },
        (Err((w, refusal)), None) => {
            vec![Action::Refuse { user_id: user(), restriction: Restriction::Mute, refusal, rule: w.rule.clone() }]
        }
        // Nothing wants it (or a safeguard now says no): lift what hush did, unless the
        // rule's list is not loaded yet.
        (_, Some(_)) if facts.held => Vec::new(),
        (_, Some(_)) => vec![Action::Unsuspend { user_id: user() }],
        (Ok(None), None) => Vec::new(),
    }
}

/// Why hush must not suspend a local user a mute rule names, if it must not: the rule does
/// not name the account exactly, hush itself, `protected_users`, moderators of the
/// management room, and whoever a protected room's refusal covers.
fn account_refusal(facts: &AccountFacts<'_>, user_id: &str, w: &Wanted, shield: &AccountShield) -> Option<Refusal> {
    let exact = w.rule.kind == EntityKind::User && facts.rule_entity == Some(user_id);
    if !exact {
        return Some(Refusal::NotExact { entity: facts.rule_entity.unwrap_or("?").to_owned() });
    }
    if user_id == facts.own_user {
        return Some(Refusal::Itself);
    }
    if shield.shield.protected_user {
        return Some(Refusal::ProtectedUser);
    }
    if shield.shield.management_moderator {
        return Some(Refusal::ManagementModerator);
    }
    let (room_id, refusal) = shield.protected_room.as_ref()?;
    Some(Refusal::InRoom { room_id: room_id.clone(), refusal: Box::new(refusal.clone()) })
}

#[cfg(test)]
mod tests {
    //! The cases of the shell's former `suspension::plan` tests, with the same decisions.
    use super::*;
    use crate::policy::RuleId;
    use crate::record::Scope;

    const HUSH: &str = "@hush:x";

    fn rule(kind: EntityKind, key: &str) -> RuleId {
        RuleId { room_id: "!l:x".into(), kind, state_key: key.into() }
    }

    fn wanted(restriction: Restriction, expires: Option<u64>, kind: EntityKind) -> Wanted {
        Wanted { restriction, expires_at_ms: expires, rule: rule(kind, "k"), reason: "spam".into() }
    }

    fn mute(expires: Option<u64>) -> Wanted {
        wanted(Restriction::Mute, expires, EntityKind::User)
    }

    fn facts(entity: Option<&str>) -> AccountFacts<'_> {
        AccountFacts { own_user: HUSH, server_name: "x", rule_entity: entity, held: false }
    }

    fn entry(phase: Phase, expires: Option<u64>) -> Entry {
        Entry {
            scope: Scope::Account,
            user_id: "@a:x".into(),
            kind: Kind::Suspension,
            phase,
            previous_level: None,
            applied_level: None,
            rule: rule(EntityKind::User, "k"),
            reason: "spam".into(),
            applied_at_ms: 1,
            expires_at_ms: expires,
            overridden: false,
            event_ids: Vec::new(),
        }
    }

    fn none() -> AccountShield {
        AccountShield::default()
    }

    fn refused(a: &[Action]) -> Refusal {
        match a {
            [Action::Refuse { restriction: Restriction::Mute, refusal, .. }] => refusal.clone(),
            other => panic!("not one refusal: {other:?}"),
        }
    }

    #[test]
    fn an_exact_mute_of_a_local_user_suspends_and_nothing_else_does() {
        let m = mute(Some(99));
        let exact = facts(Some("@a:x"));
        assert_eq!(
            reconcile_account(&exact, "@a:x", Some(&m), None, &none()),
            vec![Action::Suspend { user_id: "@a:x".into(), wanted: m.clone() }]
        );

        let ban = wanted(Restriction::Ban, None, EntityKind::User);
        assert!(reconcile_account(&exact, "@a:x", Some(&ban), None, &none()).is_empty(), "a ban does not suspend");
        assert!(
            reconcile_account(&facts(Some("@a:elsewhere")), "@a:elsewhere", Some(&m), None, &none()).is_empty(),
            "remote users are never considered"
        );
        let a = reconcile_account(&facts(Some("@a*:x")), "@a:x", Some(&m), None, &none());
        assert_eq!(
            a,
            vec![Action::Refuse {
                user_id: "@a:x".into(),
                restriction: Restriction::Mute,
                refusal: Refusal::NotExact { entity: "@a*:x".into() },
                rule: m.rule.clone(),
            }]
        );
        let server = wanted(Restriction::Mute, Some(99), EntityKind::Server);
        assert!(matches!(
            refused(&reconcile_account(&facts(Some("x")), "@a:x", Some(&server), None, &none())),
            Refusal::NotExact { .. }
        ));
        assert_eq!(refused(&reconcile_account(&facts(Some(HUSH)), HUSH, Some(&m), None, &none())), Refusal::Itself);
        let protected = AccountShield { shield: Shield { protected_user: true, ..Shield::default() }, ..none() };
        assert_eq!(refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &protected)), Refusal::ProtectedUser);
        let moderator = AccountShield { shield: Shield { management_moderator: true, ..Shield::default() }, ..none() };
        assert_eq!(
            refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &moderator)),
            Refusal::ManagementModerator
        );
        let room_moderator = AccountShield {
            protected_room: Some(("!r:x".into(), Refusal::RoomModerator { level: 50, moderator_level: 50 })),
            ..none()
        };
        let r = refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &room_moderator));
        assert_eq!(
            r.to_string(),
            "the user is a moderator of the room (power level 50, at or above 50, the lowest of kick, ban and redact) (in !r:x)"
        );
        // Suspended before they became a moderator: lifted.
        let applied = entry(Phase::Applied, None);
        for shield in [&moderator, &room_moderator] {
            assert_eq!(
                reconcile_account(&exact, "@a:x", Some(&m), Some(&applied), shield),
                vec![Action::Unsuspend { user_id: "@a:x".into() }]
            );
        }
    }

    #[test]
    fn entries_are_kept_updated_retried_and_lifted() {
        let m = mute(Some(99));
        let f = facts(Some("@a:x"));
        let applied = entry(Phase::Applied, Some(99));
        assert!(reconcile_account(&f, "@a:x", Some(&m), Some(&applied), &none()).is_empty());
        let other_expiry = entry(Phase::Applied, Some(50));
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&m), Some(&other_expiry), &none()),
            vec![Action::UpdateCause { user_id: "@a:x".into(), kind: Kind::Suspension, wanted: m.clone() }]
        );
        let applying = entry(Phase::Applying, Some(99));
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&m), Some(&applying), &none()),
            vec![Action::Resuspend { user_id: "@a:x".into() }]
        );
        let lifting = entry(Phase::Lifting, Some(99));
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&m), Some(&lifting), &none()),
            vec![Action::Suspend { user_id: "@a:x".into(), wanted: m.clone() }]
        );

        let no_rule = facts(None);
        let lift = vec![Action::Unsuspend { user_id: "@a:x".into() }];
        assert_eq!(reconcile_account(&no_rule, "@a:x", None, Some(&applied), &none()), lift, "the rule went: lift");
        assert_eq!(
            reconcile_account(&no_rule, "@a:x", None, Some(&lifting), &none()),
            lift,
            "a half-done lift is finished"
        );
        let held = AccountFacts { held: true, ..no_rule };
        assert!(
            reconcile_account(&held, "@a:x", None, Some(&applied), &none()).is_empty(),
            "held while the list is not loaded"
        );
        let protected = AccountShield { shield: Shield { protected_user: true, ..Shield::default() }, ..none() };
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&m), Some(&applied), &protected),
            lift,
            "a user made protected is released"
        );
    }

    /// What the shell's former `suspension::plan` was checked against (every combination
    /// of the facts) that the cases above do not show.
    #[test]
    fn unknown_rules_remote_users_and_the_order_of_refusals() {
        let m = mute(Some(99));
        // The rule is not known (gone from the index between decision and look-up).
        assert_eq!(
            refused(&reconcile_account(&facts(None), "@a:x", Some(&m), None, &none())),
            Refusal::NotExact { entity: "?".into() }
        );
        // A remote user's entry (from an older configuration) is lifted, unless held.
        let remote = Entry { user_id: "@a:elsewhere".into(), ..entry(Phase::Applied, Some(99)) };
        let lift = |u: &str| vec![Action::Unsuspend { user_id: u.into() }];
        let f = facts(Some("@a:elsewhere"));
        assert_eq!(reconcile_account(&f, "@a:elsewhere", Some(&m), Some(&remote), &none()), lift("@a:elsewhere"));
        let held = AccountFacts { held: true, ..f };
        assert!(reconcile_account(&held, "@a:elsewhere", Some(&m), Some(&remote), &none()).is_empty());
        // hush's own account, suspended somehow: released like any refused account.
        let own = Entry { user_id: HUSH.into(), ..entry(Phase::Applied, Some(99)) };
        assert_eq!(reconcile_account(&facts(Some(HUSH)), HUSH, Some(&m), Some(&own), &none()), lift(HUSH));
        // A refusal with a held entry: nothing (neither a report nor a lift).
        let everything = AccountShield {
            shield: Shield { protected_user: true, management_moderator: true },
            protected_room: Some(("!r:x".into(), Refusal::Creator)),
        };
        let applied = entry(Phase::Applied, Some(99));
        let held = AccountFacts { held: true, ..facts(Some("@a:x")) };
        assert!(reconcile_account(&held, "@a:x", Some(&m), Some(&applied), &everything).is_empty());
        // The order: not exact, then hush itself, protected_users, the management room,
        // a protected room.
        assert!(matches!(
            refused(&reconcile_account(&facts(Some("@*:x")), HUSH, Some(&m), None, &everything)),
            Refusal::NotExact { .. }
        ));
        assert_eq!(refused(&reconcile_account(&facts(Some(HUSH)), HUSH, Some(&m), None, &everything)), Refusal::Itself);
        let exact = facts(Some("@a:x"));
        assert_eq!(refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &everything)), Refusal::ProtectedUser);
        let no_protected = AccountShield {
            shield: Shield { protected_user: false, management_moderator: true },
            ..everything.clone()
        };
        assert_eq!(
            refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &no_protected)),
            Refusal::ManagementModerator
        );
        let room_only = AccountShield { shield: Shield::default(), ..everything };
        assert_eq!(
            refused(&reconcile_account(&exact, "@a:x", Some(&m), None, &room_only)),
            Refusal::InRoom { room_id: "!r:x".into(), refusal: Box::new(Refusal::Creator) }
        );
        // A ban, a remote user or no rule with no entry: nothing at all, refused or not.
        let ban = wanted(Restriction::Ban, None, EntityKind::User);
        assert!(reconcile_account(&exact, "@a:x", Some(&ban), None, &room_only).is_empty());
        assert!(reconcile_account(&f, "@a:elsewhere", Some(&m), None, &room_only).is_empty());
        assert!(reconcile_account(&facts(None), "@a:x", None, None, &room_only).is_empty());
    }

    #[test]
    fn another_rule_updates_the_cause_and_a_ban_or_a_remote_user_lifts() {
        let f = facts(Some("@a:x"));
        let applied = entry(Phase::Applied, Some(99));
        let other = Wanted { rule: rule(EntityKind::User, "other"), ..mute(Some(99)) };
        assert!(matches!(
            &reconcile_account(&f, "@a:x", Some(&other), Some(&applied), &none())[..],
            [Action::UpdateCause { kind: Kind::Suspension, .. }]
        ));
        // A ban replaced the mute: the rooms ban, the account is released.
        let ban = wanted(Restriction::Ban, None, EntityKind::User);
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&ban), Some(&applied), &none()),
            vec![Action::Unsuspend { user_id: "@a:x".into() }]
        );
        // Held: nothing lifts, but what the loaded lists want still goes ahead.
        let held = AccountFacts { held: true, ..f };
        assert!(reconcile_account(&held, "@a:x", Some(&ban), Some(&applied), &none()).is_empty());
        let applying = entry(Phase::Applying, Some(99));
        assert_eq!(
            reconcile_account(&held, "@a:x", Some(&mute(Some(99))), Some(&applying), &none()),
            vec![Action::Resuspend { user_id: "@a:x".into() }]
        );
        // An entry that is not a suspension is not this account's.
        let ban_entry = Entry { kind: Kind::Ban, scope: Scope::Room("!r:x".into()), ..applied.clone() };
        assert_eq!(
            reconcile_account(&f, "@a:x", Some(&mute(None)), Some(&ban_entry), &none()),
            vec![Action::Suspend { user_id: "@a:x".into(), wanted: mute(None) }]
        );
    }
}
