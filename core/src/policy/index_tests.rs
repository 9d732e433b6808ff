//! Tests of `PolicyIndex`: every event variant and edge, and a model-based property test.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::naive::NaiveIndex;
use super::*;

const L1: &str = "!list1:example.org";
const L2: &str = "!list2:example.org";
const MOD: &str = "@mod:example.org";
const NOW: u64 = 1_800_000_000_000;

fn ban(entity: &str) -> Value {
    json!({"entity": entity, "recommendation": "m.ban", "reason": "spam"})
}
fn mute(entity: &str) -> Value {
    json!({"entity": entity, "recommendation": "m.mute", "reason": "noise"})
}
fn with_expiry(mut v: Value, expiry: u64) -> Value {
    v["expiry"] = json!(expiry);
    v
}

struct Fixture {
    idx: PolicyIndex,
}

impl Fixture {
    fn new(users: &[&str]) -> Self {
        let mut idx = PolicyIndex::new();
        for u in users {
            assert!(idx.track_user(u));
        }
        Fixture { idx }
    }
    fn put(&mut self, room: &str, ty: &str, key: &str, content: Value) -> Applied {
        self.idx.apply(room, ty, key, MOD, &content, NOW)
    }
    fn user(&mut self, key: &str, content: Value) -> Applied {
        self.put(L1, "m.policy.rule.user", key, content)
    }
    fn action(&self, user: &str) -> Option<Restriction> {
        self.idx.decide(user, NOW).map(|d| d.action)
    }
}

fn changed(a: &Applied) -> Vec<&str> {
    a.changed.iter().map(String::as_str).collect()
}

#[test]
fn exact_ban_and_provenance() {
    let mut f = Fixture::new(&["@spam:evil.org", "@ok:good.org"]);
    let a = f.user("rule:@spam:evil.org", ban("@spam:evil.org"));
    assert_eq!(a.outcome, Outcome::Stored);
    assert_eq!(changed(&a), ["@spam:evil.org"]);
    assert_eq!(a.warning, None);
    let d = f.idx.decide("@spam:evil.org", NOW).expect("banned");
    assert_eq!(
        d,
        Decision {
            action: Restriction::Ban,
            expires_at_ms: None,
            rule: RuleId { room_id: L1.into(), kind: EntityKind::User, state_key: "rule:@spam:evil.org".into() },
            reason: "spam".into(),
            sender: MOD.into(),
        }
    );
    assert_eq!(f.action("@ok:good.org"), None);
    // Re-sending the same rule changes nothing.
    let a = f.user("rule:@spam:evil.org", ban("@spam:evil.org"));
    assert_eq!(a.outcome, Outcome::Stored);
    assert!(a.changed.is_empty());
    assert_eq!(f.idx.len(), 1);
}

#[test]
fn case_insensitive_matching() {
    let mut f = Fixture::new(&["@Spam:Evil.ORG", "@spam:evil.org"]);
    let a = f.user("k", ban("@SPAM:evil.org"));
    assert_eq!(changed(&a), ["@Spam:Evil.ORG", "@spam:evil.org"]);
    assert_eq!(f.action("@sPaM:EVIL.org"), Some(Restriction::Ban));
    let a = f.user("g", mute("@*:EVIL.org"));
    // Both already banned: ban beats mute, nothing changes.
    assert!(a.changed.is_empty());
    f.user("k", json!({}));
    assert_eq!(f.action("@spam:evil.org"), Some(Restriction::Mute));
    assert_eq!(f.action("@Other:evil.ORG"), Some(Restriction::Mute));
    // Non-ASCII letters are not folded.
    f.user("u", ban("@émile:x.org"));
    assert_eq!(f.action("@émile:x.org"), Some(Restriction::Ban));
    assert_eq!(f.action("@Émile:x.org"), None);
}

#[test]
fn every_event_type_variant() {
    let types = ["m.policy.rule.user", "m.room.rule.user", "org.matrix.mjolnir.rule.user"];
    for (i, t) in types.iter().enumerate() {
        let mut f = Fixture::new(&["@a:x.org"]);
        let a = f.put(L1, t, "k", ban("@a:x.org"));
        assert_eq!(changed(&a), ["@a:x.org"], "{t}");
        let rule = f.idx.rule(&RuleId { room_id: L1.into(), kind: EntityKind::User, state_key: "k".into() });
        assert_eq!(rule.map(|r| r.event_type()), Some(types[i]));
    }
    for t in ["m.policy.rule.server", "m.room.rule.server", "org.matrix.mjolnir.rule.server"] {
        let mut f = Fixture::new(&["@a:x.org", "@b:y.org"]);
        let a = f.put(L1, t, "k", ban("x.org"));
        assert_eq!(changed(&a), ["@a:x.org"], "{t}");
        assert_eq!(f.action("@a:x.org"), Some(Restriction::Ban));
        assert_eq!(f.action("@b:y.org"), None);
    }
    for t in ["m.policy.rule.room", "m.room.rule.room", "org.matrix.mjolnir.rule.room"] {
        let mut f = Fixture::new(&["@a:x.org"]);
        let a = f.put(L1, t, "k", ban("!room:x.org"));
        assert_eq!(a.outcome, Outcome::Stored);
        assert!(a.changed.is_empty());
        let hits = f.idx.rules_matching(EntityKind::Room, "!ROOM:x.org", NOW);
        assert_eq!(hits.len(), 1, "{t}");
        assert_eq!(f.action("!room:x.org"), None);
    }
}

#[test]
fn not_policy_events_are_ignored() {
    let mut f = Fixture::new(&["@a:x.org"]);
    let a = f.put(L1, "m.room.name", "", json!({"name": "x"}));
    assert_eq!(a.outcome, Outcome::NotPolicy);
    let a = f.put(L1, "m.policy.rule.users", "k", ban("@a:x.org"));
    assert_eq!(a.outcome, Outcome::NotPolicy);
    assert!(f.idx.is_empty());
}

