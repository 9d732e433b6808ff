//! A ban redacts the banned member's recent messages, against a real Synapse: event by event on the usual test homeserver, and by the homeserver itself (MSC4293, hush sending no redaction) on a second one started with `experimental_features: {msc4293_enabled: true}`; a redaction interrupted by kill -9 resumes. Also the time to redact 200 events (ignored; see BENCHMARKS.md).
#![recursion_limit = "256"]

mod common;

use std::time::Instant;

use common::*;
use matrix_sdk::ruma::{OwnedEventId, RoomId};
use serde_json::Value;

/// An event as the moderator's homeserver serves it now.
async fn event(c: &Community, room: &RoomId, id: &OwnedEventId) -> Option<Value> {
    use matrix_sdk::ruma::api::client::room::get_room_event;
    let req = get_room_event::v3::Request::new(room.to_owned(), id.to_owned());
    let resp = c.moderator.client.send(req).await.ok()?;
    resp.event.deserialize_as_unchecked::<Value>().ok()
}

/// The type of the event that redacted `id` (`m.room.redaction`, or `m.room.member` for
/// MSC4293's redaction by the ban), once it is redacted.
async fn wait_redacted(c: &Community, id: &OwnedEventId) -> String {
    let room = c.protected.room_id();
    let found = poll(DEADLINE, || async {
        let ev = event(c, room, id).await?;
        ev.pointer("/unsigned/redacted_because/type").and_then(Value::as_str).map(str::to_owned)
    })
    .await;
    found.unwrap_or_else(|| panic!("{id} never redacted"))
}

async fn wait_notice(c: &Community, pred: impl Fn(&str) -> bool) -> SeenMessage {
    c.moderator.wait_for_message(c.management.room_id(), &c.bot.user_id, |m| pred(&m.body)).await.unwrap()
}

/// A member who sent `n` messages, and a bystander who sent one.
async fn chatter(c: &Community, n: usize) -> (TestUser, Vec<OwnedEventId>, OwnedEventId) {
    let spammer = c.member(None).await.unwrap();
    let bystander = c.member(None).await.unwrap();
    let room = spammer.room(c.protected.room_id()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(spammer.say(&room, &format!("spam {i}")).await.unwrap());
    }
    let broom = bystander.room(c.protected.room_id()).await.unwrap();
    let kept = bystander.say(&broom, "hello").await.unwrap();
    (spammer, ids, kept)
}

/// A ban redacts the member's three messages (`by`: the type of what redacted them), and
/// hush's notice says how many it redacted (`notice`).
async fn ban_redacts(c: Community, by: &str, notice: &str) {
    let (spammer, ids, kept) = chatter(&c, 3).await;
    let config = c.config("");
    let _hush = c.start(&config, 1).await;

    c.rule("spam", spammer.user_id.as_str(), "m.ban", None).await.unwrap();
    c.wait_membership(&spammer.user_id, "ban").await;
    for id in &ids {
        assert_eq!(wait_redacted(&c, id).await, by, "{id}");
    }
    let done = wait_notice(&c, |b| b.contains(" recent event(s) of ")).await;
    let expected = notice.replace("{user}", spammer.user_id.as_str());
    assert!(done.body.starts_with(&expected), "{}", done.body);
    let kept_now = event(&c, c.protected.room_id(), &kept).await.unwrap();
    assert_eq!(kept_now["content"]["body"], "hello", "the bystander's message stays");
}

/// The usual test homeserver (MSC4293 off): hush redacts each message itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_redacts_the_members_recent_messages() {
    let c = Community::new().await.unwrap();
    ban_redacts(c, "m.room.redaction", "Redacted 3 recent event(s) of {user} in ").await;
}

/// A homeserver with MSC4293: the ban's `redact_events` redacts the messages, and hush,
/// finding them redacted, sends no redaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_msc4293_the_ban_itself_redacts_the_messages() {
    let c = Community::on(homeserver_msc4293()).await.unwrap();
    ban_redacts(c, "m.room.member", "The 3 recent event(s) of {user} in ").await;
}

/// What `kill -9` in the middle of a redaction leaves: the ledger's entry, written before
/// the first redaction, and some events redacted. The next start resumes it (without any
/// ban: the entry alone), redacts what is left, and says what was already done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_interrupted_by_kill_9_resumes_at_the_next_start() {
    use hush_core::policy::{EntityKind, RuleId};
    use hush_core::record::{Entry, Kind, Phase, Scope};
    let c = Community::new().await.unwrap();
    let (spammer, ids, kept) = chatter(&c, 3).await;
    let config = c.config("");
    let hush = c.start(&config, 1).await;
    hush.kill9();

    let room = c.protected.room_id().to_string();
    let entry = Entry {
        scope: Scope::Room(room.clone()),
        user_id: spammer.user_id.to_string(),
        kind: Kind::Redaction,
        phase: Phase::Applying,
        previous_level: Some((now_ms() - 3_600_000) as i64),
        applied_level: Some(100),
        rule: RuleId { room_id: c.list.room_id().to_string(), kind: EntityKind::User, state_key: "spam".into() },
        reason: "spam".into(),
        applied_at_ms: now_ms(),
        expires_at_ms: None,
        overridden: false,
        event_ids: Vec::new(),
    };
    let ledger = c.bot.dir.path().join("data").join("ledger.sqlite3");
    hush::ledger::Ledger::open(&ledger).unwrap().begin_apply(&entry).unwrap();
    // The first run had redacted the newest message.
    {
        use matrix_sdk::ruma::api::client::redact::redact_event;
        use matrix_sdk::ruma::TransactionId;
        let req =
            redact_event::v3::Request::new(c.protected.room_id().to_owned(), ids[2].clone(), TransactionId::new());
        c.moderator.client.send(req).await.unwrap();
    }

    let _hush = c.start(&config, 2).await;
    for id in &ids {
        assert_eq!(wait_redacted(&c, id).await, "m.room.redaction", "{id}");
    }
    let done = wait_notice(&c, |b| b.contains(" recent event(s) of ")).await;
    let expected = format!("Redacted 2 recent event(s) of {} in {room}; 1 more were already redacted", spammer.user_id);
    assert!(done.body.starts_with(&expected), "{}", done.body);
    assert_eq!(c.membership(&spammer.user_id).await.as_deref(), Some("join"), "resuming a redaction bans no one");
    let kept_now = event(&c, c.protected.room_id(), &kept).await.unwrap();
    assert_eq!(kept_now["content"]["body"], "hello");
    let status = c.command("!hush status", "restrictions in force").await;
    assert!(!status.body.contains("redactions under way"), "the entry is gone: {}", status.body);
}

/// The figure in BENCHMARKS.md: from the ban rule to hush's "Redacted 200" notice, 200
/// messages redacted event by event (MSC4293 off), and the same ban with MSC4293 on.
///   cargo nextest run -p hush --test redaction --run-ignored only --no-capture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on its own"]
async fn redaction_time_for_200_events() {
    for (name, hs) in [("per event", homeserver()), ("MSC4293", homeserver_msc4293())] {
        let c = Community::on(hs).await.unwrap();
        let (spammer, _ids, _) = chatter(&c, 200).await;
        let config = c.config("redaction:\n  max_per_room: 200\n");
        let _hush = c.start(&config, 1).await;
        let start = Instant::now();
        c.rule("spam", spammer.user_id.as_str(), "m.ban", None).await.unwrap();
        let done = wait_notice(&c, |b| b.contains(" recent event(s) of ")).await;
        eprintln!("redaction of 200 events ({name}): {:?}: {}", start.elapsed(), done.body);
    }
}
