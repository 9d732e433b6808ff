//! Mention spam and what every protection shares: a message mentioning too many users or `@room` without the level mutes (local rule with expiry) and redacts exactly that message; exempt users; dry run; `rooms`; `publish`; escalation across a restart.

use super::*;
use crate::engine::{MentionSettings, ProtectionReach, ProtectionSettings};
use crate::escalation_memory::EscalationMemory;
use crate::local_rules::{LocalRules, LOCAL_LIST};
use hush_core::mentions::{Mentioned, Message};
use hush_core::protections::EscalationLimits;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;
const SPAM: &str = "@spam:x";
const OTHER: &str = "@other:x";

fn settings(reach: ProtectionReach) -> ProtectionSettings {
    ProtectionSettings {
        flood: None,
        escalation: EscalationLimits { within_ms: 86_400_000, max_ms: 4 * HOUR },
        flood_reach: ProtectionReach::default(),
        mention_spam: Some(MentionSettings { max_mentions: 10, mute_ms: HOUR, redact: true, reach }),
    }
}

/// ROOM (and ROOM2) with SPAM, OTHER and a member at level 10; mention spam on with `reach`.
async fn with_mention_spam(cfg: EngineConfig, reach: ProtectionReach) -> (Harness, FakeHomeserver) {
    let hs = FakeHomeserver::new(HUSH);
    for room in [ROOM, ROOM2] {
        hs.create_room(room, "10", MOD, levels(&[("@p:x", 10)]), &[HUSH, MOD, SPAM, OTHER, "@p:x"]);
    }
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    h.engine.set_protections(settings(reach), LocalRules::in_memory());
    h.input(Input::ListLoaded { room_id: LOCAL_LIST.into(), events: vec![] }).await;
    (h, hs)
}

/// A message of `sender` in `room` mentioning `users` distinct users (and the room).
fn message(hs: &FakeHomeserver, room: &str, sender: &str, users: usize, at_room: bool) -> (String, Input) {
    let event_id = hs.post(room, sender, T0);
    let m = Message {
        sender: sender.into(),
        event_id: event_id.clone(),
        ts: T0,
        mentioned: Mentioned { users, room: at_room },
    };
    (event_id, Input::Mentions { room_id: room.into(), messages: vec![m] })
}

