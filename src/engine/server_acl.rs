//! Server ACLs in the engine: the `deny` entries the policy's server rules want in each protected room, core's `reconcile_server_acl` from the room's ACL and the ledger, the new denials the guard counts, and carrying the actions out (ledger first, then one batched `m.room.server_acl` write per room) (owns no state of its own: the pending edits are `acl_batch`'s).
//!
//! A server rule with a ban or takedown recommendation, from a list trusted for
//! `server_acl`, asks every protected room to deny its entity (a server glob). Whatever
//! changes that (a server rule, a list loaded or dropped, a hold decided, a room's ACL or
//! power levels, the management room's moderators, the ACL timer) marks rooms in
//! `acl_batch`; at the end of the input each marked room is reconciled once, and its
//! actions join the input's plan under the key [`ACL_KEY`], so the mass-action guard
//! judges them with the member actions of the same input.

use std::collections::BTreeMap;

use hush_core::policy::{host_without_port, Candidate, EntityKind, Restriction as PolicyRestriction, RuleId};
use hush_core::reconcile::{never_deny, reconcile_server_acl, AclFacts, Action, Restriction, Wanted};
use hush_core::record::{Entry, Kind, Phase, Scope};
use hush_core::schedule::Clock;
use hush_core::server_acl::{entry_matches, has_deny, AclEdit};
use tracing::{debug, error, info, warn};

use super::execute::dry_run_rule;
use super::{describe_rule, Engine, Input};
use crate::enforce::{self, AclSent, RoomWriter, WriteError};

/// The key of a room's ACL actions in the input's plan (where members are keyed by user
/// id), and the id of the ACL expiry timer (where users' timers are keyed by user id). A
/// user id starts with `@`; this never does.
pub(super) const ACL_KEY: &str = "m.room.server_acl";

/// What the policy asks every protected room to deny: by entry (lower-cased server glob),
/// the rule that decides it, among the rules the guard lets through (`fresh`), and the
/// ones it holds or a moderator rejected (`blocked`: they still decide where hush already
/// denied for them, since holding never lifts).
#[derive(Debug, Default)]
pub(super) struct AclWanted {
    fresh: BTreeMap<String, Wanted>,
    blocked: BTreeMap<String, Wanted>,
}

