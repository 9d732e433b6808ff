//! Server ACLs against a real Synapse: a server rule that bans becomes a `deny` entry of the protected room's `m.room.server_acl`, and its removal takes exactly that entry out, leaving what moderators wrote by hand.
#![recursion_limit = "256"]

mod common;

use common::*;
use matrix_sdk::ruma::RoomId;
use serde_json::{json, Value};

/// The room's server ACL content, fresh from the homeserver (None: it has none).
async fn acl(user: &TestUser, room: &RoomId) -> Option<Value> {
    use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
    let req = get_state_event_for_key::v3::Request::new(room.to_owned(), "m.room.server_acl".into(), String::new());
    let resp = user.client.send(req).await.ok()?;
    serde_json::from_str(resp.event_or_content.get()).ok()
}

fn deny(acl: &Option<Value>) -> Vec<String> {
    acl.as_ref()
        .and_then(|a| a.get("deny"))
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Waits until the room's `deny` list is `want`; returns the whole content.
async fn wait_deny(user: &TestUser, room: &RoomId, want: &[&str]) -> Value {
    let seen = poll(DEADLINE, || async {
        let a = acl(user, room).await;
        (deny(&a) == want).then_some(a)
    })
    .await;
    match seen {
        Some(Some(a)) => a,
        _ => panic!("the deny list of {room} never became {want:?}; now {:?}", acl(user, room).await),
    }
}

async fn server_rule(c: &Community, key: &str, entity: &str) {
    let content = json!({"entity": entity, "recommendation": "m.ban", "reason": "spam server"});
    c.moderator.put_state(c.list.room_id(), "m.policy.rule.server", key, content).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_rule_adds_a_deny_entry_and_its_removal_takes_exactly_that_entry_out() {
    let c = Community::new().await.unwrap();
    let room = c.protected.room_id();
    let hand = json!({"allow": ["*"], "deny": ["hand.example"], "allow_ip_literals": false});
    c.moderator.put_state(room, "m.room.server_acl", "", hand.clone()).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    server_rule(&c, "evil", "evil.example").await;
    let with = wait_deny(&c.moderator, room, &["hand.example", "evil.example"]).await;
    assert_eq!(with["allow"], json!(["*"]), "allow stays as it was");
    assert_eq!(with["allow_ip_literals"], json!(false), "allow_ip_literals is not loosened");

    // A rule naming hush's own server is refused, and the ACL is left as it is.
    server_rule(&c, "own", "localhost").await;
    c.moderator.put_state(c.list.room_id(), "m.policy.rule.server", "evil", json!({})).await.unwrap();
    let after = wait_deny(&c.moderator, room, &["hand.example"]).await;
    assert_eq!(after, hand, "exactly hush's entry is taken out");
    let rid = c.management.room_id().to_owned();
    let refused = poll(DEADLINE, || async {
        c.moderator
            .messages_from(&rid, &c.bot.user_id)
            .into_iter()
            .find(|m| m.body.contains("Not going to deny the server `localhost`"))
    })
    .await
    .expect("the refusal is reported in the management room");
    assert!(refused.body.contains("hush's own server"), "{}", refused.body);
}

/// Events of `event_type` sent by `sender` in a room (its whole timeline, newest first).
async fn count_events(user: &TestUser, room: &RoomId, event_type: &str, sender: &str) -> usize {
    use matrix_sdk::ruma::api::client::message::get_message_events;
    let mut req = get_message_events::v3::Request::backward(room.to_owned());
    req.limit = 1000u32.into();
    let resp = user.client.send(req).await.unwrap();
    resp.chunk
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.json().get()).ok())
        .filter(|e| e["type"] == event_type && e["sender"] == sender)
        .count()
}

/// Figure (BENCHMARKS.md): how many `m.room.server_acl` events hush sends for 50 server
/// rules in 20 protected rooms, when the list is loaded at start and when 50 more rules
/// arrive live, written one after another by a moderator's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand (see BENCHMARKS.md)"]
async fn acl_event_count_for_50_server_rules_in_20_rooms() {
    let c = Community::new().await.unwrap();
    let mut rooms = Vec::new();
    for i in 0..20 {
        let r = c.moderator.create_room(&format!("acl{i}"), &[&c.bot.user_id], false).await.unwrap();
        let mut pl = c.moderator.power_levels(r.room_id()).await.unwrap();
        pl["users"][c.bot.user_id.as_str()] = 100.into();
        c.moderator.put_state(r.room_id(), "m.room.power_levels", "", pl).await.unwrap();
        rooms.push(r.room_id().to_owned());
    }
    for i in 0..50 {
        server_rule(&c, &format!("a{i}"), &format!("evil{i}.example")).await;
    }
    let listed: Vec<String> = rooms.iter().map(|r| format!("\"{r}\"")).collect();
    let lines = format!(
        "policy_lists: [\"{}\"]\nprotected_rooms: [{}]\nmute:\n  batch_window_ms: 250\n",
        c.list.room_id(),
        listed.join(", ")
    );
    let config = c.bot.write_config(&c.hs, c.management.room_id(), &lines);
    let _hush = c.start(&config, 1).await;
    let bot = c.bot.user_id.as_str();
    let n_entries = |n: usize| move |a: &Option<Value>| deny(a).len() == n;
    for r in &rooms {
        let f = n_entries(50);
        poll(DEADLINE, || async { f(&acl(&c.moderator, r).await).then_some(()) }).await.expect("50 entries");
    }
    let mut at_load = 0;
    for r in &rooms {
        at_load += count_events(&c.moderator, r, "m.room.server_acl", bot).await;
    }
    let start = std::time::Instant::now();
    for i in 0..50 {
        server_rule(&c, &format!("b{i}"), &format!("live{i}.example")).await;
    }
    let writing = start.elapsed();
    for r in &rooms {
        let f = n_entries(100);
        poll(DEADLINE, || async { f(&acl(&c.moderator, r).await).then_some(()) }).await.expect("100 entries");
    }
    let mut total = 0;
    for r in &rooms {
        total += count_events(&c.moderator, r, "m.room.server_acl", bot).await;
    }
    println!("\nACL events for 50 server rules in 20 rooms, list loaded at start: {at_load}");
    println!(
        "ACL events for 50 more server rules arriving live in 20 rooms: {} (the client wrote them in {} ms; \
         batch_window_ms 250)",
        total - at_load,
        writing.as_millis()
    );
}
