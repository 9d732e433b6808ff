//! The engine side of the protections: the flood counters and escalation (core's `protections`), where each protection watches and publishes, the escalation memory and the local rules store a trigger writes to.
//!
//! Every protection ends in [`Engine::protection_mute`]: a mute rule with an expiry,
//! written to the local list (or, with `publish`, to the default policy list), that
//! enters the same index and reconcile as any list rule.

use std::collections::HashMap;

use hush_core::policy::{EntityKind, RuleId};
use hush_core::protections::{Escalation, EscalationLimits, Flood, FloodLimits, Trigger, Watched};
use hush_core::schedule::Clock;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::Engine;
use crate::enforce::RoomWriter;
use crate::escalation_memory::{EscalationMemory, Record};
use crate::local_rules::{LocalRules, LOCAL_LIST};

/// The protections' state, owned by the engine.
#[derive(Debug, Default)]
pub(super) struct Protections {
    /// The flood counters and the base mute length (ms), when flood protection is on.
    flood: Option<(Flood, u64)>,
    flood_reach: ProtectionReach,
    /// The mention-spam settings, when it is on.
    pub(super) mention_spam: Option<MentionSettings>,
    escalation: Option<Escalation>,
    /// Where escalation records are kept across restarts (`None`: memory only).
    memory: Option<EscalationMemory>,
    /// Aliases named in `rooms` or as the list to publish to, as they resolved.
    resolved: HashMap<String, String>,
    /// Where triggered rules are kept (`None`: no local list, as in most engine tests).
    pub(super) local: Option<LocalRules>,
}

/// A protection: what names its rules and its notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protection {
    Flood,
    MentionSpam,
}

impl Protection {
    /// The state key of its mute rule for `user`: `hush.flood:@u:x`, `hush.mention:@u:x`.
    pub(super) fn state_key(self, user: &str) -> String {
        match self {
            Protection::Flood => format!("hush.flood:{user}"),
            Protection::MentionSpam => format!("hush.mention:{user}"),
        }
    }

    /// Its name in notices and reasons.
    pub(super) fn name(self) -> &'static str {
        match self {
            Protection::Flood => "flood protection",
            Protection::MentionSpam => "mention spam",
        }
    }
}

/// A local rule a protection (or an undo) wants written, with what to tell the management
/// room (empty: nothing, the command's reply says it).
pub(super) struct LocalMute {
    pub(super) user: String,
    pub(super) event: Value,
    pub(super) notice: String,
}

/// Where a protection acts and where its mutes go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectionReach {
    /// The protected rooms it watches, as configured (ids or aliases); `None`: all.
    pub rooms: Option<Vec<String>>,
    /// The policy list its mutes are published to (id or alias); `None`: the local list.
    pub publish_to: Option<String>,
}

/// The mention-spam protection's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionSettings {
    /// More distinct users than this in one message trips it.
    pub max_mentions: u32,
    /// The base mute length (ms).
    pub mute_ms: u64,
    /// The message that tripped it is redacted.
    pub redact: bool,
    pub reach: ProtectionReach,
}

/// The protections' settings, from the configuration.
#[derive(Debug, Clone)]
pub struct ProtectionSettings {
    pub flood: Option<(FloodLimits, u64)>,
    pub escalation: EscalationLimits,
    /// Where flood protection acts and where its mutes go.
    pub flood_reach: ProtectionReach,
    pub mention_spam: Option<MentionSettings>,
}

