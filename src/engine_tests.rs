//! Engine tests against the in-memory homeserver: exact writes, batching, faults, dry run, races between writes and sync.
//!
//! Time is tokio's paused clock: batch windows, retry waits and backoffs pass instantly
//! and deterministically, and nothing here sleeps to synchronise.

use std::time::Duration;

use hush_core::schedule::{driver, DriverOptions, Expired, TokioClock};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, EngineConfig, Input, StatusReport};
use crate::fake_homeserver::{FakeHomeserver, Fault, Write};
use crate::ledger::{Kind, Ledger, Phase};

const HUSH: &str = "@hush:x";
const MOD: &str = "@mod:x";
const ROOM: &str = "!room:x";
const ROOM2: &str = "!room2:x";
const LIST: &str = "!list:x";
const MGMT: &str = "!mgmt:x";
const MSC3909: &str = "org.example.msc3909";

struct Harness {
    engine: Engine<FakeHomeserver, TokioClock>,
    inbox: mpsc::UnboundedReceiver<Input>,
    expired: mpsc::Receiver<Expired<String>>,
    hs: FakeHomeserver,
}

fn config() -> EngineConfig {
    EngineConfig {
        own_user: HUSH.into(),
        protected_users: vec![],
        membership_room_versions: vec![MSC3909.into()],
        batch_window: Duration::from_millis(250),
        dry_run: false,
        safety: hush_core::guard::Limits::default(),
        moderator_power_level: None,
        command_prefix: "!hush".into(),
    }
}

/// Power levels with hush at 100, the moderator at 100 and extra users.
fn levels(users: &[(&str, i64)]) -> Value {
    let mut pl = json!({"users": {HUSH: 100, MOD: 100}, "users_default": 0, "events_default": 0,
                        "state_default": 50, "ban": 50, "events": {"m.room.power_levels": 100}});
    for (u, l) in users {
        pl["users"][*u] = (*l).into();
    }
    pl
}

fn rule(key: &str, entity: &str, recommendation: &str) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": format!("$rule-{key}"),
                      "content": {"entity": entity, "recommendation": recommendation, "reason": "spam"}}),
    }
}

fn remove_rule(key: &str) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD,
                      "event_id": format!("$unrule-{key}"), "content": {}}),
    }
}

impl Harness {
    /// An engine following LIST and protecting `rooms` (already created in `hs`), loaded.
    async fn start(hs: &FakeHomeserver, cfg: EngineConfig, rooms: &[&str]) -> Harness {
        let clock = TokioClock::starting_at(1_700_000_000_000);
        let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
        let (tx, inbox) = mpsc::unbounded_channel();
        let engine = Engine::new(cfg, hs.clone(), clock, Ledger::in_memory().unwrap(), timers, tx);
        let mut h = Harness { engine, inbox, expired, hs: hs.clone() };
        h.engine.handle(Input::Configure {
            management_room: Some(MGMT.into()),
            lists: vec![(LIST.into(), hush_core::policy::ListTrust::DEFAULT_LIST)],
            protected: rooms.iter().map(|r| (*r).to_owned()).collect(),
        });
        h.engine.handle(Input::ListLoaded { room_id: LIST.into(), events: vec![] });
        for r in rooms {
            let events = hs.state(r);
            h.engine.handle(Input::RoomLoaded { room_id: (*r).to_owned(), events });
        }
        h.engine.handle(Input::ListsKnown { pinned: vec![] });
        h.settle().await;
        h
    }

    /// Handles what the engine's own tasks send back until nothing more comes for ten
    /// minutes of paused time (longer than any batch window, retry wait or backoff).
    async fn settle(&mut self) {
        loop {
            tokio::select! {
                Some(i) = self.inbox.recv() => self.engine.handle(i),
                Some(e) = self.expired.recv() => self.engine.handle(Input::Timers(e)),
                _ = tokio::time::sleep(Duration::from_secs(600)) => break,
            }
        }
    }

    /// Delivers what the homeserver accepted back to the engine, as sync does, until quiet.
    async fn sync(&mut self) {
        loop {
            let events = self.hs.take_sync();
            if events.is_empty() {
                break;
            }
            for (room_id, event) in events {
                self.engine.handle(Input::State { room_id, event });
            }
            self.settle().await;
        }
    }

    async fn input(&mut self, i: Input) {
        self.engine.handle(i);
        self.settle().await;
        self.sync().await;
    }

    /// Handles the engine's own inputs until one matches `stop`, which is returned unhandled.
    async fn pump_until(&mut self, stop: impl Fn(&Input) -> bool) -> Input {
        loop {
            let i = tokio::time::timeout(Duration::from_secs(600), self.inbox.recv())
                .await
                .expect("the awaited input never came")
                .expect("inbox closed");
            if stop(&i) {
                return i;
            }
            self.engine.handle(i);
        }
    }

    async fn status(&mut self) -> StatusReport {
        let (tx, rx) = oneshot::channel();
        self.engine.handle(Input::Status(tx));
        rx.await.unwrap()
    }

    /// Notices to the management room, after letting the report tasks run.
    async fn notices(&mut self) -> Vec<String> {
        self.settle().await;
        self.hs.notices(MGMT)
    }

    /// The lines of those notices (what one input reports is one notice, a line a report).
    async fn notice_lines(&mut self) -> Vec<String> {
        self.notices().await.iter().flat_map(|n| n.lines().map(str::to_owned).collect::<Vec<_>>()).collect()
    }
}

fn entry_of(s: &StatusReport, room: &str, user: &str, kind: Kind) -> Option<crate::ledger::Entry> {
    s.ledger.iter().find(|e| e.room_id == room && e.user_id == user && e.kind == kind).cloned()
}