#[test]
fn legacy_vs_stable_precedence() {
    let mut f = Fixture::new(&["@a:x.org", "@b:x.org"]);
    let a = f.put(L1, "org.matrix.mjolnir.rule.user", "k", ban("@a:x.org"));
    assert_eq!(changed(&a), ["@a:x.org"]);
    // Stable rule at the same state key replaces the legacy one (different entity).
    let a = f.put(L1, "m.policy.rule.user", "k", mute("@b:x.org"));
    assert_eq!(changed(&a), ["@a:x.org", "@b:x.org"]);
    assert_eq!(f.action("@a:x.org"), None);
    assert_eq!(f.action("@b:x.org"), Some(Restriction::Mute));
    // A legacy update while the stable one is in force changes nothing.
    let a = f.put(L1, "m.room.rule.user", "k", ban("@b:x.org"));
    assert!(a.changed.is_empty());
    assert_eq!(a.outcome, Outcome::Stored);
    assert_eq!(f.idx.len(), 3);
    assert_eq!(f.action("@b:x.org"), Some(Restriction::Mute));
    let counts = f.idx.list_counts();
    assert_eq!(counts[0].1.effective, 1);
    assert_eq!(counts[0].1.shadowed, 2);
    // Stable removed: m.room.rule (next in precedence) comes back.
    let a = f.put(L1, "m.policy.rule.user", "k", json!({}));
    assert_eq!(a.outcome, Outcome::Removed);
    assert_eq!(changed(&a), ["@b:x.org"]);
    assert_eq!(f.action("@b:x.org"), Some(Restriction::Ban));
    // Removing a shadowed rule changes nothing.
    let a = f.put(L1, "org.matrix.mjolnir.rule.user", "k", json!({}));
    assert!(a.changed.is_empty());
    assert_eq!(a.outcome, Outcome::Removed);
    // Same state key, other kind: independent identity.
    f.put(L1, "m.policy.rule.server", "k", ban("x.org"));
    assert_eq!(f.idx.len(), 2);
    // Inert stable rule still hides the legacy ban.
    f.put(L1, "m.policy.rule.user", "k", json!({"entity": "@b:x.org", "recommendation": "org.example.watch"}));
    f.put(L1, "m.policy.rule.server", "k", json!({}));
    assert_eq!(f.action("@b:x.org"), None);
}

#[test]
fn removal_by_empty_content_and_redaction() {
    let mut f = Fixture::new(&["@a:x.org"]);
    f.user("k", ban("@a:x.org"));
    let a = f.user("k", json!({}));
    assert_eq!((a.outcome, changed(&a)), (Outcome::Removed, vec!["@a:x.org"]));
    assert!(f.idx.is_empty());
    f.user("k", ban("@a:x.org"));
    // A redacted state event: content stripped to {} (or null in some serialisations).
    let a = f.user("k", Value::Null);
    assert_eq!((a.outcome, changed(&a)), (Outcome::Removed, vec!["@a:x.org"]));
    // Removing what does not exist, in a known and an unknown list.
    assert_eq!(f.user("k", json!({})).outcome, Outcome::Nothing);
    let a = f.put("!unknown:x", "m.policy.rule.user", "k", json!({}));
    assert_eq!(a.outcome, Outcome::Nothing);
}

#[test]
fn malformed_rule_is_ignored_and_removes_the_previous_one() {
    let mut f = Fixture::new(&["@a:x.org"]);
    f.user("k", ban("@a:x.org"));
    let a = f.user("k", json!({"entity": 42, "recommendation": "m.ban"}));
    assert_eq!(a.outcome, Outcome::Removed);
    assert_eq!(changed(&a), ["@a:x.org"]);
    let w = a.warning.expect("warning");
    assert_eq!((w.room_id.as_str(), w.event_type.as_str(), w.state_key.as_str()), (L1, "m.policy.rule.user", "k"));
    assert_eq!(w.error, RuleError::EntityNotString);
    assert!(w.to_string().contains("m.policy.rule.user"));
    // Malformed with nothing before: no list is created.
    let a = f.put(L2, "m.policy.rule.user", "k", json!("garbage"));
    assert_eq!(a.outcome, Outcome::Nothing);
    assert_eq!(a.warning.map(|w| w.error), Some(RuleError::ContentNotObject));
    assert!(f.idx.list_counts().is_empty());
}

#[test]
fn entity_longer_than_a_matrix_id_is_skipped() {
    let long_user = format!("@{}:x.org", "a".repeat(MAX_ENTITY_LEN - 7));
    let longer_user = format!("@{}:x.org", "a".repeat(MAX_ENTITY_LEN - 6));
    assert_eq!((long_user.len(), longer_user.len()), (255, 256));
    let long_server = format!("{}.org", "s".repeat(MAX_ENTITY_LEN - 4));
    let longer_server = format!("{}.org", "s".repeat(MAX_ENTITY_LEN - 3));
    let on_long = format!("@a:{long_server}");
    let on_longer = format!("@a:{longer_server}");
    let mut f = Fixture::new(&[&long_user, &longer_user, &on_long, &on_longer]);
    // 255 bytes: stored and enforced.
    let a = f.user("u", ban(&long_user));
    assert_eq!((a.outcome, changed(&a), &a.warning), (Outcome::Stored, vec![long_user.as_str()], &None));
    let a = f.put(L1, "m.policy.rule.server", "s", ban(&long_server));
    assert_eq!((a.outcome, changed(&a), &a.warning), (Outcome::Stored, vec![on_long.as_str()], &None));
    assert_eq!(f.idx.len(), 2);
    // 256 bytes, user and server rule at fresh keys: warning, nothing stored, nobody changes.
    for (ty, entity) in [("m.policy.rule.user", &longer_user), ("m.policy.rule.server", &longer_server)] {
        let a = f.put(L1, ty, "new", ban(entity));
        assert_eq!((a.outcome, a.changed.len()), (Outcome::Nothing, 0), "{ty}");
        let w = a.warning.expect("warning");
        assert_eq!((w.room_id.as_str(), w.event_type.as_str(), w.state_key.as_str()), (L1, ty, "new"));
        assert_eq!(w.error, RuleError::EntityTooLong { len: 256 });
        assert!(w.to_string().contains("256 bytes long"), "{w}");
    }
    assert_eq!(f.idx.len(), 2);
    assert_eq!(f.action(&longer_user), None);
    assert_eq!(f.action(&on_longer), None);
    // 256 bytes replacing a valid rule: malformed, so the earlier rule goes, as for any
    // malformed replacement.
    let a = f.user("u", ban(&longer_user));
    assert_eq!((a.outcome, changed(&a)), (Outcome::Removed, vec![long_user.as_str()]));
    assert_eq!(a.warning.map(|w| w.error), Some(RuleError::EntityTooLong { len: 256 }));
    let a = f.put(L1, "m.policy.rule.server", "s", ban(&longer_server));
    assert_eq!((a.outcome, changed(&a)), (Outcome::Removed, vec![on_long.as_str()]));
    assert_eq!(a.warning.map(|w| w.error), Some(RuleError::EntityTooLong { len: 256 }));
    assert!(f.idx.is_empty());
}

