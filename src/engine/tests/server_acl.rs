//! Server ACLs: server rules that ban become `deny` entries of `m.room.server_acl`, hand entries kept, refusals, batching, expiry, the guard, dry run.

use super::*;

fn srule_event(key: &str, entity: &str, recommendation: &str, expiry: Option<u64>) -> Value {
    let mut content = json!({"entity": entity, "recommendation": recommendation, "reason": "spam"});
    if let Some(e) = expiry {
        content["expiry"] = e.into();
    }
    json!({"type": "m.policy.rule.server", "state_key": key, "sender": MOD, "event_id": format!("$srule-{key}"),
           "content": content})
}

fn srule(key: &str, entity: &str, recommendation: &str) -> Input {
    Input::State { room_id: LIST.into(), event: srule_event(key, entity, recommendation, None) }
}

fn remove_srule(key: &str) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.server", "state_key": key, "sender": MOD,
                      "event_id": format!("$unsrule-{key}"), "content": {}}),
    }
}

fn deny_of(hs: &FakeHomeserver, room: &str) -> Vec<String> {
    hush_core::server_acl::deny_entries(hs.acl_now(room).as_ref()).into_iter().map(str::to_owned).collect()
}

#[tokio::test(start_paused = true)]
async fn a_server_rule_adds_a_deny_entry_and_its_removal_takes_exactly_that_entry_out() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:good"]);
    let hand = json!({"allow": ["*"], "deny": ["hand.example"], "allow_ip_literals": false});
    hs.put_acl(ROOM, hand.clone());
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    assert!(hs.acl_events(ROOM).is_empty(), "nothing to deny at start");

    h.input(srule("s", "Evil.Example", "m.ban")).await;
    assert_eq!(
        hs.acl_now(ROOM),
        Some(json!({"allow": ["*"], "deny": ["hand.example", "evil.example"], "allow_ip_literals": false}))
    );
    let e = entry_of(&h.status().await, &in_room(ROOM), "evil.example", Kind::ServerDeny).unwrap();
    assert_eq!(e.phase, Phase::Applied);
    assert_eq!(e.rule.state_key, "s");

    // A mute rule for a server does not deny it; a takedown does.
    h.input(srule("m", "noisy.example", "m.mute")).await;
    h.input(srule("t", "gone.example", "m.takedown")).await;
    assert_eq!(deny_of(&hs, ROOM), ["hand.example", "evil.example", "gone.example"]);

    h.input(remove_srule("s")).await;
    h.input(remove_srule("t")).await;
    assert_eq!(hs.acl_now(ROOM), Some(hand), "only hush's entries are taken out");
    assert!(entry_of(&h.status().await, &in_room(ROOM), "evil.example", Kind::ServerDeny).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_room_without_an_acl_gets_one_that_allows_everyone_else() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(srule("s", "evil.example", "m.ban")).await;
    assert_eq!(hs.acl_now(ROOM), Some(json!({"allow": ["*"], "deny": ["evil.example"]})));
}

#[tokio::test(start_paused = true)]
async fn never_denies_its_own_server_nor_a_moderators_server_and_says_why() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@boss:mods.example", 50)]), &[HUSH, "@boss:mods.example"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(srule("own", "x", "m.ban")).await;
    h.input(srule("glob", "*.example", "m.ban")).await;
    h.input(srule("evil", "evil.org", "m.ban")).await;
    assert_eq!(deny_of(&hs, ROOM), ["evil.org"]);
    let lines = h.notice_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("Not going to deny the server `x`") && l.contains("hush's own server")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Not going to deny the server `*.example`")
            && l.contains("@boss:mods.example, a moderator of the room")),
        "{lines:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_list_not_trusted_for_server_acl_does_not_deny() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let ban_only = ListTrust { ban: true, mute: true, suspend: false, server_acl: false };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST.into(), ban_only)], protected: vec![] }).await;
    h.input(srule("s", "evil.example", "m.ban")).await;
    assert!(hs.acl_events(ROOM).is_empty());
}

