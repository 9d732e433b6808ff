//! Room and account writes under way: who has a write in flight and who waits for it (one tracker, keyed by scope and user), the bound on member writes, and the writes to start once the input's ledger transaction is committed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hush_core::record::Scope;
use tokio::sync::Semaphore;

/// A write to start once the input's ledger transaction is committed.
type Write = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Writes {
    /// Users with writes in flight, by scope (a room, or their account's admin call), and
    /// how many (a ban and a power-level write may be under way together): they are not
    /// reconciled there until all are done (the room view and the ledger do not yet say
    /// what the writes did).
    writing: HashMap<Scope, HashMap<String, usize>>,
    /// Users whose reconciliation waited for a write, by scope: reconciled when it is done.
    deferred: HashMap<Scope, BTreeSet<String>>,
    /// Bounds the member writes in flight ([`super::MEMBER_WRITES_IN_FLIGHT`]).
    member_writes: Arc<Semaphore>,
    /// Room and account writes started by the input being handled, spawned once its
    /// ledger transaction is committed.
    after_commit: Vec<Write>,
}

impl Writes {
    pub(super) fn new(member_writes_in_flight: usize) -> Self {
        Writes {
            writing: HashMap::new(),
            deferred: HashMap::new(),
            member_writes: Arc::new(Semaphore::new(member_writes_in_flight)),
            after_commit: Vec::new(),
        }
    }

    /// A write for these users in this scope is under way.
    pub(super) fn started(&mut self, scope: &Scope, users: impl IntoIterator<Item = String>) {
        let writing = self.writing.entry(scope.clone()).or_default();
        for user in users {
            *writing.entry(user).or_default() += 1;
        }
    }

    pub(super) fn is_writing(&self, scope: &Scope, user: &str) -> bool {
        self.writing.get(scope).is_some_and(|w| w.contains_key(user))
    }

    /// Reconcile this user when their write in this scope is done.
    pub(super) fn defer(&mut self, scope: &Scope, user: &str) {
        self.deferred.entry(scope.clone()).or_default().insert(user.to_owned());
    }

    /// A write for these users is done: returns those whose reconciliation waited and who
    /// have no other write in flight.
    pub(super) fn finished<'a>(&mut self, scope: &Scope, users: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
        let mut again = BTreeSet::new();
        for user in users {
            if let Some(w) = self.writing.get_mut(scope) {
                match w.get_mut(user) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        continue;
                    }
                    _ => {
                        w.remove(user);
                    }
                }
            }
            if let Some(d) = self.deferred.get_mut(scope) {
                if d.remove(user) {
                    again.insert(user.to_owned());
                }
            }
        }
        if self.writing.get(scope).is_some_and(HashMap::is_empty) {
            self.writing.remove(scope);
        }
        if self.deferred.get(scope).is_some_and(BTreeSet::is_empty) {
            self.deferred.remove(scope);
        }
        again
    }

    /// The slots member writes take one of while they run.
    pub(super) fn member_slots(&self) -> Arc<Semaphore> {
        self.member_writes.clone()
    }

    /// Starts this write once the input's ledger transaction is committed.
    pub(super) fn after_commit(&mut self, write: impl Future<Output = ()> + Send + 'static) {
        self.after_commit.push(Box::pin(write));
    }

    /// The writes the input started, to spawn now that its transaction is committed.
    pub(super) fn take_after_commit(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.after_commit)
    }
}