#[tokio::test(start_paused = true)]
async fn membership_mute_and_unmute_with_exact_content() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    let mute = json!({"membership": "mute", "reason": "spam"});
    assert_eq!(
        hs.writes().into_iter().filter(|w| matches!(w, Write::Member { .. })).collect::<Vec<_>>(),
        vec![
            Write::Member { room: ROOM.into(), user: "@a:x".into(), content: mute.clone() },
            Write::Member { room: ROOM.into(), user: "@b:x".into(), content: mute },
        ]
    );
    assert!(hs.power_level_events(ROOM).is_empty(), "the membership strategy does not touch power levels");
    let s = h.status().await;
    for u in ["@a:x", "@b:x"] {
        assert_eq!(entry_of(&s, ROOM, u, Kind::MuteMembership).map(|e| e.phase), Some(Phase::Applied), "{u}");
    }

    // A muted user who leaves is `leave-mute`: still muted, nothing to do.
    let before = hs.attempts().len();
    let left = hs.user_leaves(ROOM, "@b:x");
    assert_eq!(left["content"], json!({"membership": "leave-mute"}));
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;
    assert_eq!(hs.attempts().len(), before, "leaving while muted changes nothing");

    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    let lifts: Vec<Write> = hs.writes().into_iter().filter(|w| matches!(w, Write::Member { .. })).skip(2).collect();
    assert_eq!(
        lifts,
        vec![
            Write::Member {
                room: ROOM.into(),
                user: "@a:x".into(),
                content: json!({"membership": "join", "reason": "mute lifted"})
            },
            Write::Member {
                room: ROOM.into(),
                user: "@b:x".into(),
                content: json!({"membership": "leave", "reason": "mute lifted"})
            },
        ]
    );
    assert!(hs.attempts().iter().all(|a| a.result.is_ok()), "every transition was valid: {:?}", hs.attempts());
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"));
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("leave"));
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn fifty_mutes_in_one_room_are_one_power_levels_event_and_restore_exactly() {
    let users: Vec<String> = (0..50).map(|i| format!("@u{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    // Some have explicit levels (10, and 0 = the default but explicit), the rest none.
    let original = levels(&[("@u1:x", 10), ("@u2:x", 0), ("@u3:x", 10)]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, original.clone(), &members);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    // Fifty rules arriving one after another (as one sync batch delivers them).
    for u in &users {
        h.engine.handle(rule(u, u, "m.mute"));
    }
    h.settle().await;
    h.sync().await;
    let events = hs.power_level_events(ROOM);
    assert!(events.len() <= 2, "{} power-level events for 50 mutes", events.len());
    assert_eq!(events.len(), 1, "all 50 arrived within one window");
    for u in &users {
        assert_eq!(events[0]["users"][u.as_str()], json!(-1), "{u}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 50);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied && e.kind == Kind::MutePowerLevel));

    // Lifting all fifty is one more event, and the content is exactly what it was.
    for u in &users {
        h.engine.handle(remove_rule(u));
    }
    h.settle().await;
    h.sync().await;
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], original);
    assert_eq!(hs.power_levels_now(ROOM), original);
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_glob_rule_over_fifty_members_is_one_event() {
    let users: Vec<String> = (0..50).map(|i| format!("@spam{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &members);
    // A rule over 50 members is what the guard holds; this test is about batching.
    let cfg = EngineConfig { safety: Limits { max_new_restrictions: 1000, max_room_share: 1.0 }, ..config() };
    let mut h = Harness::start(&hs, cfg, &[ROOM]).await;
    h.input(rule("glob", "@spam*:x", "m.mute")).await;
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["users"].as_object().unwrap().values().filter(|v| **v == json!(-1)).count(), 50);
}

/// A rule banning many members sends the bans a few at a time, for the whole engine, not
/// one request per member at once (issue 13).
#[tokio::test(start_paused = true)]
async fn a_glob_ban_over_fifty_members_keeps_few_requests_in_flight() {
    let users: Vec<String> = (0..50).map(|i| format!("@spam{i}:x")).collect();
    let mut members: Vec<&str> = users.iter().map(String::as_str).collect();
    members.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &members);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &members);
    // A rule over 50 members is what the guard holds; this test is about sending.
    let cfg = EngineConfig { safety: Limits { max_new_restrictions: 1000, max_room_share: 1.0 }, ..config() };
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    h.input(rule("glob", "@spam*:x", "m.ban")).await;
    for room in [ROOM, ROOM2] {
        assert!(users.iter().all(|u| hs.membership(room, u).as_deref() == Some("ban")), "all banned in {room}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 100);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied));
    let max = hs.max_member_writes_in_flight();
    assert!(max <= crate::engine::MEMBER_WRITES_IN_FLIGHT, "{max} bans in flight at once");
    assert!(max > 1, "the bans still go out several at a time");
}

fn joins(room: &str, user: &str) -> Input {
    Input::State {
        room_id: room.into(),
        event: json!({"type": "m.room.member", "state_key": user, "sender": user,
                      "event_id": format!("$join-{room}-{user}"), "content": {"membership": "join"}}),
    }
}

/// Members who left every protected room are no longer tracked (nor kept as `leave`),
/// unless hush's ledger names them; one who comes back is reconciled at once (issue 13).
#[tokio::test(start_paused = true)]
async fn departed_members_are_untracked_unless_hush_restricted_them() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@c:x"]);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    // The room's state names who left long ago: not tracked from the start.
    hs.put_membership(ROOM, "@old:x", "leave");
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;
    assert_eq!(h.engine.tracked("@old:x"), (false, 5), "hush, the creator, a, b and c");
    assert!(!h.engine.knows_member(ROOM, "@old:x"));

    // Banned by hush: not present, but the ledger names them, so still tracked.
    h.input(rule("c", "@c:x", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@c:x").as_deref(), Some("ban"));
    // A drive-by member leaves.
    let left = hs.user_leaves(ROOM, "@b:x");
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;
    // Gone from one room, still in another.
    let left = hs.user_leaves(ROOM, "@a:x");
    h.input(Input::State { room_id: ROOM.into(), event: left }).await;

    assert_eq!(h.engine.tracked("@b:x"), (false, 4), "the departed member is no longer tracked");
    assert!(!h.engine.knows_member(ROOM, "@b:x"), "nor kept in the room's view");
    assert!(h.engine.tracked("@c:x").0, "hush's ban keeps its user tracked");
    assert!(h.engine.tracked("@a:x").0, "still in another protected room");
    assert!(h.engine.knows_member(ROOM, "@a:x") || h.engine.knows_member(ROOM2, "@a:x"));

    // A rule for the departed member does nothing while they are away...
    let bans = |hs: &FakeHomeserver| hs.writes().iter().filter(|w| matches!(w, Write::Ban { .. })).count();
    let before = bans(&hs);
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(bans(&hs), before);
    assert!(!h.engine.tracked("@b:x").0);
    // ...and they are banned the moment they come back.
    hs.put_membership(ROOM, "@b:x", "join");
    h.input(joins(ROOM, "@b:x")).await;
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"), "reconciled at once");
    assert!(h.engine.tracked("@b:x").0, "banned by hush: tracked again");

    // The ban on @c:x lifted, hush has nothing more to do with them.
    h.input(remove_rule("c")).await;
    assert_eq!(hs.membership(ROOM, "@c:x").as_deref(), Some("leave"));
    assert!(entry_of(&h.status().await, ROOM, "@c:x", Kind::Ban).is_none());
    assert!(!h.engine.tracked("@c:x").0, "untracked once the ledger no longer names them");
    assert!(!h.engine.knows_member(ROOM, "@c:x"));
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_server_errors_lose_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    hs.create_room(ROOM2, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;

    hs.inject(Fault::RateLimited(2_000), 3);
    hs.inject(Fault::ServerError, 2);
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    let failed = hs.attempts().iter().filter(|a| a.result.is_err()).count();
    assert_eq!(failed, 5, "every injected fault was met");
    for room in [ROOM, ROOM2] {
        assert_eq!(hs.power_levels_now(room)["users"]["@a:x"], json!(-1), "{room}");
        assert_eq!(hs.membership(room, "@b:x").as_deref(), Some("ban"), "{room}");
    }
    let s = h.status().await;
    assert_eq!(s.ledger.len(), 4);
    assert!(s.ledger.iter().all(|e| e.phase == Phase::Applied), "{:?}", s.ledger);

    hs.inject(Fault::RateLimited(1_000), 4);
    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10)]));
    assert_eq!(hs.power_levels_now(ROOM2), levels(&[]));
    for room in [ROOM, ROOM2] {
        assert_eq!(hs.membership(room, "@b:x").as_deref(), Some("leave"), "{room}");
    }
    assert!(h.status().await.ledger.is_empty());
    assert!(h.notices().await.is_empty(), "nothing to report: {:?}", hs.notices(MGMT));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_reported_and_leaves_no_dangling_entry() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    hs.create_room(ROOM2, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM, ROOM2]).await;

    hs.inject(Fault::Permanent("M_FORBIDDEN"), 2);
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]));
    assert_eq!(hs.membership(ROOM2, "@a:x").as_deref(), Some("join"));
    let s = h.status().await;
    assert!(s.ledger.is_empty(), "no entry for a change that never happened: {:?}", s.ledger);
    let notices = h.notices().await;
    assert!(
        notices.iter().any(|n| n.contains("cannot change power levels in !room:x") && n.contains("M_FORBIDDEN")),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("cannot restrict @a:x in !room2:x")), "{notices:?}");
    assert_eq!(s.last_errors.len(), 2, "{:?}", s.last_errors);
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_and_sends_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    hs.create_room(ROOM2, MSC3909, MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.dry_run = true;
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    let writes = hs.writes();
    assert!(writes.iter().all(|w| matches!(w, Write::Notice { .. })), "only reports: {writes:?}");
    assert_eq!(h.notices().await.len(), 2, "one notice per input");
    let notices = h.notice_lines().await;
    assert!(
        notices.iter().any(|n| n == "[dry run] would mute @a:x in !room:x (power level -1); rule !list:x|user|a"),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("[dry run] would mute @a:x in !room2:x (membership)")), "{notices:?}");
    assert!(notices.iter().any(|n| n.contains("[dry run] would ban @b:x from !room:x")), "{notices:?}");
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_moderators_change_during_the_mute_is_respected() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("changed to 25 while hush's mute was on")), "{notices:?}");

    let events_before = hs.power_level_events(ROOM).len();
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_level_events(ROOM).len(), events_before, "hush does not overwrite the moderator");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25));
    assert!(h.status().await.ledger.is_empty());
}

/// Handles inputs until the room's power-levels write is under way, then lets it meet the
/// server once (a test injects a rate limit, so it then waits to retry).
async fn start_power_levels_write(h: &mut Harness) {
    let flush = h.pump_until(|i| matches!(i, Input::Flush { .. })).await;
    h.engine.handle(flush);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = h.hs.attempts().iter().filter(|a| matches!(a.write, Write::PowerLevels { .. })).count();
    assert!(refused > 0 && h.hs.attempts().iter().all(|a| a.result.is_err()), "{:?}", h.hs.attempts());
}

/// Issue 13: a moderator sets a user's level while hush's mute of them waits behind 429s.
/// The retry must not overwrite it: the moderator decided, nothing of hush's is in force.
#[tokio::test(start_paused = true)]
async fn a_level_set_while_the_mute_waits_behind_rate_limits_stands() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.inject(Fault::RateLimited(2_000), 2);
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    start_power_levels_write(&mut h).await;

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.engine.handle(Input::State { room_id: ROOM.into(), event: ev });
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25), "the moderator's level stands");
    assert!(hs.power_level_events(ROOM).is_empty(), "hush wrote nothing: {:?}", hs.power_level_events(ROOM));
    let s = h.status().await;
    let e = entry_of(&s, ROOM, "@a:x", Kind::MutePowerLevel);
    assert!(e.as_ref().is_none_or(|e| e.overridden), "no mute of hush's for @a:x: {e:?}");
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.starts_with("Did not mute @a:x in !room:x")).count(),
        1,
        "reported once: {notices:?}"
    );

    // The rule ends: nothing of hush's to restore, the level stays.
    h.input(remove_rule("a")).await;
    assert!(hs.power_level_events(ROOM).is_empty());
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25));
    assert!(h.status().await.ledger.is_empty());
}

