//! Account suspension (MSC3823), hush's own account being suspended, and suspension calls whose answer is lost.

use super::*;

// Account suspension (MSC3823) and hush's own account being suspended.

#[tokio::test(start_paused = true)]
async fn an_exact_mute_suspends_a_local_account_and_its_removal_lifts_it() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@far:y"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x", HUSH, MOD]).await;

    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("far", "@far:y", "m.mute")).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "only the local user; never a remote one");
    let s = h.status().await;
    assert_eq!(entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).map(|e| e.phase), Some(Phase::Applied));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the room mute applies too");

    h.input(remove_rule("a")).await;
    assert_eq!(admin.calls().last(), Some(&("@a:x".to_owned(), false)));
    assert!(admin.suspended().is_empty());
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_temporary_suspension_ends_at_its_expiry() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    // An hour from the harness's start (its settling already took some paused minutes).
    let expiry = 1_700_000_000_000 + 3_600_000;
    h.engine.handle(mute_until("a", "@a:x", expiry));
    let done = h.pump_until(|i| matches!(i, Input::Suspension(_))).await;
    h.engine.handle(done);
    assert!(admin.suspended().contains("@a:x"));
    assert_eq!(
        entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).and_then(|e| e.expires_at_ms),
        Some(expiry)
    );
    // Each settle lets ten quiet minutes of paused time pass; the timer fires within an hour.
    for _ in 0..10 {
        h.settle().await;
    }
    assert!(admin.suspended().is_empty(), "lifted at the expiry");
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
}

#[tokio::test(start_paused = true)]
async fn suspension_safeguards_refuse_and_report_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(
        ROOM,
        "10",
        MOD,
        levels(&[("@g1:x", 0), ("@g2:x", 0)]),
        &[HUSH, "@vip:x", "@boss:x", "@g1:x", "@g2:x"],
    );
    let mut cfg = config();
    cfg.protected_users = vec!["@vip:x".into()];
    let (mut h, admin) = with_admin(&hs, cfg, &[HUSH, "@vip:x", "@boss:x", "@g1:x", "@g2:x"]).await;
    admin.state.lock().unwrap().admins.insert("@boss:x".into());
    // hush itself: refused by the room reconciliation and by suspension.
    h.input(rule("h", HUSH, "m.mute")).await;
    h.input(rule("v", "@vip:x", "m.mute")).await;
    h.input(rule("b", "@boss:x", "m.mute")).await;
    h.input(rule("g", "@g*:x", "m.mute")).await;
    assert!(admin.suspended().is_empty(), "nobody suspended: {:?}", admin.calls());
    let notices = h.notices().await;
    for want in [
        "Not suspending @hush:x: hush never restricts itself.",
        "Not suspending @vip:x: the user is in protected_users.",
        "Not suspending @boss:x: a homeserver admin.",
        "Not suspending @g1:x: the rule's entity `@g*:x` is not exactly the user id",
    ] {
        assert_eq!(notices.iter().filter(|n| n.starts_with(want)).count(), 1, "{want:?} in {notices:#?}");
    }
    assert!(!notices.iter().any(|n| n.starts_with("Not suspending @g2:x")), "one report per glob rule");
    assert!(h.status().await.ledger.iter().all(|e| e.kind != Kind::Suspension));
}

