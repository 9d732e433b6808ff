//! History and undo: each action is logged with its cause (a list's rule, a protection), a refusal once; undo lifts a protection's mute by removing its local rule, another list's mute by a local exception, and refuses what cannot be undone.

use super::*;
use crate::engine::{ProtectionSettings, Undone};
use crate::ledger::About;
use crate::local_rules::{LocalRules, LOCAL_LIST};
use hush_core::history::{Cause, Change, Logged, Outcome, What};
use hush_core::protections::{EscalationLimits, FloodLimits};

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

/// ROOM with @a:x, a moderator and @p:x; the local list loaded, flood protection on.
async fn start() -> (Harness, FakeHomeserver) {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@p:x", 10)]), &[HUSH, MOD, "@a:x", "@p:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let settings = ProtectionSettings {
        flood: Some((FloodLimits { max_events: 10, per_ms: 10_000 }, HOUR)),
        escalation: EscalationLimits { within_ms: 86_400_000, max_ms: 4 * HOUR },
        flood_reach: crate::engine::ProtectionReach::default(),
        mention_spam: None,
    };
    h.engine.set_protections(settings, LocalRules::in_memory());
    h.input(Input::ListLoaded { room_id: LOCAL_LIST.into(), events: vec![] }).await;
    (h, hs)
}

async fn history(h: &mut Harness, about: About) -> Vec<Logged> {
    let (reply, rows) = tokio::sync::oneshot::channel();
    h.engine.handle(Input::History { about, limit: 100, reply });
    rows.await.unwrap().unwrap()
}

async fn undo(h: &mut Harness, id: u64) -> Result<Undone, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.input(Input::Undo { id, moderator: MOD.into(), command: 0, writable: vec![], reply }).await;
    answer.await.unwrap()
}

fn applied(rows: &[Logged], what: What) -> Logged {
    rows.iter().find(|r| r.change == Change::Apply && r.what == what).cloned().unwrap_or_else(|| panic!("{rows:#?}"))
}

#[tokio::test(start_paused = true)]
async fn a_list_mute_is_logged_with_its_rule_and_sender_and_its_outcome() {
    let (mut h, _hs) = start().await;
    h.input(rule("m", "@a:x", "m.mute")).await;
    let rows = history(&mut h, About::Target("@a:x".into())).await;
    let row = applied(&rows, What::MutePowerLevel);
    assert_eq!(row.scope, Some(in_room(ROOM)));
    assert_eq!(row.rule.as_ref().map(|r| (r.room_id.as_str(), r.state_key.as_str())), Some((LIST, "m")));
    assert_eq!(row.cause, Cause::Rule { sender: MOD.into(), written_by: None });
    assert_eq!(row.outcome, Outcome::Done, "the write's answer settles it");
}