/// Issue 13, the other way: a moderator changes a muted user's level while hush's lift
/// waits behind 429s; the lift must not restore the old level over it.
#[tokio::test(start_paused = true)]
async fn a_level_set_while_the_lift_waits_behind_rate_limits_stands() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let events = hs.power_level_events(ROOM).len();
    let attempts = hs.attempts().len();

    hs.inject(Fault::RateLimited(2_000), 2);
    h.engine.handle(remove_rule("a"));
    let flush = h.pump_until(|i| matches!(i, Input::Flush { .. })).await;
    h.engine.handle(flush);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hs.attempts()[attempts..].iter().all(|a| a.result.is_err()), "the lift waits: {:?}", hs.attempts());
    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 30);
    hs.take_sync();
    h.engine.handle(Input::State { room_id: ROOM.into(), event: ev });
    h.settle().await;
    h.sync().await;

    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(30), "the moderator's level stands");
    assert_eq!(hs.power_level_events(ROOM).len(), events, "hush wrote nothing more");
    assert!(h.status().await.ledger.is_empty(), "the ended mute is forgotten");
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.starts_with("The mute of @a:x ended, but their power level in !room:x")).count(),
        1,
        "reported once: {notices:?}"
    );
}

/// Issue 13: a moderator's client that built its power levels on a state older than hush's
/// mute (`prev_content` without the mute) and put the user back where they were did not
/// decide anything about them: hush mutes them again and says so once. A moderator who
/// saw the mute (`prev_content` has it) and lowered it decided: hush leaves it, as before.
#[tokio::test(start_paused = true)]
async fn a_stale_clients_write_that_undoes_a_mute_is_muted_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    // The client saw the room before the mute and gives @b:x 5.
    let stale = levels(&[("@a:x", 10), ("@b:x", 5)]);
    hs.put_levels_as(ROOM, MOD, stale, levels(&[("@a:x", 10)]));
    h.sync().await;
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", -1), ("@b:x", 5)]), "muted again, @b:x kept");
    let s = h.status().await;
    let e = entry_of(&s, ROOM, "@a:x", Kind::MutePowerLevel).expect("hush's mute");
    assert_eq!((e.phase, e.previous_level, e.overridden), (Phase::Applied, Some(10), false));
    let notices = h.notice_lines().await;
    assert_eq!(
        notices.iter().filter(|n| n.contains("A client working from an older state of !room:x")).count(),
        1,
        "{notices:?}"
    );
    assert!(!notices.iter().any(|n| n.contains("while hush's mute was on")), "{notices:?}");

    // The rule ends: the level before the mute comes back.
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10), ("@b:x", 5)]));
    assert!(h.status().await.ledger.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_moderators_write_built_on_the_mute_that_undoes_it_is_a_decision() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    let muted = hs.power_levels_now(ROOM);
    assert_eq!(muted["users"]["@a:x"], json!(-1));

    hs.put_levels_as(ROOM, MOD, levels(&[("@a:x", 10)]), muted);
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(10), "the moderator's level stands");
    let s = h.status().await;
    assert!(entry_of(&s, ROOM, "@a:x", Kind::MutePowerLevel).is_some_and(|e| e.overridden));
    let notices = h.notice_lines().await;
    assert!(notices.iter().any(|n| n.contains("changed to 10 while hush's mute was on")), "{notices:?}");
    assert!(!notices.iter().any(|n| n.contains("older state")), "{notices:?}");
}

/// Sync may deliver hush's own power-levels event before the write's result reaches the
/// engine; a moderator's change after it must still be seen.
#[tokio::test(start_paused = true)]
async fn own_echo_before_the_write_result_does_not_hide_later_changes() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    for (room_id, event) in hs.take_sync() {
        h.engine.handle(Input::State { room_id, event });
    }
    h.engine.handle(done);
    h.settle().await;

    let ev = hs.set_level_as(ROOM, MOD, "@a:x", 25);
    hs.take_sync();
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    h.input(remove_rule("a")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(25), "the moderator's level stays");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("changed to 25 while hush's mute was on")), "{notices:?}");
}

/// Issue 13: hush's own power-levels echo never comes through sync (a gappy sync). A
/// moderator's later change, which names hush's event as the one it replaces, must still
/// reach the view: the user it promotes is then a room moderator, whom hush never mutes.
#[tokio::test(start_paused = true)]
async fn a_promotion_after_a_lost_own_echo_is_seen() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    h.settle().await;
    let lost = hs.take_sync();
    let (_, ours) = lost.iter().rev().find(|(r, e)| r == ROOM && e["type"] == "m.room.power_levels").expect("echo");
    assert_eq!(ours["content"]["users"]["@a:x"], json!(-1), "hush's mute was written");

    let mut ev = hs.set_level_as(ROOM, MOD, "@b:x", 50);
    hs.take_sync();
    ev["unsigned"] = json!({"prev_content": ours["content"], "replaces_state": ours["event_id"]});
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;

    h.input(rule("b", "@b:x", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@b:x"], json!(50), "the new moderator is not muted");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("@b:x") && n.contains("is a moderator of the room")), "{notices:?}");
    assert!(!notices.iter().any(|n| n.contains("waited to be written")), "no mute of @b:x was planned: {notices:?}");
    assert_eq!(hs.power_level_events(ROOM).len(), 1, "only hush's mute of @a:x was written");
}

/// A rule removed while its mute is being written: the mute must still be lifted.
#[tokio::test(start_paused = true)]
async fn a_rule_removed_while_its_mute_is_in_flight_is_still_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the write went through");
    h.engine.handle(remove_rule("a"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[("@a:x", 10)]), "the mute is lifted");
    assert!(h.status().await.ledger.is_empty());
}

/// The reverse: a rule comes back while its lift is being written: the user ends muted.
#[tokio::test(start_paused = true)]
async fn a_rule_restored_while_its_lift_is_in_flight_mutes_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.engine.handle(remove_rule("a"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted again");
    let s = h.status().await;
    let e = entry_of(&s, ROOM, "@a:x", Kind::MutePowerLevel).expect("an entry");
    assert_eq!((e.phase, e.previous_level, e.overridden), (Phase::Applied, None, false));
    let notices = h.notices().await;
    assert!(notices.is_empty(), "{notices:?}");
}

#[tokio::test(start_paused = true)]
async fn refusals_are_reported_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "12", MOD, levels(&[("@high:x", 100)]), &[HUSH, "@high:x", "@vip:x", "@a:x"]);
    hs.create_room(ROOM2, "10", MOD, json!({"users": {HUSH: 20}}), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.protected_users = vec!["@vip*".into()];
    let mut h = Harness::start(&hs, cfg, &[ROOM, ROOM2]).await;
    for (k, u) in [("1", HUSH), ("2", MOD), ("3", "@high:x"), ("4", "@vip:x"), ("5", "@a:x")] {
        h.input(rule(k, u, "m.mute")).await;
    }
    let notices = h.notice_lines().await;
    for want in [
        "Not going to mute @hush:x in 2 rooms (!room2:x, !room:x): hush never restricts itself (rule `1` in !list:x).",
        "Not going to mute @mod:x in 2 rooms (!room2:x, !room:x): room creators cannot be restricted (rule `2` in !list:x).",
        "Not going to mute @high:x in !room:x: the user is a moderator of the room (power level 100, at or above 50, the lowest of kick, ban and redact) (rule `3` in !list:x).",
        "Not going to mute @vip:x in !room:x: the user is in protected_users (rule `4` in !list:x).",
        "Not going to mute @a:x in !room2:x: hush needs power level 50 to change power levels and has 20 (rule `5` in !list:x).",
    ] {
        assert_eq!(notices.iter().filter(|n| *n == want).count(), 1, "{want:?} in {notices:#?}");
    }
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the others are muted");
    // The same facts again report nothing new.
    let n = notices.len();
    h.input(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) }).await;
    assert_eq!(h.notice_lines().await.len(), n);
}

/// A ban rule removed while the ban is being written: the ban must still be lifted.
#[tokio::test(start_paused = true)]
async fn a_rule_removed_while_its_ban_is_in_flight_is_still_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.ban"));
    let done = h.pump_until(|i| matches!(i, Input::MemberWriteDone { .. })).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "the ban went through");
    for (room_id, event) in hs.take_sync() {
        h.engine.handle(Input::State { room_id, event });
    }
    h.engine.handle(remove_rule("a"));
    h.engine.handle(done);
    h.settle().await;
    h.sync().await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"), "the ban is lifted");
    assert!(h.status().await.ledger.is_empty());
}

