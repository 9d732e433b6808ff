//! Policy lists being read again after a gap in sync, with the rule keys sync changed since the re-read was asked for.
//!
//! Without MSC4222's `state_after`, a `limited` sync timeline comes with the state at its
//! start, which leaves out state sent on parallel forks of the room's history: 50 rules a
//! moderator's client sent at once reached hush as 10 (the timeline), and the other 40
//! were in neither part. After such a sync hush reads the list's whole state again and
//! applies what it did not know. A key that sync changed after the re-read was asked for
//! keeps what sync said: that is as new as the re-read, or newer.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use tracing::info;

use super::Engine;
use crate::enforce::RoomWriter;
use hush_core::schedule::Clock;

#[derive(Debug, Default)]
pub(super) struct ListGaps {
    /// Per list being read again: re-reads under way, and the (type, state key)s sync changed since the first.
    open: HashMap<String, (usize, HashSet<(String, String)>)>,
}

impl ListGaps {
    fn open(&mut self, list: &str) {
        self.open.entry(list.to_owned()).or_default().0 += 1;
    }

    /// Sync changed this key of `list`.
    pub(super) fn touched(&mut self, list: &str, ty: &str, state_key: &str) {
        if let Some((_, keys)) = self.open.get_mut(list) {
            keys.insert((ty.to_owned(), state_key.to_owned()));
        }
    }

    /// One re-read of `list` came back: the keys sync changed since the first was asked for.
    fn close(&mut self, list: &str) -> Option<HashSet<(String, String)>> {
        let (count, keys) = self.open.get_mut(list)?;
        *count -= 1;
        if *count == 0 {
            return self.open.remove(list).map(|(_, keys)| keys);
        }
        Some(keys.clone())
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Sync had a gap in `room_id` (see the module doc): when it is a loaded list, its
    /// re-read is awaited ([`Engine::list_reread`]).
    pub(super) fn list_gap(&mut self, room_id: &str) {
        if self.view.lists.get(room_id) == Some(&true) {
            self.list_gaps.open(room_id);
        }
    }

    /// A list's whole state, read again after a gap in sync: the rule events hush did not
    /// know (a rule it missed, or a removal) are applied as if sync had brought them.
    pub(super) fn list_reread(&mut self, room_id: &str, events: &[Value]) {
        let Some(touched) = self.list_gaps.close(room_id) else { return };
        if self.view.lists.get(room_id) != Some(&true) {
            return;
        }
        let now = self.now();
        let mut changed = BTreeSet::new();
        let mut accounts = BTreeSet::new();
        let mut untrusted = Vec::new();
        let mut missed = 0usize;
        for ev in events {
            let (Some(ty), Some(state_key)) =
                (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
            else {
                continue;
            };
            if hush_core::policy::classify_event_type(ty).is_none()
                || touched.contains(&(ty.to_owned(), state_key.to_owned()))
            {
                continue;
            }
            let removal = ev.get("content").and_then(Value::as_object).is_none_or(|c| c.is_empty());
            let known = self.policy_events.in_force_at(room_id, ty, state_key);
            let event_id = ev.get("event_id").and_then(Value::as_str);
            let new = if removal { known.is_some() } else { known != event_id || event_id.is_none() };
            if !new {
                continue;
            }
            missed += 1;
            accounts.extend(self.named_accounts(room_id, ev, true));
            changed.extend(self.apply_policy_event(room_id, ev, now, &mut untrusted));
        }
        self.report_untrusted(room_id, untrusted);
        if missed > 0 {
            info!(
                list = room_id,
                rules = missed,
                "policy list read again after a gap in sync: applied the rule changes sync had missed"
            );
        }
        accounts.retain(|u| !changed.contains(u));
        self.reconcile_users(changed);
        self.reconcile_accounts(&accounts);
    }
}
