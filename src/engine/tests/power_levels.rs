//! Power-level mutes: one event per batch, moderators' changes while a write waits, stale clients, own echoes, rules changed in flight.

use super::*;

#[tokio::test(start_paused = true)]
async fn fifty_mutes_in_one_room_are_one_power_levels_event_and_restore_exactly() {
    let users: Vec<String> = (0..50).map(|i| format!("@u{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    // Some have explicit levels (10, and 0 = the default but explicit), the rest none.
    let original = levels(&[("@u1:x", 10), ("@u2:x", 0), ("@u3:x", 10)]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, original.clone(), &members);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    // Fifty rules arriving one after another (as one sync batch delivers them).
    for u in &users {
        h.engine.handle(rule(u, u, "m.mute"));
    }
    h.settle().await;
    h.sync().await;
    let events = hs.power_level_events(ROOM);
    assert!(events.len() <= 2, "{} power-level events for 50 mutes", events.len());
    assert_eq!(events.len(), 1, "all 50 arrived within one window");
    for u in &users {
        assert_eq!(events[0]["users"][u.as_str()], json!(-1), "{u}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 50);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied && e.kind == Kind::MutePowerLevel));

    // Lifting all fifty is one more event, and the content is exactly what it was.
    for u in &users {
        h.engine.handle(remove_rule(u));
    }
    h.settle().await;
    h.sync().await;
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], original);
    assert_eq!(hs.power_levels_now(ROOM), original);
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_glob_rule_over_fifty_members_is_one_event() {
    let users: Vec<String> = (0..50).map(|i| format!("@spam{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &members);
    // A rule over 50 members is what the guard holds; this test is about batching.
    let cfg = EngineConfig { safety: Limits { max_new_restrictions: 1000, max_room_share: 1.0 }, ..config() };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;
    h.input(rule("glob", "@spam*:x", "m.mute")).await;
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["users"].as_object().unwrap().values().filter(|v| **v == json!(-1)).count(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_moderators_change_during_the_mute_is_respected() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("changed to 25 while hush's mute was on")), "{notices:?}");

    let events_before = hs.power_level_events(ROOM).len();
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_level_events(ROOM).len(), events_before, "hush does not overwrite the moderator");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25));
    assert!(h.status().await.ledger.is_empty());
}

/// Handles inputs until the room's power-levels write is under way, then lets it meet the
/// server once (a test injects a rate limit, so it then waits to retry).
async fn start_power_levels_write(h: &mut Harness) {
    let flush = h.pump_until(|i| matches!(i, Input::Flush { .. })).await;
    h.engine.handle(flush);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = h.hs.attempts().iter().filter(|a| matches!(a.write, Write::PowerLevels { .. })).count();
    assert!(refused > 0 && h.hs.attempts().iter().all(|a| a.result.is_err()), "{:?}", h.hs.attempts());
}

/// Issue 13: a moderator sets a user's level while hush's mute of them waits behind 429s.
/// The retry must not overwrite it: the moderator decided, nothing of hush's is in force.
#[tokio::test(start_paused = true)]
async fn a_level_set_while_the_mute_waits_behind_rate_limits_stands() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.inject(Fault::RateLimited(2_000), 2);
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    start_power_levels_write(&mut h).await;

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.engine.handle(Input::State { room_id: ROOM.into(), event: ev });
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25), "the moderator's level stands");
    assert!(hs.power_level_events(ROOM).is_empty(), "hush wrote nothing: {:?}", hs.power_level_events(ROOM));
    let s = h.status().await;
    let e = entry_of(&s, &in_room(ROOM), "@a:x", Kind::MutePowerLevel);
    assert!(e.as_ref().is_none_or(|e| e.overridden), "no mute of hush's for @a:x: {e:?}");
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.starts_with("Did not mute @a:x in !room:x")).count(),
        1,
        "reported once: {notices:?}"
    );

    // The rule ends: nothing of hush's to restore, the level stays.
    h.input(remove_rule("a")).await;
    assert!(hs.power_level_events(ROOM).is_empty());
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25));
    assert!(h.status().await.ledger.is_empty());
}