// Account suspension (MSC3823) and hush's own account being suspended.

use crate::suspension::{fake::FakeAdmin, Suspensions};

fn mute_until(key: &str, entity: &str, expiry: u64) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": format!("$rule-{key}"),
                      "content": {"entity": entity, "recommendation": "m.mute", "reason": "spam", "expiry": expiry}}),
    }
}

async fn with_admin(hs: &FakeHomeserver, cfg: EngineConfig, users: &[&str]) -> (Harness, FakeAdmin) {
    let mut h = Harness::start(hs, cfg, &[ROOM]).await;
    let admin = FakeAdmin::new("x", users);
    h.engine.set_suspension(Suspensions::new(std::sync::Arc::new(admin.clone()), "x"));
    (h, admin)
}

#[tokio::test(start_paused = true)]
async fn an_exact_mute_suspends_a_local_account_and_its_removal_lifts_it() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@far:y"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x", HUSH, MOD]).await;

    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("far", "@far:y", "m.mute")).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "only the local user; never a remote one");
    let s = h.status().await;
    assert_eq!(entry_of(&s, "", "@a:x", Kind::Suspension).map(|e| e.phase), Some(Phase::Applied));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the room mute applies too");

    h.input(remove_rule("a")).await;
    assert_eq!(admin.calls().last(), Some(&("@a:x".to_owned(), false)));
    assert!(admin.suspended().is_empty());
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_temporary_suspension_ends_at_its_expiry() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    // An hour from the harness's start (its settling already took some paused minutes).
    let expiry = 1_700_000_000_000 + 3_600_000;
    h.engine.handle(mute_until("a", "@a:x", expiry));
    let done = h.pump_until(|i| matches!(i, Input::Suspension(_))).await;
    h.engine.handle(done);
    assert!(admin.suspended().contains("@a:x"));
    assert_eq!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).and_then(|e| e.expires_at_ms), Some(expiry));
    // Each settle lets ten quiet minutes of paused time pass; the timer fires within an hour.
    for _ in 0..10 {
        h.settle().await;
    }
    assert!(admin.suspended().is_empty(), "lifted at the expiry");
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
}

#[tokio::test(start_paused = true)]
async fn suspension_safeguards_refuse_and_report_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(
        ROOM,
        "10",
        MOD,
        levels(&[("@g1:x", 0), ("@g2:x", 0)]),
        &[HUSH, "@vip:x", "@boss:x", "@g1:x", "@g2:x"],
    );
    let mut cfg = config();
    cfg.protected_users = vec!["@vip:x".into()];
    let (mut h, admin) = with_admin(&hs, cfg, &[HUSH, "@vip:x", "@boss:x", "@g1:x", "@g2:x"]).await;
    admin.state.lock().unwrap().admins.insert("@boss:x".into());
    // hush itself: refused by the room reconciliation and by suspension.
    h.input(rule("h", HUSH, "m.mute")).await;
    h.input(rule("v", "@vip:x", "m.mute")).await;
    h.input(rule("b", "@boss:x", "m.mute")).await;
    h.input(rule("g", "@g*:x", "m.mute")).await;
    assert!(admin.suspended().is_empty(), "nobody suspended: {:?}", admin.calls());
    let notices = h.notices().await;
    for want in [
        "Not suspending @hush:x: that is hush's own account.",
        "Not suspending @vip:x: the user is in protected_users.",
        "Not suspending @boss:x: a homeserver admin.",
        "Not suspending @g1:x: the rule's entity `@g*:x` is not exactly the user id",
    ] {
        assert_eq!(notices.iter().filter(|n| n.starts_with(want)).count(), 1, "{want:?} in {notices:#?}");
    }
    assert!(!notices.iter().any(|n| n.starts_with("Not suspending @g2:x")), "one report per glob rule");
    assert!(h.status().await.ledger.iter().all(|e| e.kind != Kind::Suspension));
}

#[tokio::test(start_paused = true)]
async fn admin_errors_are_specific_and_reported_once() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@ghost:x"]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x", "@b:x"]).await;
    h.input(rule("ghost", "@ghost:x", "m.mute")).await;
    admin.state.lock().unwrap().not_admin_token = true;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    let notices = h.notices().await;
    assert_eq!(notices.iter().filter(|n| n.contains("the homeserver has no user @ghost:x")).count(), 1, "{notices:#?}");
    assert_eq!(notices.iter().filter(|n| n.contains("is not a homeserver admin's")).count(), 1, "{notices:#?}");
    assert!(h.status().await.ledger.iter().all(|e| e.kind != Kind::Suspension), "failed calls leave no entry");
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_suspensions_and_calls_nothing() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut cfg = config();
    cfg.dry_run = true;
    let (mut h, admin) = with_admin(&hs, cfg, &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.calls().is_empty());
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.starts_with("[dry run] would suspend the account @a:x")), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn hush_suspended_pauses_writes_and_resumes_by_itself() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    hs.set_suspended(true);
    h.input(rule("a", "@a:x", "m.mute")).await;
    let s = h.status().await;
    assert!(s.own_account_blocked.as_ref().is_some_and(|(c, _)| c.starts_with("M_USER_SUSPENDED")), "{s:?}");
    assert!(s.ledger.is_empty(), "the failed mute left no entry: {:?}", s.ledger);
    // While blocked, new rules cause no room writes (only the probes try).
    let before = hs.attempts().iter().filter(|a| !matches!(a.write, Write::PowerLevels { .. })).count();
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(hs.attempts().iter().filter(|a| !matches!(a.write, Write::PowerLevels { .. })).count(), before);
    let errors = h.status().await.last_errors;
    assert_eq!(errors.iter().filter(|e| e.contains("own account")).count(), 1, "one clear error: {errors:#?}");

    hs.set_suspended(false);
    h.settle().await;
    h.sync().await;
    assert!(h.status().await.own_account_blocked.is_none());
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the pending mute went through");
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"), "the ban decided while blocked too");
    let notices = h.notices().await;
    assert!(notices.iter().any(|n| n.contains("It can again")), "{notices:#?}");
}

#[tokio::test(start_paused = true)]
async fn the_rule_suspends_at_once_and_a_room_loaded_later_does_not_again() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[]).await;
    let admin = FakeAdmin::new("x", &["@a:x"]);
    h.engine.set_suspension(Suspensions::new(std::sync::Arc::new(admin.clone()), "x"));
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "named exactly: suspended before any room knows them");
    h.engine.handle(Input::Configure { management_room: None, lists: vec![], protected: vec![ROOM.into()] });
    h.input(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) }).await;
    assert_eq!(admin.calls(), vec![("@a:x".to_owned(), true)], "one call");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "and muted in the room");
}

/// An upgrade copies power levels and bans into the replacement room: hush's mutes and
/// bans there are still hush's, so removing the rules lifts them in the new room, exactly.
#[tokio::test(start_paused = true)]
async fn an_upgraded_room_keeps_what_hush_did_and_lifts_it_there() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@a:x", 10)]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    h.input(rule("b", "@b:x", "m.ban")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    assert_eq!(hs.membership(ROOM, "@b:x").as_deref(), Some("ban"));

    // The moderator upgrades: the new room has the old power levels (with the mute) and
    // the ban, as Synapse copies them; @a follows the tombstone.
    hs.create_room(ROOM2, "11", MOD, hs.power_levels_now(ROOM), &[HUSH, "@a:x"]);
    hs.put_membership(ROOM2, "@b:x", "ban");
    h.input(Input::RoomUpgraded { old: ROOM.into(), new: ROOM2.into() }).await;
    h.input(Input::RoomLoaded { room_id: ROOM2.into(), events: hs.state(ROOM2) }).await;
    let s = h.status().await;
    assert!(s.ledger.iter().all(|e| e.room_id == ROOM2), "{:?}", s.ledger);
    let mute = entry_of(&s, ROOM2, "@a:x", Kind::MutePowerLevel).expect("the mute carried over");
    assert_eq!(mute.previous_level, Some(10));
    assert!(entry_of(&s, ROOM2, "@b:x", Kind::Ban).is_some(), "the ban carried over");
    assert!(!s.protected_rooms.iter().any(|(r, _)| r == ROOM), "the old room is no longer protected");

    let old_events = hs.power_level_events(ROOM).len();
    h.input(remove_rule("a")).await;
    h.input(remove_rule("b")).await;
    assert_eq!(hs.power_levels_now(ROOM2)["users"]["@a:x"], json!(10), "restored exactly in the new room");
    assert_ne!(hs.membership(ROOM2, "@b:x").as_deref(), Some("ban"), "unbanned in the new room");
    assert_eq!(hs.power_level_events(ROOM).len(), old_events, "the old room is left alone");
    assert!(h.status().await.ledger.is_empty());
}

