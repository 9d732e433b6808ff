//! Flood protection against a real Synapse: a member who floods a protected room is muted for the configured time, the mute ends on time, also across a kill -9, and moderators are never hit.
#![recursion_limit = "256"]

mod common;

use common::*;

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
    c.command("!hush mutes", "in hush.local, reason: flood protection").await;

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
