//! Flood protection: a flood mutes through a local rule (reconcile, ledger, expiry as for list rules); exempt users are never counted into a mute; dry run only reports.

use super::*;
use crate::engine::ProtectionSettings;
use crate::local_rules::{LocalRules, LOCAL_LIST};
use hush_core::protections::{EscalationLimits, FloodLimits};

const T0: u64 = 1_700_000_000_000;
/// Longer than the harness's settling (ten minutes of paused time), so mutes last through it.
const HOUR: u64 = 3_600_000;

fn settings(mute_ms: u64) -> ProtectionSettings {
    ProtectionSettings {
        flood: Some((FloodLimits { max_events: 10, per_ms: 10_000 }, mute_ms)),
        escalation: EscalationLimits { within_ms: 86_400_000, max_ms: 4 * mute_ms },
        flood_reach: crate::engine::ProtectionReach::default(),
        mention_spam: None,
    }
}

async fn with_flood(cfg: EngineConfig) -> (Harness, FakeHomeserver) {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@p:x", 10)]), &[HUSH, MOD, "@a:x", "@p:x"]);
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;
    h.engine.set_protections(settings(HOUR), LocalRules::in_memory());
    h.input(Input::ListLoaded { room_id: LOCAL_LIST.into(), events: vec![] }).await;
    (h, hs)
}

/// `n` events of `user`, 100 ms apart from T0.
fn burst(user: &str, n: u64) -> Input {
    Input::Activity { room_id: ROOM.into(), events: (0..n).map(|i| (user.to_owned(), T0 + i * 100)).collect() }
}

#[tokio::test(start_paused = true)]
async fn a_flood_mutes_its_sender_through_a_local_rule_with_an_expiry() {
    let (mut h, hs) = with_flood(config()).await;
    // Handled at once: settling would let paused time run past the window.
    h.engine.handle(burst("@a:x", 10));
    assert!(h.status().await.ledger.is_empty(), "ten events are allowed");
    h.input(Input::Activity { room_id: ROOM.into(), events: vec![("@a:x".into(), T0 + 5_000)] }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let entry = entry_of(&h.status().await, &in_room(ROOM), "@a:x", Kind::MutePowerLevel).unwrap();
    assert_eq!(entry.rule.room_id, LOCAL_LIST);
    assert!(entry.expires_at_ms.is_some_and(|e| e >= T0 + HOUR), "{entry:?}");
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("Muted @a:x for 1h") && n.contains("flood protection")), "{notices:?}");
}

#[tokio::test(start_paused = true)]
async fn protected_users_moderators_and_hush_are_never_muted_by_a_flood() {
    let mut cfg = config();
    cfg.protected_users = vec!["@p:x".into()];
    let (mut h, hs) = with_flood(cfg).await;
    for user in ["@p:x", MOD, HUSH] {
        h.input(burst(user, 30)).await;
    }
    let pl = hs.power_levels_now(ROOM);
    assert_eq!(pl["users"]["@p:x"], json!(10), "{pl}");
    assert_eq!(pl["users"][MOD], json!(100), "{pl}");
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn in_dry_run_a_flood_is_reported_and_nothing_is_written() {
    let mut cfg = config();
    cfg.dry_run = true;
    let (mut h, hs) = with_flood(cfg).await;
    h.input(burst("@a:x", 11)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@a:x"), None);
    assert!(h.status().await.ledger.is_empty());
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.starts_with("[dry run]") && n.contains("Muted @a:x")), "{notices:?}");
}

#[tokio::test(start_paused = true)]
async fn a_second_flood_within_a_day_mutes_twice_as_long() {
    let (mut h, _hs) = with_flood(config()).await;
    h.input(burst("@a:x", 11)).await;
    h.input(burst("@a:x", 11)).await;
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("Muted @a:x for 2h")), "{notices:?}");
}

#[tokio::test(start_paused = true)]
async fn removing_a_local_rule_lifts_its_mute_and_keeps_it_lifted() {
    let (mut h, hs) = with_flood(config()).await;
    h.input(burst("@a:x", 11)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    assert_eq!(remove(&mut h, "hush.flood:@a:x").await, Ok(true));
    assert!(hs.power_levels_now(ROOM)["users"].get("@a:x").is_none(), "{}", hs.power_levels_now(ROOM));
    assert!(h.status().await.ledger.is_empty());
    assert_eq!(remove(&mut h, "hush.flood:@a:x").await, Ok(false), "gone already");
}

async fn remove(h: &mut Harness, state_key: &str) -> Result<bool, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let kind = "m.policy.rule.user".to_owned();
    h.input(Input::RemoveLocalRule { kind, state_key: state_key.into(), reply }).await;
    answer.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_flood_in_a_room_the_protection_does_not_watch_is_not_counted() {
    let hs = FakeHomeserver::new(HUSH);
    for room in [ROOM, ROOM2] {
        hs.create_room(room, "10", MOD, levels(&[]), &[HUSH, MOD, "@a:x"]);
    }
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;
    let reach = crate::engine::ProtectionReach { rooms: Some(vec![ROOM2.into()]), publish_to: None };
    h.engine.set_protections(ProtectionSettings { flood_reach: reach, ..settings(HOUR) }, LocalRules::in_memory());
    h.input(Input::ListLoaded { room_id: LOCAL_LIST.into(), events: vec![] }).await;
    h.input(burst("@a:x", 30)).await;
    assert!(h.status().await.ledger.is_empty(), "{ROOM} is not watched");
    let events = (0..11).map(|i| ("@a:x".to_owned(), T0 + i * 100)).collect();
    h.input(Input::Activity { room_id: ROOM2.into(), events }).await;
    assert!(entry_of(&h.status().await, &in_room(ROOM2), "@a:x", Kind::MutePowerLevel).is_some(), "{ROOM2} is");
}