#[test]
fn expiry_boundary_and_timers() {
    let mut f = Fixture::new(&["@a:x.org", "@b:x.org"]);
    let t = NOW + 60_000;
    let a = f.user("m", with_expiry(mute("@a:x.org"), t));
    assert_eq!(changed(&a), ["@a:x.org"]);
    let d = f.idx.decide("@a:x.org", t - 1).expect("muted");
    assert_eq!(d.expires_at_ms, Some(t));
    assert_eq!(f.idx.decide("@a:x.org", t), None);
    assert_eq!(f.idx.next_expiry_after(NOW), Some(t));
    assert_eq!(f.idx.next_expiry_after(t - 1), Some(t));
    assert_eq!(f.idx.next_expiry_after(t), None);
    assert_eq!(f.idx.rules_expiring(NOW, t).len(), 1);
    assert_eq!(f.idx.rules_expiring(t, t + 1).len(), 0);
    assert_eq!(f.idx.changes_between(NOW, t - 1), Vec::<String>::new());
    assert_eq!(f.idx.changes_between(NOW, t), ["@a:x.org"]);
    // An already expired rule is stored but changes nobody's decision now.
    let a = f.user("old", with_expiry(ban("@b:x.org"), NOW));
    assert_eq!(a.outcome, Outcome::Stored);
    assert!(a.changed.is_empty());
    assert_eq!(f.action("@b:x.org"), None);
    assert_eq!(f.idx.decide("@b:x.org", NOW - 1).map(|d| d.action), Some(Restriction::Ban));
    // Negative expiry: expired since the epoch.
    f.user("neg", json!({"entity": "@b:x.org", "recommendation": "m.ban", "expiry": -1}));
    assert_eq!(f.idx.decide("@b:x.org", 0).map(|d| d.rule.state_key), Some("old".into()));
    assert_eq!(
        f.idx
            .rule(&RuleId { room_id: L1.into(), kind: EntityKind::User, state_key: "neg".into() })
            .and_then(|r| r.expiry_ms),
        Some(0)
    );
    // Inert and room rules are not timer material.
    f.put(L1, "m.policy.rule.room", "r", with_expiry(ban("!r:x"), t + 5));
    f.user("o", json!({"entity": "@b:x.org", "recommendation": "x.y", "expiry": t + 6}));
    assert_eq!(f.idx.next_expiry_after(t), None);
}

#[test]
fn effective_decision_ordering() {
    let mut f = Fixture::new(&["@a:x.org"]);
    let u = "@a:x.org";
    f.user("m1", with_expiry(mute(u), NOW + 10));
    f.user("m2", with_expiry(mute(u), NOW + 20));
    let d = f.idx.decide(u, NOW).expect("muted");
    assert_eq!((d.action, d.expires_at_ms), (Restriction::Mute, Some(NOW + 20)));
    assert_eq!(d.rule.state_key, "m2");
    // Permanent beats any expiry.
    let a = f.user("m3", mute(u));
    assert_eq!(changed(&a), [u]);
    assert_eq!(f.idx.decide(u, NOW).and_then(|d| d.expires_at_ms), None);
    // Ban beats mute even when the ban expires first.
    let a = f.user("b1", with_expiry(ban(u), NOW + 5));
    assert_eq!(changed(&a), [u]);
    let d = f.idx.decide(u, NOW).expect("banned");
    assert_eq!((d.action, d.expires_at_ms), (Restriction::Ban, Some(NOW + 5)));
    // After the ban expires the mute is back.
    assert_eq!(f.idx.decide(u, NOW + 5).map(|d| d.action), Some(Restriction::Mute));
    assert_eq!(f.idx.changes_between(NOW, NOW + 5), [u]);
    // Takedown is a ban; a permanent server ban beats the expiring user ban.
    f.put(L2, "m.policy.rule.server", "s", json!({"entity": "x.org", "recommendation": "m.takedown"}));
    let d = f.idx.decide(u, NOW).expect("banned");
    assert_eq!((d.action, d.expires_at_ms), (Restriction::Ban, None));
    assert_eq!(d.rule.kind, EntityKind::Server);
    // Tie between equal rules: smallest (room, kind, state key).
    f.put(L2, "m.policy.rule.server", "s", json!({}));
    f.user("b0", with_expiry(ban(u), NOW + 5));
    assert_eq!(f.idx.decide(u, NOW).map(|d| d.rule.state_key), Some("b0".into()));
}

