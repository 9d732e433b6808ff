//! A moderator's view of the safety guarantees against a real Synapse: moderators are never restricted, a list entry that names everyone (or too many) is held until a moderator confirms it, lists act only as far as they are trusted, and commands that publish are checked.
#![recursion_limit = "256"]

mod common;

use common::*;
use matrix_sdk::ruma::RoomId;

/// Config lines for the community's list plus a second one (not the default list), given
/// as its `policy_lists` entry, with `extra` lines after.
fn two_lists_config(c: &Community, second_entry: &str, extra: &str) -> std::path::PathBuf {
    let lines = format!(
        "policy_lists:\n  - \"{list}\"\n  - {second_entry}\ndefault_policy_list: \"{list}\"\nprotected_rooms: [\"{p}\"]\nmute:\n  batch_window_ms: 50\n{extra}",
        list = c.list.room_id(),
        p = c.protected.room_id(),
    );
    c.bot.write_config(&c.hs, c.management.room_id(), &lines)
}

/// A policy list of another community, hush invited.
async fn other_list(c: &Community) -> matrix_sdk::Room {
    c.moderator.create_room("other-policies", &[&c.bot.user_id], false).await.unwrap()
}

async fn put_rule(c: &Community, list: &RoomId, key: &str, entity: &str, recommendation: &str, reason: &str) {
    let content = serde_json::json!({"entity": entity, "recommendation": recommendation, "reason": reason});
    c.moderator.put_state(list, "m.policy.rule.user", key, content).await.unwrap();
}