#[tokio::test(start_paused = true)]
async fn a_flood_mute_is_logged_as_flood_protection() {
    let (mut h, _hs) = start().await;
    h.input(Input::Activity { room_id: ROOM.into(), events: (0..11).map(|i| ("@a:x".into(), T0 + i * 100)).collect() })
        .await;
    let row = applied(&history(&mut h, About::All).await, What::MutePowerLevel);
    assert_eq!(row.cause, Cause::Protection);
    assert_eq!(row.rule.map(|r| (r.room_id, r.state_key)), Some((LOCAL_LIST.into(), "hush.flood:@a:x".into())));
    assert_eq!(crate::engine::protection_name("hush.flood:@a:x"), "flood protection");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_logged_once_until_it_changes() {
    let (mut h, _hs) = start().await;
    h.input(rule("m", MOD, "m.mute")).await;
    // The same rule again (a list reloaded), and a timer: the same refusal.
    h.input(rule("m", MOD, "m.mute")).await;
    h.input(Input::Timers(hush_core::schedule::Expired { ids: vec![MOD.to_owned()], now_ms: T0 })).await;
    let rows = history(&mut h, About::Target(MOD.into())).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!((rows[0].change, rows[0].what), (Change::Refused, What::Mute));
    assert!(!rows[0].detail.is_empty(), "the reason is kept");
    // Another rule refused for the same member is a new row.
    h.input(rule("b", MOD, "m.ban")).await;
    assert_eq!(history(&mut h, About::Target(MOD.into())).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn undo_of_a_flood_mute_removes_its_local_rule_and_lifts_it() {
    let (mut h, hs) = start().await;
    h.input(Input::Activity { room_id: ROOM.into(), events: (0..11).map(|i| ("@a:x".into(), T0 + i * 100)).collect() })
        .await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let id = applied(&history(&mut h, About::All).await, What::MutePowerLevel).id;
    let Ok(Undone::Done(text)) = undo(&mut h, id).await else { panic!("not undone") };
    assert!(text.contains("removed the local rule `hush.flood:@a:x`") && text.contains("flood protection"), "{text}");
    assert!(hs.power_levels_now(ROOM)["users"].get("@a:x").is_none(), "{}", hs.power_levels_now(ROOM));
    assert!(h.status().await.ledger.is_empty());
    // The lift is logged as the moderator's undo; undoing again has nothing in force.
    let rows = history(&mut h, About::Target("@a:x".into())).await;
    let lift = rows.iter().find(|r| r.change == Change::Lift).expect("the lift is logged");
    assert_eq!(lift.cause, Cause::Command { moderator: MOD.into(), command: format!("undo {id}") });
    assert_eq!(lift.outcome, Outcome::Done, "the lift's own answer settles it");
    assert_eq!(applied(&rows, What::MutePowerLevel).outcome, Outcome::Done);
    assert!(undo(&mut h, id).await.unwrap_err().contains("no longer in force"));
}

#[tokio::test(start_paused = true)]
async fn undo_of_another_lists_mute_writes_a_local_exception_and_the_lists_rule_stays() {
    let (mut h, hs) = start().await;
    h.input(rule("m", "@a:x", "m.mute")).await;
    let id = applied(&history(&mut h, About::All).await, What::MutePowerLevel).id;
    let Ok(Undone::Done(text)) = undo(&mut h, id).await else { panic!("not undone") };
    assert!(text.contains("local exception `hush.undo:@a:x`"), "{text}");
    let notices = h.notice_lines().await;
    assert!(!notices.iter().any(|n| n.contains("hush.undo")), "the reply says it, once: {notices:?}");
    assert!(hs.power_levels_now(ROOM)["users"].get("@a:x").is_none(), "{}", hs.power_levels_now(ROOM));
    assert!(h.engine.index.rule(&rule_id(LIST, "m")).is_some(), "the list's rule stays");
    let local = h.engine.protections.local.as_ref().unwrap().get("m.policy.rule.user", "hush.undo:@a:x").cloned();
    let local = local.expect("the exception is kept in the local rules");
    assert_eq!(local["content"]["recommendation"], json!("m.allow"));
    assert_eq!(local["content"]["reason"], json!(format!("undo #{id} by {MOD}")));
    assert!(local["content"].get("expiry").is_none());
    let rows = history(&mut h, About::Target("@a:x".into())).await;
    let lift = rows.iter().find(|r| r.change == Change::Lift).expect("the lift is logged");
    assert_eq!(lift.cause, Cause::Command { moderator: MOD.into(), command: format!("undo {id}") });
    // The exception holds: the list's rule seen again does not mute.
    h.input(rule("m", "@a:x", "m.mute")).await;
    assert!(hs.power_levels_now(ROOM)["users"].get("@a:x").is_none());
    // Removing the exception (what `unallow` does) mutes again.
    let (reply, done) = tokio::sync::oneshot::channel();
    let kind = "m.policy.rule.user".to_owned();
    h.input(Input::RemoveLocalRule { kind, state_key: "hush.undo:@a:x".into(), reply }).await;
    assert_eq!(done.await.unwrap(), Ok(true));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
}

#[tokio::test(start_paused = true)]
async fn what_cannot_be_undone_is_refused_with_the_reason() {
    let (mut h, _hs) = start().await;
    let (reply, _answer) = tokio::sync::oneshot::channel();
    h.input(Input::Redact { user: "@a:x".into(), room: None, limit: None, reply }).await;
    let id = applied(&history(&mut h, About::All).await, What::Redaction).id;
    let why = undo(&mut h, id).await.unwrap_err();
    assert!(why.contains("redaction") && why.contains("cannot be brought back"), "{why}");
    h.input(rule("m", MOD, "m.mute")).await;
    let refused = history(&mut h, About::Target(MOD.into())).await[0].id;
    assert!(undo(&mut h, refused).await.unwrap_err().contains("refusal"));
    assert!(undo(&mut h, 9_999).await.unwrap_err().contains("No entry #9999"));
}

#[tokio::test(start_paused = true)]
async fn in_dry_run_undo_says_what_it_would_do_and_does_nothing() {
    let (mut h, hs) = start().await;
    h.input(rule("m", "@a:x", "m.mute")).await;
    let id = applied(&history(&mut h, About::All).await, What::MutePowerLevel).id;
    h.engine.cfg.dry_run = true;
    let Ok(Undone::Done(text)) = undo(&mut h, id).await else { panic!("no answer") };
    assert!(text.starts_with("[dry run] would have: undo"), "{text}");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    assert!(h.engine.protections.local.as_ref().unwrap().events().is_empty());
}

fn rule_id(list: &str, key: &str) -> hush_core::policy::RuleId {
    hush_core::policy::RuleId { room_id: list.into(), kind: hush_core::policy::EntityKind::User, state_key: key.into() }
}
