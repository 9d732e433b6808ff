//! Account suspension (MSC3823) against a real Synapse: exact mute rules on local users suspend their accounts, removal and expiry lift it, the safeguards refuse, and hush survives its own suspension.
#![recursion_limit = "256"]

mod common;

use std::path::PathBuf;

use common::*;
use matrix_sdk::ruma::UserId;

/// Suspends or unsuspends an account with Synapse's admin API, as a server admin would.
async fn set_suspended(hs: &Homeserver, token: &str, user: &UserId, on: bool) {
    let mut url = reqwest::Url::parse(&hs.url).unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().extend(["_synapse", "admin", "v1", "suspend", user.as_str()]);
    let resp = reqwest::Client::new()
        .put(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "suspend": on }).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "suspend {user} {on}: {}", resp.status());
}

/// The config lines that enable suspension with this admin token (in a file, as operators do).
fn suspension_config(c: &Community, token: &str) -> String {
    let path: PathBuf = c.bot.dir.path().join("admin_token");
    std::fs::write(&path, token).unwrap();
    format!("suspension:\n  enabled: true\n  admin_access_token_file: \"{}\"\n", path.display())
}

/// Polls until the user's message gets `want` (Ok or an errcode).
async fn wait_say(user: &TestUser, c: &Community, want: Result<(), &str>) {
    let want = want.map_err(str::to_owned);
    let rid = c.protected.room_id().to_owned();
    let got = poll(DEADLINE, || async {
        let r = user.try_say(&rid, "hello?").await;
        (r == want).then_some(())
    })
    .await;
    let last = user.try_say(&rid, "last try").await;
    assert!(got.is_some(), "{} never got {want:?} when sending; last: {last:?}", user.user_id);
}