#[tokio::test(start_paused = true)]
async fn admin_errors_are_specific_and_reported_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@ghost:x"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x", "@b:x"]).await;
    h.input(rule("ghost", "@ghost:x", "m.mute")).await;
    admin.state.lock().unwrap().not_admin_token = true;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    let notices = h.notices().await;
    assert_eq!(notices.iter().filter(|n| n.contains("the homeserver has no user @ghost:x")).count(), 1, "{notices:#?}");
    assert_eq!(notices.iter().filter(|n| n.contains("is not a homeserver admin's")).count(), 1, "{notices:#?}");
    assert!(h.status().await.ledger.iter().all(|e| e.kind != Kind::Suspension), "failed calls leave no entry");
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_suspensions_and_calls_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.dry_run = true;
    let (mut h, admin) = with_admin(&hs, cfg, &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.calls().is_empty());
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.starts_with("[dry run] would suspend the account @a:x")), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn hush_suspended_pauses_writes_and_resumes_by_itself() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.set_suspended(true);
    h.input(rule("a", "@a:x", "m.mute")).await;
    let s = h.status().await;
    assert!(s.own_account_blocked.as_ref().is_some_and(|(c, _)| c.starts_with("M_USER_SUSPENDED")), "{s:?}");
    assert!(s.ledger.is_empty(), "the failed mute left no entry: {:?}", s.ledger);
    // While blocked, new rules cause no room writes (only the probes try).
    let before = hs.attempts().iter().filter(|a| !matches!(a.write, Write::PowerLevels { .. })).count();
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(hs.attempts().iter().filter(|a| !matches!(a.write, Write::PowerLevels { .. })).count(), before);
    let errors = h.status().await.last_errors;
    assert_eq!(errors.iter().filter(|e| e.contains("own account")).count(), 1, "one clear error: {errors:#?}");

    hs.set_suspended(false);
    h.settle().await;
    h.sync().await;
    assert!(h.status().await.own_account_blocked.is_none());
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the pending mute went through");
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"), "the ban decided while blocked too");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("It can again")), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn the_rule_suspends_at_once_and_a_room_loaded_later_does_not_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[]).await;
    let admin = FakeAdmin::new("x", &["@a:x"]);
    h.engine.set_suspension(Suspensions::new(std::sync::Arc::new(admin.clone()), "x"));
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "named exactly: suspended before any room knows them");
    h.engine.handle(Input::Configure { management_room: None, lists: vec![], protected: vec![ROOM.into()] });
    h.input(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) }).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "one call");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "and muted in the room");
}

/// A local spammer in no protected room is still suspended by an exact mute rule, from a
/// live rule or a list load, and the removal lifts it: the index never tracked them.
#[tokio::test(start_paused = true)]
async fn a_local_user_in_no_protected_room_is_suspended_and_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@lurker:x", "@other:x", HUSH, MOD]).await;

    h.input(rule("lurker", "@lurker:x", "m.mute")).await;
    assert!(admin.suspended().contains("@lurker:x"), "suspended though in no protected room");
    h.input(remove_rule("lurker")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it");

    // The list (re)loaded with a rule for another local user, e.g. after a restart.
    let loaded = json!({"type": "m.policy.rule.user", "state_key": "other", "sender": MOD, "event_id": "$other",
                        "content": {"entity": "@other:x", "recommendation": "m.mute", "reason": "spam"}});
    h.input(Input::ListLoaded { room_id: LIST.into(), events: vec![loaded] }).await;
    assert!(admin.suspended().contains("@other:x"));
    h.input(Input::ListLoaded { room_id: LIST.into(), events: vec![] }).await;
    assert!(admin.suspended().is_empty(), "a reload without the rule lifts it");
    assert!(h.status().await.ledger.is_empty());
}

// ---------------------------------------------------------------------------------------
// Suspension calls whose answer is lost, and lifts that fail (issue 13).

/// The suspend call took effect but its answer was lost: the retry finds the account
/// suspended, and that suspension is hush's own (its entry was written before the call),
/// not someone else's. So removing the rule lifts it.
#[tokio::test(start_paused = true)]
async fn a_suspension_whose_answer_was_lost_is_hushs_and_the_removal_lifts_it() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    admin.state.lock().unwrap().lose_answers = 1;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).map(|e| e.phase),
        Some(Phase::Applied),
        "the retry settles hush's own entry: {:?}",
        s.ledger
    );
    let notices = h.notices().await;
    assert!(!notices.iter().any(|n| n.contains("already suspended")), "{notices:#?}");

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
}

/// The answer is lost and the server stays unreachable for longer than one call retries:
/// the call may have taken effect, so the entry stays and the suspension is tried again
/// (no other input needed) until it is settled; the removal then lifts it.
#[tokio::test(start_paused = true)]
async fn a_suspension_whose_answer_stays_lost_keeps_its_entry_and_is_retried() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    {
        let mut s = admin.state.lock().unwrap();
        s.lose_answers = 1;
        // More failures than one call's own retries (eight attempts) absorb.
        s.then_down = 12;
    }
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).map(|e| e.phase),
        Some(Phase::Applied),
        "{:?}",
        s.ledger
    );

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
}

