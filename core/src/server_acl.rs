//! `m.room.server_acl` content: its `deny` entries, and exact edits of them that keep everything others wrote.
//!
//! Pure. hush only ever adds and removes `deny` entries of its own; `allow` stays as it is
//! (`["*"]` when the room has none, since an ACL without `allow` would deny every server),
//! `allow_ip_literals` and any other key are copied as they are, and entries others wrote
//! keep their place.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::policy::glob::glob_match;
use crate::policy::host_without_port;

/// The event type.
pub const EVENT_TYPE: &str = "m.room.server_acl";

/// The `deny` entries of an ACL content (strings only; anything else is ignored).
pub fn deny_entries(content: Option<&Value>) -> Vec<&str> {
    content
        .and_then(|c| c.get("deny"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether the content has exactly this `deny` entry (ASCII case-insensitive, as server
/// names are).
pub fn has_deny(content: Option<&Value>, entry: &str) -> bool {
    deny_entries(content).iter().any(|d| d.eq_ignore_ascii_case(entry))
}

/// Whether an ACL entry (a glob) matches a server name; the port is not considered, as
/// the specification says for server ACLs.
pub fn entry_matches(entry: &str, server: &str) -> bool {
    let host = host_without_port(server).unwrap_or(server);
    glob_match(entry, host)
}

/// hush's edits of one room's `deny` list: the entries it adds and the ones it removes
/// (lower-cased server globs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclEdit {
    pub add: BTreeSet<String>,
    pub remove: BTreeSet<String>,
}

impl AclEdit {
    /// An entry to add (it is no longer to be removed).
    pub fn add(&mut self, entry: &str) {
        self.remove.remove(entry);
        self.add.insert(entry.to_owned());
    }
    /// An entry to remove (it is no longer to be added).
    pub fn remove(&mut self, entry: &str) {
        self.add.remove(entry);
        self.remove.insert(entry.to_owned());
    }
    /// Forgets whatever was to be done with this entry.
    pub fn drop_entry(&mut self, entry: &str) {
        self.add.remove(entry);
        self.remove.remove(entry);
    }
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
    /// Merges a later edit into this one (the later wins for an entry in both).
    pub fn merge(&mut self, later: AclEdit) {
        for a in later.add {
            self.add(&a);
        }
        for r in later.remove {
            self.remove(&r);
        }
    }
}

/// The content after hush's edits, built from the room's `current` content (`None`: the
/// room has no ACL): entries to remove are taken out (in any case), entries to add are
/// appended unless already there, everything else is kept as it is, and `allow` is
/// `["*"]` when absent. `None` when nothing changes.
pub fn apply_edit(current: Option<&Value>, edit: &AclEdit) -> Option<Value> {
    let mut content = match current {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let before: Vec<Value> = content.get("deny").and_then(Value::as_array).cloned().unwrap_or_default();
    let removed = |v: &Value| v.as_str().is_some_and(|s| edit.remove.iter().any(|r| r.eq_ignore_ascii_case(s)));
    let mut deny: Vec<Value> = before.iter().filter(|v| !removed(v)).cloned().collect();
    for a in &edit.add {
        let present = deny.iter().any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(a)));
        if !present {
            deny.push(Value::String(a.clone()));
        }
    }
    if deny == before && content.get("deny").is_some_and(Value::is_array) {
        return None;
    }
    if deny.is_empty() && before.is_empty() {
        // Nothing to add, nothing there: no event needed.
        return None;
    }
    let obj = content.as_object_mut()?;
    obj.insert("deny".to_owned(), Value::Array(deny));
    if !obj.contains_key("allow") {
        obj.insert("allow".to_owned(), json!(["*"]));
    }
    Some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(add: &[&str], remove: &[&str]) -> AclEdit {
        let mut e = AclEdit::default();
        for a in add {
            e.add(a);
        }
        for r in remove {
            e.remove(r);
        }
        e
    }

    #[test]
    fn adds_to_no_acl_with_allow_everyone() {
        let new = apply_edit(None, &edit(&["evil.org"], &[])).unwrap();
        assert_eq!(new, json!({"allow": ["*"], "deny": ["evil.org"]}));
        assert_eq!(apply_edit(None, &edit(&[], &["evil.org"])), None, "nothing to remove, nothing to write");
    }

    #[test]
    fn keeps_hand_entries_allow_and_ip_literals() {
        let current =
            json!({"allow": ["*.good", "friend.org"], "deny": ["hand.org"], "allow_ip_literals": false, "x": 1});
        let new = apply_edit(Some(&current), &edit(&["evil.org"], &[])).unwrap();
        assert_eq!(
            new,
            json!({"allow": ["*.good", "friend.org"], "deny": ["hand.org", "evil.org"], "allow_ip_literals": false, "x": 1})
        );
        let back = apply_edit(Some(&new), &edit(&[], &["evil.org"])).unwrap();
        assert_eq!(back, current, "removing takes exactly hush's entry out");
    }

    #[test]
    fn an_entry_already_there_is_not_added_twice_and_case_does_not_matter() {
        let current = json!({"allow": ["*"], "deny": ["Evil.ORG"]});
        assert_eq!(apply_edit(Some(&current), &edit(&["evil.org"], &[])), None);
        let gone = apply_edit(Some(&current), &edit(&[], &["evil.org"])).unwrap();
        assert_eq!(gone, json!({"allow": ["*"], "deny": []}));
    }

    #[test]
    fn later_edits_win_and_entries_match_without_port() {
        let mut e = edit(&["a.org"], &[]);
        e.merge(edit(&[], &["a.org"]));
        assert_eq!(e, edit(&[], &["a.org"]));
        e.drop_entry("a.org");
        assert!(e.is_empty());
        assert!(entry_matches("*.example.org", "chat.example.org:8448"));
        assert!(entry_matches("Example.org", "example.ORG"));
        assert!(!entry_matches("example.org", "notexample.org"));
        assert!(has_deny(Some(&json!({"deny": ["x", 3]})), "X"));
        assert_eq!(deny_entries(Some(&json!({"deny": "x"}))), Vec::<&str>::new());
    }
}
