//! History and undo against a real Synapse: `history` names the moderator and command behind a mute, `undo` lifts it (removing the rule hush wrote, or with a local exception for another list's rule), and history shows both.
#![recursion_limit = "256"]

mod common;

use common::*;

/// The id (`#42` -> 42) of the first line of `history` that contains all of `parts`.
fn id_of(history: &str, parts: &[&str]) -> u64 {
    let line = history
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{history}"));
    line.trim_start().trim_start_matches('#').split(' ').next().and_then(|n| n.parse().ok()).expect(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_names_the_moderator_and_undo_removes_the_rule_hush_wrote() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.command(&format!("!hush mute {} 1h spam", user.user_id), "rule").await;
    c.wait_level(&user.user_id, Some(-1)).await;

    // Who made hush do it, and why: the moderator and their command, in one quiet notice.
    let history = c.command(&format!("!hush history {}", user.user_id), "newest first").await;
    let mute = format!("mute (power level) {}", user.user_id);
    let id = id_of(&history.body, &[&mute, &format!("written by {} with !hush mute", c.moderator.user_id)]);
    assert!(history.mentions.as_ref().is_some_and(|m| m.user_ids.is_empty() && !m.room), "the notice pings no one");

    let reply = c.command(&format!("!hush undo {id}"), &format!("undo #{id}")).await;
    assert!(reply.body.contains("removed the rule") && reply.body.contains("m.mute:"), "{}", reply.body);
    c.wait_level(&user.user_id, Some(10)).await;
    let rule = c.rule_content(&format!("m.mute:{}", user.user_id)).await.unwrap();
    assert_eq!(rule, serde_json::json!({}), "the rule is removed from the default list");

    // The undo and the lift it caused are in the history, with the moderator.
    let after = c.command(&format!("!hush history {}", user.user_id), "newest first").await;
    assert!(after.body.contains(&format!("!hush undo {id}")), "{}", after.body);
    id_of(&after.body, &[&format!("lift mute (power level) {}", user.user_id), "undo"]);
    // Nothing left to undo.
    c.command(&format!("!hush undo {id}"), "no longer in force").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_of_another_lists_mute_is_a_local_exception_and_the_lists_rule_stays() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let other = c.moderator.create_room("a list hush only reads", &[&c.bot.user_id], false).await.unwrap();
    let config = c.config("").to_string_lossy().to_string();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("policy_lists: [\"{}\"]", c.list.room_id()),
        &format!("policy_lists: [\"{}\", \"{}\"]", c.list.room_id(), other.room_id()),
    );
    std::fs::write(&config, text).unwrap();
    let _hush = c.start(std::path::Path::new(&config), 1).await;
    let mute = serde_json::json!({"entity": user.user_id, "recommendation": "m.mute", "reason": "noise"});
    c.moderator.put_state(other.room_id(), "m.policy.rule.user", "u", mute.clone()).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;

    let history = c.command(&format!("!hush history {}", user.user_id), "newest first").await;
    let id = id_of(&history.body, &[&format!("mute (power level) {}", user.user_id), "rule `u` in"]);
    let reply = c.command(&format!("!hush undo {id}"), &format!("undo #{id}")).await;
    assert!(reply.body.contains(&format!("local exception `hush.undo:{}`", user.user_id)), "{}", reply.body);
    c.wait_level(&user.user_id, Some(10)).await;

    // The other list's rule stays as it was; only the community's rooms make an exception.
    use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
    let req = get_state_event_for_key::v3::Request::new(
        other.room_id().to_owned(),
        "m.policy.rule.user".into(),
        "u".to_owned(),
    );
    let resp = c.moderator.client.send(req).await.unwrap();
    let content: serde_json::Value = serde_json::from_str(resp.event_or_content.get()).unwrap();
    assert_eq!(content, mute);

    // History shows both: the mute, and the undo with the lift it caused.
    let after = c.command(&format!("!hush history {}", user.user_id), "newest first").await;
    assert!(after.body.contains(&format!("#{id} ")), "{}", after.body);
    id_of(&after.body, &[&format!("lift mute (power level) {}", user.user_id), &format!("!hush undo {id}")]);

    // `unallow` takes the exception out again: the list's mute applies.
    let reply = c.command(&format!("!hush unallow {}", user.user_id), "local exception").await;
    assert!(reply.body.contains("removed"), "{}", reply.body);
    c.wait_level(&user.user_id, Some(-1)).await;
}