async fn wait_notice(c: &Community, pred: impl Fn(&str) -> bool) -> SeenMessage {
    c.moderator.wait_for_message(c.management.room_id(), &c.bot.user_id, |m| pred(&m.body)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_rule_for_everyone_is_held_until_a_moderator_decides() {
    let c = Community::new().await.unwrap();
    let a = c.member(None).await.unwrap();
    let b = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("everyone", "@*:*", "m.ban", None).await.unwrap();
    let held = wait_notice(&c, |b| b.starts_with("Held h1:")).await;
    assert!(held.body.contains("`@*:*` matches every user of every server"), "{}", held.body);
    assert!(held.body.contains("!hush confirm h1"), "{}", held.body);
    c.command("!hush status", "h1: m.ban `@*:*`").await;

    // A narrow rule meanwhile works at once.
    let spammer = c.member(None).await.unwrap();
    c.rule("narrow", spammer.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&spammer.user_id, Some(-1)).await;
    for u in [&a, &b] {
        assert_eq!(c.membership(&u.user_id).await.as_deref(), Some("join"), "nobody is banned by a held rule");
    }

    c.command("!hush reject h1", "Rejected h1").await;
    // Another rule for everyone: confirmed, it mutes everyone but moderators and hush.
    c.rule("everyone-mute", "@*:*", "m.mute", None).await.unwrap();
    wait_notice(&c, |b| b.starts_with("Held h2:")).await;
    c.command("!hush confirm h2", "Confirmed h2").await;
    c.wait_level(&a.user_id, Some(-1)).await;
    let pl = c.wait_level(&b.user_id, Some(-1)).await;
    assert_eq!(level_of(&pl, &c.bot.user_id), Some(100), "hush never restricts itself: {pl}");
    // The moderator created the room (room version 12: no `users` entry, unlimited power).
    assert_ne!(level_of(&pl, &c.moderator.user_id), Some(-1), "nor the room's creator: {pl}");
    assert_eq!(c.membership(&a.user_id).await.as_deref(), Some("join"), "the rejected ban stays dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moderator_is_not_muted_until_demoted() {
    let c = Community::new().await.unwrap();
    let helper = c.member(Some(50)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("helper", helper.user_id.as_str(), "m.mute", None).await.unwrap();
    let refusal = wait_notice(&c, |b| b.contains(&format!("Not going to mute {}", helper.user_id))).await;
    assert!(refusal.body.contains("the user is a moderator of the room (power level 50"), "{}", refusal.body);
    assert!(refusal.body.contains(c.protected.room_id().as_str()), "names the room: {}", refusal.body);
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &helper.user_id), Some(50));

    // Demoted to 0 while the rule stands: now muted.
    let mut pl = pl;
    pl["users"][helper.user_id.as_str()] = 0.into();
    c.moderator.put_state(c.protected.room_id(), "m.room.power_levels", "", pl).await.unwrap();
    c.wait_level(&helper.user_id, Some(-1)).await;
    // A moderator's command naming a moderator is refused, and writes nothing.
    c.command(&format!("!hush ban {}", c.moderator.user_id), "Not going to ban").await;
    let key = format!("m.ban:{}", c.moderator.user_id);
    assert_eq!(c.rule_content(&key).await, None, "no rule was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_watch_of_a_list_that_would_ban_twenty_hold_until_confirmed() {
    let c = Community::new().await.unwrap();
    let rid = c.protected.room_id().to_owned();
    c.moderator.put_state(&rid, "m.room.join_rules", "", serde_json::json!({"join_rule": "public"})).await.unwrap();
    let prefix = unique("crowd");
    let crowd = joined_accounts(&c.hs, &prefix, 20, std::slice::from_ref(&rid)).await.unwrap();
    let other = other_list(&c).await;
    put_rule(&c, other.room_id(), "crowd", &format!("@{prefix}*:localhost"), "m.ban", "raid").await;
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    let preview = c.command(&format!("!hush preview {}", other.room_id()), "Preview of").await;
    assert!(preview.body.contains("1 ban, 0 mute"), "{}", preview.body);
    assert!(preview.body.contains("would ban 20"), "{}", preview.body);
    assert!(preview.body.contains("the guard would hold these rules"), "{}", preview.body);
    assert_eq!(c.membership(&crowd[0]).await.as_deref(), Some("join"), "a preview does nothing");

    let watched = c.command(&format!("!hush watch {}", other.room_id()), "Now following").await;
    assert!(watched.body.contains("would ban 20"), "watch shows the preview: {}", watched.body);
    let held = wait_notice(&c, |b| b.starts_with("Held h1:")).await;
    assert!(held.body.contains("would ban 20 and mute 0"), "{}", held.body);
    for u in &crowd {
        assert_eq!(c.membership(u).await.as_deref(), Some("join"), "nothing happens until confirm");
    }
    c.command("!hush confirm h1", "Confirmed h1").await;
    for u in &crowd {
        c.wait_membership(u, "ban").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmute_leaves_rules_in_lists_hush_does_not_write_to() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let other = other_list(&c).await;
    put_rule(&c, other.room_id(), "theirs", user.user_id.as_str(), "m.mute", "their decision").await;
    let config = two_lists_config(&c, &format!("\"{}\"", other.room_id()), "");
    let _hush = c.start(&config, 1).await;
    c.wait_level(&user.user_id, Some(-1)).await;

    let reply = c.command(&format!("!hush unmute {}", user.user_id), "a list hush does not write to").await;
    assert!(reply.body.contains("`theirs`"), "{}", reply.body);
    let resp = c
        .moderator
        .client
        .send(matrix_sdk::ruma::api::client::state::get_state_event_for_key::v3::Request::new(
            other.room_id().to_owned(),
            "m.policy.rule.user".into(),
            "theirs".to_owned(),
        ))
        .await
        .unwrap();
    let content: serde_json::Value = serde_json::from_str(resp.event_or_content.get()).unwrap();
    assert_eq!(content["entity"], user.user_id.as_str(), "the other community's rule is untouched");
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(-1), "and still enforced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_trusted_only_to_mute_does_not_ban() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let other = other_list(&c).await;
    put_rule(&c, other.room_id(), "ban-it", user.user_id.as_str(), "m.ban", "theirs").await;
    let entry = format!("{{room: \"{}\", actions: [mute]}}", other.room_id());
    let config = two_lists_config(&c, &entry, "");
    let _hush = c.start(&config, 1).await;
    let notice = wait_notice(&c, |b| b.contains("Ignoring the m.ban rule `ban-it`")).await;
    assert!(notice.body.contains("this list may cause only: mute"), "{}", notice.body);
    assert_eq!(c.membership(&user.user_id).await.as_deref(), Some("join"));
    // A mute from that list is enforced.
    put_rule(&c, other.room_id(), "ban-it", user.user_id.as_str(), "m.mute", "theirs").await;
    c.wait_level(&user.user_id, Some(-1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_with_room_mentions_pings_nobody() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    // Dry run: the report repeats the rule's reason word for word.
    let config = c.config("dry_run: true\n");
    let _hush = c.start(&config, 1).await;
    let content =
        serde_json::json!({"entity": user.user_id, "recommendation": "m.ban", "reason": "@room look at this"});
    c.moderator.put_state(c.list.room_id(), "m.policy.rule.user", "loud", content).await.unwrap();
    let notice = wait_notice(&c, |b| b.contains("[dry run] would ban") && b.contains("@room look at this")).await;
    let mentions = notice.mentions.expect("every message hush sends has m.mentions");
    assert!(mentions.user_ids.is_empty() && !mentions.room, "no one is mentioned: {mentions:?}");
    // Replies to commands too.
    let reply = c.command("!hush status", "uptime").await;
    assert!(reply.mentions.is_some_and(|m| m.user_ids.is_empty() && !m.room));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_add_is_for_moderators_who_may_ban_there() {
    let c = Community::new().await.unwrap();
    let owner = register_user(&c.hs, "owner").await.unwrap();
    let theirs = owner.create_room("theirs", &[&c.moderator.user_id, &c.bot.user_id], false).await.unwrap();
    c.moderator.join(theirs.room_id()).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    let reply = c.command(&format!("!hush rooms add {}", theirs.room_id()), "Not protecting").await;
    assert!(reply.body.contains("power level 0 there"), "{}", reply.body);
    let rooms = c.command("!hush rooms", "protected rooms").await;
    assert!(!rooms.body.contains(theirs.room_id().as_str()), "{}", rooms.body);
}
