//! The mention-spam protection in the engine (owns no state: its settings are in `protections`): a message mentioning too many users, or `@room` without the room's `notifications.room` level, mutes its sender and redacts the message.
//!
//! The mute is [`Engine::protection_mute`] (escalation shared with flood protection);
//! the redaction is a planned [`Action::Redact`] of exactly the messages that tripped,
//! judged by the guard and carried out (or, in dry run, reported) by the consequences,
//! with its ledger entry, like every redaction.

use std::collections::BTreeMap;

use hush_core::mentions::{room_notification_level, trips, Message, Tripped};
use hush_core::policy::RuleId;
use hush_core::power_levels::user_level;
use hush_core::reconcile::{refusal, Action};
use hush_core::schedule::Clock;
use tracing::info;

use super::protections::Protection;
use super::Engine;
use crate::enforce::RoomWriter;

/// One sender's trip in an input: the rule their mute is under (None: hush never
/// restricts them), the messages to redact (id, time), and what tripped.
struct Trip {
    rule: Option<RuleId>,
    events: Vec<(String, u64)>,
    what: String,
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Messages of a protected room that mention someone (sync drops the others): each
    /// that trips the protection mutes its sender (once per input) and is redacted.
    pub(super) fn mentions(&mut self, room_id: &str, messages: Vec<Message>) {
        if !self.watches(Protection::MentionSpam, room_id) {
            return;
        }
        let Some(settings) = self.protections.mention_spam.clone() else { return };
        let mut tripped: BTreeMap<String, Trip> = BTreeMap::new();
        for m in messages {
            if m.sender == self.cfg.own_user {
                continue;
            }
            let Some(Some(state)) = self.view.rooms.get(room_id) else { return };
            let may_notify = user_level(&state.power_levels, &m.sender) >= room_notification_level(&state.power_levels)
                || state.creators.iter().any(|c| c == &m.sender);
            let Some(why) = trips(m.mentioned, settings.max_mentions, may_notify) else { continue };
            let what = match why {
                Tripped::Users(n) => format!("a message mentioning {n} users"),
                Tripped::Room => "@room without the power level to notify the room".to_owned(),
            };
            if let Some(trip) = tripped.get_mut(&m.sender) {
                // Muted once per input: a burst in one sync is one trigger.
                trip.events.push((m.event_id, m.ts));
                continue;
            }
            let rule = self.protection_mute(Protection::MentionSpam, room_id, &m.sender, &what, settings.mute_ms);
            tripped.insert(m.sender, Trip { rule, events: vec![(m.event_id, m.ts)], what });
        }
        if !settings.redact {
            return;
        }
        for (user, Trip { rule, events, what }) in tripped {
            let Some(rule) = rule else { continue };
            self.plan_message_redaction(room_id, &user, rule, events, &what);
        }
    }

    /// Plans the redaction of `events` of `user` in `room_id` (after their mute, in the
    /// same plan), unless hush may not act on them there.
    fn plan_message_redaction(
        &mut self,
        room_id: &str,
        user: &str,
        rule: RuleId,
        events: Vec<(String, u64)>,
        what: &str,
    ) {
        let Some(Some(state)) = self.view.rooms.get(room_id) else { return };
        if let Some(why) = refusal(&self.facts(state), user, self.shield(user)) {
            info!(room = room_id, user, "not redacting the message that tripped mention spam: {why}");
            return;
        }
        let since_ms = events.iter().map(|(_, ts)| *ts).min().unwrap_or(0);
        let action = Action::Redact {
            user_id: user.to_owned(),
            since_ms,
            limit: events.len().try_into().unwrap_or(u32::MAX),
            rule,
            reason: format!("mention spam: {what}"),
            event_ids: events.into_iter().map(|(id, _)| id).collect(),
        };
        self.guard.plan.entry((room_id.to_owned(), user.to_owned())).or_default().push(action);
    }
}
