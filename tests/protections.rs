//! Protections against a real Synapse: a member who floods a protected room is muted for the configured time, the mute ends on time, also across a kill -9, and moderators are never hit; a message mentioning too many users, or `@room` without the level, mutes its sender and is redacted; `unmute` lifts a protection's mute.
#![recursion_limit = "256"]

mod common;

use common::*;
use matrix_sdk::ruma::{OwnedEventId, RoomId};
use serde_json::{json, Value};

/// Flood protection on: more than 10 events in 10 s mutes for `mute_for`.
fn flood(mute_for: &str) -> String {
    format!("protections:\n  flood:\n    enabled: true\n    max_events: 10\n    per: 10s\n    mute_for: {mute_for}\n")
}

/// Sends 15 messages as fast as the homeserver takes them; those after the mute fail.
async fn flood_from(user: &TestUser, c: &Community) {
    for i in 0..15 {
        let _ = user.try_say(c.protected.room_id(), &format!("spam {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_mutes_the_sender_for_the_configured_time_and_spares_moderators() {
    let c = Community::new().await.unwrap();
    let member = c.member(Some(5)).await.unwrap();
    let config = c.config(&flood("10s"));
    let hush = c.start(&config, 1).await;

    // The moderator floods first: never muted, whatever they send.
    flood_from(&c.moderator, &c).await;
    let start = now_ms();
    flood_from(&member, &c).await;
    let pl = c.wait_level(&member.user_id, Some(-1)).await;
    assert_ne!(level_of(&pl, &c.moderator.user_id), Some(-1), "a moderator is never muted: {pl}");
    assert_eq!(c.moderator.try_say(c.protected.room_id(), "still speaking").await, Ok(()));
    assert_eq!(member.try_say(c.protected.room_id(), "still here?").await, Err("M_FORBIDDEN".to_owned()));

    let rid = c.management.room_id().to_owned();
    let notice = poll(DEADLINE, || async {
        c.moderator.messages_from(&rid, &c.bot.user_id).into_iter().find(|m| m.body.contains("flood protection"))
    })
    .await;
    let notice = notice.unwrap_or_else(|| panic!("no flood notice; log:\n{}", hush.log_text()));
    assert!(notice.body.contains(&format!("Muted {}", member.user_id)), "{}", notice.body);
    assert!(notice.body.contains("for 10s"), "{}", notice.body);
    assert!(notice.mentions.as_ref().is_some_and(|m| m.user_ids.is_empty() && !m.room), "notices never ping");
    // `mutes` lists it, with the local rule behind it.
    c.command("!hush mutes", "flood protection (local rule, not published), reason: flood protection").await;

    c.wait_level(&member.user_id, Some(5)).await;
    assert!(now_ms() >= start + 10_000, "the mute is lifted at its end, not before");
    assert_eq!(member.try_say(c.protected.room_id(), "sorry").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_mute_ends_on_time_after_a_kill_9() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let config = c.config(&flood("10s"));
    let hush = c.start(&config, 1).await;

    let start = now_ms();
    flood_from(&member, &c).await;
    c.wait_level(&member.user_id, Some(-1)).await;
    hush.kill9();

    // Restarted while the mute lasts: its local rule is read again, so the mute stays
    // until its end, then it is lifted.
    let _hush = c.start(&config, 2).await;
    c.wait_level(&member.user_id, None).await;
    assert!(now_ms() >= start + 10_000, "the mute outlives the restart and ends at its end, not before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmute_lifts_a_flood_mute_and_says_so() {
    let c = Community::new().await.unwrap();
    let member = c.member(Some(5)).await.unwrap();
    let config = c.config(&flood("1h"));
    let _hush = c.start(&config, 1).await;

    flood_from(&member, &c).await;
    c.wait_level(&member.user_id, Some(-1)).await;
    let reply = c.command(&format!("!hush unmute {}", member.user_id), "removed 1 rule(s)").await;
    assert!(reply.body.contains("the flood protection mute"), "{}", reply.body);
    // Lifted long before its hour: back to the level it had.
    c.wait_level(&member.user_id, Some(5)).await;
    assert_eq!(member.try_say(c.protected.room_id(), "thanks").await, Ok(()));
    c.command("!hush mutes", "No active mutes.").await;
}

/// Mention spam on: more than 10 users, or `@room` without the level, mutes for 1h and redacts.
const MENTION_SPAM: &str = "protections:\n  mention_spam:\n    enabled: true\n    max_mentions: 10\n    mute_for: 1h\n";

/// An event as the moderator's homeserver serves it now.
async fn event(c: &Community, room: &RoomId, id: &OwnedEventId) -> Option<Value> {
    use matrix_sdk::ruma::api::client::room::get_room_event;
    let req = get_room_event::v3::Request::new(room.to_owned(), id.to_owned());
    let resp = c.moderator.client.send(req).await.ok()?;
    resp.event.deserialize_as_unchecked::<Value>().ok()
}

/// Waits until `id` in the protected room is redacted.
async fn wait_redacted(c: &Community, id: &OwnedEventId) {
    let room = c.protected.room_id();
    let found = poll(DEADLINE, || async {
        let ev = event(c, room, id).await?;
        ev.pointer("/unsigned/redacted_because").map(|_| ())
    })
    .await;
    assert!(found.is_some(), "{id} never redacted");
}

/// Sends a message with raw content to the protected room; returns its id.
async fn send(user: &TestUser, c: &Community, content: Value) -> OwnedEventId {
    let room = user.room(c.protected.room_id()).await.unwrap();
    room.send_raw("m.room.message", content).await.unwrap().response.event_id
}

/// Waits for hush's notice containing `text` in the management room.
async fn wait_notice(c: &Community, text: &str) -> SeenMessage {
    c.moderator.wait_for_message(c.management.room_id(), &c.bot.user_id, |m| m.body.contains(text)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_mentioning_twelve_users_mutes_its_sender_and_is_redacted() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let config = c.config(MENTION_SPAM);
    let _hush = c.start(&config, 1).await;

    let fine = send(
        &member,
        &c,
        json!({"msgtype": "m.text", "body": "hello @a:localhost", "m.mentions": {"user_ids": ["@a:localhost"]}}),
    )
    .await;
    let users: Vec<String> = (0..12).map(|i| format!("@victim{i}:localhost")).collect();
    let spam =
        send(&member, &c, json!({"msgtype": "m.text", "body": users.join(" "), "m.mentions": {"user_ids": users}}))
            .await;
    c.wait_level(&member.user_id, Some(-1)).await;
    wait_redacted(&c, &spam).await;
    let notice = wait_notice(&c, "(mention spam)").await;
    assert!(notice.body.contains(&format!("Muted {} for 1h", member.user_id)), "{}", notice.body);
    assert!(notice.body.contains("mentioning 12 users"), "{}", notice.body);
    assert!(event(&c, c.protected.room_id(), &fine).await.unwrap().pointer("/unsigned/redacted_because").is_none());
    assert_eq!(member.try_say(c.protected.room_id(), "again").await, Err("M_FORBIDDEN".to_owned()));
    c.command("!hush mutes", "mention spam (local rule, not published)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_room_from_a_member_without_the_level_mutes_and_is_redacted() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let config = c.config(MENTION_SPAM);
    let _hush = c.start(&config, 1).await;

    // An older client: no m.mentions, `@room` in the body.
    let spam = send(&member, &c, json!({"msgtype": "m.text", "body": "@room free crypto"})).await;
    c.wait_level(&member.user_id, Some(-1)).await;
    wait_redacted(&c, &spam).await;
    let notice = wait_notice(&c, "(mention spam)").await;
    assert!(notice.body.contains("@room without the power level"), "{}", notice.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_flood_mute_is_written_to_the_default_list_and_enforced_from_it() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let config = c.config(&format!("{}    publish: true\n", flood("1h")));
    let _hush = c.start(&config, 1).await;

    flood_from(&member, &c).await;
    let key = format!("hush.flood:{}", member.user_id);
    let rule = poll(DEADLINE, || async { c.rule_content(&key).await.filter(|r| r.get("entity").is_some()) }).await;
    let rule = rule.unwrap_or_else(|| panic!("no rule `{key}` in the list"));
    assert_eq!(rule["recommendation"], "m.mute", "{rule}");
    assert!(rule["expiry"].as_u64().is_some_and(|e| e > now_ms()), "{rule}");
    assert!(rule["reason"].as_str().is_some_and(|r| r.starts_with("flood protection: ")), "{rule}");
    c.wait_level(&member.user_id, Some(-1)).await;
    // Enforced from the list, like any rule hush wrote there: unmute removes it.
    c.command("!hush mutes", &format!("rule `{key}` in {}", c.list.room_id())).await;
    c.command(&format!("!hush unmute {}", member.user_id), "removed 1 rule(s)").await;
    c.wait_level(&member.user_id, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protection_limited_to_a_room_by_its_alias_watches_it_once_resolved() {
    use matrix_sdk::ruma::api::client::alias::create_alias;
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let alias = format!("#{}:{}", unique("lobby"), c.moderator.user_id.server_name());
    let alias_id = matrix_sdk::ruma::OwnedRoomAliasId::try_from(alias.as_str()).unwrap();
    let req = create_alias::v3::Request::new(alias_id, c.protected.room_id().to_owned());
    c.moderator.client.send(req).await.unwrap();
    let config = c.config(&format!("{MENTION_SPAM}    rooms: [\"{alias}\"]\n"));
    let hush = c.start(&config, 1).await;
    // The alias resolves in the background: the room is watched from then on.
    let resolved = poll(DEADLINE, || async {
        hush.log_text().contains("an alias the protections name is resolved").then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the alias never resolved; log:\n{}", hush.log_text());

    let users: Vec<String> = (0..12).map(|i| format!("@victim{i}:localhost")).collect();
    let spam = send(&member, &c, json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": users}})).await;
    c.wait_level(&member.user_id, Some(-1)).await;
    wait_redacted(&c, &spam).await;
}
