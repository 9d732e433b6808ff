//! A moderator's view of enforcement against a real Synapse: rules in a list become mutes and bans in protected rooms, lifted on removal and on expiry, across kill -9.
#![recursion_limit = "256"]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_rule_mutes_and_its_removal_restores_the_exact_level() {
    let c = Community::new().await.unwrap();
    let absent = c.member(None).await.unwrap();
    let ten = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("mute-absent", absent.user_id.as_str(), "m.mute", None).await.unwrap();
    c.rule("mute-ten", ten.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&absent.user_id, Some(-1)).await;
    c.wait_level(&ten.user_id, Some(-1)).await;
    assert_eq!(
        absent.try_say(c.protected.room_id(), "hello").await,
        Err("M_FORBIDDEN".to_owned()),
        "a muted user cannot send"
    );

    c.remove_rule("mute-absent").await.unwrap();
    c.remove_rule("mute-ten").await.unwrap();
    c.wait_level(&absent.user_id, None).await;
    let pl = c.wait_level(&ten.user_id, Some(10)).await;
    assert!(pl["users"].get(absent.user_id.as_str()).is_none(), "an absent entry comes back absent: {pl}");
    assert_eq!(absent.try_say(c.protected.room_id(), "hello again").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_mute_ends_by_itself() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    let expiry = now_ms() + 6_000;
    c.rule("temp", user.user_id.as_str(), "m.mute", Some(expiry)).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    c.wait_level(&user.user_id, None).await;
    assert!(now_ms() >= expiry, "the mute is lifted at its expiry, not before");
    assert_eq!(user.try_say(c.protected.room_id(), "free").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_temporary_mute_and_expiry_while_down() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;

    let expiry = now_ms() + 8_000;
    c.rule("temp", user.user_id.as_str(), "m.mute", Some(expiry)).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    hush.kill9();

    // The expiry passes while hush is down.
    poll(DEADLINE, || async { (now_ms() > expiry + 500).then_some(()) }).await.unwrap();
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(-1), "nobody lifted the mute while hush was down");

    let _hush = c.start(&config, 2).await;
    c.wait_level(&user.user_id, Some(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_rule_mutes_a_later_joiner_at_once() {
    let c = Community::new().await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    let server = c.moderator.user_id.server_name().to_string();
    c.rule("glob", &format!("@member*:{server}"), "m.mute", None).await.unwrap();
    // Wait for hush to have the rule: a member present now is muted.
    let early = c.member(None).await.unwrap();
    c.wait_level(&early.user_id, Some(-1)).await;
    let later = c.member(None).await.unwrap();
    c.wait_level(&later.user_id, Some(-1)).await;
    // The moderator is not matched.
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert!(pl["users"].get(c.moderator.user_id.as_str()).is_none());
}

/// Issue 13: one rule changed twice in quick succession (the versions usually arrive in
/// one sync) ends with its newest version enforced and the older ones undone, whatever
/// order the sync response lists them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_changed_twice_quickly_ends_with_its_newest_version_enforced() {
    let c = Community::new().await.unwrap();
    let first = c.member(Some(10)).await.unwrap();
    let second = c.member(None).await.unwrap();
    let newest = c.member(Some(5)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("changing", first.user_id.as_str(), "m.mute", None).await.unwrap();
    c.rule("changing", second.user_id.as_str(), "m.mute", None).await.unwrap();
    c.rule("changing", newest.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&newest.user_id, Some(-1)).await;
    c.wait_level(&first.user_id, Some(10)).await;
    c.wait_level(&second.user_id, None).await;
    assert_eq!(newest.try_say(c.protected.room_id(), "hello").await, Err("M_FORBIDDEN".to_owned()));
    assert_eq!(first.try_say(c.protected.room_id(), "hello").await, Ok(()));
    assert_eq!(second.try_say(c.protected.room_id(), "hello").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_rule_is_a_removed_rule() {
    use matrix_sdk::ruma::api::client::redact::redact_event;
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    let content = serde_json::json!({"entity": user.user_id.as_str(), "recommendation": "m.mute", "reason": "test"});
    let rule = c.moderator.put_state(c.list.room_id(), "m.policy.rule.user", "redacted", content).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    let txn = matrix_sdk::ruma::TransactionId::new();
    c.moderator.client.send(redact_event::v3::Request::new(c.list.room_id().to_owned(), rule, txn)).await.unwrap();
    c.wait_level(&user.user_id, Some(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_rule_bans_and_its_removal_unbans() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    c.rule("ban", user.user_id.as_str(), "m.ban", None).await.unwrap();
    c.wait_membership(&user.user_id, "ban").await;
    c.remove_rule("ban").await.unwrap();
    c.wait_membership(&user.user_id, "leave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_changes_nothing() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("dry_run: true\n");
    let _hush = c.start(&config, 1).await;
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    let report = c
        .moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| m.body.contains("[dry run] would mute"))
        .await
        .unwrap();
    assert!(report.body.contains(user.user_id.as_str()));
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(10), "dry run changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lists_with_conflicting_rules_ban_beats_mute() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let second = c.moderator.create_room("second list", &[&c.bot.user_id], false).await.unwrap();
    let config = c.config("").to_string_lossy().to_string();
    // Follow both lists.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("policy_lists: [\"{}\"]", c.list.room_id()),
        &format!("policy_lists: [\"{}\", \"{}\"]", c.list.room_id(), second.room_id()),
    );
    std::fs::write(&config, text).unwrap();
    let _hush = c.start(std::path::Path::new(&config), 1).await;

    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    c.moderator
        .put_state(
            second.room_id(),
            "m.policy.rule.user",
            "ban",
            serde_json::json!({"entity": user.user_id, "recommendation": "m.ban", "reason": "worse"}),
        )
        .await
        .unwrap();
    c.wait_membership(&user.user_id, "ban").await;
    // The ban's removal unbans; the other list's mute still holds.
    c.moderator.put_state(second.room_id(), "m.policy.rule.user", "ban", serde_json::json!({})).await.unwrap();
    c.wait_membership(&user.user_id, "leave").await;
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(-1), "the mute from the first list stays");
    c.remove_rule("mute").await.unwrap();
    c.wait_level(&user.user_id, Some(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_cannot_be_joined_is_reported_and_the_rest_works() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    // A private room hush is not invited to.
    let closed = c.moderator.create_room("closed list", &[], false).await.unwrap();
    let config = c.config("");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("policy_lists: [\"{}\"]", c.list.room_id()),
        &format!("policy_lists: [\"{}\", \"{}\"]", closed.room_id(), c.list.room_id()),
    );
    std::fs::write(&config, text).unwrap();
    let _hush = c.start(&config, 1).await;
    let report = c
        .moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| m.body.contains("Cannot follow the policy list"))
        .await
        .unwrap();
    assert!(report.body.contains(closed.room_id().as_str()), "{}", report.body);
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_leaves_rooms_as_the_policy_says() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let mut starts = 1;
    let mut hush = c.start(&config, starts).await;

    // Killed right after a rule lands (before or while it is enforced).
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    hush.kill9();
    starts += 1;
    hush = c.start(&config, starts).await;
    c.wait_level(&user.user_id, Some(-1)).await;

    // Killed right after the rule is removed (before or while the mute is lifted).
    c.remove_rule("mute").await.unwrap();
    hush.kill9();
    starts += 1;
    hush = c.start(&config, starts).await;
    c.wait_level(&user.user_id, Some(10)).await;

    // Killed once the mute is in force; the rule goes while hush is down.
    c.rule("mute2", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    hush.kill9();
    c.remove_rule("mute2").await.unwrap();
    starts += 1;
    let _hush = c.start(&config, starts).await;
    let pl = c.wait_level(&user.user_id, Some(10)).await;
    assert_eq!(level_of(&pl, &user.user_id), Some(10), "the previous level is back exactly");
}

/// A moderator upgrades a protected room: hush follows the tombstone, keeps protecting the
/// replacement (also after a restart), and what it did before the upgrade (copied by the
/// homeserver) is still lifted exactly when the rule goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_protected_room_is_followed_and_hush_s_mutes_move_with_it() {
    let c = Community::new().await.unwrap();
    let early = c.member(Some(10)).await.unwrap();
    let later = c.member(None).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;
    c.rule("mute-early", early.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&early.user_id, Some(-1)).await;

    // The room is invite-only: the moderator invites hush and the members to the new room.
    let new = c.moderator.upgrade_room(c.protected.room_id(), "12").await.unwrap();
    for u in [&c.bot.user_id, &early.user_id, &later.user_id] {
        c.moderator.invite(&new, u).await.unwrap();
    }
    early.join(&new).await.unwrap();
    later.join(&new).await.unwrap();
    c.moderator.wait_for_join(&new, &c.bot.user_id).await.unwrap();
    let pl = c.moderator.power_levels(&new).await.unwrap();
    assert_eq!(level_of(&pl, &early.user_id), Some(-1), "the upgrade copied the mute: {pl}");

    // A new rule is enforced in the new room.
    c.rule("mute-later", later.user_id.as_str(), "m.mute", None).await.unwrap();
    let what = format!("{} muted in the new room", later.user_id);
    c.moderator.wait_for_power_levels(&new, &what, |pl| level_of(pl, &later.user_id) == Some(-1)).await.unwrap();

    // The mute from before the upgrade is still hush's: removing its rule restores 10.
    c.remove_rule("mute-early").await.unwrap();
    let what = format!("{} back at 10 in the new room", early.user_id);
    c.moderator.wait_for_power_levels(&new, &what, |pl| level_of(pl, &early.user_id) == Some(10)).await.unwrap();

    // After a restart hush protects the new room, not the old one.
    assert!(hush.terminate().await.unwrap().success());
    let _hush = c.start(&config, 2).await;
    c.remove_rule("mute-later").await.unwrap();
    let what = format!("{} unmuted in the new room after a restart", later.user_id);
    c.moderator.wait_for_power_levels(&new, &what, |pl| level_of(pl, &later.user_id).is_none()).await.unwrap();
}

/// A moderator upgrades a policy list: hush follows the new list, and the rules left in the
/// old one still hold (an upgrade does not move them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_policy_list_is_followed_and_its_old_rules_still_hold() {
    let c = Community::new().await.unwrap();
    let old_target = c.member(None).await.unwrap();
    let new_target = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;
    c.rule("old", old_target.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&old_target.user_id, Some(-1)).await;

    let new_list = c.moderator.upgrade_room(c.list.room_id(), "12").await.unwrap();
    c.moderator.invite(&new_list, &c.bot.user_id).await.unwrap();
    c.moderator.wait_for_join(&new_list, &c.bot.user_id).await.unwrap();
    let rule =
        serde_json::json!({"entity": new_target.user_id.as_str(), "recommendation": "m.mute", "reason": "new list"});
    c.moderator.put_state(&new_list, "m.policy.rule.user", "new", rule).await.unwrap();
    c.wait_level(&new_target.user_id, Some(-1)).await;
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &old_target.user_id), Some(-1), "the old list's rule still holds: {pl}");

    // Both lists stay live: removing the old list's rule lifts its mute.
    c.remove_rule("old").await.unwrap();
    c.wait_level(&old_target.user_id, None).await;
}

/// The upgrade happens while hush is down: at start it finds the tombstone in the old
/// room's state, follows the replacement and still lifts its mute there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_upgraded_while_hush_was_down_is_followed_at_start() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    assert!(hush.terminate().await.unwrap().success());

    let new = c.moderator.upgrade_room(c.protected.room_id(), "12").await.unwrap();
    c.moderator.invite(&new, &c.bot.user_id).await.unwrap();
    let _hush = c.start(&config, 2).await;
    c.moderator.wait_for_join(&new, &c.bot.user_id).await.unwrap();
    c.remove_rule("mute").await.unwrap();
    let what = format!("{} unmuted in the new room", user.user_id);
    c.moderator.wait_for_power_levels(&new, &what, |pl| level_of(pl, &user.user_id).is_none()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_in_the_community_list_keeps_a_user_muted_by_another_list_unmuted() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let witness = c.member(Some(10)).await.unwrap();
    let other = c.moderator.create_room("other community's list", &[&c.bot.user_id], false).await.unwrap();
    let config = c.config("").to_string_lossy().to_string();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("policy_lists: [\"{}\"]", c.list.room_id()),
        &format!("policy_lists: [\"{}\", \"{}\"]", c.list.room_id(), other.room_id()),
    );
    std::fs::write(&config, text).unwrap();
    let _hush = c.start(std::path::Path::new(&config), 1).await;
    let mute = |entity: &str, reason: &str| serde_json::json!({"entity": entity, "recommendation": "m.mute", "reason": reason});

    // Another list, which the community does not control, mutes the user.
    c.moderator
        .put_state(other.room_id(), "m.policy.rule.user", "u", mute(user.user_id.as_str(), "noise"))
        .await
        .unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;

    // The community allows them: the mute is lifted, back to exactly their level.
    let key = format!("m.allow:{}", user.user_id);
    let reply = c.command(&format!("!hush allow {} we know them", user.user_id), "written to").await;
    assert!(reply.body.contains(&key), "{}", reply.body);
    let rule = c.rule_content(&key).await.expect("the allow rule is in the community's list");
    assert_eq!(rule["recommendation"], "m.allow");
    assert_eq!(rule["entity"], user.user_id.as_str());
    c.wait_level(&user.user_id, Some(10)).await;

    // The other list says it again (a new reason), then mutes someone else: once that
    // second mute is seen, the first change has been handled too, and the allow held.
    c.moderator
        .put_state(other.room_id(), "m.policy.rule.user", "u", mute(user.user_id.as_str(), "still noise"))
        .await
        .unwrap();
    c.moderator
        .put_state(other.room_id(), "m.policy.rule.user", "w", mute(witness.user_id.as_str(), "noise"))
        .await
        .unwrap();
    c.wait_level(&witness.user_id, Some(-1)).await;
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), Some(10), "the allow keeps the user unmuted");

    // The exception is withdrawn: the other list's mute applies again.
    c.command(&format!("!hush unallow {}", user.user_id), "removed 1 rule").await;
    c.wait_level(&user.user_id, Some(-1)).await;
}

/// Found by the 200-room benchmark: a start replayed the list's history (the timeline of
/// the sync that brought the room) over the state it had read, so a ban rule sent and
/// removed before hush came banned and unbanned the member: a kick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_does_not_replay_a_ban_removed_before_it_from_the_list_s_history() {
    let c = Community::new().await.unwrap();
    let member = c.member(None).await.unwrap();
    let marker = c.member(None).await.unwrap();
    c.rule("old-ban", member.user_id.as_str(), "m.ban", None).await.unwrap();
    c.remove_rule("old-ban").await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;

    // A rule after the start is enforced: hush has taken in the list, its history included.
    c.rule("marker", marker.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&marker.user_id, Some(-1)).await;
    assert_eq!(
        c.membership(&member.user_id).await.as_deref(),
        Some("join"),
        "a rule removed before the start touches no one; log:\n{}",
        hush.log_text()
    );
}
