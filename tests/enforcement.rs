//! Enforcement against a real Synapse: moderators' changes respected, batching, refusals reported, and the 429 path under real rate limits.
#![recursion_limit = "256"]

mod common;

use anyhow::{bail, Context, Result};
use common::*;
use matrix_sdk::ruma::{RoomId, UserId};
use matrix_sdk::Client;

/// `m.room.power_levels` events in the room's timeline sent by `sender`.
async fn power_level_events_by(client: &Client, room_id: &RoomId, sender: &UserId) -> Result<usize> {
    use matrix_sdk::ruma::api::client::message::get_message_events;
    let mut from: Option<String> = None;
    let mut count = 0;
    loop {
        let mut req = get_message_events::v3::Request::backward(room_id.to_owned());
        req.from = from.clone();
        req.limit = 100u32.into();
        req.filter.types = Some(vec!["m.room.power_levels".to_owned()]);
        let resp = client.send(req).await?;
        for ev in &resp.chunk {
            let ty = ev.get_field::<String>("type")?;
            let s = ev.get_field::<String>("sender")?;
            if ty.as_deref() == Some("m.room.power_levels") && s.as_deref() == Some(sender.as_str()) {
                count += 1;
            }
        }
        match resp.end {
            Some(end) if !resp.chunk.is_empty() => from = Some(end),
            _ => return Ok(count),
        }
    }
}

