//! The bot in its management room, against a real Synapse: joining, help, status, authorisation, encryption, restarts.
#![recursion_limit = "256"]

mod common;

use common::*;
use matrix_sdk::ruma::UserId;

/// A moderator's room with the bot invited and running.
struct Setup {
    hs: Homeserver,
    moderator: TestUser,
    bot: BotSetup,
    room: matrix_sdk::Room,
    config: std::path::PathBuf,
}

impl Setup {
    /// Waits until the bot has announced its `n`-th start (restarts included); panics with
    /// its log if it does not.
    async fn wait_starts(&self, n: usize, hush: &BotProcess) {
        let rid = self.room.room_id();
        poll(DEADLINE, || async {
            (self.moderator.messages_from(rid, &self.bot.user_id).iter().filter(|m| m.body.contains("started")).count()
                == n)
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("hush did not announce start {n}; log:\n{}", hush.log_text()));
    }

    /// Waits for the bot's start-up notice in the management room: from then on it takes commands.
    async fn wait_started(&self) {
        self.moderator
            .wait_for_message(self.room.room_id(), &self.bot.user_id, |m| m.body.contains("started"))
            .await
            .unwrap();
    }
}

async fn setup(encrypted: bool) -> Setup {
    let hs = homeserver();
    let moderator = register_user(&hs, "mod").await.unwrap();
    let bot = BotSetup::new(&hs).await.unwrap();
    let room = moderator.create_room("management", &[&bot.user_id], encrypted).await.unwrap();
    let config = bot.write_config(&hs, room.room_id(), "");
    Setup { hs, moderator, bot, room, config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_invite_and_answers_help_and_status() {
    let s = setup(false).await;
    let hush = s.bot.start(&s.config);
    s.wait_started().await;

    let help = s.moderator.say(&s.room, "!hush help").await.unwrap();
    let reply =
        s.moderator.wait_for_message(s.room.room_id(), &s.bot.user_id, |m| m.body.contains("mute")).await.unwrap();
    assert!(reply.body.contains("!hush mute"), "help lists commands: {}", reply.body);
    assert!(reply.html.is_some(), "replies carry an HTML body");
    assert_eq!(s.moderator.wait_for_reaction(&s.bot.user_id, &help).await.unwrap(), "✅");

    s.moderator.say(&s.room, "!hush status").await.unwrap();
    let status =
        s.moderator.wait_for_message(s.room.room_id(), &s.bot.user_id, |m| m.body.contains("uptime")).await.unwrap();
    assert!(status.body.contains(env!("CARGO_PKG_VERSION")), "{}", status.body);
    assert!(status.body.contains(&s.hs.url), "{}", status.body);
    assert!(status.body.contains(s.room.room_id().as_str()), "status lists the rooms: {}", status.body);

    let exit = hush.terminate().await.unwrap();
    assert!(exit.success(), "SIGTERM ends hush with exit 0, got {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_gets_usage_and_non_moderators_are_ignored() {
    let s = setup(false).await;
    let member = register_user(&s.hs, "member").await.unwrap();
    s.room.invite_user_by_id(&member.user_id).await.unwrap();
    let member_room = member.join(s.room.room_id()).await.unwrap();
    let _hush = s.bot.start(&s.config);
    s.wait_started().await;

    // A member without power: ignored entirely, whatever they type.
    member.say(&member_room, "!hush help").await.unwrap();
    member.say(&member_room, "!hush frobnicate").await.unwrap();

    s.moderator.say(&s.room, "!hush frobnicate now").await.unwrap();
    let reply = s
        .moderator
        .wait_for_message(s.room.room_id(), &s.bot.user_id, |m| m.body.contains("frobnicate"))
        .await
        .unwrap();
    assert!(reply.body.contains("help"), "an unknown command gets the list of commands: {}", reply.body);
    assert!(reply.body.contains("mute"), "{}", reply.body);

    s.moderator.say(&s.room, "!hush mute").await.unwrap();
    let usage = s
        .moderator
        .wait_for_message(s.room.room_id(), &s.bot.user_id, |m| {
            m.body.starts_with("Usage") || (m.body.contains("Usage:") && !m.body.contains("frobnicate"))
        })
        .await
        .unwrap();
    assert!(usage.body.contains("!hush mute <user"), "a bad command gets its usage: {}", usage.body);

    // The member's commands came first; had they been answered, the replies would be here by now.
    let bot_messages = s.moderator.messages_from(s.room.room_id(), &s.bot.user_id);
    assert_eq!(
        bot_messages.len(),
        3,
        "the start-up notice and only the moderator's two commands are answered: {bot_messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_in_an_encrypted_room_and_restarts_without_a_new_device() {
    let s = setup(true).await;
    let hush = s.bot.start(&s.config);
    s.wait_started().await;
    s.moderator.say(&s.room, "!hush status").await.unwrap();
    let first =
        s.moderator.wait_for_message(s.room.room_id(), &s.bot.user_id, |m| m.body.contains("uptime")).await.unwrap();
    assert!(first.body.contains("hush"));
    assert!(hush.terminate().await.unwrap().success());

    let hush = s.bot.start(&s.config);
    let rid = s.room.room_id();
    s.wait_starts(2, &hush).await;
    s.moderator.say(&s.room, "!hush help status").await.unwrap();
    let usage = s
        .moderator
        .wait_for_message(rid, &s.bot.user_id, |m| {
            m.body.contains("status") && !m.body.contains("uptime") && !m.body.contains("started")
        })
        .await
        .unwrap();
    assert!(usage.body.contains("status"), "the restarted bot answers in the encrypted room");
    let devices = s
        .moderator
        .client
        .encryption()
        .get_user_devices(UserId::parse(s.bot.user_id.as_str()).unwrap().as_ref())
        .await
        .unwrap();
    assert_eq!(devices.devices().count(), 1, "a restart reuses the device");
    assert!(hush.terminate().await.unwrap().success());
}

/// Someone logs hush's device out (an admin cleaning up sessions, or "sign out all other
/// devices" in another client): the next start logs in again with the password instead of
/// failing, and hush keeps working in the encrypted management room with its new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_session_logs_in_again_at_the_next_start() {
    let s = setup(true).await;
    let hush = s.bot.start(&s.config);
    s.wait_started().await;
    assert!(hush.terminate().await.unwrap().success());

    let data = s.bot.dir.path().join("data");
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("session.json")).unwrap()).unwrap();
    let token = session["session"]["access_token"].as_str().expect("a saved access token").to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/logout", s.hs.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "logout: {}", resp.status());

    let hush = s.bot.start(&s.config);
    let rid = s.room.room_id();
    s.wait_starts(2, &hush).await;
    s.moderator.say(&s.room, "!hush status").await.unwrap();
    s.moderator.wait_for_message(rid, &s.bot.user_id, |m| m.body.contains("uptime")).await.unwrap();
    assert!(hush.log_text().contains("logging in again"), "{}", hush.log_text());
    let kept = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("store.refused-"));
    assert!(kept, "the old device's store is kept aside");
    assert!(hush.terminate().await.unwrap().success());
}

/// Two hush on one data_dir would share its ledger and crypto store: the second exits at
/// once, non-zero, naming the data_dir. The lock goes with the first process, even on
/// kill -9, so the next start works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hush_on_the_same_data_dir_exits_at_once() {
    let s = setup(false).await;
    let first = s.bot.start(&s.config);
    s.wait_started().await;

    let mut second = s.bot.start(&s.config);
    let exit = second.wait_exit().await.unwrap();
    assert!(!exit.success(), "the second hush exits non-zero, got {exit:?}");
    let log = second.log_text();
    let data = s.bot.dir.path().join("data");
    assert!(log.contains("another hush (pid "), "{log}");
    assert!(log.contains(&format!("is running on data_dir {}", data.display())), "{log}");

    first.kill9();
    let third = s.bot.start(&s.config);
    s.wait_starts(2, &third).await;
    assert!(third.terminate().await.unwrap().success());
}
