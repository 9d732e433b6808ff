//! The engine's account-wide side: suspending local accounts on exact mute rules (MSC3823), and pausing writes while hush's own account is suspended or locked.
//!
//! The decisions and the admin API are in `crate::suspension`; this module is the glue
//! that needs the engine's state (index, ledger, timers, reports).

use std::collections::BTreeSet;

use hush_core::schedule::Clock;
use tracing::{error, info, warn};

use hush_core::record::{Entry, Kind, Phase, Scope};

use super::{Engine, Input};
use crate::enforce::{RoomWriter, WriteError};
use crate::suspension::{self, AdminError, Done, Facts, Outcome, Plan, Refusal, Suspensions};

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Enables account suspension with this admin API.
    pub fn with_suspension(mut self, s: Suspensions) -> Self {
        self.suspensions = Some(s);
        self
    }

    /// Enables account suspension on a running engine (tests).
    #[cfg(test)]
    pub fn set_suspension(&mut self, s: Suspensions) {
        self.suspensions = Some(s);
    }

    /// Decides and acts on the accounts of these users (when suspension is enabled).
    pub(super) fn reconcile_accounts(&mut self, users: &BTreeSet<String>) {
        self.expiry.rearm(users.iter().cloned());
        let Some(s) = self.suspensions.as_mut() else { return };
        let mut todo = Vec::new();
        for user in users {
            if s.in_flight.contains(user) {
                s.deferred.insert(user.clone());
            } else {
                todo.push(user.clone());
            }
        }
        let now = self.now();
        for user in todo {
            if let Some(plan) = self.account_plan(&user, now) {
                self.execute_account(&user, plan, now);
            }
            if let Some((key, text)) = self.untrusted_suspension(&user, now) {
                self.report_once(&key, &text);
            }
        }
    }

    /// Accounts a policy event concerns by name, including users in no protected room
    /// (the index only reports changes for the members it tracks): the local user the
    /// event names exactly, and every user hush suspended for the rule at this state key
    /// (`with_ledger`; skipped while a whole list loads, see `suspended_accounts`). Empty
    /// without suspension.
    pub(super) fn named_accounts(&self, room_id: &str, ev: &serde_json::Value, with_ledger: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(s) = self.suspensions.as_ref() else { return out };
        let is_user_rule = ev
            .get("type")
            .and_then(|t| t.as_str())
            .and_then(hush_core::policy::classify_event_type)
            .is_some_and(|(_, kind)| kind == hush_core::policy::EntityKind::User);
        if !is_user_rule {
            return out;
        }
        let entity = ev.pointer("/content/entity").and_then(|e| e.as_str()).unwrap_or_default();
        let exact = entity.starts_with('@') && !entity.contains(['*', '?']);
        if exact && suspension::server_of(entity) == Some(s.server_name.as_str()) {
            out.insert(entity.to_owned());
        }
        if with_ledger {
            let key = ev.get("state_key").and_then(|k| k.as_str()).unwrap_or_default();
            out.extend(
                self.ledger
                    .for_scope(&Scope::Account)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.rule.room_id == room_id && e.rule.state_key == key)
                    .map(|e| e.user_id),
            );
        }
        out
    }

    /// Every account hush has suspended (empty without suspension).
    pub(super) fn suspended_accounts(&self) -> BTreeSet<String> {
        if self.suspensions.is_none() {
            return BTreeSet::new();
        }
        self.ledger.for_scope(&Scope::Account).unwrap_or_default().into_iter().map(|e| e.user_id).collect()
    }

    fn account_plan(&self, user: &str, now: u64) -> Option<Plan> {
        let s = self.suspensions.as_ref()?;
        let entry = match self.ledger.get(&Scope::Account, user, Kind::Suspension) {
            Ok(e) => e,
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                return None;
            }
        };
        // Bans from any trusted list (a ban wins and does not suspend); mutes only from lists
        // that may suspend.
        let decision = self.index.decide_where(user, now, |c| {
            self.trusted(&c)
                && !self.guard.holds.blocks(&c)
                && (c.restriction == hush_core::policy::Restriction::Ban || self.view.trust_of(c.list).suspend)
        });
        let rule = decision.as_ref().and_then(|d| self.index.rule(&d.rule));
        let held = entry.as_ref().is_some_and(|e| self.view.list_held(&e.rule.room_id));
        let protected = self.cfg.protected_users.iter().any(|p| hush_core::policy::glob::glob_match(p, user));
        Some(suspension::plan(&Facts {
            user,
            own_user: &self.cfg.own_user,
            server_name: &s.server_name,
            protected,
            exempt: self.exemption(user).filter(|_| !protected && user != self.cfg.own_user),
            decision: decision.as_ref().map(|d| (d, rule.as_ref())),
            entry: entry.as_ref(),
            held,
        }))
    }

    /// A local user named exactly by a mute rule of a list that may not suspend: what to
    /// say once per rule, so moderators know why the account is not suspended.
    fn untrusted_suspension(&self, user: &str, now: u64) -> Option<(String, String)> {
        let server_name = &self.suspensions.as_ref()?.server_name;
        if suspension::server_of(user) != Some(server_name.as_str()) {
            return None;
        }
        let d = self.index.decide_where(user, now, |c| self.trusted(&c) && !self.guard.holds.blocks(&c))?;
        if self.view.trust_of(&d.rule.room_id).suspend {
            return None;
        }
        let exact = self
            .index
            .rule(&d.rule)
            .is_some_and(|r| r.id.kind == hush_core::policy::EntityKind::User && r.entity.as_deref() == Some(user));
        (d.action == hush_core::policy::Restriction::Mute && exact).then(|| {
            let list = &d.rule.room_id;
            (
                format!("suspend-untrusted|{list}|{}", d.rule.state_key),
                format!(
                    "Not suspending {user}: the list {list} may not suspend (add `suspend` to its actions in policy_lists to allow it). The mute in protected rooms applies as usual."
                ),
            )
        })
    }

    fn execute_account(&mut self, user: &str, plan: Plan, now: u64) {
        if self.cfg.dry_run {
            let text = match &plan {
                Plan::Suspend(w) => format!(
                    "[dry run] would suspend the account {user}; rule {}",
                    super::execute::dry_run_rule(&w.rule)
                ),
                Plan::Lift => format!("[dry run] would lift the suspension of {user}"),
                Plan::Refuse(r) => format!("[dry run] would not suspend {user}: {r}"),
                _ => return,
            };
            info!("{text}");
            self.report_once(&text, &text);
            return;
        }
        let result = match plan {
            Plan::Nothing => Ok(()),
            Plan::Suspend(want) => {
                let fresh = matches!(self.ledger.get(&Scope::Account, user, Kind::Suspension), Ok(None));
                let entry = Entry {
                    scope: Scope::Account,
                    user_id: user.to_owned(),
                    kind: Kind::Suspension,
                    phase: Phase::Applying,
                    previous_level: None,
                    applied_level: None,
                    rule: want.rule.clone(),
                    reason: want.reason.clone(),
                    applied_at_ms: now,
                    expires_at_ms: want.expires_at_ms,
                    overridden: false,
                };
                info!(user, rule = %want.rule, "suspending the account");
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_account_call(user, true, fresh);
                })
            }
            Plan::Resuspend => {
                self.spawn_account_call(user, true, false);
                Ok(())
            }
            Plan::UpdateCause(want) => self.ledger.update_cause(
                &Scope::Account,
                user,
                Kind::Suspension,
                &want.rule,
                &want.reason,
                want.expires_at_ms,
            ),
            Plan::Lift => {
                info!(user, "lifting the account suspension");
                self.ledger
                    .begin_lift(&Scope::Account, user, Kind::Suspension)
                    .map(|()| self.spawn_account_call(user, false, false))
            }
            Plan::Refuse(refusal) => {
                warn!(user, %refusal, "not suspending");
                // A glob names many users: one report per rule, not per user.
                let key = match &refusal {
                    Refusal::NotExact { entity } => format!("suspend-refuse|{entity}"),
                    other => format!("suspend-refuse|{user}|{other}"),
                };
                self.report_once(
                    &key,
                    &format!("Not suspending {user}: {refusal}. The mute in protected rooms applies as usual."),
                );
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(format!("ledger write failed for the suspension of {user}: {e:#}"));
        }
    }

    fn spawn_account_call(&mut self, user: &str, suspend: bool, fresh: bool) {
        let Some(s) = self.suspensions.as_mut() else { return };
        s.in_flight.insert(user.to_owned());
        let api = s.api.clone();
        let inbox = self.inbox.clone();
        let user = user.to_owned();
        self.writes.after_commit(async move {
            let done = suspension::run_call(api, user, suspend, fresh).await;
            let _ = inbox.send(Input::Suspension(done));
        });
    }

    /// An admin call finished: settle the ledger and report what went wrong, once. A call
    /// that leaves hush's entry in place (a failed lift, a suspension that may have taken
    /// effect) is tried again with backoff, until it works or nothing wants it any more.
    pub(super) fn account_call_done(&mut self, done: Done) {
        let Done { user_id: user, suspend, outcome } = done;
        if outcome == Outcome::Retry {
            self.account_retry_due(&user);
            return;
        }
        let again = match self.suspensions.as_mut() {
            Some(s) => {
                s.in_flight.remove(&user);
                s.deferred.remove(&user)
            }
            None => false,
        };
        let mut retry = false;
        let r = match (suspend, outcome) {
            (_, Outcome::Retry) => Ok(()),
            (true, Outcome::Done) => {
                info!(user, "account suspended");
                self.ledger.mark_applied(&Scope::Account, &user, Kind::Suspension)
            }
            (true, Outcome::AlreadySuspended) => {
                self.report_once(
                    &format!("suspend-already|{user}"),
                    &format!(
                        "{user} is already suspended, not by hush: hush leaves that suspension alone and will not lift it."
                    ),
                );
                self.ledger.remove(&Scope::Account, &user, Kind::Suspension)
            }
            (true, Outcome::IsAdmin) => {
                warn!(user, "not suspending a homeserver admin");
                self.report_once(
                    &format!("suspend-admin|{user}"),
                    &format!(
                        "Not suspending {user}: a homeserver admin. The mute in protected rooms applies as usual."
                    ),
                );
                self.ledger.remove(&Scope::Account, &user, Kind::Suspension)
            }
            (true, Outcome::Unknown(e)) => {
                // The request may have suspended the account: keep the `Applying` entry
                // (only it lets hush lift that suspension) and settle it later.
                self.admin_error(&user, "suspend", &e);
                retry = true;
                Ok(())
            }
            (true, Outcome::Failed(e)) => {
                self.admin_error(&user, "suspend", &e);
                self.ledger.remove(&Scope::Account, &user, Kind::Suspension)
            }
            (false, Outcome::Failed(AdminError::UnknownUser(_))) => {
                info!(user, "the account no longer exists: nothing to lift");
                self.ledger.remove(&Scope::Account, &user, Kind::Suspension)
            }
            (false, Outcome::Failed(e) | Outcome::Unknown(e)) => {
                // The entry stays `Lifting`: tried again below, or suspended again by the
                // plan if the rule comes back (the lift may have gone through).
                self.admin_error(&user, "lift the suspension of", &e);
                retry = true;
                Ok(())
            }
            (false, _) => {
                info!(user, "account suspension lifted");
                self.ledger.remove(&Scope::Account, &user, Kind::Suspension)
            }
        };
        if let Err(e) = r {
            self.error(format!("ledger write failed for the suspension of {user}: {e:#}"));
        }
        if again {
            self.reconcile_accounts(&BTreeSet::from([user.clone()]));
        }
        let Some(s) = self.suspensions.as_mut() else { return };
        if !retry {
            s.failures.remove(&user);
        } else if !s.in_flight.contains(&user) {
            let delay = s.failures.entry(user.clone()).or_insert_with(suspension::retry_backoff).next();
            warn!(user, "trying the account again in {delay:?}");
            let inbox = self.inbox.clone();
            self.writes.after_commit(async move {
                tokio::time::sleep(delay).await;
                let _ = inbox.send(Input::Suspension(Done { user_id: user, suspend: false, outcome: Outcome::Retry }));
            });
        }
    }

    /// The wait after a failed call is over: plan the account again (lift, suspend, or
    /// nothing if the rule came back meanwhile).
    fn account_retry_due(&mut self, user: &str) {
        self.reconcile_accounts(&BTreeSet::from([user.to_owned()]));
        if let Some(s) = self.suspensions.as_mut() {
            if !s.in_flight.contains(user) {
                // Nothing to try any more: the next failure starts the backoff afresh.
                s.failures.remove(user);
            }
        }
    }

    fn admin_error(&mut self, user: &str, what: &str, e: &AdminError) {
        // A bad token is one problem, however many users it affects.
        let key = match e {
            AdminError::NotAdmin(_) => "admin-token".to_owned(),
            AdminError::Unsupported => "admin-unsupported".to_owned(),
            other => format!("admin|{user}|{other}"),
        };
        let text = format!("Cannot {what} {user}: {e}.");
        error!("{text}");
        self.report_once(&key, &text);
        self.reports.note_error(text);
    }

    /// A write failed because hush's own account cannot write: pause writes (once) and
    /// start probing for the end of it. True when the error was that.
    pub(super) fn own_account_error(&mut self, e: &WriteError) -> bool {
        let Some(cause) = suspension::blocks_writes(e) else { return false };
        if self.own.blocked.is_some() {
            return true;
        }
        let what = if cause.contains("LOCKED") { "locked" } else { "suspended" };
        error!(
            cause,
            "hush's own account is {what} by its homeserver's admin ({cause}): room writes are paused; \
             reading, the ledger and pending changes are kept, and hush resumes by itself when it can write again"
        );
        self.own.blocked = Some(cause.to_owned());
        self.own.since_ms = self.now();
        self.own.generation += 1;
        self.reports.note_error(format!("hush's own account is {what}: {cause}"));
        let generation = self.own.generation;
        let room =
            self.view.rooms.iter().find(|(_, s)| s.is_some()).map(|(r, _)| r.clone()).or(self.management_room.clone());
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                tokio::time::sleep(suspension::probe_interval(n)).await;
                n = n.saturating_add(1);
                let Some(room) = room.as_deref() else { break };
                // The cheapest write that tells: the room's power levels, unchanged (the
                // homeserver checks suspension before it looks at the content).
                let r = match writer.power_levels(room).await {
                    Ok(pl) => writer.put_power_levels(room, &pl).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match r {
                    Err(WriteError::Suspended(_) | WriteError::Transient(_) | WriteError::RateLimited(_)) => {}
                    _ => break,
                }
            }
            let _ = inbox.send(Input::OwnAccountWritable { generation });
        });
        true
    }

    /// The probe could write: resume, and look at everyone again.
    pub(super) fn own_account_writable(&mut self, generation: u64) {
        if generation != self.own.generation {
            return;
        }
        let Some(cause) = self.own.blocked.take() else { return };
        let minutes = self.now().saturating_sub(self.own.since_ms) / 60_000;
        info!(cause, "hush's own account can write again: resuming");
        self.report_once(
            &format!("resumed|{generation}"),
            &format!(
                "hush's account could not write for about {minutes} min ({cause}). It can again: catching up on every change."
            ),
        );
        let users = self.all_known_users();
        self.reconcile_users(users);
    }
}