/// The first power-level change after a quiet spell is not held back by the batch window;
/// changes that follow within the window go out together, once the window has passed.
#[tokio::test(start_paused = true)]
async fn the_first_change_goes_out_at_once_and_the_next_ones_are_gathered() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x", "@c:x"]);
    let window = Duration::from_secs(300);
    let mut h = Harness::start(&hs, EngineConfig { batch_window: window, ..config() }, &[ROOM]).await;

    let t0 = tokio::time::Instant::now();
    h.engine.handle(rule("a", "@a:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert!(t0.elapsed() < window, "the first mute did not wait for the window: {:?}", t0.elapsed());
    h.engine.handle(done);
    assert_eq!(hs.power_level_events(ROOM).len(), 1);

    h.engine.handle(rule("b", "@b:x", "m.mute"));
    h.engine.handle(rule("c", "@c:x", "m.mute"));
    let done = h.pump_until(|i| matches!(i, Input::PowerLevelsDone { .. })).await;
    assert!(t0.elapsed() >= window, "the next write waited for the window: {:?}", t0.elapsed());
    h.engine.handle(done);
    let events = hs.power_level_events(ROOM);
    assert_eq!(events.len(), 2, "b and c went out together");
    assert_eq!(events[1]["users"]["@b:x"], json!(-1));
    assert_eq!(events[1]["users"]["@c:x"], json!(-1));
}

/// A local spammer in no protected room is still suspended by an exact mute rule, from a
/// live rule or a list load, and the removal lifts it: the index never tracked them.
#[tokio::test(start_paused = true)]
async fn a_local_user_in_no_protected_room_is_suspended_and_lifted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@lurker:x", "@other:x", HUSH, MOD]).await;

    h.input(rule("lurker", "@lurker:x", "m.mute")).await;
    assert!(admin.suspended().contains("@lurker:x"), "suspended though in no protected room");
    h.input(remove_rule("lurker")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it");

    // The list (re)loaded with a rule for another local user, e.g. after a restart.
    let loaded = json!({"type": "m.policy.rule.user", "state_key": "other", "sender": MOD, "event_id": "$other",
                        "content": {"entity": "@other:x", "recommendation": "m.mute", "reason": "spam"}});
    h.input(Input::ListLoaded { room_id: LIST.into(), events: vec![loaded] }).await;
    assert!(admin.suspended().contains("@other:x"));
    h.input(Input::ListLoaded { room_id: LIST.into(), events: vec![] }).await;
    assert!(admin.suspended().is_empty(), "a reload without the rule lifts it");
    assert!(h.status().await.ledger.is_empty());
}

// ---------------------------------------------------------------------------------------
// Safety: refusals of moderators, list trust, the mass-action guard.

use hush_core::guard::Limits;
use hush_core::policy::ListTrust;

fn server_rule(key: &str, entity: &str, recommendation: &str) -> Input {
    Input::State {
        room_id: LIST.into(),
        event: json!({"type": "m.policy.rule.server", "state_key": key, "sender": MOD, "event_id": format!("$srule-{key}"),
                      "content": {"entity": entity, "recommendation": recommendation, "reason": "spam"}}),
    }
}

async fn decide(h: &mut Harness, id: &str, confirm: bool) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    let i =
        if confirm { Input::Confirm { id: id.into(), reply: tx } } else { Input::Reject { id: id.into(), reply: tx } };
    h.input(i).await;
    rx.await.unwrap()
}

fn members(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("@m{i}:x")).collect()
}

#[tokio::test(start_paused = true)]
async fn a_rule_for_everyone_is_held_until_confirmed_and_a_narrow_rule_still_works() {
    let users = members(4);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.extend([HUSH, "@spam:evil"]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;

    h.input(rule("all", "@*:*", "m.ban")).await;
    assert!(users.iter().all(|u| hs.membership(ROOM, u).as_deref() == Some("join")), "nobody is banned");
    let notices = h.notices().await;
    let held: Vec<&String> = notices.iter().filter(|n| n.starts_with("Held h1:")).collect();
    assert_eq!(held.len(), 1, "{notices:#?}");
    assert!(held[0].contains("`@*:*` matches every user of every server"), "{}", held[0]);
    assert!(held[0].contains("!hush confirm h1"), "{}", held[0]);
    assert!(!notices.iter().any(|n| n.contains("Not going to ban")), "a held rule is not worth refusals: {notices:#?}");
    assert_eq!(h.status().await.held.len(), 1);

    // A narrow rule meanwhile works at once.
    h.input(rule("one", "@spam:evil", "m.mute")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@spam:evil"], json!(-1));

    // A member joining is not banned by the held rule either.
    assert!(decide(&mut h, "h9", true).await.unwrap_err().contains("no hold `h9`"));
    let text = decide(&mut h, "h1", true).await.unwrap();
    assert!(text.starts_with("Confirmed h1"), "{text}");
    for u in &users {
        assert_eq!(hs.membership(ROOM, u).as_deref(), Some("ban"), "{u}");
    }
    assert_eq!(hs.membership(ROOM, MOD).as_deref(), Some("join"), "the creator and moderator is never banned");
    assert_eq!(hs.membership(ROOM, HUSH).as_deref(), Some("join"));
    assert!(h.status().await.held.is_empty());
    assert!(decide(&mut h, "h1", false).await.unwrap_err().contains("already decided"));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_server_wildcard_stays_unenforced_and_a_changed_rule_is_judged_afresh() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:evil", "@b:good"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(server_rule("s", "*", "m.ban")).await;
    assert!(h.notices().await.iter().any(|n| n.starts_with("Held h1:") && n.contains("matches every server")));
    assert!(decide(&mut h, "h1", false).await.unwrap().starts_with("Rejected h1"));
    assert_eq!(hs.membership(ROOM, "@a:evil").as_deref(), Some("join"));
    assert!(h.status().await.held.is_empty(), "a rejected hold no longer waits");
    // The list narrows the rule at the same state key: a new rule, enforced as usual.
    h.input(server_rule("s", "evil", "m.ban")).await;
    assert_eq!(hs.membership(ROOM, "@a:evil").as_deref(), Some("ban"));
    assert_eq!(hs.membership(ROOM, "@b:good").as_deref(), Some("join"));
}

#[tokio::test(start_paused = true)]
async fn a_rule_over_the_limits_is_held_whole_and_what_was_in_force_stays() {
    let users = members(12);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    // Two members: under the limits, enforced.
    h.input(rule("g", "@m1*:x", "m.ban")).await; // @m1, @m10, @m11
    assert_eq!(hs.membership(ROOM, "@m1:x").as_deref(), Some("ban"));
    // Widened to every @m: 9 more would be banned, 9 of the 11 members left: over the room share.
    h.input(rule("g", "@m*:x", "m.ban")).await;
    let notices = h.notices().await;
    let held = notices.iter().find(|n| n.starts_with("Held h1:")).expect("held");
    assert!(held.contains("max_room_share") && held.contains("would ban 9 and mute 0 of 11 members"), "{held}");
    assert_eq!(hs.membership(ROOM, "@m2:x").as_deref(), Some("join"), "nothing new is enforced");
    assert_eq!(hs.membership(ROOM, "@m1:x").as_deref(), Some("ban"), "holding never lifts what was in force");
    decide(&mut h, "h1", true).await.unwrap();
    assert!(users.iter().all(|u| hs.membership(ROOM, u).as_deref() == Some("ban")));
}

#[tokio::test(start_paused = true)]
async fn a_list_loaded_with_many_rules_is_one_held_batch() {
    let users = members(11);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push(HUSH);
    let hs = FakeHomeserver::new(HUSH);
    // Big rooms, so only the count limit applies.
    let mut crowd: Vec<String> = (0..100).map(|i| format!("@crowd{i}:x")).collect();
    crowd.extend(users.iter().cloned());
    let mut crowd_refs: Vec<&str> = crowd.iter().map(String::as_str).collect();
    crowd_refs.push(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &crowd_refs);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let events: Vec<Value> = users
        .iter()
        .map(|u| json!({"type": "m.policy.rule.user", "state_key": format!("k{u}"), "sender": MOD, "event_id": format!("$e{u}"),
                        "content": {"entity": u, "recommendation": "m.mute", "reason": "spam"}}))
        .collect();
    h.input(Input::ListLoaded { room_id: LIST.into(), events }).await;
    let notices = h.notices().await;
    let held = notices.iter().find(|n| n.starts_with("Held h1: 11 rule(s)")).expect("one hold for the batch");
    assert!(held.contains("newly restrict 11 members, more than safety.max_new_restrictions (10)"), "{held}");
    assert!(held.contains("  and 1 more rule(s)"), "a long hold names ten rules and counts the rest: {held}");
    assert_eq!(held.lines().filter(|l| l.contains(" user rule `")).count(), 10, "{held}");
    assert!(hs.power_level_events(ROOM).is_empty(), "nobody muted");
    decide(&mut h, "h1", true).await.unwrap();
    assert!(users.iter().all(|u| hs.power_levels_now(ROOM)["users"][u.as_str()] == json!(-1)));
}

#[tokio::test(start_paused = true)]
async fn room_and_management_moderators_are_never_restricted_until_demoted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@helper:x", 50)]), &[HUSH, "@helper:x", "@boss:x", "@a:x"]);
    hs.create_room(
        MGMT,
        "10",
        MOD,
        json!({"users": {MOD: 100, "@boss:x": 50}, "events": {"m.room.power_levels": 50}}),
        &[HUSH, MOD, "@boss:x"],
    );
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(Input::ManagementLoaded { room_id: MGMT.into(), events: hs.state(MGMT) }).await;
    h.input(rule("h", "@helper:x", "m.mute")).await;
    h.input(rule("b", "@boss:x", "m.ban")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@helper:x"], json!(50));
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("join"));
    let notices = h.notices().await;
    assert!(
        notices.iter().any(|n| n.starts_with(
            "Not going to mute @helper:x in !room:x: the user is a moderator of the room (power level 50"
        )),
        "{notices:#?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n == "Not going to ban @boss:x in !room:x: the user is a moderator of the management room (rule `b` in !list:x)."),
        "{notices:#?}"
    );
    let (tx, rx) = oneshot::channel();
    h.input(Input::Exempt { user: "@helper:x".into(), reply: tx }).await;
    assert!(rx.await.unwrap().unwrap().contains("moderator of the room"));

    // Demoted while the rule stands: now muted.
    let ev = hs.set_level_as(ROOM, MOD, "@helper:x", 0);
    h.input(Input::State { room_id: ROOM.into(), event: ev }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@helper:x"], json!(-1));
    // No longer a moderator of the management room: banned.
    let ev = hs.set_level_as(MGMT, MOD, "@boss:x", 0);
    h.input(Input::State { room_id: MGMT.into(), event: ev }).await;
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("ban"));
    // Made a moderator of the management room again: the ban is lifted.
    let ev = hs.set_level_as(MGMT, MOD, "@boss:x", 50);
    h.input(Input::State { room_id: MGMT.into(), event: ev }).await;
    assert_eq!(hs.membership(ROOM, "@boss:x").as_deref(), Some("leave"));
}

#[tokio::test(start_paused = true)]
async fn a_list_acts_only_as_far_as_it_is_trusted() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x", "@b:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let mute_only = ListTrust { ban: false, mute: true, suspend: false };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST.into(), mute_only)], protected: vec![] }).await;
    h.input(rule("a", "@a:x", "m.ban")).await;
    h.input(rule("b", "@b:x", "m.mute")).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"), "the list may not ban");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@b:x"], json!(-1), "but it may mute");
    let notices = h.notices().await;
    let ignored: Vec<&String> = notices.iter().filter(|n| n.starts_with("Ignoring the m.ban rule `a`")).collect();
    assert_eq!(ignored.len(), 1, "{notices:#?}");
    assert!(ignored[0].contains("this list may cause only: mute"), "{}", ignored[0]);
}