/// The stronger of two denials of one entry: permanent beats any expiry, then the later
/// expiry, then the smaller rule id (deterministic provenance).
fn stronger(a: Wanted, b: Wanted) -> Wanted {
    let rank = |w: &Wanted| (w.expires_at_ms.is_none(), w.expires_at_ms, std::cmp::Reverse(w.rule.clone()));
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

fn put(map: &mut BTreeMap<String, Wanted>, entry: String, w: Wanted) {
    let w = match map.remove(&entry) {
        Some(old) => stronger(old, w),
        None => w,
    };
    map.insert(entry, w);
}

fn server_of(user: &str) -> Option<&str> {
    user.split_once(':').map(|(_, s)| s)
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// The `deny` entries the policy wants now (see [`AclWanted`]).
    pub(super) fn acl_wanted(&self, now: u64) -> AclWanted {
        let mut out = AclWanted::default();
        for r in self.index.server_rules() {
            if !r.is_active(now) || r.recommendation.restriction() != Some(PolicyRestriction::Ban) {
                continue;
            }
            let Some(entity) = r.entity.as_deref() else { continue };
            if !self.view.trust_of(&r.id.room_id).server_acl {
                continue;
            }
            let c = Candidate {
                list: &r.id.room_id,
                kind: EntityKind::Server,
                state_key: &r.id.state_key,
                restriction: PolicyRestriction::Ban,
            };
            let blocked = self.guard.holds.blocks(&c);
            // ACL entries are matched against server names without their port.
            let entry = host_without_port(entity).unwrap_or(entity).to_ascii_lowercase();
            let w = Wanted {
                restriction: Restriction::Ban,
                expires_at_ms: r.expiry_ms,
                rule: r.id.clone(),
                reason: r.reason,
            };
            put(if blocked { &mut out.blocked } else { &mut out.fresh }, entry, w);
        }
        out
    }

    /// hush's `deny` entries in a room.
    fn acl_entries(&self, room_id: &str) -> Vec<Entry> {
        match self.ledger.for_scope(&Scope::Room(room_id.to_owned())) {
            Ok(entries) => entries.into_iter().filter(|e| e.kind == Kind::ServerDeny).collect(),
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                Vec::new()
            }
        }
    }

    /// Core's `reconcile_server_acl` for one loaded protected room.
    fn acl_actions(&self, room_id: &str, wanted: &AclWanted, management_moderators: &[String]) -> Vec<Action> {
        let Some(Some(room)) = self.view.rooms.get(room_id) else { return Vec::new() };
        let entries = self.acl_entries(room_id);
        let mut want = wanted.fresh.clone();
        for e in entries.iter().filter(|e| !e.overridden) {
            if self.held(e) {
                // Its list is not loaded yet: what it caused is held, never lifted by mistake.
                let w = Wanted {
                    restriction: Restriction::Ban,
                    expires_at_ms: e.expires_at_ms,
                    rule: e.rule.clone(),
                    reason: e.reason.clone(),
                };
                put(&mut want, e.user_id.clone(), w);
            } else if let Some(w) = wanted.blocked.get(&e.user_id).filter(|w| w.rule == e.rule) {
                put(&mut want, e.user_id.clone(), w.clone());
            }
        }
        let facts = self.facts(room);
        let never = never_deny(&facts, management_moderators);
        let acl = AclFacts { room: facts, current: room.server_acl.content.as_ref(), never_deny: &never };
        reconcile_server_acl(&acl, &want, &entries)
    }

    /// Reconciles the ACL of each room marked during the input, putting the actions in the
    /// input's plan, and sets the ACL timer at the next expiry.
    pub(super) fn reconcile_acls(&mut self) {
        if !self.acl.any_dirty() {
            return;
        }
        let loaded = self.view.rooms.iter().filter(|(_, s)| s.is_some()).map(|(r, _)| r.clone()).collect::<Vec<_>>();
        let rooms = self.acl.take_dirty(loaded.into_iter());
        if rooms.is_empty() || self.own.blocked.is_some() {
            // hush cannot write: every room is looked at again when it can.
            return;
        }
        let now = self.now();
        let wanted = self.acl_wanted(now);
        let moderators: Vec<String> = self.management_moderators().into_iter().collect();
        for room in rooms {
            if self.acl.in_flight(&room) {
                debug!(room = %room, "a server ACL write is in flight: reconciling when it is done");
                self.acl.defer(&room);
                continue;
            }
            let actions = self.acl_actions(&room, &wanted, &moderators);
            let key = (room, ACL_KEY.to_owned());
            if actions.is_empty() {
                self.guard.plan.remove(&key);
            } else {
                self.guard.plan.insert(key, actions);
            }
        }
        self.arm_acl_timer(&wanted, now);
    }

    /// The room's ACL actions planned again (the guard held some of their rules).
    pub(super) fn replan_acl(&self, room_id: &str) -> Vec<Action> {
        let wanted = self.acl_wanted(self.now());
        let moderators: Vec<String> = self.management_moderators().into_iter().collect();
        self.acl_actions(room_id, &wanted, &moderators)
    }

    /// The one ACL timer, at the earliest future expiry of a denial wanted or made.
    fn arm_acl_timer(&mut self, wanted: &AclWanted, now: u64) {
        let recorded: Vec<u64> = match self.ledger.of_kind(Kind::ServerDeny) {
            Ok(all) => all.iter().filter_map(|e| e.expires_at_ms).collect(),
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                Vec::new()
            }
        };
        let next = wanted.fresh.values().filter_map(|w| w.expires_at_ms).chain(recorded).filter(|&at| at > now).min();
        self.expiry.set_timer(ACL_KEY, next);
    }

    /// What the input's plan would newly deny, as the guard counts it: each present member
    /// of the room whose server a new `deny` entry matches, with the entry's rule.
    pub(super) fn acl_new_hits(
        &self,
        plan: &BTreeMap<(String, String), Vec<Action>>,
    ) -> Vec<(String, String, RuleId, Restriction)> {
        let mut out = Vec::new();
        for ((room_id, key), actions) in plan {
            if key != ACL_KEY {
                continue;
            }
            let Some(Some(room)) = self.view.rooms.get(room_id) else { continue };
            let scope = Scope::Room(room_id.clone());
            for a in actions {
                let Action::DenyServer { server, wanted } = a else { continue };
                if self.ledger.get(&scope, server, Kind::ServerDeny).ok().flatten().is_some() {
                    continue;
                }
                let hit = room
                    .members
                    .iter()
                    .filter(|(u, m)| m.is_present() && server_of(u).is_some_and(|s| entry_matches(server, s)));
                for (user, _) in hit {
                    out.push((room_id.clone(), user.clone(), wanted.rule.clone(), Restriction::Ban));
                }
            }
        }
        out
    }

    /// Enforce: the ledger's write-ahead entry, then the edit queued for the room's next
    /// ACL write; a refusal is reported.
    pub(super) fn enforce_acl(&mut self, room_id: &str, action: Action) {
        let scope = Scope::Room(room_id.to_owned());
        let result = match action {
            Action::DenyServer { server, wanted } => {
                let entry = Entry {
                    scope,
                    user_id: server.clone(),
                    kind: Kind::ServerDeny,
                    phase: Phase::Applying,
                    previous_level: None,
                    applied_level: None,
                    rule: wanted.rule.clone(),
                    reason: wanted.reason.clone(),
                    applied_at_ms: self.now(),
                    expires_at_ms: wanted.expires_at_ms,
                    overridden: false,
                    event_ids: Vec::new(),
                };
                info!(room = room_id, %server, rule = %wanted.rule, "denying a server in the room's ACL");
                self.ledger.begin_apply(&entry).map(|()| self.queue_acl(room_id, &server, true))
            }
            Action::UndenyServer { server } => {
                info!(room = room_id, %server, "lifting a server ACL deny entry");
                self.ledger
                    .begin_lift(&scope, &server, Kind::ServerDeny)
                    .map(|()| self.queue_acl(room_id, &server, false))
            }
            Action::MarkApplied { user_id, kind: Kind::ServerDeny } => {
                self.acl.drop_entry(room_id, &user_id);
                self.ledger.mark_applied(&scope, &user_id, Kind::ServerDeny)
            }
            Action::Forget { user_id, kind: Kind::ServerDeny } => {
                self.acl.drop_entry(room_id, &user_id);
                self.ledger.remove(&scope, &user_id, Kind::ServerDeny)
            }
            Action::RefuseServerDeny { server, refusal, rule } => {
                warn!(room = room_id, %server, %refusal, %rule, "refusing to deny a server");
                self.report_in_room(
                    &format!("refuse-acl|{room_id}|{server}|{refusal}|{rule}"),
                    &format!(
                        "Not going to deny the server `{server}` in {{rooms}}: {refusal} (rule {}).",
                        describe_rule(&rule)
                    ),
                    room_id,
                );
                Ok(())
            }
            other => {
                warn!(room = room_id, ?other, "not a server ACL action");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
    }

    /// Dry run: the ACL diff reported; nothing written. `None` for an action that is not
    /// about the ACL.
    pub(super) fn simulate_acl_template(action: &Action) -> Option<String> {
        Some(match action {
            Action::DenyServer { server, wanted } => format!(
                "[dry run] would add `{server}` to the deny list of the server ACL of {{rooms}}; rule {}",
                dry_run_rule(&wanted.rule)
            ),
            Action::UndenyServer { server } => {
                format!("[dry run] would take `{server}` out of the deny list of the server ACL of {{rooms}}")
            }
            Action::RefuseServerDeny { server, refusal, .. } => {
                format!("[dry run] would refuse to deny the server `{server}` in {{rooms}}: {refusal}")
            }
            _ => return None,
        })
    }

    /// Queues one `deny` edit for the room's next ACL write (see `AclBatch::queue`).
    fn queue_acl(&mut self, room_id: &str, entry: &str, add: bool) {
        let now = self.now();
        let Some(wait) = self.acl.queue(room_id, entry, add, now, self.cfg.batch_window) else { return };
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        if wait.is_zero() {
            let _ = inbox.send(Input::AclFlush { room_id });
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = inbox.send(Input::AclFlush { room_id });
        });
    }

    /// Sends the room's pending `deny` edits as one event (after the input's commit).
    pub(super) fn acl_flush(&mut self, room_id: &str) {
        let now = self.now();
        let Some(edit) = self.acl.take(room_id, now) else { return };
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        debug!(room = %room_id, add = edit.add.len(), remove = edit.remove.len(), "sending the server ACL");
        self.writes.after_commit(async move {
            let result = enforce::send_server_acl(&writer, &room_id, &edit).await;
            let _ = inbox.send(Input::AclDone { room_id, edit, result });
        });
    }

    /// A room's ACL write is done (or failed for good): the ledger follows what the room
    /// now says.
    pub(super) fn acl_done(&mut self, room_id: &str, edit: AclEdit, result: Result<AclSent, WriteError>) {
        let deferred = self.acl.done(room_id);
        self.count_acl_write(&edit, crate::metrics::Outcome::of(&result));
        let scope = Scope::Room(room_id.to_owned());
        let entry = |this: &Self, s: &str| this.ledger.get(&scope, s, Kind::ServerDeny).ok().flatten();
        match result {
            Ok(sent) => {
                if let Some(Some(room)) = self.view.rooms.get_mut(room_id) {
                    room.server_acl.own_written(sent.content.clone(), sent.event_id.clone());
                }
                let mut r = Ok(());
                for (s, lifting) in edit.add.iter().map(|s| (s, false)).chain(edit.remove.iter().map(|s| (s, true))) {
                    self.settle_logged(&scope, s, Kind::ServerDeny, lifting, hush_core::history::Outcome::Done);
                }
                for s in &edit.add {
                    if entry(self, s).is_some_and(|e| e.phase == Phase::Applying) && has_deny(sent.content.as_ref(), s)
                    {
                        r = r.and(self.ledger.mark_applied(&scope, s, Kind::ServerDeny));
                    }
                }
                for s in &edit.remove {
                    if entry(self, s).is_some_and(|e| e.phase == Phase::Lifting) {
                        r = r.and(self.ledger.remove(&scope, s, Kind::ServerDeny));
                    }
                }
                if let Err(e) = r {
                    self.error(format!("ledger write failed in {room_id}: {e:#}"));
                }
                info!(room = room_id, added = edit.add.len(), removed = edit.remove.len(), "server ACL updated");
            }
            Err(e) => {
                if !self.own_account_error(&e) {
                    self.error(format!("cannot change the server ACL of {room_id}: {e}"));
                }
                for (s, lifting) in edit.add.iter().map(|s| (s, false)).chain(edit.remove.iter().map(|s| (s, true))) {
                    let failed = hush_core::history::Outcome::Failed(e.to_string());
                    self.settle_logged(&scope, s, Kind::ServerDeny, lifting, failed);
                }
                for s in &edit.add {
                    if entry(self, s).is_some_and(|e| e.phase == Phase::Applying) {
                        let _ = self.ledger.remove(&scope, s, Kind::ServerDeny);
                    }
                }
                for s in &edit.remove {
                    if entry(self, s).is_some_and(|e| e.phase == Phase::Lifting) {
                        let _ = self.ledger.mark_applied(&scope, s, Kind::ServerDeny);
                    }
                }
            }
        }
        if deferred {
            self.acl.mark(room_id);
        }
        if self.acl.has_pending(room_id) {
            self.acl_flush(room_id);
        }
    }
}
