//! Redaction of a restricted member's recent events: next to a ban, with and without MSC4293, the cap and window, refusals, holds, dry run, rate limits, resuming after a crash, and the `redact` command.

use super::*;
use crate::enforce::RoomWriter;
use hush_core::reconcile::RedactPolicy;

const DAY: u64 = 86_400_000;
const START: u64 = 1_700_000_000_000;
const SPAM: &str = "@spam:x";
const OTHER: &str = "@other:x";

fn redacting(max_per_room: u32) -> EngineConfig {
    EngineConfig {
        redaction: RedactPolicy { on_ban: true, on_mute: false, window_ms: DAY, max_per_room },
        redact_with_msc4293: true,
        ..config()
    }
}

/// A room with SPAM and OTHER; SPAM sent one message two days ago and `recent` in the last
/// hour, OTHER one just now. Returns SPAM's recent message ids, oldest first.
fn room_with_messages(hs: &FakeHomeserver, recent: usize) -> Vec<String> {
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, SPAM, OTHER]);
    hs.post(ROOM, SPAM, START - 2 * DAY);
    let ids = (0..recent).map(|i| hs.post(ROOM, SPAM, START - 3_600_000 + i as u64)).collect();
    hs.post(ROOM, OTHER, START - 1);
    ids
}

fn redactions(hs: &FakeHomeserver) -> Vec<String> {
    hs.writes()
        .into_iter()
        .filter_map(|w| match w {
            Write::Redact { event_id, .. } => Some(event_id),
            _ => None,
        })
        .collect()
}

async fn no_redaction_entry(h: &mut Harness) {
    let s = h.status().await;
    assert!(!s.ledger.iter().any(|e| e.kind == Kind::Redaction), "{:?}", s.ledger);
}

