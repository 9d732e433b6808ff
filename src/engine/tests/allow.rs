//! Allow rules: an exception in one list lifts another list's mute, and the mute comes back when the exception goes or expires.

use super::*;

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn allow_rule(key: &str, entity: &str, expiry: Option<u64>) -> Input {
    let mut content = json!({"entity": entity, "recommendation": "m.allow", "reason": "known to us"});
    if let Some(e) = expiry {
        content["expiry"] = e.into();
    }
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD,
                      "event_id": format!("$allow-{key}-{}", expiry.unwrap_or(0)), "content": content}),
    }
}

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

/// LIST_B (a list the community does not control) mutes everyone on `evil`; the
/// community's LIST allows @a:evil. @a's mute is lifted to exactly what it was (no entry),
/// @b stays muted; when the allow goes, @a is muted again; an allow that expires lifts
/// until its expiry, then the mute is back on time.
#[tokio::test(start_paused = true)]
async fn an_allow_lifts_another_lists_mute_until_it_goes_or_expires() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:evil", "@b:evil"]);
    let start = tokio::time::Instant::now();
    let mut h = engine_over(&hs, &dir.path().join("ledger.sqlite3"));
    let wide_mute = user_rule("m", "@*:evil", "m.mute");
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![]), (LIST_B, vec![wide_mute])], &[]).await;
    let level = |hs: &FakeHomeserver, u: &str| hs.power_levels_now(ROOM)["users"].get(u).cloned();
    assert_eq!((level(&hs, "@a:evil"), level(&hs, "@b:evil")), (Some(json!(-1)), Some(json!(-1))));

    h.input(allow_rule("ok", "@a:evil", None)).await;
    assert_eq!(level(&hs, "@a:evil"), None, "lifted back to no entry: {:?}", hs.writes());
    assert_eq!(level(&hs, "@b:evil"), Some(json!(-1)), "the allow names @a only");
    assert!(entry_of(&h.status().await, &in_room(ROOM), "@a:evil", Kind::MutePowerLevel).is_none());
    assert!(h.status().await.held.is_empty(), "lifting is never held");

    h.input(remove_rule("ok")).await;
    assert_eq!(level(&hs, "@a:evil"), Some(json!(-1)), "the other list's mute applies again");

    // An allow for 5 hours: lifted now, muted again at its expiry.
    h.input(allow_rule("ok", "@a:evil", Some(T0 + 300 * MINUTE))).await;
    assert_eq!(level(&hs, "@a:evil"), None);
    let at = |ms: u64| start + Duration::from_millis(ms);
    run_until(&mut h, at(300 * MINUTE - 1000)).await;
    assert_eq!(level(&hs, "@a:evil"), None, "allowed until the expiry");
    run_until(&mut h, at(300 * MINUTE + 5000)).await;
    h.sync().await;
    assert_eq!(level(&hs, "@a:evil"), Some(json!(-1)), "muted again at 5 hours: {:?}", hs.writes());
}
