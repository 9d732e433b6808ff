//! hush's own account meets the homeserver's rate limit: one notice a run, with how to exempt it.

use super::*;

fn rate_limit_lines(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("hush's account @hush:x is rate-limited")).collect()
}

/// Issue 15: two writes answered 429 (and a later one) give one notice, naming the exact
/// admin call; the writes are retried and nothing is lost.
#[tokio::test(start_paused = true)]
async fn two_429s_give_one_notice_and_nothing_is_lost() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;
    // One 429 for each room's power-levels write.
    hs.inject(Fault::RateLimited(2_000), 2);
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.pending_faults(), 0, "both 429s were met");
    for room in [ROOM, ROOM2] {
        assert_eq!(hs.power_levels_now(room)["users"]["@a:x"], json!(-1), "muted in {room}");
    }
    let lines = h.notice_lines().await;
    let told = rate_limit_lines(&lines);
    assert_eq!(told.len(), 1, "one notice: {lines:?}");
    assert!(told[0].contains("M_LIMIT_EXCEEDED"), "{}", told[0]);
    assert!(told[0].contains("nothing is lost"), "{}", told[0]);
    assert!(
        told[0].contains(
            "POST /_synapse/admin/v1/users/@hush:x/override_ratelimit with \
             {\"messages_per_second\": 0, \"burst_count\": 0}"
        ),
        "{}",
        told[0]
    );

    // Another 429 later, and the admin API's answer at start-up: still one notice this run.
    hs.inject(Fault::RateLimited(2_000), 1);
    h.input(rule("b", "@b:x", "m.mute")).await;
    h.input(Input::OwnRateLimit(crate::rate_limits::OwnLimit::NoOverride)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@b:x"], json!(-1));
    let lines = h.notice_lines().await;
    assert_eq!(rate_limit_lines(&lines).len(), 1, "still one: {lines:?}");
    assert!(h.status().await.ledger.iter().all(|e| e.phase == hush_core::record::Phase::Applied));
}

/// A dry-run instance told by the admin API says the same, once.
#[tokio::test(start_paused = true)]
async fn dry_run_says_the_same() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut h = Harness::start(&hs, EngineConfig { dry_run: true, ..config() }, &[ROOM]).await;
    h.input(Input::OwnRateLimit(crate::rate_limits::OwnLimit::NoOverride)).await;
    h.input(Input::OwnRateLimit(crate::rate_limits::OwnLimit::NoOverride)).await;
    let lines = h.notice_lines().await;
    let told = rate_limit_lines(&lines);
    assert_eq!(told.len(), 1, "{lines:?}");
    assert!(told[0].contains("no rate-limit override"), "{}", told[0]);
}