#[test]
fn hashed_entities() {
    let target = "@secret:evil.org";
    let digest = encode_sha256(&sha256_of(target));
    let hashed = |rec: &str| {
        json!({"recommendation": rec, "reason": "hashed",
               "org.matrix.msc4205.hashes": {"sha256": digest}})
    };
    // Tracked before the first hashed rule (digest map built lazily) and after.
    let mut f = Fixture::new(&[target, "@other:evil.org"]);
    let a = f.user("h", hashed("m.ban"));
    assert_eq!(changed(&a), [target]);
    assert_eq!(f.action(target), Some(Restriction::Ban));
    assert_eq!(f.action("@other:evil.org"), None);
    // Hashes are of the exact id: another case is another hash.
    assert_eq!(f.action("@Secret:evil.org"), None);
    f.idx.track_user("@late:x.org");
    let late = encode_sha256(&sha256_of("@late:x.org"));
    let a =
        f.user("h2", json!({"recommendation": "m.mute", "org.matrix.msc4205.hashes": {"sha256": format!("{late}=")}}));
    assert_eq!(changed(&a), ["@late:x.org"]);
    assert!(f.idx.untrack_user("@late:x.org"));
    let a = f.user("h2", json!({}));
    assert!(a.changed.is_empty());
    let a = f.user("h", json!({}));
    assert_eq!(changed(&a), [target]);
    // Hashed server rule: SHA-256 of the lower-cased server name.
    let sd = encode_sha256(&sha256_of("evil.org"));
    let a = f.put(
        L1,
        "m.policy.rule.server",
        "hs",
        json!({"recommendation": "m.ban", "org.matrix.msc4205.hashes": {"sha256": sd}}),
    );
    assert_eq!(changed(&a), ["@other:evil.org", target]);
    assert_eq!(f.action("@x:EVIL.org"), Some(Restriction::Ban));
}

#[test]
fn glob_rules_and_change_detection() {
    let users = [
        "@spam1:evil.org",
        "@spam2:good.org",
        "@alice:evil.org",
        "@robot:good.org",
        "@bob:good.org",
        "@a:sub.evil.org",
    ];
    let mut f = Fixture::new(&users);
    let a = f.user("p", ban("@spam*"));
    assert_eq!(changed(&a), ["@spam1:evil.org", "@spam2:good.org"]);
    let a = f.user("s", mute("*:evil.org"));
    assert_eq!(changed(&a), ["@alice:evil.org"]); // @spam1 stays banned
    let a = f.user("g", mute("@*bot*:*"));
    assert_eq!(changed(&a), ["@robot:good.org"]);
    let a = f.user("q", mute("@???:good.org"));
    assert_eq!(changed(&a), ["@bob:good.org"]);
    let a = f.put(L1, "m.policy.rule.server", "sg", ban("*.EVIL.org"));
    assert_eq!(changed(&a), ["@a:sub.evil.org"]);
    let a = f.put(L1, "m.policy.rule.server", "sg2", ban("sub?evil*"));
    assert!(a.changed.is_empty());
    // Replacing a glob by another one at the same identity.
    let a = f.user("p", ban("@spam2*"));
    assert_eq!(changed(&a), ["@spam1:evil.org"]); // now only muted via *:evil.org
    assert_eq!(f.action("@spam1:evil.org"), Some(Restriction::Mute));
    assert_eq!(
        f.idx.tracked_users_matching(&RuleId { room_id: L1.into(), kind: EntityKind::User, state_key: "s".into() }),
        ["@alice:evil.org", "@spam1:evil.org"]
    );
    // Untracked users are still decided, just not reported.
    assert_eq!(f.action("@spam99:x.org"), None);
    assert_eq!(f.action("@spam2x:x.org"), Some(Restriction::Ban));
}

#[test]
fn server_rules_ignore_ports() {
    let mut f = Fixture::new(&["@a:localhost:8448", "@b:localhost", "@c:[::1]:8448", "@d:other:80"]);
    let a = f.put(L1, "m.policy.rule.server", "s", ban("localhost"));
    assert_eq!(changed(&a), ["@a:localhost:8448", "@b:localhost"]);
    let a = f.put(L1, "m.policy.rule.server", "t", mute("localhost:8448"));
    assert!(a.changed.is_empty()); // both already banned
    f.put(L1, "m.policy.rule.server", "s", json!({}));
    assert_eq!(f.action("@a:localhost:8448"), Some(Restriction::Mute));
    assert_eq!(f.action("@b:localhost"), None);
    let a = f.put(L1, "m.policy.rule.server", "v6", ban("[::1]"));
    assert_eq!(changed(&a), ["@c:[::1]:8448"]);
    let a = f.put(L1, "m.policy.rule.server", "g", ban("oth*"));
    assert_eq!(changed(&a), ["@d:other:80"]);
}

#[test]
fn server_rules_lists_only_server_rules_in_force() {
    let mut f = Fixture::new(&[]);
    f.put(L1, "m.policy.rule.server", "s", ban("evil.org"));
    f.put(L1, "org.matrix.mjolnir.rule.server", "s", ban("legacy.org"));
    f.put(L1, "m.policy.rule.user", "u", ban("@a:x.org"));
    f.put(L2, "m.policy.rule.server", "m", mute("*.noisy.org"));
    let mut entities: Vec<String> = f.idx.server_rules().filter_map(|r| r.entity).collect();
    entities.sort();
    assert_eq!(entities, ["*.noisy.org", "evil.org"], "the shadowed legacy rule and the user rule are not listed");
    f.put(L1, "m.policy.rule.server", "s", json!({}));
    let mut entities: Vec<String> = f.idx.server_rules().filter_map(|r| r.entity).collect();
    entities.sort();
    assert_eq!(entities, ["*.noisy.org", "legacy.org"], "removing the winner brings the legacy rule back");
}

