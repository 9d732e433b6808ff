//! Member writes: membership mutes, bans, faults and retries, dry run, departed members, room upgrades.

use super::*;

#[tokio::test(start_paused = true)]
async fn membership_mute_and_unmute_with_exact_content() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    let mute = json!({"membership": "mute", "reason": "spam"});
    assert_eq!(
        hs.writes().into_iter().filter(|w| matches!(w, Write::Member { .. })).collect::<Vec<_>>(),
        vec![
            Write::Member { room: ROOM.into(), user: "@a:x".into(), content: mute.clone() },
            Write::Member { room: ROOM.into(), user: "@b:x".into(), content: mute },
        ]
    );
    assert!(hs.power_level_events(ROOM).is_empty(), "the membership strategy does not touch power levels");
    let s = h.status().await;
    for u in ["@a:x", "@b:x"] {
        assert_eq!(entry_of(&s, &in_room(ROOM), u, Kind::MuteMembership).map(|e| e.phase), Some(Phase::Applied), "{u}");
    }

    // A muted user who leaves is `leave-mute`: still muted, nothing to do.
    let before = hs.attempts().len();
    let left = hs.user_leaves(ROOM, "@b:x");
    assert_eq!(left["content"], json!({"membership": "leave-mute"}));
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;
    assert_eq!(hs.attempts().len(), before, "leaving while muted changes nothing");

    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    let lifts: Vec<Write> = hs.writes().into_iter().filter(|w| matches!(w, Write::Member { .. })).skip(2).collect();
    assert_eq!(
        lifts,
        vec![
            Write::Member {
                room: ROOM.into(),
                user: "@a:x".into(),
                content: json!({"membership": "join", "reason": "mute lifted"})
            },
            Write::Member {
                room: ROOM.into(),
                user: "@b:x".into(),
                content: json!({"membership": "leave", "reason": "mute lifted"})
            },
        ]
    );
    assert!(hs.attempts().iter().all(|a| a.result.is_ok()), "every transition was valid: {:?}", hs.attempts());
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"));
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("leave"));
    assert!(h.status().await.ledger.is_empty());
}

