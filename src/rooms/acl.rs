//! A protected room's `m.room.server_acl` as hush sees it: the content in force, and hush's own write awaited back from sync.

use serde_json::Value;

/// The room's server ACL.
#[derive(Debug, Clone, Default)]
pub struct AclView {
    /// The `m.room.server_acl` content in force; `None` when the room has none.
    pub content: Option<Value>,
    /// The ACL event hush sent last and has not yet seen come back through sync. Sync
    /// delivers a room's events in order, so an ACL event arriving before it is older than
    /// hush's write (which was built from a fresh read): it is ignored. An event that
    /// replaces it is newer.
    awaiting_own: Option<String>,
    /// Ids of the latest ACL events applied (newest last): hush's write result arriving
    /// after sync delivered its event is recognised, and the fresher view kept.
    recent: Vec<String>,
}

/// How many ACL event ids `recent` keeps.
const RECENT: usize = 16;

impl AclView {
    /// Applies an `m.room.server_acl` state event; false if it is older than hush's own
    /// write (ignored).
    pub fn apply(&mut self, ev: &Value) -> bool {
        let event_id = ev.get("event_id").and_then(Value::as_str);
        let replaces = ev.pointer("/unsigned/replaces_state").and_then(Value::as_str);
        if let Some(awaited) = self.awaiting_own.as_deref() {
            if event_id != Some(awaited) && replaces != Some(awaited) {
                return false;
            }
            self.awaiting_own = None;
        }
        self.content = ev.get("content").filter(|c| c.as_object().is_some_and(|m| !m.is_empty())).cloned();
        if let Some(id) = event_id {
            if self.recent.len() >= RECENT {
                self.recent.remove(0);
            }
            self.recent.push(id.to_owned());
        }
        true
    }

    /// hush wrote `content` (as event `event_id`, or nothing when the room already was as
    /// asked): the view takes it now, before sync brings it back.
    pub fn own_written(&mut self, content: Option<Value>, event_id: Option<String>) {
        if event_id.as_ref().is_some_and(|id| self.recent.contains(id)) {
            // Sync delivered it already: the view is as fresh or fresher.
            return;
        }
        self.content = content;
        if event_id.is_some() {
            self.awaiting_own = event_id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acl(id: &str, deny: &[&str], replaces: Option<&str>) -> Value {
        let mut ev = json!({"type": "m.room.server_acl", "state_key": "", "event_id": id,
                            "content": {"allow": ["*"], "deny": deny}});
        if let Some(r) = replaces {
            ev["unsigned"] = json!({"replaces_state": r});
        }
        ev
    }

    #[test]
    fn an_event_older_than_hush_write_does_not_undo_it() {
        let mut v = AclView::default();
        assert!(v.apply(&acl("$1", &["hand.org"], None)));
        v.own_written(Some(json!({"allow": ["*"], "deny": ["hand.org", "evil.org"]})), Some("$2".into()));
        assert!(!v.apply(&acl("$0", &[], None)), "older than hush's write");
        assert_eq!(hush_core::server_acl::deny_entries(v.content.as_ref()), ["hand.org", "evil.org"]);
        assert!(v.apply(&acl("$2", &["hand.org", "evil.org"], None)));
        assert!(v.apply(&acl("$3", &["hand.org"], Some("$2"))), "newer events apply");
        assert_eq!(hush_core::server_acl::deny_entries(v.content.as_ref()), ["hand.org"]);
        v.own_written(None, Some("$4".into()));
        assert!(v.apply(&acl("$5", &[], Some("$4"))), "an event replacing hush's write is newer");
        let empty = json!({"type": "m.room.server_acl", "state_key": "", "event_id": "$6", "content": {}});
        assert!(v.apply(&empty));
        assert_eq!(v.content, None, "an emptied ACL is no ACL");
        // Sync brought hush's event ($7) and a newer one before the write's result came.
        assert!(v.apply(&acl("$7", &["evil.org"], None)));
        assert!(v.apply(&acl("$8", &[], Some("$7"))));
        v.own_written(Some(json!({"deny": ["evil.org"]})), Some("$7".into()));
        assert!(hush_core::server_acl::deny_entries(v.content.as_ref()).is_empty(), "the fresher view is kept");
        assert!(v.apply(&acl("$9", &["x.org"], None)), "nothing is awaited");
    }
}