#[test]
fn remove_list_and_counts() {
    let mut f = Fixture::new(&["@a:x.org", "@b:y.org"]);
    f.put(L1, "m.policy.rule.user", "1", ban("@a:x.org"));
    f.put(L1, "m.policy.rule.user", "2", mute("@b*"));
    f.put(L1, "m.policy.rule.room", "3", ban("!r:x"));
    f.put(L2, "m.policy.rule.user", "1", mute("@a:x.org"));
    f.put(L2, "m.policy.rule.server", "2", json!({"entity": "y.org", "recommendation": "m.takedown"}));
    let counts = f.idx.list_counts();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts[0].1, ListCounts { effective: 3, shadowed: 0, user: 2, room: 1, server: 0 });
    assert_eq!(counts[1].1.server, 1);
    assert_eq!(f.idx.rules().count(), 5);
    let a = f.idx.remove_list(L1, NOW);
    assert_eq!(a.outcome, Outcome::Removed);
    assert_eq!(changed(&a), ["@a:x.org"]); // ban -> mute from L2; @b stays banned (server)
    assert_eq!(f.action("@a:x.org"), Some(Restriction::Mute));
    assert_eq!(f.idx.len(), 2);
    assert_eq!(f.idx.remove_list(L1, NOW).outcome, Outcome::Nothing);
    // The list can come back.
    f.put(L1, "m.policy.rule.user", "1", ban("@a:x.org"));
    assert_eq!(f.action("@a:x.org"), Some(Restriction::Ban));
    let a = f.idx.remove_list(L2, NOW);
    assert_eq!(changed(&a), ["@b:y.org"]);
}

#[test]
fn other_recommendations_are_inert_but_visible() {
    let mut f = Fixture::new(&["@a:x.org"]);
    let a = f.user("w", json!({"entity": "@a:x.org", "recommendation": "org.example.watch"}));
    assert_eq!(a.outcome, Outcome::Stored);
    assert!(a.changed.is_empty());
    assert_eq!(f.action("@a:x.org"), None);
    let hits = f.idx.rules_matching(EntityKind::User, "@a:x.org", NOW);
    assert_eq!(hits[0].recommendation, Recommendation::Other("org.example.watch".into()));
    let all: Vec<Rule> = f.idx.rules().map(|(r, _)| r).collect();
    assert_eq!(all, hits);
}

#[test]
fn tracking() {
    let mut idx = PolicyIndex::new();
    assert!(idx.track_user("@a:x.org"));
    assert!(!idx.track_user("@a:x.org"));
    assert!(idx.track_user("@A:x.org"));
    assert_eq!(idx.tracked_len(), 2);
    assert!(idx.is_tracked("@A:x.org"));
    assert!(idx.untrack_user("@A:x.org"));
    assert!(!idx.untrack_user("@A:x.org"));
    assert!(idx.track_user("no-colon"));
    let a = idx.apply(L1, "m.policy.rule.server", "s", MOD, &ban("x.org"), NOW);
    assert_eq!(changed(&a), ["@a:x.org"]);
    let a = idx.apply(L1, "m.policy.rule.user", "s", MOD, &ban("no-colon"), NOW);
    assert_eq!(changed(&a), ["no-colon"]);
    assert!(idx.untrack_user("@a:x.org"));
    let a = idx.apply(L1, "m.policy.rule.server", "s", MOD, &json!({}), NOW);
    assert!(a.changed.is_empty());
}

#[test]
fn state_key_sharing_the_entity() {
    // Storage dedupes an entity that is a suffix of the state key; check round trips.
    let mut f = Fixture::new(&[]);
    for (key, entity) in [("@a:x.org", "@a:x.org"), ("rule:@a:x.org", "@a:x.org"), ("zz", "@a:x.org"), ("", "@a:x.org")]
    {
        f.user(key, ban(entity));
        let r = f.idx.rule(&RuleId { room_id: L1.into(), kind: EntityKind::User, state_key: key.into() });
        let r = r.expect("stored");
        assert_eq!((r.id.state_key.as_str(), r.entity.as_deref(), r.reason.as_str()), (key, Some(entity), "spam"));
    }
}

// ---------------------------------------------------------------------------------------
// Model-based property test: random event sequences against the naive evaluator.

const USERS: [&str; 8] =
    ["@a:x.org", "@A:x.org", "@ab:x.org", "@b:y.org", "@bot:y.org", "@a:sub.x.org", "@c:y.org", "@é:x.org"];

fn entity_for(kind: EntityKind) -> impl Strategy<Value = Value> {
    let users = prop_oneof![
        Just("@a:x.org"),
        Just("@A:X.ORG"),
        Just("@b:y.org"),
        Just("@*:x.org"),
        Just("@?:*"),
        Just("*bo*"),
        Just("@a*"),
        Just("*.x.org"),
        Just("@é:x.org"),
        Just("*"),
    ];
    let servers = prop_oneof![Just("x.org"), Just("Y.org"), Just("*.x.org"), Just("?.org"), Just("*"),];
    match kind {
        EntityKind::Server => servers.prop_map(|s| json!(s)).boxed(),
        _ => users.prop_map(|s| json!(s)).boxed(),
    }
}

#[derive(Debug, Clone)]
struct Ev {
    room: &'static str,
    ty: String,
    key: String,
    content: Value,
    now: u64,
}