/// Figure: a list of 50 server rules loaded in 20 protected rooms is 20 ACL events, one per
/// room; 50 rules arriving together live are one more per room.
#[tokio::test(start_paused = true)]
async fn fifty_server_rules_in_twenty_rooms_are_one_acl_event_per_room() {
    let hs = FakeHomeserver::new(HUSH);
    let rooms: Vec<String> = (0..20).map(|i| format!("!r{i}:x")).collect();
    for r in &rooms {
        hs.create_room(r, "10", MOD, levels(&[]), &[HUSH]);
    }
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let mut h = Harness::start(&hs, config(), &names).await;
    let rules: Vec<Value> =
        (0..50).map(|i| srule_event(&format!("s{i}"), &format!("evil{i}.example"), "m.ban", None)).collect();
    h.input(Input::ListLoaded { room_id: LIST.into(), events: rules }).await;
    for r in &rooms {
        assert_eq!(hs.acl_events(r).len(), 1, "{r}");
        assert_eq!(deny_of(&hs, r).len(), 50, "{r}");
    }
    // As one sync delivers them: handled back to back, then the writes go.
    for i in 50..100 {
        h.engine.handle(srule(&format!("s{i}"), &format!("evil{i}.example"), "m.ban"));
    }
    h.settle().await;
    h.sync().await;
    for r in &rooms {
        assert_eq!(hs.acl_events(r).len(), 2, "{r}");
        assert_eq!(deny_of(&hs, r).len(), 100, "{r}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_a_moderator_took_out_is_left_out_and_expiry_lifts_hush_entries() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let expiry = 1_700_000_000_000 + 3 * 3_600_000;
    let temp = Input::State { room_id: LIST.into(), event: srule_event("temp", "temp.example", "m.ban", Some(expiry)) };
    h.input(temp).await;
    h.input(srule("s", "evil.example", "m.ban")).await;
    assert_eq!(deny_of(&hs, ROOM), ["temp.example", "evil.example"]);

    // A moderator takes hush's entry for evil.example out: hush leaves it so.
    let ev = hs.set_acl_as(ROOM, MOD, json!({"allow": ["*"], "deny": ["temp.example", "hand.example"]}));
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    assert_eq!(deny_of(&hs, ROOM), ["temp.example", "hand.example"]);
    let e = entry_of(&h.status().await, &in_room(ROOM), "evil.example", Kind::ServerDeny).unwrap();
    assert!(e.overridden);

    // The temporary rule expires: its entry goes, the hand entry stays.
    let stop = tokio::time::sleep(Duration::from_millis(3 * 3_600_000));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(i) = h.inbox.recv() => h.engine.handle(i),
            Some(e) = h.expired.recv() => h.engine.handle(Input::Timers(e)),
            _ = &mut stop => break,
        }
    }
    h.sync().await;
    assert_eq!(deny_of(&hs, ROOM), ["hand.example"]);
    // The rule ends: the overridden entry is forgotten, nothing is written.
    let events = hs.acl_events(ROOM).len();
    h.input(remove_srule("s")).await;
    assert_eq!(hs.acl_events(ROOM).len(), events);
    assert!(h.status().await.ledger.iter().all(|e| e.kind != Kind::ServerDeny));
}

#[tokio::test(start_paused = true)]
async fn the_guard_holds_an_acl_change_that_would_deny_many_members() {
    let hs = FakeHomeserver::new(HUSH);
    let members: Vec<String> = (0..4).map(|i| format!("@m{i}:crowd.example")).collect();
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    all.extend([HUSH, "@a:x", "@b:x", "@c:x"]);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    // The list may not ban members: only the ACL would deny them.
    let acl_only = ListTrust { ban: false, mute: true, suspend: false, server_acl: true };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST.into(), acl_only)], protected: vec![] }).await;
    h.input(srule("crowd", "crowd.example", "m.ban")).await;
    assert!(hs.acl_events(ROOM).is_empty(), "held: the ACL is not changed");
    let notices = h.notices().await;
    let held = notices.iter().find(|n| n.starts_with("Held h1:")).expect("a hold notice");
    assert!(held.contains("crowd.example"), "{held}");
    assert!(
        held.contains("!room:x: its server ACL would deny the servers of 4 of 9 members: @m0:crowd.example"),
        "{held}"
    );
    assert!(!held.contains("would ban"), "the list may not ban: {held}");
    let (tx, rx) = oneshot::channel();
    h.input(Input::Confirm { id: "h1".into(), reply: tx }).await;
    assert!(rx.await.unwrap().unwrap().starts_with("Confirmed h1"));
    assert_eq!(deny_of(&hs, ROOM), ["crowd.example"]);
    assert!(members.iter().all(|m| hs.membership(ROOM, m).as_deref() == Some("join")), "nobody is banned");
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_the_acl_diff_and_writes_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut cfg = config();
    cfg.dry_run = true;
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;
    h.input(srule("s", "evil.example", "m.ban")).await;
    h.input(srule("own", "x", "m.ban")).await;
    assert!(hs.acl_events(ROOM).is_empty());
    let lines = h.notice_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("[dry run] would add `evil.example` to the deny list of the server ACL of")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("[dry run] would refuse to deny the server `x`")), "{lines:#?}");
    assert!(h.status().await.ledger.is_empty());
}