/// A rule banning many members sends the bans a few at a time, for the whole engine, not
/// one request per member at once (issue 13).
#[tokio::test(start_paused = true)]
async fn a_glob_ban_over_fifty_members_keeps_few_requests_in_flight() {
    let users: Vec<String> = (0..50).map(|i| format!("@spam{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &members);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &members);
    // A rule over 50 members is what the guard holds; this test is about sending.
    let cfg = EngineConfig { safety: Limits { max_new_restrictions: 1000, max_room_share: 1.0 }, ..config() };
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    h.input(rule("glob", "@spam*:x", "m.ban")).await;
    for room in [ROOM, ROOM2] {
        assert!(users.iter().all(|u| hs.membership(room, u).as_deref() == Some("ban")), "all banned in {room}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 100);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied));
    let max = hs.max_member_writes_in_flight();
    assert!(max <= crate::engine::MEMBER_WRITES_IN_FLIGHT, "{max} bans in flight at once");
    assert!(max > 1, "the bans still go out several at a time");
}

fn joins(room: &str, user: &str) -> Input {
    Input::State {
        room_id: room.into(),
        event: json!({"type": "m.room.member", "state_key": user, "sender": user,
                      "event_id": format!("$join-{room}-{user}"), "content": {"membership": "join"}}),
    }
}

/// Members who left every protected room are no longer tracked (nor kept as `leave`),
/// unless hush's ledger names them; one who comes back is reconciled at once (issue 13).
#[tokio::test(start_paused = true)]
async fn departed_members_are_untracked_unless_hush_restricted_them() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@c:x"]);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    // The room's state names who left long ago: not tracked from the start.
    hs.put_membership(ROOM, "@old:x", "leave");
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;
    assert_eq!(h.engine.tracked("@old:x"), (false, 5), "hush, the creator, a, b and c");
    assert!(!h.engine.knows_member(ROOM, "@old:x"));

    // Banned by hush: not present, but the ledger names them, so still tracked.
    h.input(rule("c", "@c:x", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@c:x").as_deref(), Some("ban"));
    // A drive-by member leaves.
    let left = hs.user_leaves(ROOM, "@b:x");
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;
    // Gone from one room, still in another.
    let left = hs.user_leaves(ROOM, "@a:x");
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;

    assert_eq!(h.engine.tracked("@b:x"), (false, 4), "the departed member is no longer tracked");
    assert!(!h.engine.knows_member(ROOM, "@b:x"), "nor kept in the room's view");
    assert!(h.engine.tracked("@c:x").0, "hush's ban keeps its user tracked");
    assert!(h.engine.tracked("@a:x").0, "still in another protected room");
    assert!(h.engine.knows_member(ROOM, "@a:x") || h.engine.knows_member(ROOM2, "@a:x"));

    // A rule for the departed member does nothing while they are away...
    let bans = |hs: &FakeHomeserver| hs.writes().iter().filter(|w| matches!(w, Write::Ban { .. })).count();
    let before = bans(&hs);
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(bans(&hs), before);
    assert!(!h.engine.tracked("@b:x").0);
    // ...and they are banned the moment they come back.
    hs.put_membership(ROOM, "@b:x", "join");
    h.input(joins(ROOM, "@b:x")).await;
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"), "reconciled at once");
    assert!(h.engine.tracked("@b:x").0, "banned by hush: tracked again");

    // The ban on @c:x lifted, hush has nothing more to do with them.
    h.input(remove_rule("c")).await;
    assert_eq!(hs.membership(ROOM, "@c:x").as_deref(), Some("leave"));
    assert!(entry_of(&h.status().await, &in_room(ROOM), "@c:x", Kind::Ban).is_none());
    assert!(!h.engine.tracked("@c:x").0, "untracked once the ledger no longer names them");
    assert!(!h.engine.knows_member(ROOM, "@c:x"));
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_server_errors_lose_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;

    hs.inject(Fault::RateLimited(2_000), 3);
    hs.inject(Fault::ServerError, 2);
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    let failed = hs.attempts().iter().filter(|a| a.result.is_err()).count();
    assert_eq!(failed, 5, "every injected fault was met");
    for room in [ROOM, ROOM2] {
        assert_eq!(hs.power_levels_now(room)["users"]["@a:x"], json!(-1), "{room}");
        assert_eq!(hs.membership(room, "@b:x").as_deref(), Some("ban"), "{room}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 4);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied), "{:?}", s.ledger);

    hs.inject(Fault::RateLimited(1_000), 4);
    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10)]));
    assert_eq!(hs.power_levels_now(ROOM2), levels(&[]));
    for room in [ROOM, ROOM2] {
        assert_eq!(hs.membership(room, "@b:x").as_deref(), Some("leave"), "{room}");
    }
    assert!(h.status().await.ledger.is_empty());
    // Issue 15: nothing to report but, once, that hush's account is rate-limited.
    let notices = h.notices().await;
    assert!(
        notices.len() == 1 && notices[0].starts_with("hush's account @hush:x is rate-limited"),
        "only the rate limit, once: {notices:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_reported_and_leaves_no_dangling_entry() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    hs.create_room(ROOM2, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;

    hs.inject(Fault::Permanent("M_FORBIDDEN"), 2);
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]));
    assert_eq!(hs.membership(ROOM2, "@a:x").as_deref(), Some("join"));
    let s = h.status().await;
    assert!(s.ledger.is_empty(), "no entry for a change that never happened: {:?}", s.ledger);
    let notices = h.notices().await;
    assert!(
        notices.iter().any(|n| n.contains("cannot change power levels in !room:x") && n.contains("M_FORBIDDEN")),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("cannot restrict @a:x in !room2:x")), "{notices:?}");
    assert_eq!(s.last_errors.len(), 2, "{:?}", s.last_errors);
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_and_sends_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    hs.create_room(ROOM2, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.dry_run = true;
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    let writes = hs.writes();
    assert!(writes.iter().all(|w| matches!(w, Write::Notice { .. })), "only reports: {writes:?}");
    assert_eq!(h.notices().await.len(), 2, "one notice per input");
    let notices = h.notice_lines().await;
    assert!(
        notices.iter().any(|n| n == "[dry run] would mute @a:x in !room:x (power level -1); rule !list:x|user|a"),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("[dry run] would mute @a:x in !room2:x (membership)")), "{notices:?}");
    assert!(notices.iter().any(|n| n.contains("[dry run] would ban @b:x from !room:x")), "{notices:?}");
    assert!(h.status().await.ledger.is_empty());
}

/// An upgrade copies power levels and bans into the replacement room: hush's mutes and
/// bans there are still hush's, so removing the rules lifts them in the new room, exactly.
#[tokio::test(start_paused = true)]
async fn an_upgraded_room_keeps_what_hush_did_and_lifts_it_there() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"));

    // The moderator upgrades: the new room has the old power levels (with the mute) and
    // the ban, as Synapse copies them; @a follows the tombstone.
    hs.create_room(ROOM2, "11", MOD, hs.power_levels_now(ROOM), &[HUSH, "@a:x"]);
    hs.put_membership(ROOM2, "@b:x", "ban");
    h.input(Input::RoomUpgraded { old: ROOM.into(), new: ROOM2.into() }).await;
    h.input(Input::RoomLoaded { room_id: ROOM2.into(), events: hs.state(ROOM2) }).await;
    let s = h.status().await;
    assert!(s.ledger.iter().all(|e| e.scope == in_room(ROOM2)), "{:?}", s.ledger);
    let mute = entry_of(&s, &in_room(ROOM2), "@a:x", Kind::MutePowerLevel).expect("the mute carried over");
    assert_eq!(mute.previous_level, Some(10));
    assert!(entry_of(&s, &in_room(ROOM2), "@b:x", Kind::Ban).is_some(), "the ban carried over");
    assert!(!s.protected_rooms.iter().any(|(r, _)| r == ROOM), "the old room is no longer protected");

    let old_events = hs.power_level_events(ROOM).len();
    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    assert_eq!(hs.power_levels_now(ROOM2)["users"]["@a:x"], json!(10), "restored exactly in the new room");
    assert_ne!(hs.membership(ROOM2, "@b:x").as_deref(), Some("ban"), "unbanned in the new room");
    assert_eq!(hs.power_level_events(ROOM).len(), old_events, "the old room is left alone");
    assert!(h.status().await.ledger.is_empty());
}

