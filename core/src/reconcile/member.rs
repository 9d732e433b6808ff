//! One member of one room: the mutes and bans that bring them to what the policy wants.

use super::{refusal, Action, Membership, MuteStrategy, Refusal, Restriction, RoomFacts, Shield, Wanted};
use crate::power_levels;
use crate::record::{Entry, Kind, Phase};

/// The actions that bring one member of one room to what the policy wants.
///
/// A user hush must never restrict ([`refusal`]) is treated as if no rule applied: nothing
/// new is done to them, what hush did before is lifted (a moderator promoted while muted
/// gets the mute lifted), and a [`Action::Refuse`] says why.
///
/// `applied` is hush's record for this user in this room; a suspension entry among them (an
/// account's, not the room's) is ignored.
pub fn reconcile_member(
    room: &RoomFacts<'_>,
    user_id: &str,
    membership: Membership,
    wanted: Option<&Wanted>,
    applied: &[Entry],
    shield: Shield,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted = wanted;
    let in_room = || applied.iter().filter(|e| e.kind != Kind::Suspension);
    if let Some(w) = wanted {
        if let Some(r) = refusal(room, user_id, shield) {
            let concerned =
                membership.is_present() || membership == Membership::LeaveMute || in_room().next().is_some();
            if concerned {
                actions.push(Action::Refuse {
                    user_id: user_id.to_owned(),
                    restriction: w.restriction,
                    refusal: r,
                    rule: w.rule.clone(),
                });
            }
            if in_room().any(|a| a.phase != Phase::Applied && !a.overridden) {
                // A change of hush's is not settled yet (the room does not show it, or shows
                // an older state): lifting now could forget the level to restore. Judge again
                // when the room says what happened.
                return actions;
            }
            wanted = None;
        }
    }
    let want = wanted.map(|w| w.restriction);
    ban_actions(room, user_id, membership, wanted.filter(|_| want == Some(Restriction::Ban)), applied, &mut actions);
    // A banned user's mute is left as it is: it is lifted when neither rule applies.
    if want != Some(Restriction::Ban) {
        mute_actions(room, user_id, membership, wanted, applied, &mut actions);
    }
    actions
}

fn ban_actions(
    room: &RoomFacts<'_>,
    user_id: &str,
    membership: Membership,
    wanted: Option<&Wanted>,
    applied: &[Entry],
    out: &mut Vec<Action>,
) {
    let entry = applied.iter().find(|a| a.kind == Kind::Ban);
    let user = || user_id.to_owned();
    match (wanted, entry) {
        (Some(w), Some(e)) => {
            if e.overridden {
                return;
            }
            match (e.phase, membership) {
                (Phase::Applied, Membership::Ban) => {
                    if e.rule != w.rule || e.expires_at_ms != w.expires_at_ms {
                        out.push(Action::UpdateCause { user_id: user(), kind: Kind::Ban, wanted: w.clone() });
                    }
                }
                (_, Membership::Ban) => out.push(Action::MarkApplied { user_id: user(), kind: Kind::Ban }),
                (Phase::Applied, _) => out.push(Action::MarkOverridden {
                    user_id: user(),
                    kind: Kind::Ban,
                    note: format!("{user_id} was unbanned by someone else; hush leaves it so"),
                }),
                // The ban (or its undo) was interrupted and the user is not banned: ban.
                (_, _) => out.push(Action::Ban { user_id: user(), wanted: w.clone() }),
            }
        }
        (Some(w), None) => {
            if !membership.is_present() && membership != Membership::LeaveMute {
                return;
            }
            let needed = power_levels::ban_level(room.power_levels);
            if !room.own_can(needed) {
                let own = room.own_level.unwrap_or(i64::MAX);
                out.push(Action::Refuse {
                    user_id: user(),
                    restriction: Restriction::Ban,
                    refusal: Refusal::CannotBan { needed, own },
                    rule: w.rule.clone(),
                });
                return;
            }
            out.push(Action::Ban { user_id: user(), wanted: w.clone() });
        }
        (None, Some(e)) => {
            if !e.overridden && membership == Membership::Ban {
                out.push(Action::Unban { user_id: user() });
            } else {
                out.push(Action::Forget { user_id: user(), kind: Kind::Ban });
            }
        }
        (None, None) => {}
    }
}