/// Issue 13, the other way: a moderator changes a muted user's level while hush's lift
/// waits behind 429s; the lift must not restore the old level over it.
#[tokio::test(start_paused = true)]
async fn a_level_set_while_the_lift_waits_behind_rate_limits_stands() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let events = hs.power_level_events(ROOM).len();
    let attempts = hs.attempts().len();

    hs.inject(Fault::RateLimited(2_000), 2);
    h.engine.handle(remove_rule("a"));
    let flush = h.pump_until(|i| matches!(i, Input::Flush { .. })).await;
    h.engine.handle(flush);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hs.attempts()[attempts..].iter().all(|a| a.result.is_err()), "the lift waits: {:?}", hs.attempts());
    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 30);
    hs.take_sync();
    h.engine.handle(Input::State { room_id: ROOM.into(), event: ev });
    h.settle().await;
    h.sync().await;

    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(30), "the moderator's level stands");
    assert_eq!(hs.power_level_events(ROOM).len(), events, "hush wrote nothing more");
    assert!(h.status().await.ledger.is_empty(), "the ended mute is forgotten");
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.starts_with("The mute of @a:x ended, but their power level in !room:x")).count(),
        1,
        "reported once: {notices:?}"
    );
}

/// Issue 13: a moderator's client that built its power levels on a state older than hush's
/// mute (`prev_content` without the mute) and put the user back where they were did not
/// decide anything about them: hush mutes them again and says so once. A moderator who
/// saw the mute (`prev_content` has it) and lowered it decided: hush leaves it, as before.
#[tokio::test(start_paused = true)]
async fn a_stale_clients_write_that_undoes_a_mute_is_muted_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    // The client saw the room before the mute and gives @b:x 5.
    let stale = levels(&[("@a:x", 10), ("@b:x", 5)]);
    hs.put_levels_as(ROOM, MOD, stale, levels(&[("@a:x", 10)]));
    h.sync().await;
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", -1), ("@b:x", 5)]), "muted again, @b:x kept");
    let s = h.status().await;
    let e = entry_of(&s, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).expect("hush's mute");
    assert_eq!((e.phase, e.previous_level, e.overridden), (Phase::Applied, Some(10), false));
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.contains("A client working from an older state of !room:x")).count(),
        1,
        "{notices:?}"
    );
    assert!(!notices.iter().any(|n| n.contains("while hush's mute was on")), "{notices:?}");

    // The rule ends: the level before the mute comes back.
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10), ("@b:x", 5)]));
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_moderators_write_built_on_the_mute_that_undoes_it_is_a_decision() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    let muted = hs.power_levels_now(ROOM);
    assert_eq!(muted["users"]["@a:x"], json!(-1));

    hs.put_levels_as(ROOM, MOD, levels(&[("@a:x", 10)]), muted);
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(10), "the moderator's level stands");
    let s = h.status().await;
    assert!(entry_of(&s, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).is_some_and(|e| e.overridden));
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("changed to 10 while hush's mute was on")), "{notices:?}");
    assert!(!notices.iter().any(|n| n.contains("older state")), "{notices:?}");
}

/// Sync may deliver hush's own power-levels event before the write's result reaches the
/// engine; a moderator's change after it must still be seen.
#[tokio::test(start_paused = true)]
async fn own_echo_before_the_write_result_does_not_hide_later_changes() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    for (room_id, event) in hs.take_sync() {
        h.engine.handle(Input::State { room_id, event });
    }
    h.engine.handle(done);
    h.settle().await;

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25), "the moderator's level stays");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("changed to 25 while hush's mute was on")), "{notices:?}");
}

/// Issue 13: hush's own power-levels echo never comes through sync (a gappy sync). A
/// moderator's later change, which names hush's event as the one it replaces, must still
/// reach the view: the user it promotes is then a room moderator, whom hush never mutes.
#[tokio::test(start_paused = true)]
async fn a_promotion_after_a_lost_own_echo_is_seen() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    h.settle().await;
    let lost = hs.take_sync();
    let (_, ours) = lost.iter().rev().find(|(r, e)| r == ROOM && e["type"] == "m.room.power_levels").expect("echo");
    assert_eq!(ours["content"]["users"]["@a:x"], json!(-1), "hush's mute was written");

    let mut ev = hs.set_level_as(ROOM, MOD, "@b:x", 50);
    hs.take_sync();
    ev["unsigned"] = json!({"prev_content": ours["content"], "replaces_state": ours["event_id"]});
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;

    h.input(rule("b", "@b:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@b:x"], json!(50), "the new moderator is not muted");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("@b:x") && n.contains("is a moderator of the room")), "{notices:?}");
    assert!(!notices.iter().any(|n| n.contains("waited to be written")), "no mute of @b:x was planned: {notices:?}");
    assert_eq!(hs.power_level_events(ROOM).len(), 1, "only hush's mute of @a:x was written");
}

/// A rule removed while its mute is being written: the mute must still be lifted.
#[tokio::test(start_paused = true)]
async fn a_rule_removed_while_its_mute_is_in_flight_is_still_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the write went through");
    h.engine.handle(remove_rule("a"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10)]), "the mute is lifted");
    assert!(h.status().await.ledger.is_empty());
}