#[tokio::test(start_paused = true)]
async fn a_ban_redacts_the_members_messages_of_the_window_and_nothing_else() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 3);
    let mut h = Harness::start(&hs, redacting(100), &[ROOM]).await;

    h.input(rule("b", SPAM, "m.ban")).await;
    // The ban asks the homeserver to redact too (MSC4293), with the rule's reason.
    let ban = json!({"membership": "ban", "reason": "spam", "org.matrix.msc4293.redact_events": true});
    assert!(
        hs.writes().contains(&Write::Member { room: ROOM.into(), user: SPAM.into(), content: ban }),
        "{:#?}",
        hs.writes()
    );
    // This homeserver does not implement it: hush redacts the window's messages itself,
    // after the ban (newest first); the older message and the other member's stay.
    let mut sent = redactions(&hs);
    sent.sort();
    let mut want = recent.clone();
    want.sort();
    assert_eq!(sent, want);
    let mut redacted = hs.redacted(ROOM);
    redacted.sort();
    assert_eq!(redacted, want);
    let ban_at = hs.writes().iter().position(|w| matches!(w, Write::Member { .. })).unwrap();
    let first_redaction = hs.writes().iter().position(|w| matches!(w, Write::Redact { .. })).unwrap();
    assert!(ban_at < first_redaction, "the ban goes first");
    no_redaction_entry(&mut h).await;
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("Redacted 3 recent event(s) of @spam:x in !room:x.")), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn with_msc4293_the_homeserver_redacts_and_hush_sends_no_redaction() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 3);
    hs.set_msc4293(true);
    let mut h = Harness::start(&hs, redacting(100), &[ROOM]).await;

    h.input(rule("b", SPAM, "m.ban")).await;
    assert!(redactions(&hs).is_empty(), "{:#?}", hs.writes());
    for id in &recent {
        assert!(hs.redacted(ROOM).contains(id), "{id} redacted by the homeserver");
    }
    no_redaction_entry(&mut h).await;
    let notices = h.notices().await;
    assert!(
        notices.iter().any(|n| n.contains("The 3 recent event(s) of @spam:x in !room:x were already redacted")),
        "{notices:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cap_keeps_the_newest_and_msc4293_off_sends_a_plain_ban() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 5);
    hs.set_msc4293(true);
    let cfg = EngineConfig { redact_with_msc4293: false, ..redacting(2) };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;

    h.input(rule("b", SPAM, "m.ban")).await;
    assert!(hs.writes().contains(&Write::Ban { room: ROOM.into(), user: SPAM.into() }));
    let mut sent = redactions(&hs);
    sent.sort();
    let mut newest = recent[3..].to_vec();
    newest.sort();
    assert_eq!(sent, newest, "the two newest only");
    no_redaction_entry(&mut h).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_or_held_ban_redacts_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@helper:x", 50)]), &[HUSH, SPAM, OTHER, "@helper:x"]);
    hs.post(ROOM, "@helper:x", START - 1);
    hs.post(ROOM, SPAM, START - 1);
    let mut h = Harness::start(&hs, redacting(100), &[ROOM]).await;

    // A moderator: refused, so neither banned nor redacted.
    h.input(rule("mod", "@helper:x", "m.ban")).await;
    // A rule for everyone: held by the guard.
    h.input(rule("all", "@*:*", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@helper:x").as_deref(), Some("join"));
    assert_eq!(hs.membership(ROOM, SPAM).as_deref(), Some("join"));
    assert_eq!(hs.lookups(), 0, "no redaction was even looked up");
    assert!(hs.redacted(ROOM).is_empty());
    no_redaction_entry(&mut h).await;
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_the_redaction_and_changes_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    room_with_messages(&hs, 3);
    let cfg = EngineConfig { dry_run: true, ..redacting(100) };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;

    h.input(rule("b", SPAM, "m.ban")).await;
    assert_eq!(hs.lookups(), 0);
    assert!(hs.writes().iter().all(|w| matches!(w, Write::Notice { .. })), "{:#?}", hs.writes());
    let lines = h.notice_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[dry run] would redact the events @spam:x sent in !room:x since 2023-11-13")
                && l.ends_with("(at most 100 per room)")),
        "{lines:#?}"
    );
    // The command too: the same report, nothing looked up or written.
    let text = redact(&mut h, SPAM, Some(ROOM), None).await.unwrap();
    assert!(text.starts_with("[dry run] Would redact the events @spam:x sent since"), "{text}");
    assert_eq!(hs.lookups(), 0);
    assert!(hs.writes().iter().all(|w| matches!(w, Write::Notice { .. })), "{:#?}", hs.writes());
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn redactions_wait_out_rate_limits_a_few_at_a_time() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 40);
    let mut h = Harness::start(&hs, redacting(100), &[ROOM]).await;
    // The first redactions meet 429s, then a 502.
    hs.inject(Fault::RateLimited(2_000), 4);
    hs.inject(Fault::ServerError, 1);

    redact(&mut h, SPAM, None, None).await.unwrap();
    assert_eq!(hs.attempts().iter().filter(|a| a.result.is_err()).count(), 5, "the faults were met");
    let mut redacted = hs.redacted(ROOM);
    redacted.sort();
    let mut want = recent;
    want.sort();
    assert_eq!(redacted, want, "every message of the window, none lost to the 429s");
    let max = hs.max_member_writes_in_flight();
    assert!(max <= crate::engine::MEMBER_WRITES_IN_FLIGHT, "{max} requests at once");
    assert!(max > 1, "several at a time");
    no_redaction_entry(&mut h).await;
}

/// kill -9 in the middle of a redaction: the ledger's entry makes the next start redact
/// what is left (an event already redacted is not redacted again), then removes it.
#[tokio::test(start_paused = true)]
async fn an_interrupted_redaction_resumes_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 4);
    hs.put_membership(ROOM, SPAM, "ban");
    // The first run banned, wrote the entry and redacted one event before it was killed.
    let entry = Entry {
        scope: in_room(ROOM),
        user_id: SPAM.into(),
        kind: Kind::Redaction,
        phase: Phase::Applying,
        previous_level: Some((START - DAY) as i64),
        applied_level: Some(100),
        rule: hush_core::policy::RuleId {
            room_id: LIST.into(),
            kind: hush_core::policy::EntityKind::User,
            state_key: "b".into(),
        },
        reason: "spam".into(),
        applied_at_ms: START,
        expires_at_ms: None,
        overridden: false,
        event_ids: Vec::new(),
    };
    Ledger::open(&path).unwrap().begin_apply(&entry).unwrap();
    hs.redact(ROOM, &recent[3], "").await.unwrap();

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![])], &[]).await;
    let mut redacted = hs.redacted(ROOM);
    redacted.sort();
    let mut want = recent.clone();
    want.sort();
    assert_eq!(redacted, want);
    let sent = redactions(&hs);
    assert_eq!(sent.iter().filter(|id| **id == recent[3]).count(), 1, "not redacted twice: {sent:?}");
    assert_eq!(sent.len(), 4);
    no_redaction_entry(&mut h).await;
}