fn mute_actions(
    room: &RoomFacts<'_>,
    user_id: &str,
    membership: Membership,
    wanted: Option<&Wanted>,
    applied: &[Entry],
    out: &mut Vec<Action>,
) {
    let wanted = wanted.filter(|w| w.restriction == Restriction::Mute);
    let entry = applied.iter().find(|a| matches!(a.kind, Kind::MutePowerLevel | Kind::MuteMembership));
    match entry {
        Some(e) if e.kind == Kind::MutePowerLevel => pl_mute_with_entry(room, user_id, wanted, e, out),
        Some(e) => membership_mute_with_entry(user_id, membership, wanted, e, out),
        None => {
            let Some(w) = wanted else { return };
            if !membership.is_present() {
                return;
            }
            match room.strategy {
                MuteStrategy::Membership => {
                    if membership == Membership::Join {
                        out.push(Action::MuteMembership { user_id: user_id.to_owned(), wanted: w.clone() });
                    }
                }
                MuteStrategy::PowerLevel => {
                    let needed = power_levels::power_levels_send_level(room.power_levels);
                    if !room.own_can(needed) {
                        let own = room.own_level.unwrap_or(i64::MAX);
                        out.push(Action::Refuse {
                            user_id: user_id.to_owned(),
                            restriction: Restriction::Mute,
                            refusal: Refusal::CannotChangePowerLevels { needed, own },
                            rule: w.rule.clone(),
                        });
                        return;
                    }
                    let current = power_levels::user_level(room.power_levels, user_id);
                    if power_levels::is_muted_level(room.power_levels, current) {
                        // Already silenced by someone else: not hush's to undo later.
                        return;
                    }
                    out.push(Action::MutePowerLevel {
                        user_id: user_id.to_owned(),
                        level: power_levels::mute_level(room.power_levels),
                        previous: power_levels::user_entry(room.power_levels, user_id),
                        wanted: w.clone(),
                    });
                }
            }
        }
    }
}

fn pl_mute_with_entry(room: &RoomFacts<'_>, user_id: &str, wanted: Option<&Wanted>, e: &Entry, out: &mut Vec<Action>) {
    let user = || user_id.to_owned();
    let kind = Kind::MutePowerLevel;
    let current = power_levels::user_entry(room.power_levels, user_id);
    let in_force = current.is_some() && current == e.applied_level;
    if e.overridden {
        if wanted.is_none() {
            out.push(Action::Forget { user_id: user(), kind });
        }
        return;
    }
    match wanted {
        Some(w) => match e.phase {
            Phase::Applied if in_force => {
                if e.rule != w.rule || e.expires_at_ms != w.expires_at_ms {
                    out.push(Action::UpdateCause { user_id: user(), kind, wanted: w.clone() });
                }
            }
            Phase::Applied => out.push(Action::MarkOverridden {
                user_id: user(),
                kind,
                note: format!(
                    "the power level of {user_id} was changed to {} while hush's mute was on; hush leaves it so",
                    current.map_or("the default".to_owned(), |l| l.to_string())
                ),
            }),
            _ if in_force => out.push(Action::MarkApplied { user_id: user(), kind }),
            // Interrupted before the level changed, or while lifting: mute again, keeping the
            // level recorded before the first attempt.
            _ => out.push(Action::MutePowerLevel {
                user_id: user(),
                level: power_levels::mute_level(room.power_levels),
                previous: e.previous_level,
                wanted: w.clone(),
            }),
        },
        None => {
            if in_force {
                out.push(Action::UnmutePowerLevel { user_id: user(), restore: e.previous_level });
            } else if e.phase == Phase::Applied && current != e.previous_level {
                out.push(Action::MarkOverridden {
                    user_id: user(),
                    kind,
                    note: format!(
                        "the mute of {user_id} ended, but a moderator had changed their power level meanwhile; hush leaves it"
                    ),
                });
                out.push(Action::Forget { user_id: user(), kind });
            } else {
                // Never applied, or already restored.
                out.push(Action::Forget { user_id: user(), kind });
            }
        }
    }
}

