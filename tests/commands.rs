//! Moderators command hush from the management room, against a real Synapse: mute, unmute, ban, mutes, status, watch.
#![recursion_limit = "256"]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_with_a_duration_writes_an_expiring_rule_and_releases_on_time() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    let before = now_ms();
    let reply = c.command(&format!("!hush mute {} 8s flooding the lobby", user.user_id), "rule").await;
    assert!(reply.body.contains("m.mute:"), "{}", reply.body);
    let rule = c.rule_content(&format!("m.mute:{}", user.user_id)).await.expect("the rule is in the list");
    assert_eq!(rule["recommendation"], "m.mute");
    assert_eq!(rule["entity"], user.user_id.as_str());
    assert_eq!(rule["reason"], "flooding the lobby");
    let expiry = rule["expiry"].as_u64().expect("expiry");
    assert_eq!(rule["support.feline.policy.expiry.rev.2"].as_u64(), Some(expiry));
    assert!(expiry >= before + 8_000 && expiry <= now_ms() + 8_000, "expiry is now + 8s: {expiry}");

    c.wait_level(&user.user_id, Some(-1)).await;
    let mutes = c.command("!hush mutes", "muted user").await;
    assert!(mutes.body.contains(user.user_id.as_str()) && mutes.body.contains("ends in"), "{}", mutes.body);
    c.wait_level(&user.user_id, Some(10)).await;
    assert!(now_ms() >= expiry, "released at the expiry, not before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmute_lifts_at_once_and_repeating_mute_updates_the_rule() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.command(&format!("!hush mute {} 1h spam", user.user_id), "rule").await;
    c.command(&format!("!hush mute {} spam, permanent now", user.user_id), "rule").await;
    let rule = c.rule_content(&format!("m.mute:{}", user.user_id)).await.unwrap();
    assert!(rule.get("expiry").is_none(), "the same state key was updated: {rule}");
    c.wait_level(&user.user_id, Some(-1)).await;

    let reply = c.command(&format!("!hush unmute {}", user.user_id), "removed").await;
    assert!(reply.body.contains("1 rule"), "{}", reply.body);
    c.wait_level(&user.user_id, None).await;
    let rule = c.rule_content(&format!("m.mute:{}", user.user_id)).await.unwrap();
    assert_eq!(rule, serde_json::json!({}), "the rule is removed");

    let none = c.command(&format!("!hush unmute {}", user.user_id), "No active").await;
    assert!(none.body.contains(user.user_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_moderators_command_changes_nothing() {
    let c = Community::new().await.unwrap();
    let member = register_user(&c.hs, "member").await.unwrap();
    c.management.invite_user_by_id(&member.user_id).await.unwrap();
    let member_room = member.join(c.management.room_id()).await.unwrap();
    let victim = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    member.say(&member_room, &format!("!hush mute {} 1h", victim.user_id)).await.unwrap();
    // A moderator's command sent afterwards is answered: by then the member's was read and ignored.
    c.command("!hush status", "uptime").await;
    assert!(c.rule_content(&format!("m.mute:{}", victim.user_id)).await.is_none(), "no rule was written");
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &victim.user_id), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_takes_effect_and_survives_a_restart() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let other_list = c.moderator.create_room("other list", &[&c.bot.user_id], false).await.unwrap();
    c.moderator
        .put_state(
            other_list.room_id(),
            "m.policy.rule.user",
            "r1",
            serde_json::json!({"entity": user.user_id, "recommendation": "m.mute", "reason": "from the other list"}),
        )
        .await
        .unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(10), "the other list is not followed yet");

    c.command(&format!("!hush watch {}", other_list.room_id()), "Now following").await;
    c.wait_level(&user.user_id, Some(-1)).await;
    let status = c.command("!hush status", "uptime").await;
    assert!(status.body.contains(other_list.room_id().as_str()), "{}", status.body);
    assert!(hush.terminate().await.unwrap().success());

    // After a restart the list is still followed: removing its rule lifts the mute.
    let _hush = c.start(&config, 2).await;
    c.moderator.put_state(other_list.room_id(), "m.policy.rule.user", "r1", serde_json::json!({})).await.unwrap();
    c.wait_level(&user.user_id, Some(10)).await;
    let status = c.command("!hush status", "uptime").await;
    assert!(status.body.contains(other_list.room_id().as_str()), "still followed after the restart: {}", status.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_and_unban_by_command() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    c.command(&format!("!hush ban {} spam bot", user.user_id), "rule").await;
    let rule = c.rule_content(&format!("m.ban:{}", user.user_id)).await.unwrap();
    assert_eq!(rule["recommendation"], "m.ban");
    c.wait_membership(&user.user_id, "ban").await;
    c.command(&format!("!hush unban {}", user.user_id), "removed").await;
    c.wait_membership(&user.user_id, "leave").await;
}
