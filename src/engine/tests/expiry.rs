//! Expiry: one timer per user, armed at their earliest expiry.

use super::*;

// ---------------------------------------------------------------------------------------
// One expiry mechanism: a user's timer is armed at their earliest expiry (issue 13).

/// Handles the engine's own inputs and timers until paused time reaches `at`.
async fn run_until(h: &mut Harness, at: tokio::time::Instant) {
    let stop = tokio::time::sleep_until(at);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(i) = h.inbox.recv() => h.engine.handle(i),
            Some(e) = h.expired.recv() => h.engine.handle(Input::Timers(e)),
            _ = &mut stop => break,
        }
    }
}

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn mute_rule_until(key: &str, entity: &str, expiry: u64) -> Value {
    json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": format!("${key}"),
           "content": {"entity": entity, "recommendation": "m.mute", "reason": "spam", "expiry": expiry}})
}

/// At start-up the ledger holds a live mute of @a in ROOM (its rule expires 30 minutes in)
/// and, sorted after it, a stale entry for @a in a room no longer protected that expires
/// after 3 hours. @a has one timer: it must be the live mute's, so the mute is lifted at
/// 30 minutes, not at 3 hours.
#[tokio::test(start_paused = true)]
async fn a_stale_ledger_entry_does_not_delay_a_live_lift_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let live = mute_rule_until("a", "@a:x", T0 + 30 * MINUTE);

    // A first run mutes @a; its entry is copied into an old room, as if left from long ago.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![live.clone()])], &[]).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let mut stale = entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).unwrap();
    drop(h);
    assert_eq!(stale.expires_at_ms, Some(T0 + 30 * MINUTE));
    stale.scope = in_room("!zzz-old:x");
    stale.expires_at_ms = Some(T0 + 180 * MINUTE);
    let ledger = Ledger::open(&path).unwrap();
    ledger.begin_apply(&stale).unwrap();
    ledger.mark_applied(&stale.scope, "@a:x", Kind::MutePowerLevel).unwrap();
    drop(ledger);

    // The restart: its clock starts at T0 again.
    let start = tokio::time::Instant::now();
    let mut h = engine_over(&hs, &path);
    h.engine.arm_ledger_users();
    boot_with(&mut h, &[LIST], vec![(LIST, vec![live])], &[]).await;
    let at = |ms: u64| start + Duration::from_millis(ms);
    run_until(&mut h, at(30 * MINUTE - 1000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted until the expiry");
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(30 * MINUTE + 5000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@a:x"), None, "lifted at 30 minutes: {:?}", hs.writes());
    // The stale entry's expiry is still ahead: one timer, until it has passed.
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(180 * MINUTE + 5000)).await;
    assert_eq!(h.status().await.pending_timers, 0);
}

/// Live rule changes: @a is muted and suspended by LIST's rule until 1 hour. Then a list
/// that may mute but not suspend mutes them until 3 hours: the room mute now lasts 3
/// hours, the suspension still 1 hour. The later, longer expiry must not take the timer:
/// the suspension is lifted at 1 hour, the room mute at 3 hours.
#[tokio::test(start_paused = true)]
async fn a_longer_mute_from_another_list_does_not_delay_an_earlier_suspension_lift() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let start = tokio::time::Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    let mute_only = ListTrust { ban: false, mute: true, suspend: false, server_acl: false };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST_B.into(), mute_only)], protected: vec![] })
        .await;
    h.input(Input::ListLoaded { room_id: LIST_B.into(), events: vec![] }).await;

    h.input(mute_until("a", "@a:x", T0 + 60 * MINUTE)).await;
    assert!(admin.suspended().contains("@a:x"));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let longer = mute_rule_until("b", "@a:x", T0 + 180 * MINUTE);
    h.input(Input::State { room_id: LIST_B.into(), event: longer }).await;
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).and_then(|e| e.expires_at_ms),
        Some(T0 + 180 * MINUTE)
    );
    assert_eq!(
        entry_of(&s, &Scope::Account, "@a:x", Kind::Suspension).and_then(|e| e.expires_at_ms),
        Some(T0 + 60 * MINUTE)
    );
    assert_eq!(s.pending_timers, 1);

    run_until(&mut h, at(60 * MINUTE - 1000)).await;
    assert!(admin.suspended().contains("@a:x"), "suspended until its expiry");
    run_until(&mut h, at(60 * MINUTE + 5000)).await;
    assert!(admin.suspended().is_empty(), "the suspension is lifted at 1 hour");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the room mute lasts");
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(180 * MINUTE - 1000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted until its expiry");
    run_until(&mut h, at(180 * MINUTE + 5000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@a:x"), None, "the room mute is lifted at 3 hours");
    assert_eq!(h.status().await.pending_timers, 0);
}
