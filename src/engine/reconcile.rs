//! Reconciling members: what the policy and hush's ledger want for a user in a room, the refusals (hush, creators, moderators, `protected_users`), and untracking departed members (owns no state of its own).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hush_core::policy::{Candidate, Decision, Restriction as PolicyRestriction};
use hush_core::reconcile::{
    plan_redactions, reconcile_member, refusal, Action, Membership, Refusal, Restriction, Shield, Wanted,
};
use hush_core::record::{Entry, Kind, Scope};
use hush_core::schedule::Clock;
use tracing::{debug, error, warn};

use super::{concerns_policy, Engine};
use crate::enforce::RoomWriter;

/// What hush knows of one user that both reconciles (each protected room's, and the
/// account's) need, worked out once per user by [`Engine::user_facts`]: the refusals
/// that do not depend on a room, and the protected room that forbids restricting them.
/// The third fact both read, whether an entry of theirs is held, is a fact of the entry's
/// rule, judged by the one predicate [`Engine::held`].
#[derive(Debug, Clone, Default)]
pub(super) struct UserFacts {
    /// `protected_users`, and moderators of the management room.
    pub(super) shield: Shield,
    /// The first protected room (by id) where hush may never restrict the user, and why
    /// (a creator, a moderator, at or above hush). Only the account's reconcile reads it
    /// (a room's reconcile judges its own room), so it is worked out only when suspension
    /// is enabled.
    pub(super) protected_room: Option<(String, Refusal)>,
}

/// The users of one input with their facts.
pub(super) type Facts = BTreeMap<String, UserFacts>;

pub(super) fn to_wanted(d: &Decision) -> Wanted {
    Wanted {
        restriction: match d.action {
            PolicyRestriction::Ban => Restriction::Ban,
            PolicyRestriction::Mute => Restriction::Mute,
        },
        expires_at_ms: d.expires_at_ms,
        rule: d.rule.clone(),
        reason: d.reason.clone(),
    }
}

