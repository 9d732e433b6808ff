//! Rules the safety guard holds, and what moderators decided about them (`confirm`, `reject`); owned by the engine, persisted in the ledger's database.
//!
//! A guarded rule is known by its identity (list, kind, state key) *and* its fingerprint
//! (recommendation and entity): when the list changes the rule at that identity, the
//! old decision no longer applies and the new rule is judged afresh.

use std::collections::{BTreeMap, HashMap};

use hush_core::policy::{Candidate, EntityKind, Rule};

/// Where a guarded rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for a moderator: enforced for nobody new.
    Held,
    /// A moderator released it: the guard lets it through.
    Confirmed,
    /// A moderator dropped it: enforced for nobody new, and no longer listed as waiting.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Confirmed => "confirmed",
            Status::Rejected => "rejected",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "held" => Status::Held,
            "confirmed" => Status::Confirmed,
            "rejected" => Status::Rejected,
            _ => return None,
        })
    }
}

/// One guarded rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub list: String,
    pub kind: EntityKind,
    pub state_key: String,
    pub fingerprint: String,
    pub status: Status,
    /// The hold it belongs to (what `confirm`/`reject` name).
    pub hold_id: String,
    pub held_at_ms: u64,
    /// Why it was held, and what it would have done, for `status` and the notice.
    pub why: String,
}

/// What a rule says, for telling it apart from a later rule at the same identity.
pub fn fingerprint(rule: &Rule) -> String {
    let entity = match (&rule.entity, &rule.sha256) {
        (Some(e), _) => e.clone(),
        (None, Some(h)) => format!("sha256:{}", hush_core::policy::encode_sha256(h)),
        (None, None) => String::new(),
    };
    format!("{}|{entity}", rule.recommendation.as_str())
}

fn identity(kind: EntityKind, state_key: &str) -> String {
    format!("{}|{state_key}", kind.as_str())
}

/// The guarded rules, by list and identity.
#[derive(Debug, Default)]
pub struct Holds {
    by_list: HashMap<String, HashMap<String, Guarded>>,
    last_id: u64,
}

impl Holds {
    pub fn new(rows: Vec<Guarded>) -> Holds {
        let mut h = Holds::default();
        for g in rows {
            h.note_id(&g.hold_id);
            h.by_list.entry(g.list.clone()).or_default().insert(identity(g.kind, &g.state_key), g);
        }
        h
    }

    fn note_id(&mut self, id: &str) {
        if let Some(n) = id.strip_prefix('h').and_then(|n| n.parse::<u64>().ok()) {
            self.last_id = self.last_id.max(n);
        }
    }

    /// The next hold's id: short, for a moderator to type (`h1`, `h2`, ...).
    pub fn next_id(&mut self) -> String {
        self.last_id += 1;
        format!("h{}", self.last_id)
    }

    pub fn get(&self, list: &str, kind: EntityKind, state_key: &str) -> Option<&Guarded> {
        self.by_list.get(list)?.get(&identity(kind, state_key))
    }

    /// Whether a rule may not newly restrict anyone: held or rejected.
    pub fn blocks(&self, c: &Candidate<'_>) -> bool {
        let Some(rules) = self.by_list.get(c.list) else { return false };
        rules.get(&identity(c.kind, c.state_key)).is_some_and(|g| g.status != Status::Confirmed)
    }

    /// Whether any rule is held or rejected (most of the time none is).
    pub fn any_blocking(&self) -> bool {
        self.by_list.values().flat_map(|m| m.values()).any(|g| g.status != Status::Confirmed)
    }

    /// Whether a moderator confirmed this rule as it is now.
    pub fn confirmed(&self, rule: &Rule) -> bool {
        self.get(&rule.id.room_id, rule.id.kind, &rule.id.state_key)
            .is_some_and(|g| g.status == Status::Confirmed && g.fingerprint == fingerprint(rule))
    }

    pub fn put(&mut self, g: Guarded) {
        self.note_id(&g.hold_id);
        self.by_list.entry(g.list.clone()).or_default().insert(identity(g.kind, &g.state_key), g);
    }

    /// The rule at this identity changed or went (`now` is the rule in force now): a
    /// decision about the old one does not carry over. Returns what was forgotten.
    pub fn forget_if_changed(
        &mut self,
        list: &str,
        kind: EntityKind,
        state_key: &str,
        now: Option<&Rule>,
    ) -> Option<Guarded> {
        let rules = self.by_list.get_mut(list)?;
        let key = identity(kind, state_key);
        let same = rules.get(&key).is_some_and(|g| now.is_some_and(|r| fingerprint(r) == g.fingerprint));
        if same {
            return None;
        }
        let gone = rules.remove(&key);
        if rules.is_empty() {
            self.by_list.remove(list);
        }
        gone
    }

    /// Every rule of one hold.
    pub fn of_hold(&self, id: &str) -> Vec<Guarded> {
        let mut out: Vec<Guarded> =
            self.by_list.values().flat_map(|m| m.values()).filter(|g| g.hold_id == id).cloned().collect();
        out.sort_by(|a, b| (&a.list, &a.state_key).cmp(&(&b.list, &b.state_key)));
        out
    }

    /// The holds waiting for a moderator, by id, with their rules.
    pub fn waiting(&self) -> BTreeMap<String, Vec<&Guarded>> {
        let mut out: BTreeMap<String, Vec<&Guarded>> = BTreeMap::new();
        for g in self.by_list.values().flat_map(|m| m.values()).filter(|g| g.status == Status::Held) {
            out.entry(g.hold_id.clone()).or_default().push(g);
        }
        for rules in out.values_mut() {
            rules.sort_by(|a, b| (&a.list, &a.state_key).cmp(&(&b.list, &b.state_key)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_core::policy::{parse_rule, RuleParse};
    use serde_json::json;

    fn rule(key: &str, entity: &str) -> Rule {
        let content = json!({"entity": entity, "recommendation": "m.ban"});
        match parse_rule("!list", "m.policy.rule.user", key, "@mod:x", &content) {
            RuleParse::Rule(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn held(r: &Rule, id: &str, status: Status) -> Guarded {
        Guarded {
            list: r.id.room_id.clone(),
            kind: r.id.kind,
            state_key: r.id.state_key.clone(),
            fingerprint: fingerprint(r),
            status,
            hold_id: id.into(),
            held_at_ms: 0,
            why: String::new(),
        }
    }

    #[test]
    fn a_held_rule_blocks_until_confirmed_and_a_changed_rule_is_judged_afresh() {
        let everyone = rule("all", "@*:*");
        let mut h = Holds::new(vec![held(&everyone, "h4", Status::Held)]);
        assert_eq!(h.next_id(), "h5", "ids continue after the stored ones");
        let c = Candidate {
            list: "!list",
            kind: EntityKind::User,
            state_key: "all",
            restriction: hush_core::policy::Restriction::Ban,
        };
        assert!(h.blocks(&c));
        assert_eq!(h.waiting().keys().collect::<Vec<_>>(), ["h4"]);
        h.put(held(&everyone, "h4", Status::Confirmed));
        assert!(!h.blocks(&c) && h.confirmed(&everyone));
        assert!(h.waiting().is_empty());
        // The same rule again: the decision stands. Another entity at that key: forgotten.
        assert_eq!(h.forget_if_changed("!list", EntityKind::User, "all", Some(&everyone)), None);
        let narrowed = rule("all", "@spam:x");
        assert!(!h.confirmed(&narrowed));
        assert!(h.forget_if_changed("!list", EntityKind::User, "all", Some(&narrowed)).is_some());
        assert!(h.get("!list", EntityKind::User, "all").is_none());
    }
}
