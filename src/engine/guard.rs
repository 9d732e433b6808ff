//! The mass-action guard in the engine: the planned room actions of the input being handled, and the rules held (`holds`) and moderators' decisions about them; settling a plan, holding, the hold notices.

use std::collections::{BTreeMap, BTreeSet};

use hush_core::guard::{self, RoomHits};
use hush_core::policy::glob::matches_everyone;
use hush_core::policy::{EntityKind, Rule, RuleId};
use hush_core::reconcile::{Action, Restriction};
use hush_core::record::{Kind, Scope};
use hush_core::schedule::Clock;
use tracing::{info, warn};

use super::server_acl::ACL_KEY;
use super::Engine;
use crate::enforce::RoomWriter;
use crate::holds::{self, Guarded, Holds, Status};

/// How many rules a hold's notice names one by one (a list load can hold hundreds).
const HOLD_NOTICE_RULES: usize = 10;

/// New restrictions by room: the members hit, how many banned, how many muted.
#[allow(clippy::type_complexity)]
fn tally<'a>(
    new: impl Iterator<Item = &'a (&'a str, &'a str, RuleId, Restriction)>,
) -> BTreeMap<&'a str, (BTreeSet<&'a str>, usize, usize)> {
    let mut out: BTreeMap<&str, (BTreeSet<&str>, usize, usize)> = BTreeMap::new();
    for (room, user, _, restriction) in new {
        let e = out.entry(*room).or_default();
        if e.0.insert(*user) {
            match restriction {
                Restriction::Ban => e.1 += 1,
                Restriction::Mute => e.2 += 1,
            }
        }
    }
    out
}

pub(super) struct Guard {
    /// The room actions the input being handled asks for, by (room, user): judged by the
    /// guard as one batch, then carried out.
    pub(super) plan: BTreeMap<(String, String), Vec<Action>>,
    /// Rules the guard holds and what moderators decided about them.
    pub(super) holds: Holds,
}

impl Guard {
    pub(super) fn new(holds: Holds) -> Self {
        Guard { plan: BTreeMap::new(), holds }
    }