/// A lift that fails (the server down for longer than one call retries, twice) is tried
/// again with backoff by itself, with no other input, until it works.
#[tokio::test(start_paused = true)]
async fn a_failed_lift_is_retried_until_it_works_with_no_other_input() {
    let hs = FakeHomeserver::new(HUSH);
    // In no protected room: nothing else (no room write, no sync) looks at @a again.
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));

    // Two whole calls fail (each tries eight times), the third works.
    admin.state.lock().unwrap().transient = 16;
    let t0 = tokio::time::Instant::now();
    h.engine.handle(remove_rule("a"));
    h.settle().await;
    assert!(admin.suspended().is_empty(), "lifted by the retries alone: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
    assert_eq!(admin.state.lock().unwrap().transient, 0, "every failure was tried through");
    // Two calls of about two minutes each, the backoff between them, ten quiet minutes.
    assert!(t0.elapsed() < Duration::from_secs(20 * 60), "{:?}", t0.elapsed());
    let notices = h.notices().await;
    assert_eq!(
        notices.iter().filter(|n| n.contains("Cannot lift the suspension of @a:x")).count(),
        1,
        "reported once: {notices:#?}"
    );
}

/// A lift that keeps failing stops being retried when the rule comes back, and the
/// account stays suspended by hush (its entry applied, lifted when the rule goes).
#[tokio::test(start_paused = true)]
async fn a_failing_lift_stops_when_the_rule_comes_back() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    admin.state.lock().unwrap().transient = 8;
    h.engine.handle(remove_rule("a"));
    let done = h.pump_until(|i| matches!(i, Input::Suspension(_))).await;
    h.engine.handle(done);
    // The lift failed; the rule is back before the retry.
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).map(|e| e.phase),
        Some(Phase::Applied),
        "{:?}",
        s.ledger
    );
    assert!(!admin.calls().contains(&("@a:x".to_owned(), false)), "no lift went through: {:?}", admin.calls());
    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty());
}

/// kill -9 between the suspend call and its answer: at start-up the `Applying` entry is
/// hush's, and the account found suspended is hush's suspension (applied, lifted later).
#[tokio::test(start_paused = true)]
async fn a_half_done_suspension_found_at_start_up_is_hushs() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let ledger = Ledger::in_memory().unwrap();
    ledger
        .begin_apply(&Entry {
            scope: Scope::Account,
            user_id: "@a:x".into(),
            kind: Kind::Suspension,
            phase: Phase::Applying,
            previous_level: None,
            applied_level: None,
            rule: hush_core::policy::RuleId {
                room_id: LIST.into(),
                kind: hush_core::policy::EntityKind::User,
                state_key: "a".into(),
            },
            reason: "spam".into(),
            applied_at_ms: 1,
            expires_at_ms: None,
            overridden: false,
            event_ids: Vec::new(),
        })
        .unwrap();
    let admin = FakeAdmin::new("x", &["@a:x"]);
    // The call before the crash went through.
    admin.state.lock().unwrap().suspended.insert("@a:x".into());
    let clock = TokioClock::starting_at(1_700_000_000_000);
    let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
    let (tx, inbox) = mpsc::unbounded_channel();
    let engine = Engine::new(config(), hs.clone(), clock, ledger, timers, tx)
        .with_suspension(Suspensions::new(std::sync::Arc::new(admin.clone()), "x"));
    let mut h = Harness { engine, inbox, expired, hs: hs.clone() };
    h.engine.handle(Input::Configure {
        management_room: Some(MGMT.into()),
        lists: vec![(LIST.into(), ListTrust::DEFAULT_LIST)],
        protected: vec![ROOM.into()],
    });
    let rule_ev = json!({"type": "m.policy.rule.user", "state_key": "a", "sender": MOD, "event_id": "$a",
                         "content": {"entity": "@a:x", "recommendation": "m.mute", "reason": "spam"}});
    h.engine.handle(Input::ListLoaded { room_id: LIST.into(), events: vec![rule_ev] });
    h.engine.handle(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) });
    h.engine.handle(Input::ListsKnown { pinned: vec![] });
    h.settle().await;
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).map(|e| e.phase),
        Some(Phase::Applied),
        "{:?}",
        s.ledger
    );
    let notices = h.notices().await;
    assert!(!notices.iter().any(|n| n.contains("already suspended")), "{notices:#?}");

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "hush lifts its own suspension: {:?}", admin.calls());
}

