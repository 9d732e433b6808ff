//! Fuzz the policy rule parser and the index behind it: any event must parse without
//! panicking, and the index must agree with the naive evaluator on what it stored.
#![no_main]

use hush_core::policy::naive::NaiveIndex;
use hush_core::policy::{parse_rule, EntityKind, PolicyIndex, RuleParse, MAX_RULE_TEXT};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const TYPES: [&str; 11] = [
    "m.policy.rule.user",
    "m.policy.rule.room",
    "m.policy.rule.server",
    "m.room.rule.user",
    "m.room.rule.room",
    "m.room.rule.server",
    "org.matrix.mjolnir.rule.user",
    "org.matrix.mjolnir.rule.room",
    "org.matrix.mjolnir.rule.server",
    "m.room.name",
    "m.policy.rule.",
];
const ROOM: &str = "!list:example.org";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let event_type = TYPES[usize::from(sel) % TYPES.len()];
    // Optional state key before a 0xFF separator, then the JSON content.
    let (state_key, json) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
        None => (String::from("k"), rest),
    };
    let content: Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(json).into_owned()),
    };
    let sender = "@mod:example.org";
    let parsed = parse_rule(ROOM, event_type, &state_key, sender, &content);
    // Deterministic.
    assert_eq!(parsed, parse_rule(ROOM, event_type, &state_key, sender, &content));

    let mut index = PolicyIndex::new();
    let probes: Vec<String> = match &parsed {
        RuleParse::Rule(rule) => {
            assert!(rule.entity.as_deref().is_some_and(|e| !e.is_empty()) || rule.sha256.is_some());
            assert!(rule.id.state_key.len() + rule.reason.len() <= MAX_RULE_TEXT);
            assert_eq!(rule.event_type(), event_type);
            let mut p = vec!["@a:example.org".to_string(), "@A:EXAMPLE.ORG".to_string()];
            if let Some(e) = &rule.entity {
                p.push(e.clone());
                p.push(e.replace(['*', '?'], "x"));
                if rule.id.kind == EntityKind::Server {
                    p.push(format!("@u:{e}"));
                }
            }
            p
        }
        _ => vec!["@a:example.org".to_string()],
    };
    for p in &probes {
        index.track_user(p);
    }
    let now = 1_800_000_000_000;
    let applied = index.apply(ROOM, event_type, &state_key, sender, &content, now);
    let naive = NaiveIndex {
        rules: match &parsed {
            RuleParse::Rule(r) => vec![r.clone()],
            _ => Vec::new(),
        },
    };
    let mut expected_changed = Vec::new();
    for p in &probes {
        for t in [0, now, u64::MAX] {
            assert_eq!(index.decide(p, t), naive.decide(p, t), "{p} at {t}");
        }
        if naive.decide(p, now).is_some() {
            expected_changed.push(p.clone());
        }
    }
    expected_changed.sort();
    expected_changed.dedup();
    assert_eq!(applied.changed, expected_changed);
    assert_eq!(index.len(), usize::from(matches!(parsed, RuleParse::Rule(_))));
    // Removal by empty content leaves nothing behind.
    index.apply(ROOM, event_type, &state_key, sender, &serde_json::json!({}), now);
    assert!(index.is_empty());
    for p in &probes {
        assert_eq!(index.decide(p, now), None);
    }
});