fn event() -> impl Strategy<Value = Ev> {
    let kind = prop_oneof![
        4 => Just(EntityKind::User),
        1 => Just(EntityKind::Room),
        2 => Just(EntityKind::Server)
    ];
    let family = prop_oneof![Just(RuleFamily::Stable), Just(RuleFamily::RoomRule), Just(RuleFamily::Mjolnir)];
    (kind, family, 0..3usize, any::<bool>(), 0..4u8).prop_flat_map(|(kind, family, key, room, shape)| {
        let hashed_user = prop_oneof![Just("@a:x.org"), Just("@b:y.org")]
            .prop_map(|u| json!({"sha256": encode_sha256(&sha256_of(u))}));
        (
            entity_for(kind),
            prop_oneof![
                Just("m.ban"),
                Just("m.mute"),
                Just("m.takedown"),
                Just("other"),
                Just("m.allow"),
                Just("org.matrix.mjolnir.allow"),
                Just("fi.mau.meowlnir.unban"),
            ],
            prop_oneof![Just(None), (1u64..5).prop_map(Some)],
            hashed_user,
            0u64..5,
        )
            .prop_map(move |(entity, rec, expiry, hashes, now)| {
                let content = match shape {
                    0 => json!({}),
                    1 if kind == EntityKind::User => {
                        json!({"recommendation": rec, "org.matrix.msc4205.hashes": hashes})
                    }
                    1 => json!({"entity": 5, "recommendation": rec}),
                    _ => {
                        let mut c = json!({"entity": entity, "recommendation": rec, "reason": "r"});
                        if let Some(e) = expiry {
                            c["expiry"] = json!(e);
                        }
                        c
                    }
                };
                Ev {
                    room: if room { L1 } else { L2 },
                    ty: family.event_type(kind).to_string(),
                    key: format!("k{key}"),
                    content,
                    now,
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn index_agrees_with_naive_model(
        events in proptest::collection::vec(event(), 1..40),
        tracked in proptest::collection::vec(any::<bool>(), USERS.len()),
        drop_list_at in 0usize..60,
    ) {
        let mut idx = PolicyIndex::new();
        let tracked_users: Vec<&str> =
            USERS.iter().zip(&tracked).filter(|(_, t)| **t).map(|(u, _)| *u).collect();
        for u in &tracked_users {
            idx.track_user(u);
        }
        // Model: (room, kind, key, family) -> rule.
        let mut model: BTreeMap<(String, EntityKind, String, RuleFamily), Rule> = BTreeMap::new();
        let naive = |model: &BTreeMap<(String, EntityKind, String, RuleFamily), Rule>| {
            let mut best: BTreeMap<(String, EntityKind, String), &Rule> = BTreeMap::new();
            for ((room, kind, key, _), r) in model {
                best.entry((room.clone(), *kind, key.clone())).or_insert(r);
            }
            NaiveIndex { rules: best.into_values().cloned().collect() }
        };
        for (i, ev) in events.iter().enumerate() {
            let before = naive(&model);
            let applied = if i == drop_list_at {
                model.retain(|k, _| k.0 != ev.room);
                idx.remove_list(ev.room, ev.now)
            } else {
                let parsed = parse_rule(ev.room, &ev.ty, &ev.key, MOD, &ev.content);
                let (family, kind) = classify_event_type(&ev.ty).expect("policy type");
                let k = (ev.room.to_string(), kind, ev.key.clone(), family);
                match parsed {
                    RuleParse::Rule(r) => { model.insert(k, r); }
                    _ => { model.remove(&k); }
                }
                idx.apply(ev.room, &ev.ty, &ev.key, MOD, &ev.content, ev.now)
            };
            let after = naive(&model);
            let expected: Vec<String> = tracked_users
                .iter()
                .filter(|u| before.decide(u, ev.now) != after.decide(u, ev.now))
                .map(|u| u.to_string())
                .collect();
            let mut got = applied.changed.clone();
            got.sort();
            let mut expected_sorted = expected.clone();
            expected_sorted.sort();
            prop_assert_eq!(got, expected_sorted, "changed after {:?}", ev);
            for u in USERS {
                for t in [0u64, 1, 2, 3, 4, 5] {
                    prop_assert_eq!(idx.decide(u, t), after.decide(u, t), "decide {} at {}", u, t);
                }
            }
            prop_assert_eq!(idx.len(), model.len());
            // Timers.
            let next = after.rules.iter()
                .filter(|r| {
                    r.id.kind != EntityKind::Room
                        && (r.recommendation.restriction().is_some() || r.recommendation == Recommendation::Allow)
                })
                .filter_map(|r| r.expiry_ms)
                .filter(|&e| e > 2)
                .min();
            prop_assert_eq!(idx.next_expiry_after(2), next);
            let by_expiry: Vec<String> = tracked_users
                .iter()
                .filter(|u| after.decide(u, 1) != after.decide(u, 3))
                .map(|u| u.to_string())
                .collect();
            let mut got = idx.changes_between(1, 3);
            got.sort();
            let mut by_expiry = by_expiry;
            by_expiry.sort();
            prop_assert_eq!(got, by_expiry);
        }
    }
}

#[test]
fn unanchored_glob_change_detection_through_the_blob() {
    let mut idx = PolicyIndex::new();
    let ids: Vec<String> = (0..3000).map(|i| format!("@u{i}:hs{}.org", i % 7)).collect();
    for id in &ids {
        idx.track_user(id);
    }
    // Untrack most (forces compaction of the blob), re-track a few, add odd ids.
    for id in ids.iter().skip(500) {
        idx.untrack_user(id);
    }
    for id in ids.iter().skip(2990) {
        idx.track_user(id);
    }
    idx.track_user("@U1ZZ:HS1.org");
    idx.track_user("@u1zz:hs1.org");
    idx.track_user("@line\nbreak1zz:hs1.org");
    let glob = "@*1?z*:*";
    let expected: Vec<String> = {
        let mut v: Vec<String> = ids
            .iter()
            .take(500)
            .chain(ids.iter().skip(2990))
            .map(String::clone)
            .chain(["@U1ZZ:HS1.org".into(), "@u1zz:hs1.org".into(), "@line\nbreak1zz:hs1.org".into()])
            .filter(|u| super::glob::glob_match(glob, u))
            .collect();
        v.sort();
        v
    };
    assert_eq!(expected.len(), 3);
    let a = idx.apply(L1, "m.policy.rule.user", "g", MOD, &ban(glob), NOW);
    assert_eq!(a.changed, expected);
    // Widen the glob at the same identity: the newly matched users change, the three
    // already banned by this very rule do not.
    let a = idx.apply(L1, "m.policy.rule.user", "g", MOD, &ban("*1*"), NOW);
    let mut expected: Vec<String> = ids
        .iter()
        .take(500)
        .chain(ids.iter().skip(2990))
        .filter(|u| super::glob::glob_match("*1*", u) && !super::glob::glob_match(glob, u))
        .cloned()
        .collect();
    expected.sort();
    assert!(expected.len() > 100);
    assert_eq!(a.changed, expected);
}

#[test]
fn decide_where_skips_the_rules_it_refuses_and_lets_weaker_ones_decide() {
    let mut f = Fixture::new(&["@spam:evil.org"]);
    f.user("b", ban("@spam:evil.org"));
    f.put(L2, "m.policy.rule.server", "s", mute("evil.org"));
    assert_eq!(f.action("@spam:evil.org"), Some(Restriction::Ban));
    // List 1 may not ban: the server mute of list 2 decides.
    let no_bans_from_l1 = |c: Candidate<'_>| !(c.list == L1 && c.restriction == Restriction::Ban);
    let d = f.idx.decide_where("@spam:evil.org", NOW, no_bans_from_l1).unwrap();
    assert_eq!((d.action, d.rule.room_id.as_str(), d.rule.kind), (Restriction::Mute, L2, EntityKind::Server));
    // A held rule (by identity) is as if it did not exist.
    let not_held = |c: Candidate<'_>| !(c.list == L2 && c.kind == EntityKind::Server && c.state_key == "s");
    assert_eq!(f.idx.decide_where("@spam:evil.org", NOW, |c| no_bans_from_l1(c) && not_held(c)), None);
}

/// Work (matcher steps, bytes of tracked ids scanned, globs verified: deterministic
/// counters, no clock) of applying and removing adversarial globs with change detection
/// against tracked ids made of long runs of `a`.
fn adversarial_change_work(local_len: usize) -> (u64, u64, usize) {
    let globs = [
        "@*a*a*a*a*b:*",
        "@*a*?*a*b*:*",
        "*a*a*a*a*a*a*.*",
        "*a?a?a?a?b*",
        "?*?*?*?*?*b:*",
        "@*aaa*:*",
        "@*aa*b*:*",
        "*aaaaaaaaaaaab*",
        "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*z*",
    ];
    let mut idx = PolicyIndex::new();
    for i in 0..60 {
        let b = if i % 2 == 0 { "b" } else { "" };
        assert!(idx.track_user(&format!("@{i:02}{}{b}:a.org", "a".repeat(local_len))));
    }
    for i in 0..200 {
        idx.track_user(&format!("@user{i}:example.org"));
    }
    glob::work::take();
    let mut changed = 0;
    for (i, g) in globs.iter().enumerate() {
        changed += idx.apply(L1, "m.policy.rule.user", &format!("g{i}"), MOD, &ban(g), NOW).changed.len();
    }
    for i in 0..globs.len() {
        changed += idx.apply(L1, "m.policy.rule.user", &format!("g{i}"), MOD, &json!({}), NOW).changed.len();
    }
    let (steps, verified) = glob::work::take();
    (steps, verified, changed)
}

#[test]
fn adversarial_globs_cost_work_linear_in_the_id_length() {
    let (short_steps, short_verified, short_changed) = adversarial_change_work(60);
    let (long_steps, long_verified, long_changed) = adversarial_change_work(240);
    // Same users matched and changed, the same globs verified: only the ids are longer.
    assert_eq!((short_changed, short_verified), (long_changed, long_verified));
    assert!(short_changed >= 2 * 60, "{short_changed}");
    // Ids 4x as long (and the other tracked ids unchanged): at most 4x the work. A
    // super-linear path (a chain walked once per occurrence of its 3-byte window, a line
    // rescanned per occurrence of the fragment) would be near 16x.
    assert!(long_steps <= 4 * short_steps, "{short_steps} -> {long_steps}");
    assert!(long_steps >= 2 * short_steps, "{short_steps} -> {long_steps}: the measure should see the ids");
}

fn allow(entity: &str) -> Value {
    json!({"entity": entity, "recommendation": "m.allow", "reason": "known to us"})
}

#[test]
fn an_allow_lifts_another_lists_ban_and_mute_and_its_removal_brings_them_back() {
    let mut f = Fixture::new(&["@spam:evil.org", "@other:evil.org"]);
    f.put(L2, "m.policy.rule.user", "b", ban("@spam:evil.org"));
    f.put(L2, "m.policy.rule.server", "s", mute("evil.org"));
    assert_eq!(f.action("@spam:evil.org"), Some(Restriction::Ban));
    // The community's list (L1) allows the user: nothing applies to them any more.
    let a = f.user("a", allow("@spam:evil.org"));
    assert_eq!(changed(&a), ["@spam:evil.org"]);
    assert_eq!(f.action("@spam:evil.org"), None);
    assert_eq!(f.action("@other:evil.org"), Some(Restriction::Mute), "the allow names one user");
    // Every recommendation string of an allow works the same.
    for rec in ["org.matrix.mjolnir.allow", "fi.mau.meowlnir.unban"] {
        let a = f.user("a", json!({"entity": "@spam:evil.org", "recommendation": rec}));
        assert!(a.changed.is_empty(), "{rec}");
        assert_eq!(f.action("@spam:evil.org"), None, "{rec}");
    }
    // A glob allow and a server allow lift too.
    f.user("a", json!({}));
    assert_eq!(f.action("@spam:evil.org"), Some(Restriction::Ban));
    let a = f.put(L1, "m.policy.rule.server", "a", allow("*.org"));
    assert_eq!(changed(&a), ["@other:evil.org", "@spam:evil.org"]);
    assert_eq!((f.action("@spam:evil.org"), f.action("@other:evil.org")), (None, None));
    // The allow goes: the other list's rules apply again.
    let a = f.put(L1, "m.policy.rule.server", "a", json!({}));
    assert_eq!(changed(&a), ["@other:evil.org", "@spam:evil.org"]);
    assert_eq!(f.action("@spam:evil.org"), Some(Restriction::Ban));
    // A rule arriving while an allow is in force stays lifted, and is reported as no change.
    f.user("a", allow("@spam:evil.org"));
    let a = f.put(L2, "m.policy.rule.user", "b2", with_expiry(ban("@spam:evil.org"), NOW + 10));
    assert!(a.changed.is_empty());
    assert_eq!(f.action("@spam:evil.org"), None);
}

#[test]
fn within_one_list_the_closer_rule_wins_and_on_a_tie_the_restriction() {
    let u = "@friend:evil.org";
    let mut f = Fixture::new(&[u]);
    // A server ban with an exact exception: the exception wins.
    f.put(L1, "m.policy.rule.server", "s", ban("evil.org"));
    assert_eq!(changed(&f.user("a", allow(u))), [u]);
    assert_eq!(f.action(u), None);
    // A glob ban is also less close than the exact allow.
    f.user("g", ban("@*:evil.org"));
    assert_eq!(f.action(u), None);
    // An exact ban in the same list is as close as the allow: the ban stays.
    assert_eq!(changed(&f.user("b", ban(u))), [u]);
    assert_eq!(f.action(u), Some(Restriction::Ban));
    f.user("b", json!({}));
    f.user("g", json!({}));
    assert_eq!(f.action(u), None);
    // A glob allow lifts the list's server ban, not its exact mute, nor its glob ban (a tie).
    f.user("a", allow("@fr*:evil.org"));
    assert_eq!(f.action(u), None);
    f.user("m", mute(u));
    assert_eq!(f.action(u), Some(Restriction::Mute));
    f.user("m", json!({}));
    f.user("g", ban("@*:evil.org"));
    assert_eq!(f.action(u), Some(Restriction::Ban));
    f.user("g", json!({}));
    assert_eq!(f.action(u), None);
    // A server allow lifts no rule of its own list naming users on it.
    f.user("a", json!({}));
    f.put(L1, "m.policy.rule.server", "s", allow("evil.org"));
    f.user("m", mute(u));
    assert_eq!(f.action(u), Some(Restriction::Mute));
    // Another list's allow lifts whatever the first list says.
    f.put(L2, "m.policy.rule.user", "a", allow("@*:evil.org"));
    assert_eq!(f.action(u), None);
}

#[test]
fn an_allow_lifts_only_what_its_list_may_cause() {
    let u = "@spam:evil.org";
    let mut f = Fixture::new(&[u]);
    f.put(L2, "m.policy.rule.user", "b", ban(u));
    f.put(L2, "m.policy.rule.server", "m", mute("evil.org"));
    f.user("a", allow(u));
    assert_eq!(f.action(u), None);
    // L1 may only mute: its allow lifts L2's mute, not L2's ban.
    let l1_mutes_only = |c: Candidate<'_>| !(c.list == L1 && c.restriction == Restriction::Ban);
    let d = f.idx.decide_where(u, NOW, l1_mutes_only).expect("still banned");
    assert_eq!((d.action, d.rule.state_key.as_str()), (Restriction::Ban, "b"));
    let no_bans_at_all = |c: Candidate<'_>| c.restriction != Restriction::Ban;
    assert_eq!(f.idx.decide_where(u, NOW, no_bans_at_all), None, "the mute is lifted");
    // A refused allow (held, untrusted) lifts nothing.
    let d = f.idx.decide_where(u, NOW, |c| c.list != L1).expect("banned");
    assert_eq!(d.action, Restriction::Ban);
}

#[test]
fn an_expiring_allow_brings_the_restriction_back_on_time() {
    let u = "@spam:evil.org";
    let mut f = Fixture::new(&[u]);
    f.put(L2, "m.policy.rule.user", "m", mute(u));
    let t = NOW + 60_000;
    f.user("a", with_expiry(allow(u), t));
    assert_eq!(f.action(u), None);
    assert_eq!(f.idx.next_expiry_after(NOW), Some(t));
    assert_eq!(f.idx.allow_expiry_for(u, NOW, |_| true), Some(t));
    assert_eq!(f.idx.allow_expiry_for(u, NOW, |c| c.list != L1), None, "a refused allow sets no timer");
    assert_eq!(f.idx.allow_expiry_for("@other:evil.org", NOW, |_| true), None);
    assert_eq!(f.idx.changes_between(NOW, t), [u]);
    assert_eq!(f.idx.decide(u, t).map(|d| d.action), Some(Restriction::Mute));
    assert_eq!(f.idx.allow_expiry_for(u, t, |_| true), None);
}

/// Found by the model test: a legacy-type allow shadowed by a stable ban at the same state
/// key comes into force when the ban is removed, and lifts another list's ban.
#[test]
fn a_shadowed_allow_coming_into_force_is_a_change() {
    let (a, b) = ("@a:x.org", "@b:y.org");
    let mut f = Fixture::new(&[a, b]);
    f.put(L2, "m.policy.rule.server", "s", ban("?.org"));
    f.user("k", ban(b));
    f.put(L1, "m.room.rule.user", "k", allow(a));
    assert_eq!((f.action(a), f.action(b)), (Some(Restriction::Ban), Some(Restriction::Ban)));
    let r = f.user("k", json!({}));
    // @a: the allow now in force lifts L2's ban; @b: banned by L2's rule instead of L1's.
    assert_eq!(changed(&r), [a, b]);
    assert_eq!((f.action(a), f.action(b)), (None, Some(Restriction::Ban)));
}
