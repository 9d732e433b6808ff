//! Expiry timers: each user's one pending timer (at their earliest expiry) and the users to re-arm at the end of the input being handled.

use std::collections::{BTreeMap, BTreeSet};

use hush_core::schedule::{Clock, TimerHandle};
use tracing::error;

use super::Engine;
use crate::enforce::RoomWriter;

pub(super) struct Expiry {
    timers: TimerHandle<String>,
    /// Each user's pending expiry timer (engine clock, ms); see [`Engine::arm_reconciled`].
    timer_count: BTreeMap<String, u64>,
    /// Users reconciled by the input being handled: their timer is re-armed at its end.
    rearm: BTreeSet<String>,
}

impl Expiry {
    pub(super) fn new(timers: TimerHandle<String>) -> Self {
        Expiry { timers, timer_count: BTreeMap::new(), rearm: BTreeSet::new() }
    }

    /// These users were reconciled: re-arm their timers at the end of the input.
    pub(super) fn rearm(&mut self, users: impl IntoIterator<Item = String>) {
        self.rearm.extend(users);
    }

    fn take_rearm(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.rearm)
    }

    /// These users' timers fired: none is pending for them any more.
    pub(super) fn fired(&mut self, users: &BTreeSet<String>) {
        for u in users {
            self.timer_count.remove(u);
        }
    }

    /// Whether the user's pending timer is due (at or before `now`): it is about to fire.
    fn due(&self, user: &str, now: u64) -> bool {
        self.timer_count.get(user).is_some_and(|&at| at <= now)
    }

    /// How many users have a timer pending.
    pub(super) fn pending(&self) -> usize {
        self.timer_count.len()
    }

    /// Sets the user's one timer at `at_ms`, or cancels it (`None`).
    pub(super) fn set_timer(&mut self, user: &str, at_ms: Option<u64>) {
        match at_ms {
            Some(at) if self.timer_count.get(user) != Some(&at) => {
                if self.timers.schedule(user.to_owned(), at).is_ok() {
                    self.timer_count.insert(user.to_owned(), at);
                }
            }
            Some(_) => {}
            None => {
                if self.timer_count.remove(user).is_some() {
                    let _ = self.timers.cancel(user.to_owned());
                }
            }
        }
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Arms each user in the ledger once, at their earliest recorded expiry (one already
    /// past fires at once). Called at start-up, before any input; from then on a user's
    /// timer is re-armed after each reconciliation of them ([`Engine::arm_reconciled`]).
    pub(crate) fn arm_ledger_users(&mut self) {
        match self.ledger.all() {
            Ok(entries) => {
                let mut earliest: BTreeMap<String, u64> = BTreeMap::new();
                for e in entries {
                    if let Some(at) = e.expires_at_ms {
                        // A server's deny entry has the one ACL timer; a user has their own.
                        let id =
                            if e.kind.is_about_a_user() { e.user_id } else { super::server_acl::ACL_KEY.to_owned() };
                        let t = earliest.entry(id).or_insert(at);
                        *t = (*t).min(at);
                    }
                }
                for (user, at) in earliest {
                    self.expiry.set_timer(&user, Some(at));
                }
            }
            Err(e) => self.error(format!("cannot read the ledger: {e:#}")),
        }
    }

    /// The one place expiry timers are set: re-arms the timer of each user reconciled by
    /// the input being handled at their earliest future expiry, among what the policy
    /// decides for them, the allow rules that lift restrictions for them, and every ledger
    /// entry of theirs (rooms and account); none if there is none. A user has one timer, so it must be the earliest, whatever order
    /// their rooms were looked at in.
    pub(super) fn arm_reconciled(&mut self) {
        let users = self.expiry.take_rearm();
        let now = self.now();
        for user in users {
            // A timer about to fire is left to fire: it reconciles the user in every room and
            // re-arms then. Reconciling them in one room at that instant (a moderator's level
            // change, as the model test found) must not cancel it, or their mutes in the other
            // rooms outlive the rule.
            if self.expiry.due(&user, now) {
                continue;
            }
            // The ledger's earliest expiry for the user by one query: reading every entry of
            // theirs (one a room) for each input that looks at them cost rooms x rooms rows
            // per rule (BENCHMARKS.md, "200 rooms"). The decision reads the entries only
            // while a rule is held.
            let recorded = self.ledger.next_expiry_for_user(&user, now);
            let entries = if self.guard.holds.any_blocking() { self.ledger.for_user(&user) } else { Ok(Vec::new()) };
            let (recorded, entries) = match (recorded, entries) {
                (Ok(r), Ok(e)) => (r, e),
                (Err(e), _) | (_, Err(e)) => {
                    error!("cannot read the ledger: {e:#}");
                    continue;
                }
            };
            let decided = self.decision_for(&user, now, &entries).and_then(|d| d.expires_at_ms);
            // An expiring allow rule lifts restrictions until then; the decision does not say.
            let allowed = self.index.allow_expiry_for(&user, now, |c| self.trusted(&c) && !self.guard.holds.blocks(&c));
            let next = recorded.into_iter().chain(decided).chain(allowed).filter(|&at| at > now).min();
            self.expiry.set_timer(&user, next);
        }
    }
}