/// The stronger of two restrictions, as the policy ranks rules: a ban beats a mute, then
/// the one that lasts longer (permanent beats any expiry); `a` on a tie.
fn stronger(a: Wanted, b: Wanted) -> Wanted {
    let rank = |w: &Wanted| (w.restriction == Restriction::Ban, w.expires_at_ms.is_none(), w.expires_at_ms);
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// The facts builder: what both reconciles need to know of `user` (see [`UserFacts`]).
    pub(super) fn user_facts(&self, user: &str) -> UserFacts {
        UserFacts {
            shield: self.shield(user),
            protected_room: if self.suspensions.is_some() { self.room_refusal(user) } else { None },
        }
    }

    /// The refusals of [`UserFacts`] that do not depend on a room (also for previews).
    pub(super) fn shield(&self, user: &str) -> Shield {
        Shield {
            protected_user: self.cfg.protected_users.iter().any(|p| hush_core::policy::glob::glob_match(p, user)),
            management_moderator: self.is_management_moderator(user),
        }
    }

    /// [`Engine::user_facts`] of each user.
    pub(super) fn facts_of(&self, users: &BTreeSet<String>) -> Facts {
        users.iter().map(|u| (u.clone(), self.user_facts(u))).collect()
    }

    /// Whether what this entry records is held: its rule's list is followed but not loaded
    /// yet, or (before every configured list is known) not known at all. The one held
    /// predicate, for rooms and accounts alike.
    pub(super) fn held(&self, e: &Entry) -> bool {
        self.view.list_held(&e.rule.room_id)
    }

    /// The first protected room (by id) where a room's own refusal covers this user.
    fn room_refusal(&self, user: &str) -> Option<(String, Refusal)> {
        self.view.rooms.iter().find_map(|(room_id, room)| {
            let room = room.as_ref()?;
            refusal(&self.facts(room), user, Shield::default()).map(|r| (room_id.clone(), r))
        })
    }

    /// Reconciles each user in every loaded protected room, and their account, from one
    /// computation of their facts.
    pub(super) fn reconcile_users(&mut self, users: BTreeSet<String>) {
        if users.is_empty() {
            return;
        }
        let facts = self.facts_of(&users);
        let rooms: Vec<String> = self.view.rooms.iter().filter(|(_, s)| s.is_some()).map(|(r, _)| r.clone()).collect();
        for room in rooms {
            self.reconcile_room_with(&room, &facts);
        }
        self.reconcile_accounts_with(&facts);
    }

    pub(super) fn reconcile_room_users(&mut self, room_id: &str, users: &BTreeSet<String>) {
        let facts = self.facts_of(users);
        self.reconcile_room_with(room_id, &facts);
    }

    fn reconcile_room_with(&mut self, room_id: &str, facts: &Facts) {
        self.expiry.rearm(facts.keys().cloned());
        if self.own.blocked.is_some() {
            // hush cannot write: everyone is looked at again when it can.
            return;
        }
        for (user, user_facts) in facts {
            let actions = self.reconcile_one(room_id, user, user_facts);
            // A later plan for the same member in the same input replaces the earlier one:
            // nothing was carried out in between, so it sees the same state or newer.
            let key = (room_id.to_owned(), user.clone());
            if actions.is_empty() {
                self.guard.plan.remove(&key);
            } else {
                self.guard.plan.insert(key, actions);
            }
        }
    }

    pub(super) fn reconcile_one(&mut self, room_id: &str, user: &str, user_facts: &UserFacts) -> Vec<Action> {
        let scope = Scope::Room(room_id.to_owned());
        if self.writes.is_writing(&scope, user) {
            debug!(room = room_id, user, "a write is in flight: reconciling when it is done");
            self.writes.defer(&scope, user);
            return Vec::new();
        }
        let Some(Some(room)) = self.view.rooms.get(room_id) else { return Vec::new() };
        let now = self.now();
        let entries = match self.ledger.get_all_for(&scope, user) {
            // A redaction under way restricts nothing and is never lifted: not the reconciler's.
            Ok(e) => e.into_iter().filter(|e| e.kind != Kind::Redaction).collect::<Vec<_>>(),
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                return Vec::new();
            }
        };
        let decided = self.decision_for(user, now, &entries).map(|d| to_wanted(&d));
        // What a not-yet-loaded list caused is held whatever the loaded lists say: its rule
        // may well still be there. A loaded list's stronger restriction still applies.
        let held = entries
            .iter()
            .filter(|e| self.held(e))
            .map(|e| Wanted {
                restriction: if e.kind == Kind::Ban { Restriction::Ban } else { Restriction::Mute },
                expires_at_ms: e.expires_at_ms,
                rule: e.rule.clone(),
                reason: e.reason.clone(),
            })
            .reduce(stronger);
        let wanted = match (held, decided) {
            (Some(h), Some(d)) => Some(stronger(h, d)),
            (h, d) => h.or(d),
        };
        let facts = self.facts(room);
        let mut actions =
            reconcile_member(&facts, user, room.membership(user), wanted.as_ref(), &entries, user_facts.shield);
        if let Some((kind, lifting)) = room.own_members.failed_write(user) {
            // A write whose answer was lost may have happened, with its event still to come:
            // the room's older view proves nothing either way. Its entry stays in its phase
            // (`lifting` is not marked applied, `applying` is not forgotten), so that the
            // room's state, when it shows, or after a kill, is judged against it, not taken
            // for someone else's change or left unrecorded (the model soak, seed
            // 1796067211163831375).
            actions.retain(|a| match a {
                Action::MarkApplied { kind: k, .. } => !(lifting && *k == kind),
                Action::Forget { kind: k, .. } => lifting || *k != kind,
                _ => true,
            });
        }
        plan_redactions(&mut actions, &self.cfg.redaction, now);
        actions
    }

    /// Whether the rule's list may cause what it asks for.
    pub(super) fn trusted(&self, c: &Candidate<'_>) -> bool {
        self.view.trust_of(c.list).allows(c.restriction)
    }

    /// The policy's decision for a user, among the rules their lists may cause and that
    /// the guard does not hold. Holding never lifts: a held rule already in force for this
    /// user (hush's ledger names it) still decides for them.
    pub(super) fn decision_for(&self, user: &str, now: u64, entries: &[Entry]) -> Option<Decision> {
        let fresh = self.index.decide_where(user, now, |c| self.trusted(&c) && !self.guard.holds.blocks(&c));
        if !self.guard.holds.any_blocking() {
            return fresh;
        }
        match self.index.decide_where(user, now, |c| self.trusted(&c)) {
            Some(full)
                if Some(&full) != fresh.as_ref() && entries.iter().any(|e| !e.overridden && e.rule == full.rule) =>
            {
                Some(full)
            }
            _ => fresh,
        }
    }

    /// Why a user may never be restricted by hush in some room or account, if so: the
    /// same refusals as the reconciler's, judged in every protected room and the
    /// management room (for commands naming the user, and for suspension).
    pub(super) fn exemption(&self, user: &str) -> Option<String> {
        if user == self.cfg.own_user {
            return Some("that is hush itself".to_owned());
        }
        let UserFacts { shield, protected_room } = self.user_facts(user);
        if shield.protected_user {
            return Some(Refusal::ProtectedUser.to_string());
        }
        if shield.management_moderator {
            return Some(Refusal::ManagementModerator.to_string());
        }
        protected_room
            .or_else(|| self.room_refusal(user))
            .map(|(room_id, refusal)| Refusal::InRoom { room_id, refusal: Box::new(refusal) }.to_string())
    }

    /// Stops tracking the input's candidates who are in no protected room any more (see
    /// [`concerns_policy`]) and of whom hush's ledger has nothing, and drops their `leave`
    /// from the room views (an unknown member is `leave` anyway): busy rooms see thousands
    /// of drive-by joins. Users hush restricted stay, so rule changes still reach them; a
    /// departed user who comes back is tracked and reconciled again by their membership event.
    pub(super) fn forget_departed(&mut self) {
        let candidates = std::mem::take(&mut self.departed);
        if candidates.is_empty() {
            return;
        }
        // One scan of the ledger for many (a room loaded), a lookup each for a few (whether
        // the ledger names them, not their entries: one a room).
        let named = if candidates.len() > 16 {
            self.ledger.all().map(|entries| entries.into_iter().map(|e| e.user_id).collect::<HashSet<String>>())
        } else {
            candidates.iter().try_fold(HashSet::new(), |mut named, u| {
                if self.ledger.names_user(u)? {
                    named.insert(u.clone());
                }
                anyhow::Ok(named)
            })
        };
        let named: HashSet<String> = match named {
            Ok(named) => named,
            Err(e) => {
                // Keep tracking them: a user tracked for nothing costs only memory.
                warn!("cannot read the ledger to forget departed members: {e:#}");
                return;
            }
        };
        let mut forgotten = 0usize;
        for user in candidates {
            if named.contains(&user) || self.view.rooms.values().flatten().any(|r| concerns_policy(r.membership(&user)))
            {
                continue;
            }
            for room in self.view.rooms.values_mut().flatten() {
                if room.members.get(&user) == Some(&Membership::Leave) {
                    room.members.remove(&user);
                }
            }
            forgotten += usize::from(self.index.untrack_user(&user));
        }
        if forgotten > 0 {
            debug!(users = forgotten, "no longer tracking members who left every protected room");
        }
    }
}