#[tokio::test(start_paused = true)]
async fn held_rules_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    let rule_ev = json!({"type": "m.policy.rule.user", "state_key": "all", "sender": MOD, "event_id": "$all",
                         "content": {"entity": "@*:*", "recommendation": "m.ban"}});
    let boot = |h: &mut Harness| {
        h.engine.handle(Input::Configure {
            management_room: Some(MGMT.into()),
            lists: vec![(LIST.into(), ListTrust::DEFAULT_LIST)],
            protected: vec![ROOM.into()],
        });
        h.engine.handle(Input::ListLoaded { room_id: LIST.into(), events: vec![rule_ev.clone()] });
        h.engine.handle(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) });
        h.engine.handle(Input::ListsKnown { pinned: vec![] });
    };
    boot(&mut h);
    h.settle().await;
    assert_eq!(h.status().await.held.len(), 1);
    drop(h);
    let mut h = engine_over(&hs, &path);
    boot(&mut h);
    h.settle().await;
    let s = h.status().await;
    assert_eq!(s.held.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["h1"], "the same hold, not a new one");
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("join"));
    decide(&mut h, "h1", true).await.unwrap();
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
}

#[tokio::test(start_paused = true)]
async fn preview_counts_what_a_list_would_do_without_following_it() {
    let users = members(20);
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.extend([HUSH, "@helper:x"]);
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[("@helper:x", 50)]), &all);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    let events = vec![
        json!({"type": "m.policy.rule.user", "state_key": "1", "sender": MOD, "content": {"entity": "@m*:x", "recommendation": "m.ban"}}),
        json!({"type": "m.policy.rule.user", "state_key": "2", "sender": MOD, "content": {"entity": "@helper:x", "recommendation": "m.ban"}}),
        json!({"type": "m.policy.rule.server", "state_key": "3", "sender": MOD, "content": {"entity": "other.example", "recommendation": "m.mute"}}),
    ];
    let (tx, rx) = oneshot::channel();
    h.input(Input::Preview { room_id: "!other:x".into(), events, trust: ListTrust::OTHER_LIST, reply: tx }).await;
    let text = rx.await.unwrap();
    assert!(text.contains("rules in force: 3 (2 user, 1 server); 2 ban, 1 mute, 0 other"), "{text}");
    assert!(text.contains("!room:x: of 23 members, would ban 20 (@m0:x, @m10:x, @m11:x, @m12:x, @m13:x and 15 more), mute 0; never restricted: 2 (@helper:x, @mod:x)"), "{text}");
    assert!(
        text.contains(
            "the guard would hold these rules until a moderator confirms them: it would newly restrict 20 members"
        ),
        "{text}"
    );
    assert!(
        hs.membership(ROOM, "@m0:x").as_deref() == Some("join") && h.status().await.lists.len() == 1,
        "nothing followed or done"
    );
}

// ---------------------------------------------------------------------------------------
// Suspension calls whose answer is lost, and lifts that fail (issue 13).

/// The suspend call took effect but its answer was lost: the retry finds the account
/// suspended, and that suspension is hush's own (its entry was written before the call),
/// not someone else's. So removing the rule lifts it.
#[tokio::test(start_paused = true)]
async fn a_suspension_whose_answer_was_lost_is_hushs_and_the_removal_lifts_it() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    admin.state.lock().unwrap().lose_answers = 1;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(
        entry_of(&s, "", "@a:x", Kind::Suspension).map(|e| e.phase),
        Some(Phase::Applied),
        "the retry settles hush's own entry: {:?}",
        s.ledger
    );
    let notices = h.notices().await;
    assert!(!notices.iter().any(|n| n.contains("already suspended")), "{notices:#?}");

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
}

/// The answer is lost and the server stays unreachable for longer than one call retries:
/// the call may have taken effect, so the entry stays and the suspension is tried again
/// (no other input needed) until it is settled; the removal then lifts it.
#[tokio::test(start_paused = true)]
async fn a_suspension_whose_answer_stays_lost_keeps_its_entry_and_is_retried() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    {
        let mut s = admin.state.lock().unwrap();
        s.lose_answers = 1;
        // More failures than one call's own retries (eight attempts) absorb.
        s.then_down = 12;
    }
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(entry_of(&s, "", "@a:x", Kind::Suspension).map(|e| e.phase), Some(Phase::Applied), "{:?}", s.ledger);

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "the removal lifts it: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
}

/// A lift that fails (the server down for longer than one call retries, twice) is tried
/// again with backoff by itself, with no other input, until it works.
#[tokio::test(start_paused = true)]
async fn a_failed_lift_is_retried_until_it_works_with_no_other_input() {
    let hs = FakeHomeserver::new(HUSH);
    // In no protected room: nothing else (no room write, no sync) looks at @a again.
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));

    // Two whole calls fail (each tries eight times), the third works.
    admin.state.lock().unwrap().transient = 16;
    let t0 = tokio::time::Instant::now();
    h.engine.handle(remove_rule("a"));
    h.settle().await;
    assert!(admin.suspended().is_empty(), "lifted by the retries alone: {:?}", admin.calls());
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
    assert_eq!(admin.state.lock().unwrap().transient, 0, "every failure was tried through");
    // Two calls of about two minutes each, the backoff between them, ten quiet minutes.
    assert!(t0.elapsed() < Duration::from_secs(20 * 60), "{:?}", t0.elapsed());
    let notices = h.notices().await;
    assert_eq!(
        notices.iter().filter(|n| n.contains("Cannot lift the suspension of @a:x")).count(),
        1,
        "reported once: {notices:#?}"
    );
}

