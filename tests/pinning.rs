//! Aliases are pinned, follows can be cancelled, and a room upgrade is followed only into a
//! room that names the old one as its predecessor; against a real Synapse.
#![recursion_limit = "256"]

mod common;

use std::time::Duration;

use common::*;
use matrix_sdk::ruma::{OwnedRoomAliasId, RoomId, UserId};

/// Points `alias` at `room` (deleting what it pointed to before, if anything).
async fn set_alias(user: &TestUser, alias: &OwnedRoomAliasId, room: &RoomId) {
    use matrix_sdk::ruma::api::client::alias::{create_alias, delete_alias};
    let _ = user.client.send(delete_alias::v3::Request::new(alias.clone())).await;
    user.client.send(create_alias::v3::Request::new(alias.clone(), room.to_owned())).await.unwrap();
}

/// A member's membership in a room, fresh from the homeserver.
async fn membership_in(user: &TestUser, room: &RoomId, member: &UserId) -> Option<String> {
    use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
    let req = get_state_event_for_key::v3::Request::new(room.to_owned(), "m.room.member".into(), member.to_string());
    let v: serde_json::Value = serde_json::from_str(user.client.send(req).await.ok()?.event_or_content.get()).ok()?;
    v.get("membership")?.as_str().map(str::to_owned)
}

/// A room like the protected one: hush invited and given power, `member` joined.
async fn another_room(c: &Community, name: &str, member: &TestUser) -> matrix_sdk::Room {
    let room = c.moderator.create_room(name, &[&c.bot.user_id], false).await.unwrap();
    let mut pl = c.moderator.power_levels(room.room_id()).await.unwrap();
    pl["users"][c.bot.user_id.as_str()] = 100.into();
    c.moderator.put_state(room.room_id(), "m.room.power_levels", "", pl).await.unwrap();
    c.moderator.invite(room.room_id(), &member.user_id).await.unwrap();
    member.join(room.room_id()).await.unwrap();
    room
}

/// The config with `replace` in place of the protected room's id.
fn config_protecting(c: &Community, replace: &str) -> std::path::PathBuf {
    let config = c.config("");
    let text = std::fs::read_to_string(&config).unwrap();
    let from = format!("protected_rooms: [\"{}\"]", c.protected.room_id());
    assert!(text.contains(&from));
    std::fs::write(&config, text.replace(&from, &format!("protected_rooms: [\"{replace}\"]"))).unwrap();
    config
}

/// A protected room given by alias is pinned at the first start: after the alias is moved
/// to another room, a restarted hush still protects the first room, says so, and does not
/// go near the alias's new room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_alias_keeps_protecting_the_pinned_room_after_a_restart() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let alias: OwnedRoomAliasId = format!("#{}:localhost", unique("lobby")).try_into().unwrap();
    set_alias(&c.moderator, &alias, c.protected.room_id()).await;
    let config = config_protecting(&c, alias.as_str());
    let hush = c.start(&config, 1).await;
    c.rule("first", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    assert!(hush.terminate().await.unwrap().success());
    let saved = std::fs::read_to_string(c.bot.dir.path().join("data/rooms.json")).unwrap();
    assert!(saved.contains(alias.as_str()) && saved.contains(c.protected.room_id().as_str()), "{saved}");

    // The alias moves to another room, which hush could join and act in.
    let other = another_room(&c, "elsewhere", &user).await;
    set_alias(&c.moderator, &alias, other.room_id()).await;
    c.remove_rule("first").await.unwrap();
    let hush = c.start(&config, 2).await;
    let notice = c
        .moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| m.body.contains("now points to"))
        .await
        .unwrap();
    for part in [alias.as_str(), c.protected.room_id().as_str(), other.room_id().as_str()] {
        assert!(notice.body.contains(part), "the notice names {part}: {}", notice.body);
    }
    // Still the pinned room: the removed rule's mute is lifted there, a new one applied.
    c.wait_level(&user.user_id, None).await;
    c.rule("second", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    let pl = c.moderator.power_levels(other.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), None, "the alias's new room is not protected: {pl}");
    assert_eq!(membership_in(&c.moderator, other.room_id(), &c.bot.user_id).await.as_deref(), Some("invite"));
    let log = hush.log_text();
    assert!(log.contains("keeps the pinned one"), "{log}");
}