async fn make_public(c: &Community, room_id: &RoomId) -> Result<()> {
    c.moderator.put_state(room_id, "m.room.join_rules", "", serde_json::json!({"join_rule": "public"})).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_change_during_the_mute_is_respected_and_reported() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let other = c.member(None).await.unwrap();
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("mute-user", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.rule("mute-other", other.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    c.wait_level(&other.user_id, Some(-1)).await;

    // A moderator gives the muted user level 25 while the mute is on.
    let rid = c.protected.room_id();
    let mut pl = c.moderator.power_levels(rid).await.unwrap();
    pl["users"][user.user_id.as_str()] = 25.into();
    c.moderator.put_state(rid, "m.room.power_levels", "", pl).await.unwrap();
    let report = c
        .moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| {
            m.body.contains(user.user_id.as_str()) && m.body.contains("changed to 25")
        })
        .await
        .unwrap();
    assert!(report.body.contains("hush leaves it so"), "{}", report.body);

    // Both rules go; once the other user's mute is lifted, hush has handled both removals.
    c.remove_rule("mute-user").await.unwrap();
    c.remove_rule("mute-other").await.unwrap();
    let pl = c.wait_level(&other.user_id, None).await;
    assert_eq!(level_of(&pl, &user.user_id), Some(25), "the moderator's level is not overwritten: {pl}");
    assert_eq!(user.try_say(rid, "I can talk").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mutes_in_one_room_are_at_most_two_power_level_events() {
    let c = Community::new().await.unwrap();
    let rid = c.protected.room_id().to_owned();
    make_public(&c, &rid).await.unwrap();
    let prefix = unique("fifty");
    let users = joined_accounts(&c.hs, &prefix, 50, std::slice::from_ref(&rid)).await.unwrap();
    assert_eq!(users.len(), 50);
    // The guard would hold a rule over 50 members; this test is about batching.
    let config = c.config("safety:\n  max_new_restrictions: 1000\n  max_room_share: 1.0\n");
    let _hush = c.start(&config, 1).await;
    let before = power_level_events_by(&c.moderator.client, &rid, &c.bot.user_id).await.unwrap();
    assert_eq!(before, 0);

    c.rule("fifty", &format!("@{prefix}*:localhost"), "m.mute", None).await.unwrap();
    c.moderator
        .wait_for_power_levels(&rid, "all 50 muted", |pl| users.iter().all(|u| level_of(pl, u) == Some(-1)))
        .await
        .unwrap();
    let muting = power_level_events_by(&c.moderator.client, &rid, &c.bot.user_id).await.unwrap();
    assert!((1..=2).contains(&muting), "{muting} power-level events for 50 mutes");

    c.remove_rule("fifty").await.unwrap();
    let pl = c
        .moderator
        .wait_for_power_levels(&rid, "all 50 lifted", |pl| users.iter().all(|u| level_of(pl, u).is_none()))
        .await
        .unwrap();
    assert_eq!(level_of(&pl, &c.bot.user_id), Some(100));
    let total = power_level_events_by(&c.moderator.client, &rid, &c.bot.user_id).await.unwrap();
    assert!(total - muting <= 2, "{} power-level events to lift 50 mutes", total - muting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_in_the_management_room() {
    let c = Community::new().await.unwrap();
    let high = c.member(Some(100)).await.unwrap();
    let vip = c.member(None).await.unwrap();
    let plain = c.member(None).await.unwrap();
    // A second protected room where hush has level 20: enough to be above members, not
    // enough to change power levels (100 in room version 12's defaults).
    let weak = c.moderator.create_room("weak", &[&c.bot.user_id, &plain.user_id], false).await.unwrap();
    let mut pl = c.moderator.power_levels(weak.room_id()).await.unwrap();
    pl["users"][c.bot.user_id.as_str()] = 20.into();
    c.moderator.put_state(weak.room_id(), "m.room.power_levels", "", pl).await.unwrap();
    plain.join(weak.room_id()).await.unwrap();

    let lines = format!(
        "policy_lists: [\"{list}\"]\nprotected_rooms: [\"{p}\", \"{w}\"]\nprotected_users: [\"{vip}\"]\nmute:\n  batch_window_ms: 50\n",
        list = c.list.room_id(),
        p = c.protected.room_id(),
        w = weak.room_id(),
        vip = vip.user_id,
    );
    let config = c.bot.write_config(&c.hs, c.management.room_id(), &lines);
    let _hush = c.start(&config, 1).await;

    let targets = [&c.bot.user_id, &c.moderator.user_id, &high.user_id, &vip.user_id, &plain.user_id];
    for (i, u) in targets.iter().enumerate() {
        c.rule(&format!("r{i}"), u.as_str(), "m.mute", None).await.unwrap();
    }
    let p = c.protected.room_id();
    let w = weak.room_id();
    // One line per user and reason, naming every room it applies to.
    let both = if p < w { format!("2 rooms ({p}, {w})") } else { format!("2 rooms ({w}, {p})") };
    let l = c.list.room_id();
    let expected = [
        format!("Not going to mute {} in {both}: hush never restricts itself (rule `r0` in {l}).", c.bot.user_id),
        format!("Not going to mute {} in {both}: room creators cannot be restricted (rule `r1` in {l}).", c.moderator.user_id),
        format!(
            "Not going to mute {} in {p}: the user is a moderator of the room (power level 100, at or above 50, the lowest of kick, ban and redact) (rule `r2` in {l}).",
            high.user_id
        ),
        format!("Not going to mute {} in {p}: the user is in protected_users (rule `r3` in {l}).", vip.user_id),
        format!(
            "Not going to mute {} in {w}: hush needs power level 100 to change power levels and has 20 (rule `r4` in {l}).",
            plain.user_id
        ),
    ];
    for want in &expected {
        c.moderator.wait_for_message(c.management.room_id(), &c.bot.user_id, |m| &m.body == want).await.unwrap();
    }
    // The one user hush may mute in the protected room is muted; nobody else was touched.
    let pl = c.wait_level(&plain.user_id, Some(-1)).await;
    assert_eq!(level_of(&pl, &high.user_id), Some(100));
    assert_eq!(level_of(&pl, &vip.user_id), None);
    assert_eq!(level_of(&pl, &c.bot.user_id), Some(100));
    let weak_pl = c.moderator.power_levels(weak.room_id()).await.unwrap();
    assert_eq!(level_of(&weak_pl, &plain.user_id), None);
}

/// An admin account of the test homeserver and its access token.
async fn admin_token(hs: &Homeserver) -> Result<String> {
    let name = unique("admin");
    let password = format!("pw-{name}");
    let status = std::process::Command::new(repo_root().join("scripts/synapse"))
        .arg("register")
        .arg(&hs.dir)
        .args([name.as_str(), password.as_str(), "--admin"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("scripts/synapse register failed");
    }
    let client = Client::builder().homeserver_url(&hs.url).build().await?;
    client.matrix_auth().login_username(&name, &password).send().await?;
    client.access_token().context("no access token")
}

/// Applies a per-user rate limit through Synapse's admin API (the bot then meets 429s).
/// Synapse takes whole numbers only (0 = unlimited).
async fn override_ratelimit(hs: &Homeserver, token: &str, user: &UserId, per_second: u32, burst: u32) -> Result<()> {
    let url = format!(
        "{}/_synapse/admin/v1/users/{}/override_ratelimit",
        hs.url.trim_end_matches('/'),
        user.as_str().replace('@', "%40").replace(':', "%3A")
    );
    let body = serde_json::json!({"messages_per_second": per_second, "burst_count": burst}).to_string();
    let out = std::process::Command::new("curl")
        .args(["-fsS", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(&body)
        .arg(&url)
        .output()?;
    if !out.status.success() {
        bail!("override_ratelimit failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// With a real `rc_message` limit on hush's account, writes meet 429 and wait; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_writes_are_retried_and_nothing_is_lost() {
    let c = Community::new().await.unwrap();
    let user = c.member(Some(10)).await.unwrap();
    let mut rooms = vec![c.protected.room_id().to_owned()];
    for i in 0..7 {
        let r = c.moderator.create_room(&format!("extra{i}"), &[&c.bot.user_id, &user.user_id], false).await.unwrap();
        let mut pl = c.moderator.power_levels(r.room_id()).await.unwrap();
        pl["users"][c.bot.user_id.as_str()] = 100.into();
        pl["users"][user.user_id.as_str()] = 10.into();
        c.moderator.put_state(r.room_id(), "m.room.power_levels", "", pl).await.unwrap();
        user.join(r.room_id()).await.unwrap();
        rooms.push(r.room_id().to_owned());
    }
    let list: Vec<String> = rooms.iter().map(|r| format!("\"{r}\"")).collect();
    let lines = format!(
        "policy_lists: [\"{}\"]\nprotected_rooms: [{}]\nmute:\n  batch_window_ms: 50\n",
        c.list.room_id(),
        list.join(", ")
    );
    let config = c.bot.write_config(&c.hs, c.management.room_id(), &lines);
    // Synapse's default rc_message is 0.2/s with a burst of 10. The admin API takes whole
    // numbers only, so: 1/s with a burst of 1. Eight writes at once then meet 429 more
    // often than the SDK's own three attempts absorb, and hush's retry loop takes over.
    // The limit also throttles joins, so it is applied once hush is in every room.
    let token = admin_token(&c.hs).await.unwrap();
    let hush = c.start(&config, 1).await;
    for r in &rooms {
        c.moderator.wait_for_join(r, &c.bot.user_id).await.unwrap();
    }
    override_ratelimit(&c.hs, &token, &c.bot.user_id, 1, 1).await.unwrap();

    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    for r in &rooms {
        c.moderator.wait_for_power_levels(r, "muted", |pl| level_of(pl, &user.user_id) == Some(-1)).await.unwrap();
    }
    c.remove_rule("mute").await.unwrap();
    for r in &rooms {
        c.moderator.wait_for_power_levels(r, "restored", |pl| level_of(pl, &user.user_id) == Some(10)).await.unwrap();
    }
    let log = hush.log_text();
    assert!(log.contains("rate limited"), "the 429 path was not exercised; log:\n{log}");
    assert!(!log.contains("cannot change power levels"), "a write was given up; log:\n{log}");
    let bot = c.bot.user_id.clone();
    for r in &rooms {
        let n = power_level_events_by(&c.moderator.client, r, &bot).await.unwrap();
        assert_eq!(n, 2, "one mute and one lift in {r}");
    }
}
