//! The policy event in force at each (list, type, state key), so that redacting it, and only it, removes the rule.
//!
//! A replaced or removed event is forgotten: redacting it changes nothing in the list's
//! state, so it must not remove the rule that replaced it, and the map stays as large as
//! the lists' state.

use std::collections::HashMap;

/// (list, event type, state key).
pub(super) type Key = (String, String, String);

#[derive(Debug, Default)]
pub(super) struct PolicyEvents {
    by_id: HashMap<String, Key>,
    in_force: HashMap<Key, String>,
}

impl PolicyEvents {
    /// `event_id` is now in force at its key (`None`: no event is, as after a removal);
    /// the event it replaces is forgotten.
    pub(super) fn set(&mut self, list: &str, ty: &str, state_key: &str, event_id: Option<&str>) {
        let key = (list.to_owned(), ty.to_owned(), state_key.to_owned());
        if let Some(old) = self.in_force.remove(&key) {
            self.by_id.remove(&old);
        }
        if let Some(id) = event_id {
            // An id seen before at another key (it cannot be, but a buggy server...) moves.
            if let Some(other) = self.by_id.remove(id) {
                self.in_force.remove(&other);
            }
            self.by_id.insert(id.to_owned(), key.clone());
            self.in_force.insert(key, id.to_owned());
        }
    }

    /// When `event_id` is the event in force at a key of `list`, forgets it and returns
    /// its (type, state key): redacting it removes the rule. Otherwise `None`.
    pub(super) fn take(&mut self, list: &str, event_id: &str) -> Option<(String, String)> {
        if self.by_id.get(event_id).is_none_or(|(l, _, _)| l != list) {
            return None;
        }
        let key = self.by_id.remove(event_id)?;
        self.in_force.remove(&key);
        let (_, ty, state_key) = key;
        Some((ty, state_key))
    }

    /// The event in force at (list, type, state key), if any.
    pub(super) fn in_force_at(&self, list: &str, ty: &str, state_key: &str) -> Option<&str> {
        self.in_force.get(&(list.to_owned(), ty.to_owned(), state_key.to_owned())).map(String::as_str)
    }

    /// Forgets every event of `list` (before a reload replaces its state, or an unwatch).
    pub(super) fn forget_list(&mut self, list: &str) {
        self.in_force.retain(|(l, _, _), _| l != list);
        self.by_id.retain(|_, (l, _, _)| l != list);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.by_id.len(), self.in_force.len());
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "m.policy.rule.user";

    #[test]
    fn only_the_event_in_force_is_remembered() {
        let mut p = PolicyEvents::default();
        p.set("!l", T, "a", Some("$v1"));
        p.set("!l", T, "a", Some("$v2"));
        assert_eq!(p.len(), 1, "the replaced event is forgotten");
        assert_eq!(p.take("!l", "$v1"), None);
        assert_eq!(p.take("!other", "$v2"), None, "a redaction in another room");
        assert_eq!(p.take("!l", "$v2"), Some((T.to_owned(), "a".to_owned())));
        assert_eq!(p.take("!l", "$v2"), None, "taken once");
        assert_eq!(p.len(), 0);

        p.set("!l", T, "b", Some("$b1"));
        p.set("!l", T, "b", None);
        assert_eq!((p.take("!l", "$b1"), p.len()), (None, 0), "a removal forgets the event");
    }

    #[test]
    fn forgetting_a_list_keeps_the_others() {
        let mut p = PolicyEvents::default();
        p.set("!l", T, "a", Some("$a"));
        p.set("!m", T, "a", Some("$m"));
        p.forget_list("!l");
        assert_eq!(p.take("!l", "$a"), None);
        assert_eq!(p.take("!m", "$m"), Some((T.to_owned(), "a".to_owned())));
    }
}