/// An account an admin suspended before hush acted is theirs: hush says so once, keeps
/// no entry, and never lifts it.
#[tokio::test(start_paused = true)]
async fn an_account_suspended_by_an_admin_before_hush_is_left_alone() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    admin.state.lock().unwrap().suspended.insert("@a:x".into());
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(entry_of(&h.status().await, &Scope::Account, "@a:x", Kind::Suspension).is_none());
    let notices = h.notices().await;
    assert_eq!(notices.iter().filter(|n| n.contains("@a:x is already suspended, not by hush")).count(), 1);
    h.input(remove_rule("a")).await;
    assert!(admin.suspended().contains("@a:x"), "never lifted by hush");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

/// A management-room moderator and a user in `protected_users`, each named by an exact
/// mute rule: the rooms and the account are judged from one computation of the user's
/// facts, so both refuse, with one line each; demoted, the same facts let both act.
#[tokio::test(start_paused = true)]
async fn rooms_and_account_are_judged_from_the_same_facts() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@boss:x", "@vip:x"]);
    hs.create_room(
        MGMT,
        "10",
        MOD,
        json!({"users": {MOD: 100, "@boss:x": 50}, "events": {"m.room.power_levels": 50}}),
        &[HUSH, MOD, "@boss:x"],
    );
    let mut cfg = config();
    cfg.protected_users = vec!["@v*:x".into()];
    let (mut h, admin) = with_admin(&hs, cfg, &["@boss:x", "@vip:x"]).await;
    h.input(Input::ManagementLoaded { room_id: MGMT.into(), events: hs.state(MGMT) }).await;
    h.input(rule("b", "@boss:x", "m.mute")).await;
    h.input(rule("v", "@vip:x", "m.mute")).await;
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@boss:x"), None);
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@vip:x"), None);
    let notices = h.notice_lines().await;
    for (user, why, key) in [
        ("@boss:x", "the user is a moderator of the management room", "b"),
        ("@vip:x", "the user is in protected_users", "v"),
    ] {
        let room = format!("Not going to mute {user} in {ROOM}: {why} (rule `{key}` in {LIST}).");
        let account = format!("Not suspending {user}: {why}. The mute in protected rooms applies as usual.");
        for want in [room, account] {
            assert_eq!(notices.iter().filter(|n| **n == want).count(), 1, "{want:?} in {notices:#?}");
        }
        assert_eq!(notices.iter().filter(|n| n.contains(user)).count(), 2, "{notices:#?}");
    }

    // No longer a moderator of the management room: muted and suspended, from the same change.
    let ev = hs.set_level_as(MGMT, MOD, "@boss:x", 0);
    h.input(Input::State { room_id: MGMT.into(), event: ev }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@boss:x"], json!(-1));
    assert_eq!(admin.suspended(), std::collections::BTreeSet::from(["@boss:x".to_owned()]));
}

/// Dry run is chosen when the engine is built: the same reconcile and guard run, and a
/// room mute and an account suspension are reported, while the homeserver, the admin API
/// and the ledger are left as they were.
#[tokio::test(start_paused = true)]
async fn dry_run_reports_a_mute_and_a_suspension_and_changes_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.dry_run = true;
    let (mut h, admin) = with_admin(&hs, cfg, &["@a:x"]).await;
    let levels_before = hs.power_levels_now(ROOM);
    h.input(rule("a", "@a:x", "m.mute")).await;
    let notices = h.notice_lines().await;
    for want in [
        "[dry run] would mute @a:x in !room:x (power level -1); rule !list:x|user|a",
        "[dry run] would suspend the account @a:x; rule !list:x|user|a",
    ] {
        assert_eq!(notices.iter().filter(|n| *n == want).count(), 1, "{want:?} in {notices:#?}");
    }
    let writes = hs.writes();
    assert!(writes.iter().all(|w| matches!(w, Write::Notice { .. })), "only reports: {writes:?}");
    assert_eq!(hs.power_levels_now(ROOM), levels_before);
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert!(admin.state.lock().unwrap().accounts_read.is_empty(), "not even a look at the account");
    assert!(h.status().await.ledger.is_empty());

    // The rule goes: nothing to lift, nothing reported as lifted.
    h.input(remove_rule("a")).await;
    assert!(h.notice_lines().await.iter().all(|n| !n.contains("lift")));
    assert!(admin.calls().is_empty());
    assert!(h.status().await.ledger.is_empty());
}