/// kill -9 after the ledger's write-ahead entries, before or after the ACL write went out,
/// or during a lift: the next start settles each entry against the room's ACL.
#[tokio::test(start_paused = true)]
async fn interrupted_acl_writes_are_settled_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    // `written` made it to the room, `lost` did not; `lifted` was being taken out.
    hs.put_acl(ROOM, json!({"allow": ["*"], "deny": ["written.example", "lifted.example"]}));
    {
        let ledger = Ledger::open(&path).unwrap();
        for (server, phase) in [
            ("written.example", Phase::Applying),
            ("lost.example", Phase::Applying),
            ("lifted.example", Phase::Lifting),
        ] {
            let rule = hush_core::policy::RuleId {
                room_id: LIST.into(),
                kind: hush_core::policy::EntityKind::Server,
                state_key: server.into(),
            };
            let e = Entry {
                scope: in_room(ROOM),
                user_id: server.into(),
                kind: Kind::ServerDeny,
                phase: Phase::Applying,
                previous_level: None,
                applied_level: None,
                rule,
                reason: "spam".into(),
                applied_at_ms: 0,
                expires_at_ms: None,
                overridden: false,
                event_ids: Vec::new(),
            };
            ledger.begin_apply(&e).unwrap();
            if phase == Phase::Lifting {
                ledger.begin_lift(&e.scope, server, Kind::ServerDeny).unwrap();
            }
        }
    }
    let mut h = engine_over(&hs, &path);
    let rules = vec![
        srule_event("written.example", "written.example", "m.ban", None),
        srule_event("lost.example", "lost.example", "m.ban", None),
    ];
    boot_with(&mut h, &[LIST], vec![(LIST, rules)], &[]).await;
    assert_eq!(deny_of(&hs, ROOM), ["written.example", "lost.example"]);
    assert_eq!(hs.acl_events(ROOM).len(), 1, "the add and the lift are one event");
    let s = h.status().await;
    let denied: Vec<(&str, Phase)> =
        s.ledger.iter().filter(|e| e.kind == Kind::ServerDeny).map(|e| (e.user_id.as_str(), e.phase)).collect();
    assert_eq!(denied, [("lost.example", Phase::Applied), ("written.example", Phase::Applied)]);
}

#[tokio::test(start_paused = true)]
async fn preview_names_the_servers_a_list_would_deny() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let events = vec![
        srule_event("a", "B.example", "m.ban", None),
        srule_event("b", "a.example", "m.takedown", None),
        srule_event("c", "muted.example", "m.mute", None),
    ];
    for (trust, shown) in
        [(ListTrust::OTHER_LIST, true), (ListTrust { server_acl: false, ..ListTrust::OTHER_LIST }, false)]
    {
        let (tx, rx) = oneshot::channel();
        h.input(Input::Preview { room_id: "!other:x".into(), events: events.clone(), trust, reply: tx }).await;
        let text = rx.await.unwrap();
        let line = "would deny 2 server(s) in the protected rooms' server ACLs: a.example, b.example";
        assert_eq!(text.contains(line), shown, "{text}");
    }
    assert!(hs.acl_events(ROOM).is_empty(), "a preview changes nothing");
}