/// "10 min", "3 s", "1 h 30 min": a mute length for a notice.
fn words(ms: u64) -> String {
    hush_core::commands::format_duration(std::time::Duration::from_millis(ms.div_ceil(1000) * 1000))
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Turns the protections on, with the local rules read from disk.
    pub fn with_protections(mut self, settings: ProtectionSettings, local: LocalRules) -> Self {
        self.set_protections(settings, local);
        self
    }

    /// [`Engine::with_protections`] on a built engine (tests).
    pub fn set_protections(&mut self, settings: ProtectionSettings, local: LocalRules) {
        self.protections = Protections {
            flood: settings.flood.map(|(limits, base)| (Flood::new(limits), base)),
            flood_reach: settings.flood_reach,
            mention_spam: settings.mention_spam,
            escalation: Some(Escalation::new(Some(settings.escalation))),
            memory: None,
            resolved: HashMap::new(),
            local: Some(local),
        };
    }

    /// Keeps escalation records in `memory`, starting from `records` (read from it at start).
    pub fn with_escalation_memory(mut self, memory: EscalationMemory, records: Vec<Record>) -> Self {
        self.set_escalation_memory(memory, records);
        self
    }

    /// [`Engine::with_escalation_memory`] on a built engine (tests).
    pub fn set_escalation_memory(&mut self, memory: EscalationMemory, records: Vec<Record>) {
        if let Some(e) = &mut self.protections.escalation {
            e.restore(records.into_iter().map(|r| (r.user, r.at_ms, r.mute_ms)));
        }
        self.protections.memory = Some(memory);
    }

    /// Loads the local rules into the index as the list [`LOCAL_LIST`] (at start).
    pub(crate) fn load_local_rules(&mut self) {
        let Some(local) = &self.protections.local else { return };
        let events = local.events();
        self.handle(super::Input::ListLoaded { room_id: LOCAL_LIST.to_owned(), events });
    }

    /// An alias named in the protections' settings resolved to `room_id`.
    pub(super) fn protection_room_resolved(&mut self, alias: String, room_id: String) {
        self.protections.resolved.insert(alias, room_id);
    }

    /// The rooms a protection watches, in room ids (aliases not resolved yet: not watched).
    fn watched(&self, reach: &ProtectionReach) -> Watched {
        let Some(rooms) = &reach.rooms else { return Watched::All };
        let ids = rooms.iter().filter_map(|r| match r.starts_with('!') {
            true => Some(r.clone()),
            false => self.protections.resolved.get(r).cloned(),
        });
        Watched::Only(ids.collect())
    }

    /// Whether `protection` acts in `room_id`: a loaded protected room it watches.
    pub(super) fn watches(&self, protection: Protection, room_id: &str) -> bool {
        if !matches!(self.view.rooms.get(room_id), Some(Some(_))) {
            return false;
        }
        let reach = match protection {
            Protection::Flood => &self.protections.flood_reach,
            Protection::MentionSpam => match &self.protections.mention_spam {
                Some(m) => &m.reach,
                None => return false,
            },
        };
        self.watched(reach).watches(room_id)
    }

    /// Counts events of members in a protected room; a flood mutes its sender.
    pub(super) fn activity(&mut self, room_id: &str, events: Vec<(String, u64)>) {
        if !self.watches(Protection::Flood, room_id) {
            return;
        }
        let now = self.now();
        let Some((flood, base)) = &mut self.protections.flood else { return };
        let base = *base;
        let mut tripped: Vec<(String, Trigger)> = Vec::new();
        for (user, ts) in events {
            if user == self.cfg.own_user {
                continue;
            }
            if let Some(t) = flood.observe(room_id, &user, ts, now) {
                tripped.push((user, t));
            }
        }
        for (user, trigger) in tripped {
            let what = format!("{} messages in {}", trigger.events, words(trigger.span_ms.max(1)));
            self.protection_mute(Protection::Flood, room_id, &user, &what, base);
        }
    }

    /// Mutes `user` for tripping `protection` in `room_id` (`what` says how): the base
    /// length `base` escalated, as a rule with an expiry in the local list or, with
    /// `publish`, in the default policy list. The rule the mute is under, or `None` when
    /// hush never restricts this user.
    pub(super) fn protection_mute(
        &mut self,
        protection: Protection,
        room_id: &str,
        user: &str,
        what: &str,
        base: u64,
    ) -> Option<RuleId> {
        if let Some(why) = self.exemption(user) {
            info!(
                room = room_id,
                user,
                "{} tripped by a user hush never restricts: ignored ({why})",
                protection.name()
            );
            return None;
        }
        let now = self.now();
        let length = match &mut self.protections.escalation {
            Some(e) => e.mute_for(user, base, now),
            None => base,
        };
        self.remember_escalation();
        let reason = format!("{}: {what} in {room_id}", protection.name());
        let state_key = protection.state_key(user);
        let content = json!({"entity": user, "recommendation": "m.mute", "reason": reason, "expiry": now + length});
        let event = json!({"type": "m.policy.rule.user", "state_key": state_key, "sender": self.cfg.own_user, "content": content});
        let notice = format!("Muted {user} for {} in {room_id}: {what} ({}).", words(length), protection.name());
        let consequences = self.consequences.clone();
        let publish_to = match protection {
            Protection::Flood => self.protections.flood_reach.publish_to.clone(),
            Protection::MentionSpam => self.protections.mention_spam.as_ref().and_then(|m| m.reach.publish_to.clone()),
        };
        if let Some(list) = publish_to {
            match self.resolved_list(&list) {
                Some(list_id) => {
                    let notice = format!("{notice} Rule `{state_key}` published to {list}.");
                    consequences.publish_mute(self, &list_id, LocalMute { user: user.to_owned(), event, notice });
                    return Some(RuleId { room_id: list_id, kind: EntityKind::User, state_key });
                }
                None => {
                    self.error(format!(
                        "cannot publish the {} mute of {user} to {list}: the list is not resolved yet; muting locally instead",
                        protection.name()
                    ));
                }
            }
        }
        consequences.local_mute(self, LocalMute { user: user.to_owned(), event, notice });
        Some(RuleId { room_id: LOCAL_LIST.to_owned(), kind: EntityKind::User, state_key })
    }

    /// The room id of a list to publish to (an alias once it resolved).
    fn resolved_list(&self, list: &str) -> Option<String> {
        if list.starts_with('!') {
            return Some(list.to_owned());
        }
        self.protections.resolved.get(list).cloned()
    }

    /// Writes the escalation records durably (a failure is reported; the mute goes on).
    fn remember_escalation(&mut self) {
        let (Some(memory), Some(escalation)) = (&self.protections.memory, &self.protections.escalation) else {
            return;
        };
        if let Err(e) = memory.save(escalation.records()) {
            self.error(format!("cannot keep the protections' escalation records: {e:#}"));
        }
    }

    /// Writes a local rule to disk, then lets it into the index (which reconciles its user):
    /// a protection's mute, or an undo's exception (`engine/history.rs`).
    pub(super) fn write_local_mute(&mut self, mute: LocalMute) {
        let now = self.now();
        let Some(local) = &mut self.protections.local else {
            warn!(user = %mute.user, "no local list to write a protection's rule to");
            return;
        };
        if let Err(e) = local.insert(mute.event.clone(), now) {
            self.error(format!("cannot keep the protection's mute of {}: {e:#}", mute.user));
            return;
        }
        info!(user = %mute.user, "{}", mute.notice);
        // An undo's exception has no notice: the moderator's reply says it.
        if !mute.notice.is_empty() {
            let key = format!("protection|{}|{now}", mute.user);
            self.report_once(&key, &mute.notice);
        }
        self.state_event(LOCAL_LIST, &mute.event);
    }

    /// Writes a protection's rule to a policy list (after the input's commit), through the
    /// same writer as the `mute` command; it is enforced when it comes back from the list
    /// like any rule. A failure is reported.
    pub(super) fn write_published_mute(&mut self, list_id: &str, mute: LocalMute) {
        let now = self.now();
        info!(user = %mute.user, list = list_id, "{}", mute.notice);
        self.report_once(&format!("protection|{}|{now}", mute.user), &mute.notice);
        let (writer, inbox) = (self.writer.clone(), self.inbox.clone());
        let list = list_id.to_owned();
        let kind = mute.event["type"].as_str().unwrap_or("m.policy.rule.user").to_owned();
        let state_key = mute.event["state_key"].as_str().unwrap_or_default().to_owned();
        let content = mute.event["content"].clone();
        self.writes.after_commit(async move {
            let what = format!("publish `{state_key}` to {list}");
            let result = crate::enforce::with_retries(&what, || async {
                writer.put_state(&list, &kind, &state_key, &content).await
            })
            .await;
            if let Err(e) = result {
                let _ = inbox.send(super::Input::PublishFailed { what, error: e.to_string() });
            }
        });
    }

    /// Takes a local rule out of the file, then out of the index (which lifts what it
    /// caused, through the same reconcile and ledger). `Ok(false)`: there was no such rule.
    pub(super) fn remove_local_rule(&mut self, kind: &str, state_key: &str) -> anyhow::Result<bool> {
        let Some(local) = &mut self.protections.local else { return Ok(false) };
        if local.remove(kind, state_key)?.is_none() {
            return Ok(false);
        }
        let removal = json!({"type": kind, "state_key": state_key, "sender": self.cfg.own_user, "content": {}});
        self.state_event(LOCAL_LIST, &removal);
        Ok(true)
    }
}
