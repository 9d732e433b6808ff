//! Safety: refusals of moderators, list trust, the mass-action guard and its holds, preview.

use super::*;

// ---------------------------------------------------------------------------------------
// Safety: refusals of moderators, list trust, the mass-action guard.

fn server_rule(key: &str, entity: &str, recommendation: &str) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.server", "state_key": key, "sender": MOD, "event_id": format!("$srule-{key}"),
                      "content": {"entity": entity, "recommendation": recommendation, "reason": "spam"}}),
    }
}

async fn decide(h: &mut Harness, id: &str, confirm: bool) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    let i =
        if confirm { Input::Confirm { id: id.into(), reply: tx } } else { Input::Reject { id: id.into(), reply: tx } };
    h.input(i).await;
    rx.await.unwrap()
}

fn members(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("@m{i}:x")).collect()
}

#[tokio::test(start_paused = true)]
async fn a_rule_for_everyone_is_held_until_confirmed_and_a_narrow_rule_still_works() {
    let users = members(4);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.extend([HUSH, "@spam:evil"]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    h.input(rule("all", "@*:*", "m.ban")).await;
    assert!(users.iter().all(|u| hs.membership(ROOM, u).as_deref() == Some("join")), "nobody is banned");
    let notices = h.notices().await;
    let held: Vec<&String> = notices.iter().filter(|n| n.starts_with("Held h1:")).collect();
    assert_eq!(held.len(), 1, "{notices:#?}");
    assert!(held[0].contains("`@*:*` matches every user of every server"), "{}", held[0]);
    assert!(held[0].contains("!hush confirm h1"), "{}", held[0]);
    assert!(!notices.iter().any(|n| n.contains("Not going to ban")), "a held rule is not worth refusals: {notices:#?}");
    assert_eq!(h.status().await.held.len(), 1);

    // A narrow rule meanwhile works at once.
    h.input(rule("one", "@spam:evil", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@spam:evil"], json!(-1));

    // A member joining is not banned by the held rule either.
    assert!(decide(&mut h, "h9", true).await.unwrap_err().contains("no hold `h9`"));
    let text = decide(&mut h, "h1", true).await.unwrap();
    assert!(text.starts_with("Confirmed h1"), "{text}");
    for u in &users {
        assert_eq!(hs.membership(ROOM, u).as_deref(), Some("ban"), "{u}");
    }
    assert_eq!(hs.membership(ROOM, MOD).as_deref(), Some("join"), "the creator and moderator is never banned");
    assert_eq!(hs.membership(ROOM, HUSH).as_deref(), Some("join"));
    assert!(h.status().await.held.is_empty());
    assert!(decide(&mut h, "h1", false).await.unwrap_err().contains("already decided"));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_server_wildcard_stays_unenforced_and_a_changed_rule_is_judged_afresh() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:evil", "@b:good"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(server_rule("s", "*", "m.ban")).await;
    assert!(h.notices().await.iter().any(|n| n.starts_with("Held h1:") && n.contains("matches every server")));
    assert!(decide(&mut h, "h1", false).await.unwrap().starts_with("Rejected h1"));
    assert_eq!(hs.membership(ROOM, "@a:evil").as_deref(), Some("join"));
    assert!(h.status().await.held.is_empty(), "a rejected hold no longer waits");
    // The list narrows the rule at the same state key: a new rule, enforced as usual.
    h.input(server_rule("s", "evil", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@a:evil").as_deref(), Some("ban"));
    assert_eq!(hs.membership(ROOM, "@b:good").as_deref(), Some("join"));
}

#[tokio::test(start_paused = true)]
async fn a_rule_over_the_limits_is_held_whole_and_what_was_in_force_stays() {
    let users = members(12);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    // Two members: under the limits, enforced.
    h.input(rule("g", "@m1*:x", "m.ban")).await; // @m1, @m10, @m11
    assert_eq!(hs.membership(ROOM, "@m1:x").as_deref(), Some("ban"));
    // Widened to every @m: 9 more would be banned, 9 of the 11 members left: over the room share.
    h.input(rule("g", "@m*:x", "m.ban")).await;
    let notices = h.notices().await;
    let held = notices.iter().find(|n| n.starts_with("Held h1:")).expect("held");
    assert!(held.contains("max_room_share") && held.contains("would ban 9 and mute 0 of 11 members"), "{held}");
    assert_eq!(hs.membership(ROOM, "@m2:x").as_deref(), Some("join"), "nothing new is enforced");
    assert_eq!(hs.membership(ROOM, "@m1:x").as_deref(), Some("ban"), "holding never lifts what was in force");
    decide(&mut h, "h1", true).await.unwrap();
    assert!(users.iter().all(|u| hs.membership(ROOM, u).as_deref() == Some("ban")));
}

#[tokio::test(start_paused = true)]
async fn a_list_loaded_with_many_rules_is_one_held_batch() {
    let users = members(11);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    // Big rooms, so only the count limit applies.
    let mut crowd: Vec<String> = (0..100).map(|i| format!("@crowd{i}:x")).collect();
    crowd.extend(users.iter().cloned());
    let mut crowd_refs: Vec<&str> = crowd.iter().map(String::as_str).collect();
    crowd_refs.push(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &crowd_refs);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let events: Vec<Value> = users
        .iter()
        .map(|u| json!({"type": "m.policy.rule.user", "state_key": format!("k{u}"), "sender": MOD, "event_id": format!("$e{u}"),
                        "content": {"entity": u, "recommendation": "m.mute", "reason": "spam"}}))
        .collect();
    h.input(Input::ListLoaded { room_id: LIST.into(), events }).await;
    let notices = h.notices().await;
    let held = notices.iter().find(|n| n.starts_with("Held h1: 11 rule(s)")).expect("one hold for the batch");
    assert!(held.contains("newly restrict 11 members, more than safety.max_new_restrictions (10)"), "{held}");
    assert!(held.contains("  and 1 more rule(s)"), "a long hold names ten rules and counts the rest: {held}");
    assert_eq!(held.lines().filter(|l| l.contains(" user rule `")).count(), 10, "{held}");
    assert!(hs.power_level_events(ROOM).is_empty(), "nobody muted");
    decide(&mut h, "h1", true).await.unwrap();
    assert!(users.iter().all(|u| hs.power_levels_now(ROOM)["users"][u.as_str()] == json!(-1)));
}

#[tokio::test(start_paused = true)]
async fn room_and_management_moderators_are_never_restricted_until_demoted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@helper:x", 50)]), &[HUSH, "@helper:x", "@boss:x", "@a:x"]);
    hs.create_room(
        MGMT,
        "10",
        MOD,
        json!({"users": {MOD: 100, "@boss:x": 50}, "events": {"m.room.power_levels": 50}}),
        &[HUSH, MOD, "@boss:x"],
    );
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(Input::ManagementLoaded { room_id: MGMT.into(), events: hs.state(MGMT) }).await;
    h.input(rule("h", "@helper:x", "m.mute")).await;
    h.input(rule("b", "@boss:x", "m.ban")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@helper:x"], json!(50));
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("join"));
    let notices = h.notices().await;
    assert!(
        notices.iter().any(|n| n.starts_with(
            "Not going to mute @helper:x in !room:x: the user is a moderator of the room (power level 50"
        )),
        "{notices:#?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n == "Not going to ban @boss:x in !room:x: the user is a moderator of the management room (rule `b` in !list:x)."),
        "{notices:#?}"
    );
    let (tx, rx) = oneshot::channel();
    h.input(Input::Exempt { user: "@helper:x".into(), reply: tx }).await;
    assert!(rx.await.unwrap().unwrap().contains("moderator of the room"));

    // Demoted while the rule stands: now muted.
    let ev = hs.set_level_as(ROOM, MOD, "@helper:x", 0);
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@helper:x"], json!(-1));
    // No longer a moderator of the management room: banned.
    let ev = hs.set_level_as(MGMT, MOD, "@boss:x", 0);
    h.input(Input::State { room_id: MGMT.into(), event: ev }).await;
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("ban"));
    // Made a moderator of the management room again: the ban is lifted.
    let ev = hs.set_level_as(MGMT, MOD, "@boss:x", 50);
    h.input(Input::State { room_id: MGMT.into(), event: ev }).await;
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("leave"));
}

#[tokio::test(start_paused = true)]
async fn a_list_acts_only_as_far_as_it_is_trusted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let mute_only = ListTrust { ban: false, mute: true, suspend: false, server_acl: false };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST.into(), mute_only)], protected: vec![] }).await;
    h.input(rule("a", "@a:x", "m.ban")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"), "the list may not ban");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@b:x"], json!(-1), "but it may mute");
    let notices = h.notices().await;
    let ignored: Vec<&String> = notices.iter().filter(|n| n.starts_with("Ignoring the m.ban rule `a`")).collect();
    assert_eq!(ignored.len(), 1, "{notices:#?}");
    assert!(ignored[0].contains("this list may cause only: mute"), "{}", ignored[0]);
}