    /// Holds waiting for a moderator (for `status`): id, and one line per rule.
    pub(super) fn waiting(&self) -> Vec<(String, Vec<String>)> {
        self.holds
            .waiting()
            .into_iter()
            .map(|(id, rules)| {
                let n = rules.len();
                let mut lines: Vec<String> = rules.into_iter().take(HOLD_NOTICE_RULES).map(|g| g.why.clone()).collect();
                if n > HOLD_NOTICE_RULES {
                    lines.push(format!("and {} more rule(s)", n - HOLD_NOTICE_RULES));
                }
                (id, lines)
            })
            .collect()
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Judges the input's planned room actions as one batch (the mass-action guard), then
    /// carries them out. Restrictions hush already recorded (re-applied after a crash) are
    /// not new; rules a moderator confirmed pass.
    pub(super) fn settle(&mut self) {
        if self.guard.plan.is_empty() {
            return;
        }
        let mut plan = std::mem::take(&mut self.guard.plan);
        let held = self.guard(&plan);
        if !held.is_empty() {
            // Plan the members these rules would have hit again, with the rules held (and
            // the rooms whose ACL they would have changed).
            let facts = self.facts_of(&held.iter().filter(|(_, key)| key != ACL_KEY).map(|(_, u)| u.clone()).collect());
            for (room, user) in held {
                let actions = if user == ACL_KEY {
                    self.replan_acl(&room)
                } else {
                    self.reconcile_one(&room, &user, &facts[&user])
                };
                plan.insert((room, user), actions);
            }
        }
        for ((room, _), actions) in plan {
            for a in actions {
                self.execute(&room, a);
            }
        }
    }

    /// The mass-action guard over one batch: holds the rules of a batch that would newly
    /// restrict more members than `safety` allows, and rules that match everyone whatever
    /// the count, and tells the management room once. Returns the (room, member) pairs
    /// whose plan used a rule it held.
    pub(super) fn guard(&mut self, plan: &BTreeMap<(String, String), Vec<Action>>) -> Vec<(String, String)> {
        let mut new: Vec<(&str, &str, RuleId, Restriction)> = Vec::new();
        for ((room, user), actions) in plan {
            for a in actions {
                let (kind, wanted) = match a {
                    Action::Ban { wanted, .. } => (Kind::Ban, wanted),
                    Action::MutePowerLevel { wanted, .. } => (Kind::MutePowerLevel, wanted),
                    Action::MuteMembership { wanted, .. } => (Kind::MuteMembership, wanted),
                    _ => continue,
                };
                if self.ledger.get(&Scope::Room(room.to_owned()), user, kind).ok().flatten().is_some() {
                    continue;
                }
                new.push((room, user, wanted.rule.clone(), wanted.restriction));
            }
        }
        // Members whose server a new server ACL entry would deny count too (after the
        // members' own actions: `new[acl_from..]`).
        let acl_hits = self.acl_new_hits(plan);
        let acl_from = new.len();
        new.extend(acl_hits.iter().map(|(room, user, id, r)| (room.as_str(), user.as_str(), id.clone(), *r)));
        if new.is_empty() {
            return Vec::new();
        }
        let rules: BTreeMap<RuleId, Option<Rule>> =
            new.iter().map(|(_, _, id, _)| (id.clone(), self.index.rule(id))).collect();
        let unconfirmed =
            |id: &RuleId| rules.get(id).and_then(Option::as_ref).is_none_or(|r| !self.guard.holds.confirmed(r));
        let mut to_hold: BTreeMap<RuleId, String> = BTreeMap::new();
        for (id, rule) in &rules {
            let entity = rule.as_ref().and_then(|r| r.entity.as_deref());
            if unconfirmed(id) && entity.is_some_and(matches_everyone) {
                let whom = if id.kind == EntityKind::Server { "every server" } else { "every user of every server" };
                to_hold.insert(id.clone(), format!("`{}` matches {whom}", entity.unwrap_or_default()));
            }
        }
        let counted: Vec<&(&str, &str, RuleId, Restriction)> =
            new.iter().filter(|(_, _, id, _)| unconfirmed(id) && !to_hold.contains_key(id)).collect();
        let per_room = tally(counted.iter().copied());
        let distinct: BTreeSet<&str> = counted.iter().map(|(_, u, _, _)| *u).collect();
        let hits: Vec<RoomHits> = per_room
            .iter()
            .map(|(room, (users, _, _))| RoomHits {
                room_id: room.to_string(),
                members: self.view.present_members(room),
                hit: users.len(),
            })
            .collect();
        if let Some(why) = guard::judge(&self.cfg.safety, distinct.len(), &hits) {
            for (_, _, id, _) in &counted {
                to_hold.entry(id.clone()).or_insert_with(|| why.clone());
            }
        }
        if to_hold.is_empty() {
            return Vec::new();
        }
        // What the held rules would have done, for the notice.
        let effect = tally(new[..acl_from].iter().filter(|(_, _, id, _)| to_hold.contains_key(id)));
        let acl_effect = tally(new[acl_from..].iter().filter(|(_, _, id, _)| to_hold.contains_key(id)));
        let hold_id = self.guard.holds.next_id();
        let now = self.now();
        let mut text = format!(
            "Held {hold_id}: {} rule(s) not enforced, because the safety guard stopped them. Nothing is done for them until a moderator decides.\n",
            to_hold.len()
        );
        for (i, (id, why)) in to_hold.iter().enumerate() {
            let rule = rules.get(id).and_then(Option::as_ref);
            let (rec, entity) = rule.map_or(("?".to_owned(), "(hashed)".to_owned()), |r| {
                (r.recommendation.as_str().to_owned(), r.entity.clone().unwrap_or_else(|| "(hashed)".to_owned()))
            });
            // A whole list can be one hold: name the first rules, count the rest.
            if i < HOLD_NOTICE_RULES {
                text.push_str(&format!(
                    "  {rec} {} rule `{}` ({entity}) in {}: {why}\n",
                    id.kind, id.state_key, id.room_id
                ));
            } else if i == HOLD_NOTICE_RULES {
                text.push_str(&format!("  and {} more rule(s)\n", to_hold.len() - HOLD_NOTICE_RULES));
            }
            let g = Guarded {
                list: id.room_id.clone(),
                kind: id.kind,
                state_key: id.state_key.clone(),
                fingerprint: rule.map(holds::fingerprint).unwrap_or_default(),
                status: Status::Held,
                hold_id: hold_id.clone(),
                held_at_ms: now,
                why: format!("{rec} `{entity}` in {}: {why}", id.room_id),
            };
            if let Err(e) = self.ledger.put_guarded(&g) {
                self.error(format!("cannot record the held rule `{}`: {e:#}", id.state_key));
            }
            self.guard.holds.put(g);
        }
        for (room, (users, bans, mutes)) in &effect {
            let names: Vec<&str> = users.iter().take(5).copied().collect();
            let more = users.len().saturating_sub(names.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            text.push_str(&format!(
                "  {room}: would ban {bans} and mute {mutes} of {} members: {}{more}\n",
                self.view.present_members(room),
                names.join(", ")
            ));
        }
        for (room, (users, _, _)) in &acl_effect {
            let names: Vec<&str> = users.iter().take(5).copied().collect();
            let more = users.len().saturating_sub(names.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            text.push_str(&format!(
                "  {room}: its server ACL would deny the servers of {} of {} members: {}{more}\n",
                users.len(),
                self.view.present_members(room),
                names.join(", ")
            ));
        }
        for (room, user, id, restriction) in &new[..acl_from] {
            if let Some(why) = to_hold.get(id) {
                self.log_held(room, user, id, *restriction, &format!("{hold_id}: {why}"));
            }
        }
        let p = &self.cfg.command_prefix;
        text.push_str(&format!("Type `{p} confirm {hold_id}` to enforce, or `{p} reject {hold_id}` to drop."));
        warn!(hold = %hold_id, rules = to_hold.len(), "the safety guard held rules");
        self.report_once(&format!("hold|{hold_id}"), &text);
        // Plan again whoever a held rule touched: those it would restrict, and those it
        // would have been refused for (a held rule is not worth a refusal notice).
        let held_rule = |a: &Action| match a {
            Action::Ban { wanted, .. }
            | Action::MutePowerLevel { wanted, .. }
            | Action::MuteMembership { wanted, .. } => to_hold.contains_key(&wanted.rule),
            Action::Refuse { rule, .. } => to_hold.contains_key(rule),
            Action::DenyServer { wanted, .. } => to_hold.contains_key(&wanted.rule),
            Action::RefuseServerDeny { rule, .. } => to_hold.contains_key(rule),
            _ => false,
        };
        plan.iter()
            .filter(|(_, actions)| actions.iter().any(held_rule))
            .map(|((room, user), _)| (room.clone(), user.clone()))
            .collect()
    }

    /// A moderator confirmed or rejected a hold.
    pub(super) fn decide_hold(&mut self, id: &str, status: Status) -> Result<String, String> {
        let rules = self.guard.holds.of_hold(id);
        if rules.is_empty() {
            let waiting: Vec<String> = self.guard.holds.waiting().into_keys().collect();
            return Err(if waiting.is_empty() {
                format!("There is no hold `{id}`, and nothing is held.")
            } else {
                format!("There is no hold `{id}`. Waiting: {}.", waiting.join(", "))
            });
        }
        let waiting: Vec<Guarded> = rules.into_iter().filter(|g| g.status == Status::Held).collect();
        if waiting.is_empty() {
            return Err(format!("Hold {id} was already decided."));
        }
        let mut users = BTreeSet::new();
        for mut g in waiting.iter().cloned() {
            g.status = status;
            if let Err(e) = self.ledger.put_guarded(&g) {
                return Err(format!("cannot record the decision: {e:#}"));
            }
            if status == Status::Confirmed {
                let rule = RuleId { room_id: g.list.clone(), kind: g.kind, state_key: g.state_key.clone() };
                users.extend(self.index.tracked_users_matching(&rule));
            }
            self.guard.holds.put(g);
        }
        info!(hold = id, ?status, rules = waiting.len(), "a moderator decided a hold");
        let mut what: Vec<String> = waiting.iter().take(HOLD_NOTICE_RULES).map(|g| g.why.clone()).collect();
        if waiting.len() > HOLD_NOTICE_RULES {
            what.push(format!("and {} more", waiting.len() - HOLD_NOTICE_RULES));
        }
        if status == Status::Confirmed {
            self.acl.mark_all();
            let n = users.len();
            self.reconcile_users(users);
            Ok(format!("Confirmed {id}: enforcing {} rule(s) for {n} member(s): {}.", waiting.len(), what.join("; ")))
        } else {
            Ok(format!("Rejected {id}: hush will not enforce {} rule(s): {}.", waiting.len(), what.join("; ")))
        }
    }
}