/// A tombstone pointing to a room whose m.room.create does not name the old room as its
/// predecessor is refused: hush says so, leaves that room, and goes on protecting the old
/// room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_into_a_room_that_does_not_name_the_old_one_is_not_followed() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;

    // Not an upgrade: a room made separately (no predecessor), named by a hand-made tombstone.
    let impostor = another_room(&c, "impostor", &user).await;
    let tombstone = serde_json::json!({"body": "moved", "replacement_room": impostor.room_id().as_str()});
    c.moderator.put_state(c.protected.room_id(), "m.room.tombstone", "", tombstone).await.unwrap();
    let notice = c
        .moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| m.body.contains("does not follow"))
        .await
        .unwrap();
    assert!(
        notice.body.contains(impostor.room_id().as_str()) && notice.body.contains("predecessor"),
        "{}",
        notice.body
    );

    // The old room is still protected; the impostor is not, and hush is not in it.
    c.rule("mute", user.user_id.as_str(), "m.mute", None).await.unwrap();
    c.wait_level(&user.user_id, Some(-1)).await;
    let pl = c.moderator.power_levels(impostor.room_id()).await.unwrap();
    assert_eq!(level_of(&pl, &user.user_id), None, "the impostor room is not protected: {pl}");
    let left = poll(DEADLINE, || async {
        (membership_in(&c.moderator, impostor.room_id(), &c.bot.user_id).await.as_deref() == Some("leave"))
            .then_some(())
    })
    .await;
    assert!(left.is_some(), "hush leaves the refused room; log:\n{}", hush.log_text());
    let overrides = std::fs::read_to_string(c.bot.dir.path().join("data/rooms.json")).unwrap_or_default();
    assert!(!overrides.contains(impostor.room_id().as_str()), "{overrides}");
}

/// `unwatch` stops a list that is still being retried (hush does not join it when invited
/// later), and a tombstone in a list hush no longer follows is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatch_cancels_a_retrying_follow_and_later_tombstones_are_ignored() {
    let c = Community::new().await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;

    // A list hush is not invited to: it is retried until unwatched.
    let closed = c.moderator.create_room("closed list", &[], false).await.unwrap();
    c.command(&format!("!hush watch {}", closed.room_id()), "Now following").await;
    c.moderator
        .wait_for_message(c.management.room_id(), &c.bot.user_id, |m| {
            m.body.contains("Cannot follow the policy list") && m.body.contains(closed.room_id().as_str())
        })
        .await
        .unwrap();
    c.command(&format!("!hush unwatch {}", closed.room_id()), "No longer following").await;
    assert!(
        poll(DEADLINE, || async { hush.log_text().contains("a follow still under way is cancelled").then_some(()) })
            .await
            .is_some(),
        "{}",
        hush.log_text()
    );
    c.moderator.invite(closed.room_id(), &c.bot.user_id).await.unwrap();

    // A followed list is unwatched, then upgraded: hush does not follow the new room.
    c.command(&format!("!hush unwatch {}", c.list.room_id()), "No longer following").await;
    let new_list = c.moderator.upgrade_room(c.list.room_id(), "12").await.unwrap();
    c.moderator.invite(&new_list, &c.bot.user_id).await.unwrap();

    // Longer than the retry backoff then (2 s, 4 s) and than an invite takes to arrive.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(membership_in(&c.moderator, closed.room_id(), &c.bot.user_id).await.as_deref(), Some("invite"));
    assert_eq!(membership_in(&c.moderator, &new_list, &c.bot.user_id).await.as_deref(), Some("invite"));
    let log = hush.log_text();
    assert!(log.contains("ignoring the tombstone of a room hush does not follow"), "{log}");
    assert!(!log.contains("checking its replacement"), "{log}");
}

/// A configured list whose alias does not resolve (and was never pinned) is retried, but
/// does not keep hush from knowing its lists: what a list no longer configured caused is
/// lifted at start-up all the same (issue 13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_list_does_not_hold_a_removed_lists_ban_for_ever() {
    let c = Community::new().await.unwrap();
    let user = c.member(None).await.unwrap();
    let config = c.config("");
    let hush = c.start(&config, 1).await;
    c.rule("spam", user.user_id.as_str(), "m.ban", None).await.unwrap();
    c.wait_membership(&user.user_id, "ban").await;
    assert!(hush.terminate().await.unwrap().success());

    // The list is no longer configured; in its place an alias that resolves nowhere.
    let nowhere = format!("#{}:localhost", unique("nowhere"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(c.list.room_id().as_str(), &nowhere)).unwrap();
    let hush = c.start(&config, 2).await;
    c.wait_membership(&user.user_id, "leave").await;
    let log = hush.log_text();
    assert!(log.contains("room id is not known"), "{log}");
}