#[tokio::test(start_paused = true)]
async fn held_rules_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    let rule_ev = json!({"type": "m.policy.rule.user", "state_key": "all", "sender": MOD, "event_id": "$all",
                         "content": {"entity": "@*:*", "recommendation": "m.ban"}});
    let boot = |h: &mut Harness| {
        h.engine.handle(Input::Configure {
            management_room: Some(MGMT.into()),
            lists: vec![(LIST.into(), ListTrust::DEFAULT_LIST)],
            protected: vec![ROOM.into()],
        });
        h.engine.handle(Input::ListLoaded { room_id: LIST.into(), events: vec![rule_ev.clone()] });
        h.engine.handle(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) });
        h.engine.handle(Input::ListsKnown { pinned: vec![] });
    };
    boot(&mut h);
    h.settle().await;
    assert_eq!(h.status().await.held.len(), 1);
    drop(h);
    let mut h = engine_over(&hs, &path);
    boot(&mut h);
    h.settle().await;
    let s = h.status().await;
    assert_eq!(s.held.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["h1"], "the same hold, not a new one");
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"));
    decide(&mut h, "h1", true).await.unwrap();
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
}

#[tokio::test(start_paused = true)]
async fn preview_counts_what_a_list_would_do_without_following_it() {
    let users = members(20);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.extend([HUSH, "@helper:x"]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@helper:x", 50)]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let events = vec![
        json!({"type": "m.policy.rule.user", "state_key": "1", "sender": MOD, "content": {"entity": "@m*:x", "recommendation": "m.ban"}}),
        json!({"type": "m.policy.rule.user", "state_key": "2", "sender": MOD, "content": {"entity": "@helper:x", "recommendation": "m.ban"}}),
        json!({"type": "m.policy.rule.server", "state_key": "3", "sender": MOD, "content": {"entity": "other.example", "recommendation": "m.mute"}}),
    ];
    let (tx, rx) = oneshot::channel();
    h.input(Input::Preview { room_id: "!other:x".into(), events, trust: ListTrust::OTHER_LIST, reply: tx }).await;
    let text = rx.await.unwrap();
    assert!(text.contains("rules in force: 3 (2 user, 1 server); 2 ban, 1 mute, 0 other"), "{text}");
    assert!(text.contains("!room:x: of 23 members, would ban 20 (@m0:x, @m10:x, @m11:x, @m12:x, @m13:x and 15 more), mute 0; never restricted: 2 (@helper:x, @mod:x)"), "{text}");
    assert!(
        text.contains(
            "the guard would hold these rules until a moderator confirms them: it would newly restrict 20 members"
        ),
        "{text}"
    );
    assert!(
        hs.membership(ROOM, "@m0:x").as_deref() == Some("join") && h.status().await.lists.len() == 1,
        "nothing followed or done"
    );
}
