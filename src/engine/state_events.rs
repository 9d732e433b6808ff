//! How list and room state, loaded or live, reaches the policy index and the room view, and whom each change makes the engine look at again (owns no state of its own).

use std::collections::BTreeSet;

use hush_core::policy::{EntityKind, Outcome, Rule, RuleId};
use hush_core::record::{Entry, Kind, Phase, Scope};
use hush_core::schedule::Clock;
use serde_json::Value;
use tracing::{debug, info};

use super::{concerns_policy, Engine};
use crate::enforce::RoomWriter;
use crate::rooms::{RoomState, StateChange};

/// hush's power-level mutes in force that a power-levels event undid because its writer
/// worked from a state older than the mute ([`hush_core::power_levels::stale_undo`], judged
/// on the event's `unsigned.prev_content`). Without `prev_content` nothing is stale: the
/// change is taken as a moderator's.
fn stale_undone_mutes(ev: &Value, content: &Value, entries: &[Entry]) -> Vec<Entry> {
    let Some(prev) = ev.pointer("/unsigned/prev_content") else { return Vec::new() };
    entries
        .iter()
        .filter(|e| e.kind == Kind::MutePowerLevel && e.phase == Phase::Applied && !e.overridden)
        .filter(|e| hush_core::power_levels::stale_undo(prev, content, &e.user_id, e.previous_level, e.applied_level))
        .cloned()
        .collect()
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    pub(super) fn list_loaded(&mut self, room_id: &str, events: &[Value]) {
        let now = self.now();
        // Its server rules, and what it caused while not loaded, are judged anew.
        self.acl.mark_all();
        // A reload replaces the list: rules no longer in its state are gone.
        let removed = self.index.remove_list(room_id, now);
        self.policy_events.forget_list(room_id);
        let filtered = self.filters_decisions();
        let mut changed: BTreeSet<String> =
            if filtered { removed.candidates } else { removed.changed }.into_iter().collect();
        // Local users named by its rules, and those suspended before, wherever they are.
        let mut accounts = self.suspended_accounts();
        let mut untrusted = Vec::new();
        for ev in events {
            changed.extend(self.apply_policy_event(room_id, ev, now, &mut untrusted));
            accounts.extend(self.named_accounts(room_id, ev, false));
        }
        let first = !self.view.lists.insert(room_id.to_owned(), true).unwrap_or(false);
        for ev in self.view.buffered.remove(room_id).unwrap_or_default() {
            changed.extend(self.apply_policy_event(room_id, &ev, now, &mut untrusted));
            accounts.extend(self.named_accounts(room_id, &ev, false));
        }
        self.report_untrusted(room_id, untrusted);
        info!(list = room_id, rules = events.len(), "policy list loaded");
        if first {
            // Held entries of this list can now be judged: look at everyone.
            changed.extend(self.all_known_users());
        }
        accounts.retain(|u| !changed.contains(u));
        self.reconcile_users(changed);
        self.reconcile_accounts(&accounts);
    }

    /// Applies one policy event; rules the list may not cause are added to `untrusted`.
    pub(super) fn apply_policy_event(
        &mut self,
        room_id: &str,
        ev: &Value,
        now: u64,
        untrusted: &mut Vec<Rule>,
    ) -> Vec<String> {
        let (Some(ty), Some(state_key)) =
            (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
        else {
            return Vec::new();
        };
        let sender = ev.get("sender").and_then(Value::as_str).unwrap_or_default();
        let empty = Value::Object(Default::default());
        let content = ev.get("content").unwrap_or(&empty);
        if hush_core::policy::classify_event_type(ty).is_some() {
            // This event replaces the one before at its key; an empty one (a removal) leaves none.
            let event_id = ev.get("event_id").and_then(Value::as_str);
            let in_force = event_id.filter(|_| content.as_object().is_some_and(|c| !c.is_empty()));
            self.policy_events.set(room_id, ty, state_key, in_force);
        }
        let applied = self.index.apply(room_id, ty, state_key, sender, content, now);
        // A rule whose decision an allow hides changes no decision, but its user's timer must
        // now include the allow's expiry (the restriction applies when the allow ends).
        self.expiry.rearm(applied.candidates.iter().cloned());
        let server_rule = matches!(hush_core::policy::classify_event_type(ty), Some((_, EntityKind::Server)));
        if server_rule && matches!(applied.outcome, Outcome::Stored | Outcome::Removed) {
            self.acl.mark_all();
        }
        if let Some(w) = applied.warning {
            // parse_rule already logged it with room, type and state key.
            self.reports.note_error(format!("ignored a malformed rule: {w}"));
        }
        if matches!(applied.outcome, Outcome::Stored | Outcome::Removed) {
            if let Some((_, kind)) = hush_core::policy::classify_event_type(ty) {
                let id = RuleId { room_id: room_id.to_owned(), kind, state_key: state_key.to_owned() };
                let rule = self.index.rule(&id);
                if let Some(g) = self.guard.holds.forget_if_changed(room_id, kind, state_key, rule.as_ref()) {
                    info!(list = room_id, state_key, hold = %g.hold_id, "a guarded rule changed: judged afresh");
                    if let Err(e) = self.ledger.remove_guarded(room_id, kind, state_key) {
                        self.error(format!("cannot forget the guarded rule `{state_key}`: {e:#}"));
                    }
                    // Their decision may read the same without the guard (same identity,
                    // same restriction), so the index does not report them: look again.
                    let mut changed = applied.candidates;
                    changed.extend(self.index.tracked_users_matching(&id));
                    return changed;
                }
                let trust = self.view.trust_of(room_id);
                // A server rule that bans still denies its server in the ACLs if the list may.
                let acl = |r: &Rule, x: hush_core::policy::Restriction| {
                    trust.server_acl && r.id.kind == EntityKind::Server && x == hush_core::policy::Restriction::Ban
                };
                if let Some(r) =
                    rule.filter(|r| r.recommendation.restriction().is_some_and(|x| !trust.allows(x) && !acl(r, x)))
                {
                    untrusted.push(r);
                }
            }
        }
        if self.filters_decisions() {
            // The index reports changes of the unfiltered decision; a rule hidden by trust
            // or a hold can leave that as it was while the filtered one changes.
            return applied.candidates;
        }
        // A rule replaced by one already expired, at the instant the old one ends, changes
        // no decision, yet its users' lift may not have run: look at them again.
        let mut users = applied.changed;
        users.extend(applied.candidates);
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Whether decisions are filtered beyond the index's own (a list not trusted for
    /// everything, a rule held or rejected).
    pub(super) fn filters_decisions(&self) -> bool {
        self.guard.holds.any_blocking() || self.view.trust.values().any(|t| !t.ban || !t.mute)
    }

    /// Tells the management room, once, about rules a list may not cause.
    pub(super) fn report_untrusted(&mut self, list: &str, rules: Vec<Rule>) {
        let trust = self.view.trust_of(list);
        match &rules[..] {
            [] => {}
            [r] => self.report_once(
                &format!("untrusted|{list}|{}|{}", r.id.kind, r.id.state_key),
                &format!(
                    "Ignoring the {} rule `{}` ({}) in {list}: this list may cause only: {trust} (policy_lists[].actions).",
                    r.recommendation.as_str(),
                    r.id.state_key,
                    r.entity.as_deref().unwrap_or("(hashed)")
                ),
            ),
            many => {
                let keys: Vec<&str> = many.iter().take(5).map(|r| r.id.state_key.as_str()).collect();
                self.report_once(
                    &format!("untrusted|{list}|load"),
                    &format!(
                        "Ignoring {} rules in {list} that ask for what this list may not cause (it may cause only: {trust}; policy_lists[].actions), such as `{}`.",
                        many.len(),
                        keys.join("`, `")
                    ),
                )
            }
        }
    }

    pub(super) fn room_loaded(&mut self, room_id: &str, events: &[Value]) {
        let mut room = RoomState::from_state(room_id, events);
        for ev in self.view.buffered.remove(room_id).unwrap_or_default() {
            room.apply_state(&ev);
        }
        for (user, membership) in &room.members {
            self.index.track_user(user);
            if !concerns_policy(*membership) {
                // A room's state names everyone who ever left it.
                self.departed.insert(user.clone());
            }
        }
        let users: BTreeSet<String> = room.members.keys().cloned().collect();
        info!(room = room_id, members = users.len(), version = %room.version, "protected room loaded");
        self.view.rooms.insert(room_id.to_owned(), Some(room));
        let mut users = users;
        if let Ok(entries) = self.ledger.for_scope(&Scope::Room(room_id.to_owned())) {
            users.extend(entries.into_iter().filter(|e| e.kind.is_about_a_user()).map(|e| e.user_id));
        }
        self.acl.mark(room_id);
        self.reconcile_room_users(room_id, &users);
        // Members hush did not know before may have an account-wide rule.
        self.reconcile_accounts(&users);
        self.resume_redactions(room_id);
    }

    pub(super) fn state_event(&mut self, room_id: &str, ev: &Value) {
        match self.view.lists.get(room_id) {
            Some(true) => {
                let now = self.now();
                if let (Some(ty), Some(key)) =
                    (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
                {
                    self.list_gaps.touched(room_id, ty, key);
                }
                // Before applying: the ledger still names whom the replaced rule suspended.
                let mut accounts = self.named_accounts(room_id, ev, true);
                let mut untrusted = Vec::new();
                let changed: BTreeSet<String> =
                    self.apply_policy_event(room_id, ev, now, &mut untrusted).into_iter().collect();
                self.report_untrusted(room_id, untrusted);
                if !changed.is_empty() {
                    debug!(list = room_id, users = changed.len(), "policy change affects users");
                }
                accounts.retain(|u| !changed.contains(u));
                self.reconcile_users(changed);
                self.reconcile_accounts(&accounts);
            }
            Some(false) => self.view.buffered.entry(room_id.to_owned()).or_default().push(ev.clone()),
            None => {}
        }
        if self.management_room.as_deref() == Some(room_id) {
            self.management_state(ev);
        }
        let room = match self.view.rooms.get_mut(room_id) {
            Some(Some(room)) => room,
            Some(None) => {
                self.view.buffered.entry(room_id.to_owned()).or_default().push(ev.clone());
                return;
            }
            None => return,
        };
        let levels_before = room.power_levels.clone();
        match room.apply_state(ev) {
            StateChange::Member(user) => {
                // hush's restriction (or lift) whose retry was refused after a lost answer
                // shows after all: its entry is taken back (or removed), not judged as
                // someone else's change.
                if let Some((e, lifting)) = room.own_members.take_failed(&user, room.membership(&user)) {
                    let r = if lifting {
                        self.ledger.remove(&e.scope, &e.user_id, e.kind)
                    } else {
                        self.ledger.begin_apply(&Entry { phase: Phase::Applying, ..e })
                    };
                    if let Err(err) = r {
                        self.error(format!("ledger write failed in {room_id}: {err:#}"));
                    }
                } else {
                    // A newer member event that does not show it: hush's write either did
                    // not happen or is older than this (its event would have come first).
                    room.own_members.superseded(&user);
                }
                let Some(Some(room)) = self.view.rooms.get(room_id) else { return };
                self.index.track_user(&user);
                if !concerns_policy(room.membership(&user)) {
                    self.departed.insert(user.clone());
                }
                let user = BTreeSet::from([user]);
                self.reconcile_room_users(room_id, &user);
                self.reconcile_accounts(&user);
            }
            StateChange::PowerLevels => {
                // A moderator may have changed a level hush set: look at hush's entries here,
                // and at everyone whose standing changed (a moderator demoted may now be
                // restricted, a member promoted is no longer).
                let entries = self.ledger.for_scope(&Scope::Room(room_id.to_owned())).unwrap_or_default();
                let levels_after = &room.power_levels;
                let stale = stale_undone_mutes(ev, levels_after, &entries);
                let mut users: BTreeSet<String> =
                    entries.into_iter().filter(|e| e.kind.is_about_a_user()).map(|e| e.user_id).collect();
                // Its moderators, whose servers are never denied, may have changed.
                self.acl.mark(room_id);
                match hush_core::power_levels::users_with_changed_standing(&levels_before, levels_after) {
                    Some(changed) => users.extend(changed),
                    None => users.extend(room.members.keys().cloned()),
                }
                for e in stale {
                    self.stale_undo(e);
                }
                self.reconcile_room_users(room_id, &users);
                self.reconcile_accounts(&users);
            }
            StateChange::ServerAcl => self.acl.mark(room_id),
            StateChange::Stale | StateChange::Other => {}
        }
    }

    /// A client working from a state older than hush's mute wrote power levels that put the
    /// muted user back where they were: not a moderator's decision about them. hush's entry
    /// goes back to `Applying` (same level to restore), so reconciling mutes them again, and
    /// the management room is told once.
    pub(super) fn stale_undo(&mut self, e: Entry) {
        let Scope::Room(room_id) = e.scope.clone() else { return };
        let user_id = e.user_id.clone();
        info!(room = %room_id, user = %user_id, "a power-levels write from an older state undid hush's mute: muting again");
        self.report_in_room(
            &format!("stale-undo|{room_id}|{user_id}"),
            &format!(
                "A client working from an older state of {{rooms}} put {user_id}'s power level back to what it was before hush's mute; hush mutes them again."
            ),
            &room_id,
        );
        if let Err(err) = self.ledger.begin_apply(&Entry { phase: Phase::Applying, overridden: false, ..e }) {
            self.error(format!("ledger write failed in {room_id}: {err:#}"));
        }
    }

    /// A state event of the management room: a moderator gained or lost that standing.
    pub(super) fn management_state(&mut self, ev: &Value) {
        let ty = ev.get("type").and_then(Value::as_str);
        if self.view.management.is_none() || !matches!(ty, Some("m.room.power_levels" | "m.room.member")) {
            return;
        }
        let before = self.management_moderators();
        if let Some(room) = self.view.management.as_mut() {
            room.apply_state(ev);
        }
        let after = self.management_moderators();
        let changed: BTreeSet<String> = before.symmetric_difference(&after).cloned().collect();
        if !changed.is_empty() {
            debug!(users = changed.len(), "management room moderators changed");
            self.acl.mark_all();
            self.reconcile_users(changed);
        }
    }
}