fn membership_mute_with_entry(
    user_id: &str,
    membership: Membership,
    wanted: Option<&Wanted>,
    e: &Entry,
    out: &mut Vec<Action>,
) {
    let user = || user_id.to_owned();
    let kind = Kind::MuteMembership;
    let in_force = matches!(membership, Membership::Mute | Membership::LeaveMute);
    if e.overridden {
        if wanted.is_none() {
            out.push(Action::Forget { user_id: user(), kind });
        }
        return;
    }
    match wanted {
        Some(w) => match e.phase {
            Phase::Applied if in_force => {
                if e.rule != w.rule || e.expires_at_ms != w.expires_at_ms {
                    out.push(Action::UpdateCause { user_id: user(), kind, wanted: w.clone() });
                }
            }
            // A ban replaced the mute's membership and is being lifted (while it is wanted
            // this is not reached), or the member is gone without `leave-mute`: not someone's
            // decision to unmute. Forgotten, so a member who comes back is muted again.
            Phase::Applied if !membership.is_present() => out.push(Action::Forget { user_id: user(), kind }),
            Phase::Applied => out.push(Action::MarkOverridden {
                user_id: user(),
                kind,
                note: format!("{user_id} was unmuted by someone else; hush leaves it so"),
            }),
            _ if in_force => out.push(Action::MarkApplied { user_id: user(), kind }),
            _ if membership == Membership::Join => {
                out.push(Action::MuteMembership { user_id: user(), wanted: w.clone() })
            }
            _ => out.push(Action::Forget { user_id: user(), kind }),
        },
        None => match membership {
            Membership::Mute => out.push(Action::UnmuteMembership { user_id: user(), to: Membership::Join }),
            Membership::LeaveMute => out.push(Action::UnmuteMembership { user_id: user(), to: Membership::Leave }),
            _ => out.push(Action::Forget { user_id: user(), kind }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EntityKind, RuleId};
    use crate::record::Scope;
    use serde_json::{json, Value};

    const HUSH: &str = "@hush:x";

    fn facts<'a>(pl: &'a Value, creators: &'a [String], strategy: MuteStrategy) -> RoomFacts<'a> {
        RoomFacts {
            room_id: "!r",
            strategy,
            power_levels: pl,
            creators,
            creators_privileged: false,
            own_user: HUSH,
            own_level: Some(100),
        }
    }

    fn pl() -> Value {
        json!({"users": {HUSH: 100, "@ten:x": 10, "@mod:x": 100}, "users_default": 0, "events_default": 0})
    }

    fn rule(key: &str) -> RuleId {
        RuleId { room_id: "!list:x".into(), kind: EntityKind::User, state_key: key.into() }
    }

    fn mute(expiry: Option<u64>) -> Wanted {
        Wanted { restriction: Restriction::Mute, expires_at_ms: expiry, rule: rule("rule-1"), reason: "spam".into() }
    }

    fn ban() -> Wanted {
        Wanted { restriction: Restriction::Ban, expires_at_ms: None, rule: rule("rule-b"), reason: "spam".into() }
    }

    fn applied(kind: Kind, phase: Phase, previous: Option<i64>) -> Entry {
        Entry {
            scope: Scope::Room("!r".into()),
            user_id: "@a:x".into(),
            kind,
            phase,
            previous_level: previous,
            applied_level: Some(-1),
            rule: rule("rule-1"),
            reason: "spam".into(),
            applied_at_ms: 1,
            expires_at_ms: None,
            overridden: false,
            event_ids: Vec::new(),
        }
    }

    #[test]
    fn mutes_by_power_level_remembering_the_previous_entry() {
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(&room, "@ten:x", Membership::Join, Some(&mute(None)), &[], Shield::default());
        assert_eq!(
            a,
            vec![Action::MutePowerLevel {
                user_id: "@ten:x".into(),
                level: -1,
                previous: Some(10),
                wanted: mute(None)
            }]
        );
        let a = reconcile_member(&room, "@new:x", Membership::Join, Some(&mute(None)), &[], Shield::default());
        assert!(matches!(&a[..], [Action::MutePowerLevel { previous: None, level: -1, .. }]));
    }

    #[test]
    fn lifts_to_exactly_the_previous_entry() {
        let mut pl = pl();
        pl["users"]["@ten:x"] = json!(-1);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let e = applied(Kind::MutePowerLevel, Phase::Applied, Some(10));
        let a = reconcile_member(&room, "@ten:x", Membership::Join, None, &[e], Shield::default());
        assert_eq!(a, vec![Action::UnmutePowerLevel { user_id: "@ten:x".into(), restore: Some(10) }]);
    }

    #[test]
    fn a_moderators_change_during_the_mute_is_respected() {
        let mut pl = pl();
        pl["users"]["@ten:x"] = json!(25);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let e = applied(Kind::MutePowerLevel, Phase::Applied, Some(10));
        let a = reconcile_member(
            &room,
            "@ten:x",
            Membership::Join,
            Some(&mute(None)),
            std::slice::from_ref(&e),
            Shield::default(),
        );
        assert!(matches!(&a[..], [Action::MarkOverridden { .. }]), "{a:?}");
        let a = reconcile_member(&room, "@ten:x", Membership::Join, None, &[e], Shield::default());
        assert!(matches!(&a[..], [Action::MarkOverridden { .. }, Action::Forget { .. }]), "{a:?}");
    }

    #[test]
    fn crash_recovery_of_interrupted_changes() {
        let applying = applied(Kind::MutePowerLevel, Phase::Applying, None);
        // Crashed before the event went out: apply again with the recorded previous entry.
        let pl0 = pl();
        let room = facts(&pl0, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(
            &room,
            "@new:x",
            Membership::Join,
            Some(&mute(None)),
            std::slice::from_ref(&applying),
            Shield::default(),
        );
        assert!(matches!(&a[..], [Action::MutePowerLevel { previous: None, .. }]), "{a:?}");
        // Crashed after it went out: just record it.
        let mut pl1 = pl();
        pl1["users"]["@new:x"] = json!(-1);
        let room = facts(&pl1, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(
            &room,
            "@new:x",
            Membership::Join,
            Some(&mute(None)),
            std::slice::from_ref(&applying),
            Shield::default(),
        );
        assert!(matches!(&a[..], [Action::MarkApplied { .. }]), "{a:?}");
        // The rule expired while down and the mute is in force: restore.
        let a = reconcile_member(
            &room,
            "@new:x",
            Membership::Join,
            None,
            std::slice::from_ref(&applying),
            Shield::default(),
        );
        assert_eq!(a, vec![Action::UnmutePowerLevel { user_id: "@new:x".into(), restore: None }]);
        // Interrupted while lifting, and the lift went through: forget.
        let lifting = applied(Kind::MutePowerLevel, Phase::Lifting, None);
        let room = facts(&pl0, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(&room, "@new:x", Membership::Join, None, &[lifting], Shield::default());
        assert!(matches!(&a[..], [Action::Forget { .. }]), "{a:?}");
    }

    #[test]
    fn refusals() {
        let pl = pl();
        let creators = vec!["@creator:x".to_owned()];
        let room = facts(&pl, &creators, MuteStrategy::PowerLevel);
        let w = mute(None);
        let refusal = |user: &str, shield: Shield| match &reconcile_member(
            &room,
            user,
            Membership::Join,
            Some(&w),
            &[],
            shield,
        )[..]
        {
            [Action::Refuse { refusal, .. }] => refusal.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(refusal(HUSH, Shield::default()), Refusal::Itself);
        assert_eq!(refusal("@creator:x", Shield::default()), Refusal::Creator);
        let none = Shield::default();
        assert_eq!(refusal("@a:x", Shield { protected_user: true, ..none }), Refusal::ProtectedUser);
        assert_eq!(refusal("@a:x", Shield { management_moderator: true, ..none }), Refusal::ManagementModerator);
        assert_eq!(refusal("@mod:x", none), Refusal::RoomModerator { level: 100, moderator_level: 50 });
        // Only where moderators need more than hush has does hush's own level decide.
        let mut high = pl.clone();
        high["kick"] = json!(100);
        high["ban"] = json!(100);
        high["redact"] = json!(100);
        high["users"][HUSH] = json!(60);
        high["users"]["@a:x"] = json!(70);
        let r = RoomFacts { power_levels: &high, own_level: Some(60), ..room.clone() };
        assert_eq!(super::refusal(&r, "@a:x", none), Some(Refusal::NotBelowHush { target: 70, own: 60 }));
        let weak = RoomFacts { own_level: Some(20), ..room.clone() };
        let a = reconcile_member(&weak, "@a:x", Membership::Join, Some(&w), &[], Shield::default());
        assert!(
            matches!(
                &a[..],
                [Action::Refuse { refusal: Refusal::CannotChangePowerLevels { needed: 50, own: 20 }, .. }]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn creators_of_every_room_version_are_never_restricted() {
        // Room versions 1-11: the creator has an ordinary `users` entry (or none at all).
        let pl = json!({"users": {HUSH: 100}, "users_default": 0});
        let creators = vec!["@founder:x".to_owned()];
        let room = facts(&pl, &creators, MuteStrategy::PowerLevel);
        for w in [mute(None), ban()] {
            let a = reconcile_member(&room, "@founder:x", Membership::Join, Some(&w), &[], Shield::default());
            assert!(matches!(&a[..], [Action::Refuse { refusal: Refusal::Creator, .. }]), "{a:?}");
        }
    }

    #[test]
    fn room_moderators_by_custom_kick_ban_or_redact_levels() {
        let pl = json!({"users": {HUSH: 100, "@helper:x": 20, "@member:x": 19}, "kick": 20, "ban": 80, "redact": 60});
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(&room, "@helper:x", Membership::Join, Some(&ban()), &[], Shield::default());
        assert_eq!(
            a,
            vec![Action::Refuse {
                user_id: "@helper:x".into(),
                restriction: Restriction::Ban,
                refusal: Refusal::RoomModerator { level: 20, moderator_level: 20 },
                rule: rule("rule-b"),
            }]
        );
        let a = reconcile_member(&room, "@member:x", Membership::Join, Some(&ban()), &[], Shield::default());
        assert!(matches!(&a[..], [Action::Ban { .. }]), "{a:?}");
        // A refused user who is not in the room is not worth a report.
        assert!(
            reconcile_member(&room, "@helper:x", Membership::Leave, Some(&ban()), &[], Shield::default()).is_empty()
        );
    }

    #[test]
    fn a_moderator_promoted_during_a_restriction_gets_it_lifted() {
        // Muted by membership, then made a moderator of the management room: lifted.
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::Membership);
        let e = applied(Kind::MuteMembership, Phase::Applied, None);
        let shield = Shield { management_moderator: true, ..Shield::default() };
        let a = reconcile_member(&room, "@a:x", Membership::Mute, Some(&mute(None)), std::slice::from_ref(&e), shield);
        assert_eq!(
            a,
            vec![
                Action::Refuse {
                    user_id: "@a:x".into(),
                    restriction: Restriction::Mute,
                    refusal: Refusal::ManagementModerator,
                    rule: rule("rule-1"),
                },
                Action::UnmuteMembership { user_id: "@a:x".into(), to: Membership::Join },
            ]
        );
        // Banned by hush, then given a moderator's level in the room: unbanned.
        let mut pl = pl;
        pl["users"]["@b:x"] = json!(50);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let e = Entry { applied_level: None, ..applied(Kind::Ban, Phase::Applied, None) };
        let a = reconcile_member(&room, "@b:x", Membership::Ban, Some(&ban()), &[e], Shield::default());
        assert!(matches!(&a[..], [Action::Refuse { .. }, Action::Unban { .. }]), "{a:?}");
        // Muted by power level, then promoted to 50 by a moderator: their level stands,
        // and hush forgets its mute instead of restoring the old level over the promotion.
        pl["users"]["@c:x"] = json!(50);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let e = applied(Kind::MutePowerLevel, Phase::Applied, Some(0));
        let a = reconcile_member(&room, "@c:x", Membership::Join, Some(&mute(None)), &[e], Shield::default());
        assert!(
            matches!(&a[..], [Action::Refuse { .. }, Action::MarkOverridden { .. }, Action::Forget { .. }]),
            "{a:?}"
        );
    }

    #[test]
    fn a_refusal_never_forgets_an_unsettled_change() {
        // hush's mute is on its way (Applying, previous 10) and the room view is an older
        // state in which the user outranks hush: refuse, but keep the record.
        let pl = json!({"users": {HUSH: 0}, "users_default": 0});
        let room = RoomFacts { own_level: Some(0), ..facts(&pl, &[], MuteStrategy::PowerLevel) };
        let e = applied(Kind::MutePowerLevel, Phase::Applying, Some(10));
        let a = reconcile_member(&room, "@a:x", Membership::Join, Some(&mute(None)), &[e], Shield::default());
        assert!(
            matches!(&a[..], [Action::Refuse { refusal: Refusal::NotBelowHush { target: 0, own: 0 }, .. }]),
            "{a:?}"
        );
    }

    #[test]
    fn an_accounts_suspension_entry_is_not_the_rooms() {
        // A refused user who left, with only their account's unsettled suspension on
        // record: nothing in this room to report or to keep.
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let suspension = Entry { scope: Scope::Account, ..applied(Kind::Suspension, Phase::Applying, None) };
        let shield = Shield { protected_user: true, ..Shield::default() };
        let a = reconcile_member(&room, "@a:x", Membership::Leave, Some(&mute(None)), &[suspension], shield);
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn a_creator_bot_can_restrict_anyone_but_creators() {
        let mut pl = pl();
        pl["kick"] = json!(100);
        pl["ban"] = json!(100);
        pl["redact"] = json!(100);
        pl["users"]["@high:x"] = json!(99);
        let creators = vec![HUSH.to_owned(), "@other-creator:x".to_owned()];
        let room =
            RoomFacts { own_level: None, creators_privileged: true, ..facts(&pl, &creators, MuteStrategy::PowerLevel) };
        let a = reconcile_member(&room, "@high:x", Membership::Join, Some(&mute(None)), &[], Shield::default());
        assert!(matches!(&a[..], [Action::MutePowerLevel { .. }]), "{a:?}");
        let a = reconcile_member(&room, "@other-creator:x", Membership::Join, Some(&ban()), &[], Shield::default());
        assert!(matches!(&a[..], [Action::Refuse { refusal: Refusal::Creator, .. }]), "{a:?}");
    }

    #[test]
    fn someone_elses_mute_is_not_taken_over() {
        let mut pl = pl();
        pl["users"]["@a:x"] = json!(-10);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        assert!(reconcile_member(&room, "@a:x", Membership::Join, Some(&mute(None)), &[], Shield::default()).is_empty());
    }

    #[test]
    fn rule_change_updates_the_cause_only() {
        let mut pl = pl();
        pl["users"]["@a:x"] = json!(-1);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let e = applied(Kind::MutePowerLevel, Phase::Applied, None);
        let longer = mute(Some(5_000));
        let a = reconcile_member(&room, "@a:x", Membership::Join, Some(&longer), &[e], Shield::default());
        assert_eq!(a, vec![Action::UpdateCause { user_id: "@a:x".into(), kind: Kind::MutePowerLevel, wanted: longer }]);
    }

    #[test]
    fn membership_strategy_follows_msc3909() {
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::Membership);
        let a = reconcile_member(&room, "@a:x", Membership::Join, Some(&mute(None)), &[], Shield::default());
        assert!(matches!(&a[..], [Action::MuteMembership { .. }]));
        let e = applied(Kind::MuteMembership, Phase::Applied, None);
        let a = reconcile_member(&room, "@a:x", Membership::Mute, None, std::slice::from_ref(&e), Shield::default());
        assert_eq!(a, vec![Action::UnmuteMembership { user_id: "@a:x".into(), to: Membership::Join }]);
        let a =
            reconcile_member(&room, "@a:x", Membership::LeaveMute, None, std::slice::from_ref(&e), Shield::default());
        assert_eq!(a, vec![Action::UnmuteMembership { user_id: "@a:x".into(), to: Membership::Leave }]);
        let a = reconcile_member(&room, "@a:x", Membership::Join, Some(&mute(None)), &[e], Shield::default());
        assert!(matches!(&a[..], [Action::MarkOverridden { .. }]));
    }

    #[test]
    fn bans_and_unbans_only_its_own() {
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let a = reconcile_member(&room, "@a:x", Membership::Join, Some(&ban()), &[], Shield::default());
        assert_eq!(a, vec![Action::Ban { user_id: "@a:x".into(), wanted: ban() }]);
        // Banned by someone else: not hush's.
        assert!(reconcile_member(&room, "@a:x", Membership::Ban, None, &[], Shield::default()).is_empty());
        let e = Entry { kind: Kind::Ban, applied_level: None, ..applied(Kind::Ban, Phase::Applied, None) };
        let a = reconcile_member(&room, "@a:x", Membership::Ban, None, std::slice::from_ref(&e), Shield::default());
        assert_eq!(a, vec![Action::Unban { user_id: "@a:x".into() }]);
        // A moderator unbanned while the rule holds: respected.
        let a = reconcile_member(&room, "@a:x", Membership::Leave, Some(&ban()), &[e], Shield::default());
        assert!(matches!(&a[..], [Action::MarkOverridden { .. }]));
    }

    #[test]
    fn ban_keeps_an_existing_mute_until_neither_applies() {
        let mut pl = pl();
        pl["users"]["@a:x"] = json!(-1);
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        let m = applied(Kind::MutePowerLevel, Phase::Applied, None);
        let a = reconcile_member(
            &room,
            "@a:x",
            Membership::Join,
            Some(&ban()),
            std::slice::from_ref(&m),
            Shield::default(),
        );
        assert_eq!(a, vec![Action::Ban { user_id: "@a:x".into(), wanted: ban() }]);
    }

    #[test]
    fn absent_members_are_left_alone() {
        let pl = pl();
        let room = facts(&pl, &[], MuteStrategy::PowerLevel);
        assert!(
            reconcile_member(&room, "@a:x", Membership::Leave, Some(&mute(None)), &[], Shield::default()).is_empty()
        );
        assert!(reconcile_member(&room, "@a:x", Membership::Ban, Some(&ban()), &[], Shield::default()).is_empty());
    }
}
