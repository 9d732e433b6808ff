//! Previewing a policy list: what its rules would do in the protected rooms, judged as the engine would, without following it (reads the view; owns no state).

use std::collections::{BTreeMap, BTreeSet};

use hush_core::guard::{self, RoomHits};
use hush_core::policy::glob::matches_everyone;
use hush_core::policy::{EntityKind, ListTrust, Outcome, PolicyIndex, Restriction as PolicyRestriction, RuleId};
use hush_core::reconcile::refusal;
use hush_core::schedule::Clock;
use serde_json::Value;

use super::Engine;
use crate::enforce::RoomWriter;

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// What a list's rules would do in the protected rooms if hush followed it with this
    /// trust, judged as the engine would (refusals, the guard), without following it.
    pub(super) fn preview(&self, list: &str, events: &[Value], trust: ListTrust) -> String {
        let now = self.now();
        let mut index = PolicyIndex::new();
        let (mut bans, mut mutes, mut other, mut malformed) = (0usize, 0usize, 0usize, 0usize);
        let mut by_kind: BTreeMap<EntityKind, usize> = BTreeMap::new();
        let mut everyone = Vec::new();
        for ev in events {
            let (Some(ty), Some(key)) =
                (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
            else {
                continue;
            };
            let empty = Value::Object(Default::default());
            let sender = ev.get("sender").and_then(Value::as_str).unwrap_or_default();
            let applied = index.apply(list, ty, key, sender, ev.get("content").unwrap_or(&empty), now);
            if applied.warning.is_some() {
                malformed += 1;
            }
            if applied.outcome != Outcome::Stored {
                continue;
            }
            let Some((_, kind)) = hush_core::policy::classify_event_type(ty) else { continue };
            let Some(rule) = index.rule(&RuleId { room_id: list.to_owned(), kind, state_key: key.to_owned() }) else {
                continue;
            };
            if !rule.is_active(now) {
                continue;
            }
            *by_kind.entry(kind).or_default() += 1;
            match rule.recommendation.restriction() {
                Some(PolicyRestriction::Ban) => bans += 1,
                Some(PolicyRestriction::Mute) => mutes += 1,
                None => other += 1,
            }
            if rule.entity.as_deref().is_some_and(matches_everyone) && kind != EntityKind::Room {
                everyone.push(format!("`{}` ({})", key, rule.entity.clone().unwrap_or_default()));
            }
        }
        let mut text = format!("Preview of {list} (not followed; with actions: {trust}):\n");
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        text.push_str(&format!(
            "  rules in force: {} ({}); {bans} ban, {mutes} mute, {other} other{}\n",
            by_kind.values().sum::<usize>(),
            if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
            if malformed > 0 { format!("; {malformed} malformed, skipped") } else { String::new() }
        ));
        let mut distinct = BTreeSet::new();
        let mut hits = Vec::new();
        let mut accounts = BTreeSet::new();
        for (room_id, room) in &self.view.rooms {
            let Some(room) = room else {
                text.push_str(&format!("  {room_id}: not loaded yet\n"));
                continue;
            };
            let facts = self.facts(room);
            let (mut banned, mut muted, mut refused) = (Vec::new(), Vec::new(), Vec::new());
            let mut members: Vec<&String> =
                room.members.iter().filter(|(_, m)| m.is_present()).map(|(u, _)| u).collect();
            members.sort();
            for user in &members {
                let Some(d) = index.decide_where(user, now, |c| trust.allows(c.restriction)) else { continue };
                if refusal(&facts, user, self.shield(user)).is_some() {
                    refused.push(user.as_str());
                    continue;
                }
                distinct.insert(user.as_str());
                match d.action {
                    PolicyRestriction::Ban => banned.push(user.as_str()),
                    PolicyRestriction::Mute => {
                        muted.push(user.as_str());
                        let exact = index.rule(&d.rule).is_some_and(|r| {
                            r.id.kind == EntityKind::User && r.entity.as_deref() == Some(user.as_str())
                        });
                        let local = self
                            .suspensions
                            .as_ref()
                            .is_some_and(|s| crate::suspension::server_of(user) == Some(s.server_name.as_str()));
                        if trust.suspend && exact && local {
                            accounts.insert(user.as_str());
                        }
                    }
                }
            }
            let names = |v: &[&str]| {
                let shown: Vec<&str> = v.iter().take(5).copied().collect();
                let more = v.len().saturating_sub(shown.len());
                if v.is_empty() {
                    String::new()
                } else if more > 0 {
                    format!(" ({} and {more} more)", shown.join(", "))
                } else {
                    format!(" ({})", shown.join(", "))
                }
            };
            text.push_str(&format!(
                "  {room_id}: of {} members, would ban {}{}, mute {}{}; never restricted: {}{}\n",
                members.len(),
                banned.len(),
                names(&banned),
                muted.len(),
                names(&muted),
                refused.len(),
                names(&refused)
            ));
            hits.push(RoomHits { room_id: room_id.clone(), members: members.len(), hit: banned.len() + muted.len() });
        }
        if trust.server_acl {
            let mut denied: Vec<String> = index
                .server_rules()
                .filter(|r| r.is_active(now) && r.recommendation.restriction() == Some(PolicyRestriction::Ban))
                .filter_map(|r| r.entity.map(|e| e.to_ascii_lowercase()))
                .collect();
            denied.sort();
            denied.dedup();
            if !denied.is_empty() {
                let shown: Vec<&str> = denied.iter().take(5).map(String::as_str).collect();
                let more = denied.len() - shown.len();
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                text.push_str(&format!(
                    "  would deny {} server(s) in the protected rooms' server ACLs: {}{more}\n",
                    denied.len(),
                    shown.join(", ")
                ));
            }
        }
        if !accounts.is_empty() {
            text.push_str(&format!("  would suspend {} local account(s)\n", accounts.len()));
        }
        if !everyone.is_empty() {
            text.push_str(&format!(
                "  the guard would hold {} rule(s) that match everyone: {}\n",
                everyone.len(),
                everyone.join(", ")
            ));
        }
        match guard::judge(&self.cfg.safety, distinct.len(), &hits) {
            Some(why) => {
                text.push_str(&format!("  the guard would hold these rules until a moderator confirms them: {why}\n"))
            }
            None if everyone.is_empty() => text.push_str("  the guard would let this through\n"),
            None => {}
        }
        text.trim_end().to_owned()
    }
}
