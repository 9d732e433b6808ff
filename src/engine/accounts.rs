//! The engine's account-wide side: suspending local accounts on exact mute rules (MSC3823), and pausing writes while hush's own account is suspended or locked.
//!
//! Core's `reconcile_account` decides, from the same facts as the rooms (`UserFacts`);
//! the admin API is in `crate::suspension`; this module carries out core's account actions
//! with the engine's state (index, ledger, in-flight tracker, timers, reports).

use hush_core::history::Outcome as Logged;
use std::collections::BTreeSet;

use hush_core::schedule::Clock;
use tracing::{error, info, warn};

use hush_core::record::{Entry, Kind, Phase, Scope};

use hush_core::reconcile::{reconcile_account, AccountFacts, AccountShield, Action, Refusal};

use super::reconcile::{to_wanted, Facts, UserFacts};
use super::{Engine, Input};
use crate::enforce::{RoomWriter, WriteError};
use crate::suspension::{self, AdminError, Done, Outcome, Suspensions};

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
        if self.suspensions.is_none() {
            self.expiry.rearm(users.iter().cloned());
            return;
        }
        let facts = self.facts_of(users);
        self.reconcile_accounts_with(&facts);
    }

    /// Decides each account with core's [`reconcile_account`], from the users' facts (the
    /// same the rooms were judged from), and carries out its actions.
    pub(super) fn reconcile_accounts_with(&mut self, facts: &Facts) {
        self.expiry.rearm(facts.keys().cloned());
        if self.suspensions.is_none() {
            return;
        }
        let now = self.now();
        for (user, user_facts) in facts {
            if self.writes.is_writing(&Scope::Account, user) {
                self.writes.defer(&Scope::Account, user);
                continue;
            }
            for action in self.account_actions(user, user_facts, now) {
                self.log_action(Scope::Account, &action);
                let consequences = self.consequences.clone();
                consequences.account(self, user, action, now);
            }
            if let Some((key, text)) = self.untrusted_suspension(user, now) {
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

    /// What core's reconcile decides for one account.
    fn account_actions(&self, user: &str, user_facts: &UserFacts, now: u64) -> Vec<Action> {
        let Some(s) = self.suspensions.as_ref() else { return Vec::new() };
        let entry = match self.ledger.get(&Scope::Account, user, Kind::Suspension) {
            Ok(e) => e,
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                return Vec::new();
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
        let facts = AccountFacts {
            own_user: &self.cfg.own_user,
            server_name: &s.server_name,
            rule_entity: rule.as_ref().and_then(|r| r.entity.as_deref()),
            held: entry.as_ref().is_some_and(|e| self.held(e)),
        };
        let shield = AccountShield { shield: user_facts.shield, protected_room: user_facts.protected_room.clone() };
        reconcile_account(&facts, user, decision.as_ref().map(to_wanted).as_ref(), entry.as_ref(), &shield)
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

    /// Dry run: what the account action would do, reported once; nothing written or called.
    pub(super) fn simulate_account(&mut self, user: &str, action: Action) {
        let text = match &action {
            Action::Suspend { wanted, .. } => format!(
                "[dry run] would suspend the account {user}; rule {}",
                super::execute::dry_run_rule(&wanted.rule)
            ),
            Action::Unsuspend { .. } => format!("[dry run] would lift the suspension of {user}"),
            Action::Refuse { refusal, .. } => format!("[dry run] would not suspend {user}: {refusal}"),
            _ => return,
        };
        info!("{text}");
        self.report_once(&text, &text);
    }

    /// Carries out one of core's account actions: the ledger first (write-ahead), the admin
    /// call after the input's commit.
    pub(super) fn enforce_account(&mut self, user: &str, action: Action, now: u64) {
        let result = match action {
            Action::Suspend { wanted, .. } => {
                let fresh = matches!(self.ledger.get(&Scope::Account, user, Kind::Suspension), Ok(None));
                let entry = Entry {
                    scope: Scope::Account,
                    user_id: user.to_owned(),
                    kind: Kind::Suspension,
                    phase: Phase::Applying,
                    previous_level: None,
                    applied_level: None,
                    rule: wanted.rule.clone(),
                    reason: wanted.reason.clone(),
                    applied_at_ms: now,
                    expires_at_ms: wanted.expires_at_ms,
                    overridden: false,
                    event_ids: Vec::new(),
                };
                info!(user, rule = %wanted.rule, "suspending the account");
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_account_call(user, true, fresh);
                })
            }
            Action::Resuspend { .. } => {
                self.spawn_account_call(user, true, false);
                Ok(())
            }
            Action::UpdateCause { wanted, .. } => self.ledger.update_cause(
                &Scope::Account,
                user,
                Kind::Suspension,
                &wanted.rule,
                &wanted.reason,
                wanted.expires_at_ms,
            ),
            Action::Unsuspend { .. } => {
                info!(user, "lifting the account suspension");
                self.ledger
                    .begin_lift(&Scope::Account, user, Kind::Suspension)
                    .map(|()| self.spawn_account_call(user, false, false))
            }
            Action::Refuse { refusal, .. } => {
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
            // Room actions come from a room's reconcile, never from an account's.
            other => {
                warn!(user, ?other, "ignored a room action planned for an account");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(format!("ledger write failed for the suspension of {user}: {e:#}"));
        }
    }

    fn spawn_account_call(&mut self, user: &str, suspend: bool, fresh: bool) {
        let Some(s) = self.suspensions.as_ref() else { return };
        let api = s.api.clone();
        self.writes.started(&Scope::Account, [user.to_owned()]);
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
        let again = !self.writes.finished(&Scope::Account, std::iter::once(user.as_str())).is_empty();
        let logged = match &outcome {
            Outcome::Done => Logged::Done,
            Outcome::AlreadySuspended => Logged::Failed("already suspended, not by hush".to_owned()),
            Outcome::IsAdmin => Logged::Failed("a homeserver admin".to_owned()),
            Outcome::Failed(e) | Outcome::Unknown(e) => Logged::Failed(e.to_string()),
            Outcome::Retry => Logged::Pending,
        };
        self.settle_logged(&Scope::Account, &user, Kind::Suspension, !suspend, logged);
        self.count_account_call(suspend, &outcome);
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
        let in_flight = self.writes.is_writing(&Scope::Account, &user);
        let Some(s) = self.suspensions.as_mut() else { return };
        if !retry {
            s.failures.remove(&user);
        } else if !in_flight {
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
        let in_flight = self.writes.is_writing(&Scope::Account, user);
        if let Some(s) = self.suspensions.as_mut() {
            if !in_flight {
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
        self.acl.mark_all();
        self.reconcile_users(users);
    }
}