async fn redact(h: &mut Harness, user: &str, room: Option<&str>, limit: Option<u32>) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    h.input(Input::Redact { user: user.into(), room: room.map(str::to_owned), limit, reply: tx }).await;
    rx.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_redact_command_plans_the_same_redaction_and_refuses_moderators() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 3);
    // Redaction on restrictions is off: the command works anyway.
    let cfg = EngineConfig { redaction: RedactPolicy { on_ban: false, ..RedactPolicy::OFF }, ..config() };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;

    let text = redact(&mut h, SPAM, Some(ROOM), Some(2)).await.unwrap();
    assert!(text.starts_with("Redacting the events @spam:x sent since"), "{text}");
    assert!(text.contains("in !room:x (at most 2 per room)"), "{text}");
    let mut sent = redactions(&hs);
    sent.sort();
    let mut newest = recent[1..].to_vec();
    newest.sort();
    assert_eq!(sent, newest);
    assert_eq!(hs.membership(ROOM, SPAM).as_deref(), Some("join"), "redacting is not banning");
    no_redaction_entry(&mut h).await;

    let refused = redact(&mut h, MOD, None, None).await.unwrap_err();
    assert!(refused.starts_with("Not redacting @mod:x: not in !room:x: "), "{refused}");
    assert!(redact(&mut h, HUSH, None, None).await.unwrap_err().contains("hush never restricts itself"));
    assert_eq!(
        redact(&mut h, SPAM, Some("!elsewhere:x"), None).await.unwrap_err(),
        "!elsewhere:x is not a protected room."
    );
    assert_eq!(redactions(&hs).len(), 2, "nothing more was redacted");
}

#[tokio::test(start_paused = true)]
async fn with_redact_on_mute_a_mute_redacts_too() {
    let hs = FakeHomeserver::new(HUSH);
    let recent = room_with_messages(&hs, 2);
    let mut cfg = redacting(100);
    cfg.redaction.on_mute = true;
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;

    h.input(rule("m", SPAM, "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"][SPAM], json!(-1));
    let mut sent = redactions(&hs);
    sent.sort();
    let mut want = recent;
    want.sort();
    assert_eq!(sent, want);
    no_redaction_entry(&mut h).await;
}

/// A ban over many members is one report, naming those who had something to redact.
#[tokio::test(start_paused = true)]
async fn a_ban_over_several_members_reports_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@s1:x", "@s2:x", "@s3:x", "@s4:x"]);
    for u in ["@s1:x", "@s2:x", "@s3:x"] {
        hs.post(ROOM, u, START - 1);
    }
    let cfg = EngineConfig { safety: Limits { max_new_restrictions: 1000, max_room_share: 1.0 }, ..redacting(100) };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;

    h.input(rule("glob", "@s*:x", "m.ban")).await;
    assert_eq!(hs.redacted(ROOM).len(), 3);
    let notices = h.notices().await;
    let reports: Vec<&String> = notices.iter().filter(|n| n.contains("recent event")).collect();
    assert_eq!(reports.len(), 1, "{notices:#?}");
    for u in ["@s1:x", "@s2:x", "@s3:x"] {
        assert!(reports[0].contains(&format!("Redacted 1 recent event(s) of {u} in !room:x.")), "{}", reports[0]);
    }
    assert!(!reports[0].contains("@s4:x"), "nothing to say about a member who never spoke: {}", reports[0]);
}