/// A lift that keeps failing stops being retried when the rule comes back, and the
/// account stays suspended by hush (its entry applied, lifted when the rule goes).
#[tokio::test(start_paused = true)]
async fn a_failing_lift_stops_when_the_rule_comes_back() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    h.input(rule("a", "@a:x", "m.mute")).await;
    admin.state.lock().unwrap().transient = 8;
    h.engine.handle(remove_rule("a"));
    let done = h.pump_until(|i| matches!(i, Input::Suspension(_))).await;
    h.engine.handle(done);
    // The lift failed; the rule is back before the retry.
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(admin.suspended().contains("@a:x"));
    let s = h.status().await;
    assert_eq!(entry_of(&s, "", "@a:x", Kind::Suspension).map(|e| e.phase), Some(Phase::Applied), "{:?}", s.ledger);
    assert!(!admin.calls().contains(&("@a:x".to_owned(), false)), "no lift went through: {:?}", admin.calls());
    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty());
}

/// kill -9 between the suspend call and its answer: at start-up the `Applying` entry is
/// hush's, and the account found suspended is hush's suspension (applied, lifted later).
#[tokio::test(start_paused = true)]
async fn a_half_done_suspension_found_at_start_up_is_hushs() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let ledger = Ledger::in_memory().unwrap();
    ledger
        .begin_apply(&crate::ledger::Entry {
            room_id: String::new(),
            user_id: "@a:x".into(),
            kind: Kind::Suspension,
            phase: Phase::Applying,
            previous_level: None,
            applied_level: None,
            rule: format!("{LIST}|user|a"),
            reason: "spam".into(),
            applied_at_ms: 1,
            expires_at_ms: None,
            overridden: false,
        })
        .unwrap();
    let admin = FakeAdmin::new("x", &["@a:x"]);
    // The call before the crash went through.
    admin.state.lock().unwrap().suspended.insert("@a:x".into());
    let clock = TokioClock::starting_at(1_700_000_000_000);
    let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
    let (tx, inbox) = mpsc::unbounded_channel();
    let engine = Engine::new(config(), hs.clone(), clock, ledger, timers, tx)
        .with_suspension(Suspensions::new(std::sync::Arc::new(admin.clone()), "x"));
    let mut h = Harness { engine, inbox, expired, hs: hs.clone() };
    h.engine.handle(Input::Configure {
        management_room: Some(MGMT.into()),
        lists: vec![(LIST.into(), ListTrust::DEFAULT_LIST)],
        protected: vec![ROOM.into()],
    });
    let rule_ev = json!({"type": "m.policy.rule.user", "state_key": "a", "sender": MOD, "event_id": "$a",
                         "content": {"entity": "@a:x", "recommendation": "m.mute", "reason": "spam"}});
    h.engine.handle(Input::ListLoaded { room_id: LIST.into(), events: vec![rule_ev] });
    h.engine.handle(Input::RoomLoaded { room_id: ROOM.into(), events: hs.state(ROOM) });
    h.engine.handle(Input::ListsKnown { pinned: vec![] });
    h.settle().await;
    let s = h.status().await;
    assert_eq!(entry_of(&s, "", "@a:x", Kind::Suspension).map(|e| e.phase), Some(Phase::Applied), "{:?}", s.ledger);
    let notices = h.notices().await;
    assert!(!notices.iter().any(|n| n.contains("already suspended")), "{notices:#?}");

    h.input(remove_rule("a")).await;
    assert!(admin.suspended().is_empty(), "hush lifts its own suspension: {:?}", admin.calls());
}

/// An account an admin suspended before hush acted is theirs: hush says so once, keeps
/// no entry, and never lifts it.
#[tokio::test(start_paused = true)]
async fn an_account_suspended_by_an_admin_before_hush_is_left_alone() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH]);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    admin.state.lock().unwrap().suspended.insert("@a:x".into());
    h.input(rule("a", "@a:x", "m.mute")).await;
    assert!(entry_of(&h.status().await, "", "@a:x", Kind::Suspension).is_none());
    let notices = h.notices().await;
    assert_eq!(notices.iter().filter(|n| n.contains("@a:x is already suspended, not by hush")).count(), 1);
    h.input(remove_rule("a")).await;
    assert!(admin.suspended().contains("@a:x"), "never lifted by hush");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

/// A user rule event at `key` with its own event id (two versions of one rule differ by id).
fn rule_version(event_id: &str, key: &str, entity: &str, recommendation: &str, reason: &str) -> Value {
    json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": event_id,
           "content": {"entity": entity, "recommendation": recommendation, "reason": reason}})
}

fn redact(event_id: &str) -> Input {
    Input::Redaction { room_id: LIST.into(), redacts: event_id.into() }
}

/// Issue 13: redacting an event that a newer one replaced at the same key leaves the rule
/// in force; redacting the event in force removes it.
#[tokio::test(start_paused = true)]
async fn redacting_a_replaced_rule_event_keeps_the_rule_in_force() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    for (id, reason) in [("$v1", "spam"), ("$v2", "flooding")] {
        h.input(Input::State { room_id: LIST.into(), event: rule_version(id, "a", "@a:x", "m.mute", reason) }).await;
    }
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    h.input(redact("$v1")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the rule in force is $v2: still muted");
    assert!(entry_of(&h.status().await, ROOM, "@a:x", Kind::MutePowerLevel).is_some());

    h.input(redact("$v2")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]), "the rule in force was redacted: lifted");
    assert!(h.status().await.ledger.is_empty());
}

/// A reload replaces what is remembered of a list: an event its state no longer holds is
/// not the rule in force, whatever was seen live before.
#[tokio::test(start_paused = true)]
async fn a_reloaded_list_replaces_the_rule_events_in_force() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.input(Input::State { room_id: LIST.into(), event: rule_version("$v1", "a", "@a:x", "m.mute", "spam") }).await;
    let events = vec![rule_version("$v2", "a", "@a:x", "m.mute", "flooding")];
    h.input(Input::ListLoaded { room_id: LIST.into(), events }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));

    h.input(redact("$v1")).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "$v1 is not in the reloaded state");

    h.input(redact("$v2")).await;
    assert_eq!(hs.power_levels_now(ROOM), levels(&[]), "the loaded rule was redacted: lifted");
}

// ---------------------------------------------------------------------------------------
// What a list not loaded yet caused is held, whatever the loaded lists say (issue 13).

const LIST_B: &str = "!listb:x";

/// An engine over the ledger at `path` (a restart is a second one over the same file).
fn engine_over(hs: &FakeHomeserver, path: &std::path::Path) -> Harness {
    let clock = TokioClock::starting_at(1_700_000_000_000);
    let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
    let (tx, inbox) = mpsc::unbounded_channel();
    let engine = Engine::new(config(), hs.clone(), clock, Ledger::open(path).unwrap(), timers, tx);
    Harness { engine, inbox, expired, hs: hs.clone() }
}

fn user_rule(key: &str, entity: &str, recommendation: &str) -> Value {
    json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": format!("${key}"),
           "content": {"entity": entity, "recommendation": recommendation, "reason": "spam"}})
}

/// Starts following `configured` lists and protecting ROOM; only the lists in `loaded`
/// load (with their events), the others are still on their way. `pinned`: lists known
/// from earlier runs only (their follow has not resolved them).
async fn boot_with(h: &mut Harness, configured: &[&str], loaded: Vec<(&str, Vec<Value>)>, pinned: &[&str]) {
    h.engine.handle(Input::Configure {
        management_room: Some(MGMT.into()),
        lists: configured.iter().map(|l| ((*l).to_owned(), ListTrust::OTHER_LIST)).collect(),
        protected: vec![ROOM.into()],
    });
    for (list, events) in loaded {
        h.engine.handle(Input::ListLoaded { room_id: list.into(), events });
    }
    // Lists known before the room loads: no reconciliation waits for the room's writes.
    h.engine.handle(Input::ListsKnown { pinned: pinned.iter().map(|l| (*l).to_owned()).collect() });
    let state = h.hs.state(ROOM);
    h.engine.handle(Input::RoomLoaded { room_id: ROOM.into(), events: state });
    h.settle().await;
    h.sync().await;
}