/// Waits for a notice from hush in the management room containing `text`.
async fn wait_notice(c: &Community, text: &str) -> String {
    let rid = c.management.room_id().to_owned();
    let found = poll(DEADLINE, || async {
        c.moderator.messages_from(&rid, &c.bot.user_id).into_iter().find(|m| m.body.contains(text)).map(|m| m.body)
    })
    .await;
    found.unwrap_or_else(|| {
        panic!("no notice containing `{text}`; got: {:#?}", c.moderator.messages_from(&rid, &c.bot.user_id))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_mute_suspends_a_local_account_and_removal_lifts_it() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let user = c.member(None).await.unwrap();
    let config = c.config(&suspension_config(&c, &token));
    let hush = c.start(&config, 1).await;

    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    wait_say(&user, &c, Err("M_USER_SUSPENDED")).await;
    c.command("!hush status", "account suspensions by hush: 1").await;
    // Synapse 1.163 has no MSC4323 endpoint: hush fell back to its admin API.
    let log = hush.log_text();
    assert!(
        log.lines().any(|l| l.contains("using this admin endpoint") && l.contains("Synapse")),
        "no fallback to Synapse's admin API in the log:\n{log}"
    );

    c.remove_rule("mute").await.unwrap();
    wait_say(&user, &c, Ok(())).await;
    c.command("!hush status", "account suspensions by hush: 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_suspension_ends_on_time() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let user = c.member(None).await.unwrap();
    let config = c.config(&suspension_config(&c, &token));
    let _hush = c.start(&config, 1).await;

    let expiry = now_ms() + 8_000;
    c.rule("temp", user.user_id.as_str(), "m.mute", Some(expiry)).await.unwrap();
    wait_say(&user, &c, Err("M_USER_SUSPENDED")).await;
    wait_say(&user, &c, Ok(())).await;
    assert!(now_ms() >= expiry, "the suspension is lifted at its expiry, not before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safeguards_refuse_globs_hush_itself_and_remote_users() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let user = c.member(None).await.unwrap();
    let config = c.config(&suspension_config(&c, &token));
    let _hush = c.start(&config, 1).await;
    let server = c.moderator.user_id.server_name().to_string();

    // A glob matching the member: muted in the room (M_FORBIDDEN), never suspended.
    let local = user.user_id.localpart();
    let glob = format!("@{}*:{server}", &local[..local.len() - 1]);
    c.rule("glob", &glob, "m.mute", None).await.unwrap();
    wait_notice(&c, &format!("Not suspending {}: the rule's entity `{glob}` is not exactly the user id", user.user_id))
        .await;
    wait_say(&user, &c, Err("M_FORBIDDEN")).await;

    c.rule("self", c.bot.user_id.as_str(), "m.mute", None).await.unwrap();
    wait_notice(&c, &format!("Not suspending {}: hush never restricts itself", c.bot.user_id)).await;

    c.rule("remote", "@someone:elsewhere.example", "m.mute", None).await.unwrap();
    let status = c.command("!hush status", "account suspensions by hush: 0").await;
    assert!(status.body.contains("own account: can write"), "{}", status.body);
    let notices = c.moderator.messages_from(c.management.room_id(), &c.bot.user_id);
    assert!(
        !notices.iter().any(|m| m.body.contains("elsewhere.example") && m.body.contains("suspend")),
        "a remote user is silently not considered: {notices:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_survives_its_own_suspension_and_catches_up() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;

    set_suspended(&c.hs, &token, &c.bot.user_id, true).await;
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    let logged = poll(DEADLINE, || async {
        hush.log_text().contains("hush's own account is suspended by its homeserver's admin").then_some(())
    })
    .await;
    assert!(logged.is_some(), "no clear error in the log:\n{}", hush.log_text());
    let pl = c.moderator.power_levels(c.protected.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), None, "nothing could be written while suspended");

    set_suspended(&c.hs, &token, &c.bot.user_id, false).await;
    c.wait_level(&user.user_id, Some(-1)).await;
    wait_notice(&c, "It can again").await;
    let status = c.command("!hush status", "own account: can write").await;
    assert!(status.body.contains("restrictions in force: 1 mute(s)"), "{}", status.body);
    let log = hush.log_text();
    assert_eq!(log.matches("hush's own account is suspended by").count(), 1, "one error, not a loop:\n{log}");
}

/// A local spammer who is in none of the protected rooms is suspended all the same (a
/// server-level mute follows the user, not the rooms), and the removal lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_in_no_protected_room_is_suspended_too() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let lurker = register_user(&c.hs, "lurker").await.unwrap();
    let own_room = lurker.create_room("elsewhere", &[], false).await.unwrap();
    let rid = own_room.room_id().to_owned();
    let config = c.config(&suspension_config(&c, &token));
    let _hush = c.start(&config, 1).await;

    c.rule("lurker", lurker.user_id.as_str(), "m.mute", None).await.unwrap();
    let suspended = poll(DEADLINE, || async {
        (lurker.try_say(&rid, "hi").await == Err("M_USER_SUSPENDED".to_owned())).then_some(())
    })
    .await;
    assert!(suspended.is_some(), "the lurker was never suspended");
    c.remove_rule("lurker").await.unwrap();
    let lifted = poll(DEADLINE, || async { lurker.try_say(&rid, "back").await.ok() }).await;
    assert!(lifted.is_some(), "the suspension was never lifted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_may_not_suspend_mutes_but_only_the_default_list_suspends() {
    let c = Community::new().await.unwrap();
    let token = admin_token(&c.hs).await;
    let user = c.member(None).await.unwrap();
    let own = user.create_room("own", &[], false).await.unwrap();
    let other = c.moderator.create_room("other-policies", &[&c.bot.user_id], false).await.unwrap();
    let content = serde_json::json!({"entity": user.user_id, "recommendation": "m.mute", "reason": "theirs"});
    c.moderator.put_state(other.room_id(), "m.policy.rule.user", "theirs", content).await.unwrap();
    let lines = format!(
        "policy_lists: [\"{list}\", \"{other}\"]\ndefault_policy_list: \"{list}\"\nprotected_rooms: [\"{p}\"]\nmute:\n  batch_window_ms: 50\n{s}",
        list = c.list.room_id(),
        other = other.room_id(),
        p = c.protected.room_id(),
        s = suspension_config(&c, &token),
    );
    let config = c.bot.write_config(&c.hs, c.management.room_id(), &lines);
    let _hush = c.start(&config, 1).await;

    c.wait_level(&user.user_id, Some(-1)).await;
    let notice = wait_notice(&c, &format!("Not suspending {}", user.user_id)).await;
    assert!(notice.contains(&format!("the list {} may not suspend", other.room_id())), "{notice}");
    assert_eq!(user.try_say(own.room_id(), "not suspended").await, Ok(()), "muted in rooms only");

    // The community's own list may suspend.
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    wait_say(&user, &c, Err("M_USER_SUSPENDED")).await;
}
