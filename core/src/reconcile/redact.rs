//! Which new restrictions also redact the member's recent events: the redaction planned next to a ban (and, if asked, a mute).

use super::Action;

/// When hush redacts a restricted member's recent events in a room (the config's `redaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactPolicy {
    /// A new ban redacts.
    pub on_ban: bool,
    /// A new mute redacts.
    pub on_mute: bool,
    /// How far back: events sent within this many milliseconds before the restriction.
    pub window_ms: u64,
    /// The most events redacted in one room for one restriction.
    pub max_per_room: u32,
}

impl RedactPolicy {
    /// Never redacts on a restriction (the `redact` command still works, with this window and cap).
    pub const OFF: RedactPolicy =
        RedactPolicy { on_ban: false, on_mute: false, window_ms: 86_400_000, max_per_room: 100 };

    /// The start of the window for a redaction asked for at `now_ms`.
    pub fn since(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.window_ms)
    }
}

/// Adds, after each ban (and mute, with [`RedactPolicy::on_mute`]) in one member's actions, the
/// redaction of their recent events: the same plan, so what refuses or holds the
/// restriction (no `Ban` planned) redacts nothing, and the dry run reports it. A ban sent
/// again after a crash plans it again (the redaction is resumable: events already redacted
/// are skipped). At most one redaction per member and room.
pub fn plan_redactions(actions: &mut Vec<Action>, policy: &RedactPolicy, now_ms: u64) {
    let cause = actions.iter().find_map(|a| match a {
        Action::Ban { user_id, wanted } if policy.on_ban => Some((user_id, wanted)),
        Action::MutePowerLevel { user_id, wanted, .. } | Action::MuteMembership { user_id, wanted }
            if policy.on_mute =>
        {
            Some((user_id, wanted))
        }
        _ => None,
    });
    let Some((user_id, wanted)) = cause else { return };
    if actions.iter().any(|a| matches!(a, Action::Redact { .. })) {
        return;
    }
    let redact = Action::Redact {
        user_id: user_id.clone(),
        since_ms: policy.since(now_ms),
        limit: policy.max_per_room,
        rule: wanted.rule.clone(),
        reason: wanted.reason.clone(),
        event_ids: Vec::new(),
    };
    actions.push(redact);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EntityKind, RuleId};
    use crate::reconcile::{Refusal, Restriction, Wanted};

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 86_400_000;

    fn wanted(restriction: Restriction) -> Wanted {
        Wanted {
            restriction,
            expires_at_ms: None,
            rule: RuleId { room_id: "!list:x".into(), kind: EntityKind::User, state_key: "r".into() },
            reason: "spam".into(),
        }
    }

    fn policy(on_ban: bool, on_mute: bool) -> RedactPolicy {
        RedactPolicy { on_ban, on_mute, window_ms: DAY, max_per_room: 50 }
    }

    fn redact() -> Action {
        let w = wanted(Restriction::Ban);
        Action::Redact {
            user_id: "@s:x".into(),
            since_ms: NOW - DAY,
            limit: 50,
            rule: w.rule,
            reason: w.reason,
            event_ids: vec![],
        }
    }

    #[test]
    fn a_ban_redacts_the_window_up_to_the_cap() {
        let mut actions = vec![Action::Ban { user_id: "@s:x".into(), wanted: wanted(Restriction::Ban) }];
        plan_redactions(&mut actions, &policy(true, false), NOW);
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[1], redact());
        // Planned twice in one input, still one redaction.
        plan_redactions(&mut actions, &policy(true, false), NOW);
        assert_eq!(actions.len(), 2);
    }

    #[test]
    fn mutes_redact_only_when_asked() {
        let mute = || Action::MuteMembership { user_id: "@s:x".into(), wanted: wanted(Restriction::Mute) };
        let mut actions = vec![mute()];
        plan_redactions(&mut actions, &policy(true, false), NOW);
        assert_eq!(actions, vec![mute()]);
        plan_redactions(&mut actions, &policy(true, true), NOW);
        assert!(matches!(actions.last(), Some(Action::Redact { .. })));
    }

    #[test]
    fn refusals_lifts_and_bookkeeping_redact_nothing() {
        let w = wanted(Restriction::Ban);
        let before = vec![
            Action::Refuse {
                user_id: "@s:x".into(),
                restriction: Restriction::Ban,
                refusal: Refusal::ProtectedUser,
                rule: w.rule.clone(),
            },
            Action::Unban { user_id: "@s:x".into() },
            Action::MarkApplied { user_id: "@s:x".into(), kind: crate::record::Kind::Ban },
            Action::UpdateCause { user_id: "@s:x".into(), kind: crate::record::Kind::Ban, wanted: w },
        ];
        let mut actions = before.clone();
        plan_redactions(&mut actions, &policy(true, true), NOW);
        assert_eq!(actions, before);
        let mut ban = vec![Action::Ban { user_id: "@s:x".into(), wanted: wanted(Restriction::Ban) }];
        plan_redactions(&mut ban, &RedactPolicy::OFF, NOW);
        assert_eq!(ban.len(), 1, "redaction off: the ban alone");
    }
}
