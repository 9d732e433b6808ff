//! Engine tests against the in-memory homeserver (shared harness here; topical files below): exact writes, batching, faults, dry run, races between writes and sync.
//!
//! Time is tokio's paused clock: batch windows, retry waits and backoffs pass instantly
//! and deterministically, and nothing here sleeps to synchronise.

mod accounts;
mod allow;
mod burst;
mod expiry;
pub mod fake_admin;
pub mod fake_homeserver;
mod history;
mod lists;
mod mention_spam;
mod metrics;
mod model;
mod own_limits;
mod power_levels;
mod progress;
mod protections;
mod redaction;
mod safety;
mod server_acl;
mod writes;

use std::time::Duration;

use hush_core::schedule::{driver, DriverOptions, Expired, TokioClock};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, EngineConfig, Input, StatusReport};
use crate::ledger::Ledger;
use crate::suspension::Suspensions;
use fake_admin::FakeAdmin;
use fake_homeserver::{FakeHomeserver, Fault, Write};
use hush_core::guard::Limits;
use hush_core::policy::ListTrust;
use hush_core::record::{Entry, Kind, Phase, Scope};

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
        // Redaction has its own tests (`redaction.rs`); the others are about what they name.
        redaction: hush_core::reconcile::RedactPolicy::OFF,
        redact_with_msc4293: false,
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

fn entry_of(s: &StatusReport, scope: &Scope, user: &str, kind: Kind) -> Option<Entry> {
    s.ledger.iter().find(|e| &e.scope == scope && e.user_id == user && e.kind == kind).cloned()
}

fn in_room(room: &str) -> Scope {
    Scope::Room(room.to_owned())
}

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
