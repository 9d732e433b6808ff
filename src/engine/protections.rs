//! The engine side of the protections: the flood counters and escalation (core's `protections`), and the local rules store a trigger writes to.

use hush_core::protections::{Escalation, EscalationLimits, Flood, FloodLimits, Trigger};
use hush_core::schedule::Clock;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::Engine;
use crate::enforce::RoomWriter;
use crate::local_rules::{LocalRules, LOCAL_LIST};

/// The protections' state, owned by the engine.
#[derive(Debug, Default)]
pub(super) struct Protections {
    /// The flood counters and the base mute length (ms), when flood protection is on.
    flood: Option<(Flood, u64)>,
    escalation: Option<Escalation>,
    /// Where triggered rules are kept (`None`: no local list, as in most engine tests).
    pub(super) local: Option<LocalRules>,
}

/// A local rule a protection (or an undo) wants written, with what to tell the management
/// room (empty: nothing, the command's reply says it).
pub(super) struct LocalMute {
    pub(super) user: String,
    pub(super) event: Value,
    pub(super) notice: String,
}

/// The protections' settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ProtectionSettings {
    pub flood: Option<(FloodLimits, u64)>,
    pub escalation: EscalationLimits,
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
            escalation: Some(Escalation::new(Some(settings.escalation))),
            local: Some(local),
        };
    }

    /// Loads the local rules into the index as the list [`LOCAL_LIST`] (at start).
    pub(crate) fn load_local_rules(&mut self) {
        let Some(local) = &self.protections.local else { return };
        let events = local.events();
        self.handle(super::Input::ListLoaded { room_id: LOCAL_LIST.to_owned(), events });
    }

    /// Counts events of members in a protected room; a flood mutes its sender.
    pub(super) fn activity(&mut self, room_id: &str, events: Vec<(String, u64)>) {
        if !matches!(self.view.rooms.get(room_id), Some(Some(_))) {
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
            self.flood_tripped(room_id, &user, trigger, base, now);
        }
    }

    fn flood_tripped(&mut self, room_id: &str, user: &str, trigger: Trigger, base: u64, now: u64) {
        if let Some(why) = self.exemption(user) {
            info!(room = room_id, user, "a flood from a user hush never restricts: ignored ({why})");
            return;
        }
        let length = match &mut self.protections.escalation {
            Some(e) => e.mute_for(user, base, now),
            None => base,
        };
        let what = format!("{} messages in {}", trigger.events, words(trigger.span_ms.max(1)));
        let reason = format!("flood protection: {what} in {room_id}");
        let event = json!({
            "type": "m.policy.rule.user",
            "state_key": format!("hush.flood:{user}"),
            "sender": self.cfg.own_user,
            "content": {"entity": user, "recommendation": "m.mute", "reason": reason, "expiry": now + length},
        });
        let notice = format!("Muted {user} for {} in {room_id}: {what} (flood protection).", words(length));
        let consequences = self.consequences.clone();
        consequences.local_mute(self, LocalMute { user: user.to_owned(), event, notice });
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
