//! The metrics the engine counts: actions by outcome, refusals, restrictions in force, the decision-to-write latency, dry run.

use super::*;
use crate::metrics::Snapshot;

impl Harness {
    async fn metrics_text(&mut self) -> String {
        let (tx, rx) = oneshot::channel();
        self.engine.handle(Input::Metrics(tx));
        let snapshot: Snapshot = rx.await.unwrap();
        self.engine.metrics().encode(Some(&snapshot))
    }
}

fn has(text: &str, line: &str) {
    assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
}

#[tokio::test(start_paused = true)]
async fn a_mute_and_its_lift_are_counted_and_the_restriction_follows() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@spam:x", MOD]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let text = h.metrics_text().await;
    has(&text, r#"hush_restrictions{kind="mute_power_level"} 0"#);
    has(&text, "hush_protected_rooms_loaded 1");
    has(&text, "hush_protected_rooms 1");

    h.input(rule("spam", "@spam:x", "m.mute")).await;
    // A rule over the room's creator is refused, whatever the list says.
    h.input(rule("mod", MOD, "m.mute")).await;
    let text = h.metrics_text().await;
    has(&text, r#"hush_actions_total{kind="mute_power_level",outcome="done"} 1"#);
    has(&text, r#"hush_restrictions{kind="mute_power_level"} 1"#);
    has(&text, r#"hush_rules{list="!list:x"} 2"#);
    has(&text, r#"hush_refusals_total{reason="room_creator"} 1"#);
    has(&text, "hush_decision_to_write_seconds_count 1");

    h.input(remove_rule("spam")).await;
    let text = h.metrics_text().await;
    has(&text, r#"hush_actions_total{kind="lift_mute_power_level",outcome="done"} 1"#);
    has(&text, r#"hush_restrictions{kind="mute_power_level"} 0"#);
    has(&text, "hush_decision_to_write_seconds_count 2");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_then_refused_ban_counts_the_429_the_retry_and_the_failure() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@spam:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    // A 429 is waited out and retried, then a refusal is final.
    hs.inject(Fault::RateLimited(500), 1);
    hs.inject(Fault::Permanent("M_FORBIDDEN"), 1);
    h.input(rule("spam", "@spam:x", "m.ban")).await;
    let text = h.metrics_text().await;
    has(&text, r#"hush_actions_total{kind="ban",outcome="failed"} 1"#);
    // Process-wide counters (other tests in this process may add to them).
    let counter = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(counter("hush_rate_limited_total ") >= 1, "{text}");
    assert!(counter("hush_write_retries_total ") >= 1, "{text}");
    has(&text, r#"hush_restrictions{kind="ban"} 0"#);
    has(&text, "hush_decision_to_write_seconds_count 1");
}

#[tokio::test(start_paused = true)]
async fn dry_run_counts_what_would_be_done() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@spam:x", "@troll:x"]);
    let mut h = Harness::start(&hs, EngineConfig { dry_run: true, ..config() }, &[ROOM]).await;
    h.input(rule("spam", "@spam:x", "m.mute")).await;
    h.input(rule("troll", "@troll:x", "m.ban")).await;
    let text = h.metrics_text().await;
    has(&text, r#"hush_actions_total{kind="mute_power_level",outcome="dry_run"} 1"#);
    has(&text, r#"hush_actions_total{kind="ban",outcome="dry_run"} 1"#);
    assert!(!text.contains(r#"outcome="done""#), "{text}");
    has(&text, r#"hush_restrictions{kind="mute_power_level"} 0"#);
    assert!(hs.power_level_events(ROOM).is_empty());
}
