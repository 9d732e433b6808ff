//! Policy lists: redacted rule events, and what a list not loaded yet caused being held.

use super::*;

/// A user rule event at `key` with its own event id (two versions of one rule differ by id).
fn rule_version(event_id: &str, key: &str, entity: &str, recommendation: &str, reason: &str) -> Value {
    json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": event_id,
           "content": {"entity": entity, "recommendation": recommendation, "reason": reason}})
}

fn redact(event_id: &str) -> Input {
    Input::Redaction { room_id: LIST.into(), redacts: event_id.into() }
}

/// Issue 13: redacting an event that a newer one replaced at the same key leaves the rule
/// in force; redacting the event in force removes it.
#[tokio::test(start_paused = true)]
async fn redacting_a_replaced_rule_event_keeps_the_rule_in_force() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    for (id, reason) in [("$v1", "spam"), ("$v2", "flooding")] {
        h.input(Input::State { room_id: LIST.into(), event: rule_version(id, "a", "@a:x", "m.mute", reason) }).await;
    }
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    h.input(redact("$v1")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the rule in force is $v2: still muted");
    assert!(entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).is_some());

    h.input(redact("$v2")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]), "the rule in force was redacted: lifted");
    assert!(h.status().await.ledger.is_empty());
}

/// A reload replaces what is remembered of a list: an event its state no longer holds is
/// not the rule in force, whatever was seen live before.
#[tokio::test(start_paused = true)]
async fn a_reloaded_list_replaces_the_rule_events_in_force() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(Input::State { room_id: LIST.into(), event: rule_version("$v1", "a", "@a:x", "m.mute", "spam") }).await;
    let events = vec![rule_version("$v2", "a", "@a:x", "m.mute", "flooding")];
    h.input(Input::ListLoaded { room_id: LIST.into(), events }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    h.input(redact("$v1")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "$v1 is not in the reloaded state");

    h.input(redact("$v2")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]), "the loaded rule was redacted: lifted");
}

// ---------------------------------------------------------------------------------------
// What a list not loaded yet caused is held, whatever the loaded lists say (issue 13).

/// List B banned @a while list A mutes them. After a restart, A loads and B is still on
/// its way: the ban B caused stays (A's weaker mute does not replace it). When B loads
/// without the rule, the ban is lifted and A's mute applies when @a comes back.
#[tokio::test(start_paused = true)]
async fn a_held_ban_is_kept_over_a_loaded_lists_mute_until_its_list_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mute = user_rule("m", "@a:x", "m.mute");
    let ban = user_rule("b", "@a:x", "m.ban");

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![mute.clone()]), (LIST_B, vec![ban])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    let entry = entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::Ban).unwrap();
    assert_eq!(entry.rule.room_id, LIST_B, "{entry:?}");
    drop(h);

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![mute])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "held while B is not loaded: {:?}", hs.writes());
    let entry = entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::Ban).unwrap();
    assert_eq!(entry.rule.room_id, LIST_B, "still B's ban: {entry:?}");

    // B loads, and its rule is gone: the ban is lifted, A's mute is what is wanted now.
    h.input(Input::ListLoaded { room_id: LIST_B.into(), events: vec![] }).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"));
    assert!(entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::Ban).is_none());
    hs.put_membership(ROOM, "@a:x", "join");
    let join = json!({"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "event_id": "$join",
                      "content": {"membership": "join"}});
    h.input(Input::State { room_id: ROOM.into(), event: join }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "A's mute applies");
}

/// The other way round: a mute from a list not loaded yet, a ban from a loaded list: the
/// ban wins at once.
#[tokio::test(start_paused = true)]
async fn a_loaded_lists_ban_wins_over_a_held_mute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![]), (LIST_B, vec![user_rule("m", "@a:x", "m.mute")])], &[])
        .await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    drop(h);

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![user_rule("b", "@a:x", "m.ban")])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the held mute is left as it is");
}

/// A configured list whose room cannot be resolved now (its follow retries) but was
/// pinned in an earlier run: once every list is known, what it caused stays held. A list
/// no longer configured at all has what it caused lifted.
#[tokio::test(start_paused = true)]
async fn a_pinned_list_not_followed_yet_stays_held_once_lists_are_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![]), (LIST_B, vec![user_rule("b", "@a:x", "m.ban")])], &[])
        .await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    drop(h);

    // B's alias does not resolve now: the engine knows it only by its pin.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![])], &[LIST_B]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "held: {:?}", hs.writes());
    assert!(h.status().await.lists.iter().any(|(l, _, loaded)| l == LIST_B && !loaded));
    drop(h);

    // B is no longer configured: its ban is lifted.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"));
}

// ---------------------------------------------------------------------------------------
// A list read again after a gap in sync (engine/list_gaps.rs).

/// Rules sent on forks of a list's history that a gappy legacy sync left out reach hush
/// when it reads the list again: the missed rule is enforced, the removal it missed lifts,
/// a key sync changed meanwhile keeps what sync said, and a known rule writes nothing.
#[tokio::test(start_paused = true)]
async fn a_list_read_again_after_a_gap_applies_what_sync_missed_and_only_that() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@c:x", "@d:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    for (id, key, user) in [("$a1", "a", "@a:x"), ("$d1", "d", "@d:x")] {
        h.input(Input::State { room_id: LIST.into(), event: rule_version(id, key, user, "m.mute", "spam") }).await;
    }
    h.settle().await;
    let writes_before = hs.attempts().len();

    h.input(Input::ListGap { room_id: LIST.into() }).await;
    // Sync, after the re-read was asked for, removes @c's rule the re-read still shows.
    let removal =
        json!({"type": "m.policy.rule.user", "state_key": "c", "sender": MOD, "event_id": "$c2", "content": {}});
    h.input(Input::State { room_id: LIST.into(), event: removal }).await;
    let events = vec![
        rule_version("$a1", "a", "@a:x", "m.mute", "spam"),
        rule_version("$b1", "b", "@b:x", "m.mute", "spam"),
        rule_version("$c1", "c", "@c:x", "m.mute", "spam"),
        json!({"type": "m.policy.rule.user", "state_key": "d", "sender": MOD, "event_id": "$d2", "content": {}}),
    ];
    h.input(Input::ListReread { room_id: LIST.into(), events }).await;
    h.settle().await;
    let users = &hs.power_levels_now(ROOM)["users"];
    assert_eq!(users["@a:x"], json!(-1), "known rule: still muted");
    assert_eq!(users["@b:x"], json!(-1), "the rule sync missed is enforced");
    assert!(users.get("@c:x").is_none(), "sync's later removal stands over the re-read");
    assert!(users.get("@d:x").is_none(), "the removal sync missed lifts the mute");
    assert_eq!(hs.attempts().len() - writes_before, 1, "one power-levels write: @b muted and @d lifted");

    // A re-read nobody asked for (or after the list went) changes nothing.
    let events = vec![rule_version("$c9", "c", "@c:x", "m.mute", "spam")];
    h.input(Input::ListReread { room_id: LIST.into(), events }).await;
    h.settle().await;
    assert!(hs.power_levels_now(ROOM)["users"].get("@c:x").is_none());
}