/// List B banned @a while list A mutes them. After a restart, A loads and B is still on
/// its way: the ban B caused stays (A's weaker mute does not replace it). When B loads
/// without the rule, the ban is lifted and A's mute applies when @a comes back.
#[tokio::test(start_paused = true)]
async fn a_held_ban_is_kept_over_a_loaded_lists_mute_until_its_list_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mute = user_rule("m", "@a:x", "m.mute");
    let ban = user_rule("b", "@a:x", "m.ban");

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![mute.clone()]), (LIST_B, vec![ban])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    let entry = entry_of(&h.status().await, ROOM, "@a:x", Kind::Ban).unwrap();
    assert!(entry.rule.starts_with(LIST_B), "{entry:?}");
    drop(h);

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![mute])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "held while B is not loaded: {:?}", hs.writes());
    let entry = entry_of(&h.status().await, ROOM, "@a:x", Kind::Ban).unwrap();
    assert!(entry.rule.starts_with(LIST_B), "still B's ban: {entry:?}");

    // B loads, and its rule is gone: the ban is lifted, A's mute is what is wanted now.
    h.input(Input::ListLoaded { room_id: LIST_B.into(), events: vec![] }).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"));
    assert!(entry_of(&h.status().await, ROOM, "@a:x", Kind::Ban).is_none());
    hs.put_membership(ROOM, "@a:x", "join");
    let join = json!({"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "event_id": "$join",
                      "content": {"membership": "join"}});
    h.input(Input::State { room_id: ROOM.into(), event: join }).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "A's mute applies");
}

/// The other way round: a mute from a list not loaded yet, a ban from a loaded list: the
/// ban wins at once.
#[tokio::test(start_paused = true)]
async fn a_loaded_lists_ban_wins_over_a_held_mute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![]), (LIST_B, vec![user_rule("m", "@a:x", "m.mute")])], &[])
        .await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    drop(h);

    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![user_rule("b", "@a:x", "m.ban")])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the held mute is left as it is");
}

/// A configured list whose room cannot be resolved now (its follow retries) but was
/// pinned in an earlier run: once every list is known, what it caused stays held. A list
/// no longer configured at all has what it caused lifted.
#[tokio::test(start_paused = true)]
async fn a_pinned_list_not_followed_yet_stays_held_once_lists_are_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST, LIST_B], vec![(LIST, vec![]), (LIST_B, vec![user_rule("b", "@a:x", "m.ban")])], &[])
        .await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"));
    drop(h);

    // B's alias does not resolve now: the engine knows it only by its pin.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![])], &[LIST_B]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("ban"), "held: {:?}", hs.writes());
    assert!(h.status().await.lists.iter().any(|(l, _, loaded)| l == LIST_B && !loaded));
    drop(h);

    // B is no longer configured: its ban is lifted.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![])], &[]).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"));
}

/// A member write that succeeded is in the room even before sync says so: a check that
/// waited for it must not read the room's older view as "someone else undid it".
#[tokio::test(start_paused = true)]
async fn a_check_waiting_for_hushs_ban_does_not_take_it_for_someone_elses_unban() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let mut h = Harness::start(&hs, config(), &[ROOM]).await;
    h.engine.handle(rule("a", "@a:x", "m.ban"));
    // Looked at again while the ban is in flight (as ListsKnown does at start-up).
    h.engine.handle(Input::ListsKnown { pinned: vec![] });
    h.settle().await; // the ban's result and the waiting check, before any sync
    let e = entry_of(&h.status().await, ROOM, "@a:x", Kind::Ban).expect("hush's ban is recorded");
    assert!(!e.overridden, "hush's own ban read as someone else's unban: {e:?}");
    h.sync().await;
    h.input(remove_rule("a")).await;
    assert_eq!(hs.membership(ROOM, "@a:x").as_deref(), Some("leave"), "removing the rule lifts the ban");
}

// ---------------------------------------------------------------------------------------
// One expiry mechanism: a user's timer is armed at their earliest expiry (issue 13).

/// Handles the engine's own inputs and timers until paused time reaches `at`.
async fn run_until(h: &mut Harness, at: tokio::time::Instant) {
    let stop = tokio::time::sleep_until(at);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(i) = h.inbox.recv() => h.engine.handle(i),
            Some(e) = h.expired.recv() => h.engine.handle(Input::Timers(e)),
            _ = &mut stop => break,
        }
    }
}

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn mute_rule_until(key: &str, entity: &str, expiry: u64) -> Value {
    json!({"type": "m.policy.rule.user", "state_key": key, "sender": MOD, "event_id": format!("${key}"),
           "content": {"entity": entity, "recommendation": "m.mute", "reason": "spam", "expiry": expiry}})
}

/// At start-up the ledger holds a live mute of @a in ROOM (its rule expires 30 minutes in)
/// and, sorted after it, a stale entry for @a in a room no longer protected that expires
/// after 3 hours. @a has one timer: it must be the live mute's, so the mute is lifted at
/// 30 minutes, not at 3 hours.
#[tokio::test(start_paused = true)]
async fn a_stale_ledger_entry_does_not_delay_a_live_lift_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let live = mute_rule_until("a", "@a:x", T0 + 30 * MINUTE);

    // A first run mutes @a; its entry is copied into an old room, as if left from long ago.
    let mut h = engine_over(&hs, &path);
    boot_with(&mut h, &[LIST], vec![(LIST, vec![live.clone()])], &[]).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let mut stale = entry_of(&h.status().await, ROOM, "@a:x", Kind::MutePowerLevel).unwrap();
    drop(h);
    assert_eq!(stale.expires_at_ms, Some(T0 + 30 * MINUTE));
    stale.room_id = "!zzz-old:x".into();
    stale.expires_at_ms = Some(T0 + 180 * MINUTE);
    let ledger = Ledger::open(&path).unwrap();
    ledger.begin_apply(&stale).unwrap();
    ledger.mark_applied(&stale.room_id, "@a:x", Kind::MutePowerLevel).unwrap();
    drop(ledger);

    // The restart: its clock starts at T0 again.
    let start = tokio::time::Instant::now();
    let mut h = engine_over(&hs, &path);
    h.engine.arm_ledger_users();
    boot_with(&mut h, &[LIST], vec![(LIST, vec![live])], &[]).await;
    let at = |ms: u64| start + Duration::from_millis(ms);
    run_until(&mut h, at(30 * MINUTE - 1000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted until the expiry");
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(30 * MINUTE + 5000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@a:x"), None, "lifted at 30 minutes: {:?}", hs.writes());
    // The stale entry's expiry is still ahead: one timer, until it has passed.
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(180 * MINUTE + 5000)).await;
    assert_eq!(h.status().await.pending_timers, 0);
}

/// Live rule changes: @a is muted and suspended by LIST's rule until 1 hour. Then a list
/// that may mute but not suspend mutes them until 3 hours: the room mute now lasts 3
/// hours, the suspension still 1 hour. The later, longer expiry must not take the timer:
/// the suspension is lifted at 1 hour, the room mute at 3 hours.
#[tokio::test(start_paused = true)]
async fn a_longer_mute_from_another_list_does_not_delay_an_earlier_suspension_lift() {
    let hs = FakeHomeserver::new(HUSH);
    hs.create_room(ROOM, "10", MOD, levels(&[]), &[HUSH, "@a:x"]);
    let start = tokio::time::Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let (mut h, admin) = with_admin(&hs, config(), &["@a:x"]).await;
    let mute_only = ListTrust { ban: false, mute: true, suspend: false };
    h.input(Input::Configure { management_room: None, lists: vec![(LIST_B.into(), mute_only)], protected: vec![] })
        .await;
    h.input(Input::ListLoaded { room_id: LIST_B.into(), events: vec![] }).await;

    h.input(mute_until("a", "@a:x", T0 + 60 * MINUTE)).await;
    assert!(admin.suspended().contains("@a:x"));
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1));
    let longer = mute_rule_until("b", "@a:x", T0 + 180 * MINUTE);
    h.input(Input::State { room_id: LIST_B.into(), event: longer }).await;
    let s = h.status().await;
    assert_eq!(entry_of(&s, ROOM, "@a:x", Kind::MutePowerLevel).and_then(|e| e.expires_at_ms), Some(T0 + 180 * MINUTE));
    assert_eq!(entry_of(&s, "", "@a:x", Kind::Suspension).and_then(|e| e.expires_at_ms), Some(T0 + 60 * MINUTE));
    assert_eq!(s.pending_timers, 1);

    run_until(&mut h, at(60 * MINUTE - 1000)).await;
    assert!(admin.suspended().contains("@a:x"), "suspended until its expiry");
    run_until(&mut h, at(60 * MINUTE + 5000)).await;
    assert!(admin.suspended().is_empty(), "the suspension is lifted at 1 hour");
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "the room mute lasts");
    assert_eq!(h.status().await.pending_timers, 1);
    run_until(&mut h, at(180 * MINUTE - 1000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"]["@a:x"], json!(-1), "muted until its expiry");
    run_until(&mut h, at(180 * MINUTE + 5000)).await;
    assert_eq!(hs.power_levels_now(ROOM)["users"].get("@a:x"), None, "the room mute is lifted at 3 hours");
    assert_eq!(h.status().await.pending_timers, 0);
}