fn redacted_ids(hs: &FakeHomeserver) -> Vec<String> {
    hs.writes()
        .into_iter()
        .filter_map(|w| match w {
            Write::Redact { event_id, .. } => Some(event_id),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_message_mentioning_too_many_users_mutes_and_redacts_exactly_it() {
    let (mut h, hs) = with_mention_spam(config(), ProtectionReach::default()).await;
    let earlier = hs.post(ROOM, SPAM, T0 - 1000);
    let (spam, input) = message(&hs, ROOM, SPAM, 12, false);
    let later = hs.post(ROOM, SPAM, T0 + 1000);
    h.engine.handle(input);
    // The ledger records the redaction (its events) before it is sent.
    let entry = entry_of(&h.status().await, &in_room(ROOM), SPAM, Kind::Redaction).expect("a redaction entry");
    assert_eq!(entry.event_ids, vec![spam.clone()]);
    assert_eq!(entry.rule.room_id, LOCAL_LIST);
    h.settle().await;
    h.sync().await;
    assert_eq!(redacted_ids(&hs), vec![spam.clone()], "exactly that message");
    assert_eq!(hs.redacted(ROOM), vec![spam]);
    assert!(!hs.redacted(ROOM).contains(&earlier) && !hs.redacted(ROOM).contains(&later));
    let s = h.status().await;
    assert!(entry_of(&s, &in_room(ROOM), SPAM, Kind::Redaction).is_none(), "done: the entry goes");
    let mute = entry_of(&s, &in_room(ROOM), SPAM, Kind::MutePowerLevel).expect("muted");
    assert_eq!((mute.rule.room_id.as_str(), mute.rule.state_key.as_str()), (LOCAL_LIST, "hush.mention:@spam:x"));
    assert!(mute.expires_at_ms.is_some_and(|e| e >= T0 + HOUR), "{mute:?}");
    assert_eq!(hs.power_levels_now(ROOM)["users"][SPAM], json!(-1));
    let notices = h.notice_lines().await;
    assert!(
        notices.iter().any(|n| n.contains("Muted @spam:x for 1h")
            && n.contains("mentioning 12 users")
            && n.contains("(mention spam)")),
        "{notices:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn as_many_mentions_as_allowed_do_nothing() {
    let (mut h, hs) = with_mention_spam(config(), ProtectionReach::default()).await;
    let (_, input) = message(&hs, ROOM, SPAM, 10, false);
    h.input(input).await;
    assert!(h.status().await.ledger.is_empty());
    assert!(redacted_ids(&hs).is_empty());
}

#[tokio::test(start_paused = true)]
async fn at_room_without_the_level_trips_and_with_it_does_not() {
    let (mut h, hs) = with_mention_spam(config(), ProtectionReach::default()).await;
    // @p:x is at 10, below notifications.room (50 by default).
    let (id, input) = message(&hs, ROOM, "@p:x", 0, true);
    h.input(input).await;
    assert_eq!(hs.redacted(ROOM), vec![id]);
    assert!(entry_of(&h.status().await, &in_room(ROOM), "@p:x", Kind::MutePowerLevel).is_some());
    // A room that lets level 0 notify everyone: nothing happens.
    let mut pl = hs.power_levels_now(ROOM2);
    pl["notifications"] = json!({"room": 0});
    h.input(Input::State {
        room_id: ROOM2.into(),
        event: json!({"type": "m.room.power_levels", "state_key": "", "sender": MOD, "event_id": "$pl2", "content": pl}),
    })
    .await;
    let (_, input) = message(&hs, ROOM2, OTHER, 0, true);
    h.input(input).await;
    assert!(entry_of(&h.status().await, &in_room(ROOM2), OTHER, Kind::MutePowerLevel).is_none());
    assert_eq!(hs.redacted(ROOM2), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn moderators_protected_users_and_hush_are_never_hit() {
    let mut cfg = config();
    cfg.protected_users = vec![OTHER.into()];
    let (mut h, hs) = with_mention_spam(cfg, ProtectionReach::default()).await;
    for user in [MOD, OTHER, HUSH] {
        let (_, input) = message(&hs, ROOM, user, 50, true);
        h.input(input).await;
    }
    assert!(h.status().await.ledger.is_empty());
    assert!(redacted_ids(&hs).is_empty());
    assert_eq!(hs.power_levels_now(ROOM)["users"].get(OTHER), None);
}

#[tokio::test(start_paused = true)]
async fn in_dry_run_mention_spam_is_reported_and_nothing_is_written() {
    let mut cfg = config();
    cfg.dry_run = true;
    let (mut h, hs) = with_mention_spam(cfg, ProtectionReach::default()).await;
    let (id, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    assert!(redacted_ids(&hs).is_empty());
    assert_eq!(hs.power_levels_now(ROOM)["users"].get(SPAM), None);
    assert!(h.status().await.ledger.is_empty());
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.starts_with("[dry run]") && n.contains("Muted @spam:x")), "{notices:#?}");
    assert!(notices.iter().any(|n| n.starts_with("[dry run] would redact") && n.contains(&id)), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_room_not_in_rooms_is_not_watched_and_an_alias_watches_once_resolved() {
    let reach = ProtectionReach { rooms: Some(vec!["#two:x".into()]), publish_to: None };
    let (mut h, hs) = with_mention_spam(config(), reach).await;
    let (_, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    let (_, input) = message(&hs, ROOM2, SPAM, 12, false);
    h.input(input).await;
    assert!(h.status().await.ledger.is_empty(), "the alias is not resolved yet: no room is watched");
    h.input(Input::ProtectionRoomResolved { alias: "#two:x".into(), room_id: ROOM2.into() }).await;
    let (_, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    assert!(h.status().await.ledger.is_empty(), "{ROOM} is not in `rooms`");
    let (id, input) = message(&hs, ROOM2, SPAM, 12, false);
    h.input(input).await;
    assert_eq!(hs.redacted(ROOM2), vec![id]);
    assert!(entry_of(&h.status().await, &in_room(ROOM2), SPAM, Kind::MutePowerLevel).is_some());
}

#[tokio::test(start_paused = true)]
async fn publish_writes_the_rule_to_the_default_list_and_nothing_local() {
    let reach = ProtectionReach { rooms: None, publish_to: Some(LIST.into()) };
    let (mut h, hs) = with_mention_spam(config(), reach).await;
    let (id, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    let published: Vec<Write> = hs.writes().into_iter().filter(|w| matches!(w, Write::State { .. })).collect();
    let [Write::State { room, event_type, state_key, content }] = published.as_slice() else {
        panic!("one rule published: {published:#?}")
    };
    assert_eq!(
        (room.as_str(), event_type.as_str(), state_key.as_str()),
        (LIST, "m.policy.rule.user", "hush.mention:@spam:x")
    );
    assert_eq!((content["entity"].as_str(), content["recommendation"].as_str()), (Some(SPAM), Some("m.mute")));
    assert!(content["expiry"].as_u64().is_some_and(|e| e >= T0 + HOUR), "{content}");
    assert!(content["reason"].as_str().is_some_and(|r| r.starts_with("mention spam: ")), "{content}");
    assert!(h.engine.protections.local.as_ref().unwrap().events().is_empty(), "nothing in the local list");
    assert_eq!(hs.redacted(ROOM), vec![id], "the message is redacted at once");
    // The rule comes back from the list like any rule, and mutes.
    let event = json!({"type": "m.policy.rule.user", "state_key": state_key, "sender": HUSH, "event_id": "$pub", "content": content});
    h.input(Input::State { room_id: LIST.into(), event }).await;
    let mute = entry_of(&h.status().await, &in_room(ROOM), SPAM, Kind::MutePowerLevel).expect("muted");
    assert_eq!(mute.rule.room_id, LIST);
}

/// An engine with mention spam on and escalation kept in `dir` (a restart is a second one).
async fn remembering(dir: &std::path::Path) -> (Harness, FakeHomeserver) {
    let (mut h, hs) = with_mention_spam(config(), ProtectionReach::default()).await;
    let (memory, records) = EscalationMemory::load(dir, T0, 86_400_000).unwrap();
    h.engine.set_escalation_memory(memory, records);
    (h, hs)
}

#[tokio::test(start_paused = true)]
async fn escalation_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, hs) = remembering(dir.path()).await;
    let (_, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    assert!(h.notice_lines().await.iter().any(|n| n.contains("Muted @spam:x for 1h")));
    drop(h);
    // kill -9: a new engine over the same data_dir.
    let (mut again, hs) = remembering(dir.path()).await;
    let (_, input) = message(&hs, ROOM, SPAM, 12, false);
    again.input(input).await;
    let notices = again.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("Muted @spam:x for 2h")), "doubled: {notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn several_tripping_messages_in_one_sync_are_one_mute_and_one_redaction() {
    let (mut h, hs) = with_mention_spam(config(), ProtectionReach::default()).await;
    let messages: Vec<Message> = (0..3)
        .map(|i| Message {
            sender: SPAM.into(),
            event_id: hs.post(ROOM, SPAM, T0 + i),
            ts: T0 + i,
            mentioned: Mentioned { users: 20, room: false },
        })
        .collect();
    let mut ids: Vec<String> = messages.iter().map(|m| m.event_id.clone()).collect();
    h.input(Input::Mentions { room_id: ROOM.into(), messages }).await;
    let mut redacted = hs.redacted(ROOM);
    redacted.sort();
    ids.sort();
    assert_eq!(redacted, ids);
    let notices = h.notice_lines().await;
    assert_eq!(notices.iter().filter(|n| n.contains("Muted @spam:x")).count(), 1, "{notices:#?}");
    assert!(notices.iter().any(|n| n.contains("Muted @spam:x for 1h")), "not escalated within one sync: {notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_list_to_publish_to_that_is_not_resolved_yet_mutes_locally_and_says_so() {
    let reach = ProtectionReach { rooms: None, publish_to: Some("#list:x".into()) };
    let (mut h, hs) = with_mention_spam(config(), reach).await;
    let (_, input) = message(&hs, ROOM, SPAM, 12, false);
    h.input(input).await;
    assert!(!hs.writes().iter().any(|w| matches!(w, Write::State { .. })), "nothing published");
    let mute = entry_of(&h.status().await, &in_room(ROOM), SPAM, Kind::MutePowerLevel).expect("muted locally");
    assert_eq!(mute.rule.room_id, LOCAL_LIST);
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("cannot publish") && n.contains("muting locally")), "{notices:#?}");
}