/// A member write that succeeded is in the room even before sync says so: a check that
/// waited for it must not read the room's older view as "someone else undid it".
#[tokio::test(start_paused = true)]
async fn a_check_waiting_for_hushs_ban_does_not_take_it_for_someone_elses_unban() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.ban"));
    // Looked at again while the ban is in flight (as ListsKnown does at start-up).
    h.engine.handle(Input::ListsKnown { pinned: vec![] });
    h.settle().await; // the ban's result and the waiting check, before any sync
    let e = entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::Ban).expect("hush's ban is recorded");
    assert!(!e.overridden, "hush's own ban read as someone else's unban: {e:?}");
    h.sync().await;
    h.input(remove_rule("a")).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"), "removing the rule lifts the ban");
}

/// Found by the chaos run: a member event older than hush's ban (the user renamed just
/// before) that sync delivers after the ban's answer must not read as someone unbanning
/// them: the ban would be marked overridden, and never lifted when the rule goes.
#[tokio::test(start_paused = true)]
async fn an_older_member_event_arriving_after_a_ban_is_not_an_unban() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, MOD, "@u:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.user_renames(ROOM, "@u:x", "U");
    // The ban is written before sync brings the rename.
    h.engine.handle(rule("b", "@u:x", "m.ban"));
    h.settle().await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("ban"));
    h.sync().await;
    let entry = entry_of(&h.status().await, &in_room(ROOM), "@u:x", Kind::Ban).expect("the ban is recorded");
    assert!(!entry.overridden, "hush's own ban read as undone by someone else: {entry:?}");
    h.input(remove_rule("b")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("leave"), "the ban is lifted with its rule");
}

/// Found by the chaos run: a muted member banned, unbanned (the rule back to a mute),
/// back in the room and banned again keeps both records; when the ban's rule goes while
/// another rule still mutes them, the ban is lifted and the mute stays.
#[tokio::test(start_paused = true)]
async fn a_ban_over_a_kept_mute_is_lifted_when_its_rule_goes() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, MOD, "@u:x"]);
    // As configured by default: a ban redacts the user's recent events.
    let redact = hush_core::reconcile::RedactPolicy { on_ban: true, ..hush_core::reconcile::RedactPolicy::OFF };
    let mut h = Harness::start(&hs, EngineConfig { redaction: redact, ..config() }, &[ROOM]).await;
    h.input(rule("k", "@u:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@u:x"], json!(-1));
    h.input(rule("k", "@u:x", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("ban"));
    h.input(rule("k", "@u:x", "m.mute")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("leave"));
    hs.user_joins(ROOM, "@u:x");
    h.sync().await;
    h.input(rule("k", "@u:x", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("ban"));
    h.input(rule("k7", "@u:x", "m.mute")).await;
    h.input(remove_rule("k")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("leave"), "the ban went with its rule");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@u:x"], json!(-1), "the other rule still mutes");
}

/// The same across a kill -9 between the unban and the second ban (as the chaos run had it).
#[tokio::test(start_paused = true)]
async fn a_ban_over_a_kept_mute_is_lifted_when_its_rule_goes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, MOD, "@u:x"]);
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![user_rule("k", "@u:x", "m.mute")])], &[]).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@u:x"], json!(-1));
    h.input(rule("k", "@u:x", "m.ban")).await;
    h.input(rule("k", "@u:x", "m.mute")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("leave"));
    drop(h);
    hs.take_sync();
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![user_rule("k", "@u:x", "m.mute")])], &[]).await;
    hs.user_joins(ROOM, "@u:x");
    h.sync().await;
    h.input(rule("k", "@u:x", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("ban"));
    h.input(rule("k7", "@u:x", "m.mute")).await;
    h.input(remove_rule("k")).await;
    assert_eq!(hs.membership(ROOM, "@u:x").as_deref(), Some("leave"), "the ban went with its rule");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@u:x"], json!(-1), "the other rule still mutes");
}