/// The reverse: a rule comes back while its lift is being written: the user ends muted.
#[tokio::test(start_paused = true)]
async fn a_rule_restored_while_its_lift_is_in_flight_mutes_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.engine.handle(remove_rule("a"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted again");
    let s = h.status().await;
    let e = entry_of(&s, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).expect("an entry");
    assert_eq!((e.phase, e.previous_level, e.overridden), (Phase::Applied, None, false));
    let notices = h.notices().await;
    assert!(notices.is_empty(), "{notices:?}");
}

#[tokio::test(start_paused = true)]
async fn refusals_are_reported_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "12", MOD, levels(&[("@high:x", 100)]), &[HUSH, "@high:x", "@vip:x", "@a:x"]);
    hs.create_room(ROOM2, "10", MOD, json!({"users": {HUSH: 20}}), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.protected_users = vec!["@vip*".into()];
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    for (k, u) in [("1", HUSH), ("2", MOD), ("3", "@high:x"), ("4", "@vip:x"), ("5", "@a:x")] {
        h.input(rule(k, u, "m.mute")).await;
    }
    let notices = h.notice_lines().await;
    for want in [
        "Not going to mute @hush:x in 2 rooms (!room2:x, !room:x): hush never restricts itself (rule `1` in !list:x).",
        "Not going to mute @mod:x in 2 rooms (!room2:x, !room:x): room creators cannot be restricted (rule `2` in !list:x).",
        "Not going to mute @high:x in !room:x: the user is a moderator of the room (power level 100, at or above 50, the lowest of kick, ban and redact) (rule `3` in !list:x).",
        "Not going to mute @vip:x in !room:x: the user is in protected_users (rule `4` in !list:x).",
        "Not going to mute @a:x in !room2:x: hush needs power level 50 to change power levels and has 20 (rule `5` in !list:x).",
    ] {
        assert_eq!(notices.iter().filter(|n| *n == want).count(), 1, "{want:?} in {notices:#?}");
    }
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the others are muted");
    // The same facts again report nothing new.
    let n = notices.len();
    h.input(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) }).await;
    assert_eq!(h.notice_lines().await.len(), n);
}

/// A ban rule removed while the ban is being written: the ban must still be lifted.
#[tokio::test(start_paused = true)]
async fn a_rule_removed_while_its_ban_is_in_flight_is_still_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.ban"));
    let done = h.pump_until(|i| matches!(i, Input::MemberWriteDone { .. })).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "the ban went through");
    for (room_id, event) in hs.take_sync() {
        h.engine.handle(Input::State { room_id, event });
    }
    h.engine.handle(remove_rule("a"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"), "the ban is lifted");
    assert!(h.status().await.ledger.is_empty());
}

/// The first power-level change after a quiet spell is not held back by the batch window;
/// changes that follow within the window go out together, once the window has passed.
#[tokio::test(start_paused = true)]
async fn the_first_change_goes_out_at_once_and_the_next_ones_are_gathered() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@c:x"]);
    let window = Duration::from_secs(300);
    let mut h = Harness::start(&hs, EngineConfig { batch_window: window, ..config() }, &[ROOM]).await;

    let t0 = tokio::time::Instant::now();
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert!(t0.elapsed() < window, "the first mute did not wait for the window: {:?}", t0.elapsed());
    h.engine.handle(done);
    assert_eq!(hs.power_level_events(ROOM).len(), 1);

    h.engine.handle(rule("b", "@b:x", "m.mute"));
    h.engine.handle(rule("c", "@c:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert!(t0.elapsed() >= window, "the next write waited for the window: {:?}", t0.elapsed());
    h.engine.handle(done);
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 2, "b and c went out together");
    assert_eq!(events[1]["users"]["@b:x"], json!(-1));
    assert_eq!(events[1]["users"]["@c:x"], json!(-1));
}

/// Found by the chaos run: a moderator's change that lands between hush's read of the power
/// levels and its write was replaced by hush's event and lost. hush now sees it in what its
/// event replaced and writes it back.
#[tokio::test(start_paused = true)]
async fn a_moderators_change_made_while_hush_writes_is_not_lost() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, MOD, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.inject(Fault::ConcurrentLevel { sender: MOD, user: "@b:x", level: 20 }, 1);
    h.input(rule("m", "@a:x", "m.mute")).await;
    let pl = hs.power_levels_now(ROOM);
    assert_eq!(pl["users"]["@a:x"], json!(-1), "{pl}");
    assert_eq!(pl["users"]["@b:x"], json!(20), "the moderator's change stands: {pl}");
    h.input(remove_rule("m")).await;
    let pl = hs.power_levels_now(ROOM);
    assert!(pl["users"].get("@a:x").is_none(), "{pl}");
    assert_eq!(pl["users"]["@b:x"], json!(20), "{pl}");
}
