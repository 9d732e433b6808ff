//! One run of a sequence: the homeserver, the ledger file, the list state and the engine process (killed and started again), with the invariants checked as it goes.
//!
//! Each process lifetime has its own tokio runtime (paused clock): a kill -9 drops the
//! engine, its timer driver and the runtime, so the writes it had in flight stop wherever
//! they were. The homeserver, the ledger file and the clock's time carry over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hush_core::record::{Kind, Phase, Scope};
use hush_core::schedule::{driver, Clock, DriverOptions, Expired, TokioClock};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::naive::*;
use crate::engine::tests::fake_homeserver::{FakeHomeserver, Fault};
use crate::engine::{Engine, EngineConfig, Input};
use crate::ledger::Ledger;

pub const T0: u64 = 1_700_000_000_000;
/// An expiry is acted on within this of its time (the timer's one-second tick, which
/// covers the 250 ms batch window of a power-level write).
pub const LATE_MS: u64 = 1_000;
/// Quiet time that ends a settle: longer than any retry wait (at most 10 minutes).
const QUIET: Duration = Duration::from_secs(15 * 60);

fn config() -> EngineConfig {
    EngineConfig {
        protected_users: vec![PROTECTED.into()],
        // The guard is not what this test is about: nothing is held.
        safety: hush_core::guard::Limits { max_new_restrictions: 1000, max_room_share: 1.0 },
        ..super::super::config()
    }
}

struct Proc {
    engine: Engine<FakeHomeserver, TokioClock>,
    inbox: mpsc::UnboundedReceiver<Input>,
    expired: mpsc::Receiver<Expired<String>>,
    clock: TokioClock,
    rt: tokio::runtime::Runtime,
}

impl Proc {
    /// The process's time: its paused clock is only read inside its runtime.
    fn now(&self) -> u64 {
        let _in = self.rt.enter();
        self.clock.now_ms()
    }
}

/// Everything but the process: what outlives a kill.
struct State {
    hs: FakeHomeserver,
    path: PathBuf,
    model: Model,
    /// Each list's state events, by (list, key): what a start loads.
    lists: BTreeMap<(usize, usize), Value>,
    /// The time while hush is down (while it runs, its clock's).
    down_now: u64,
    /// Since the last quiesce, only time has passed (no operation, fault or restart): an
    /// expiry is then the only reason for a change, and its timing is checked.
    calm: bool,
    /// Per cell, the last expiry that changed what the model wants, and what it wanted before.
    recent: BTreeMap<(usize, &'static str), (u64, Vec<Seen>)>,
    violations: Vec<String>,
    next_event: u64,
}

pub struct World {
    proc: Option<Proc>,
    st: State,
    _dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        // tmpfs where there is one: the ledger's fsyncs are then cheap.
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("tempdir");
        let hs = FakeHomeserver::new(HUSH);
        hs.create_room(MGMT, "10", MOD, json!({"users": {HUSH: 100, MOD: 100}}), &[HUSH]);
        for (i, room) in ROOMS.iter().enumerate() {
            let version = if i == 0 { "10" } else { MSC3909 };
            let mut levels = super::super::levels(&[]);
            if i == 0 {
                levels["users"]["@a2:x"] = 10.into();
            }
            let members: Vec<&str> = [HUSH].into_iter().chain(USERS).filter(|u| !(i == 1 && *u == "@b1:x")).collect();
            hs.create_room(room, version, MOD, levels, &members);
        }
        let st = State {
            hs,
            path: dir.path().join("ledger.sqlite3"),
            model: Model::new(T0),
            lists: BTreeMap::new(),
            down_now: T0,
            calm: false,
            recent: BTreeMap::new(),
            violations: Vec::new(),
            next_event: 0,
        };
        let mut w = World { proc: None, st, _dir: dir };
        w.apply(&Op::Start { rooms_first: true });
        w.apply(&Op::Quiesce);
        w
    }

    /// Runs `ops`, then starts hush if it is down and settles: the violations seen.
    pub fn run(ops: &[Op]) -> Vec<String> {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
            if w.st.violations.len() > 20 {
                break;
            }
        }
        w.apply(&Op::Start { rooms_first: false });
        w.apply(&Op::Quiesce);
        if std::env::var_os("HUSH_MODEL_TRACE").is_some() {
            for a in w.st.hs.attempts() {
                eprintln!("write {:?} -> {:?}", a.write, a.result);
            }
            if let Some(p) = &w.proc {
                eprintln!("ledger {:#?}", p.engine.ledger.all());
            }
        }
        std::mem::take(&mut w.st.violations)
    }

    fn now(&self) -> u64 {
        self.proc.as_ref().map_or(self.st.down_now, Proc::now)
    }

    fn send(&mut self, input: Input) {
        if let Some(p) = &mut self.proc {
            let engine = &mut p.engine;
            p.rt.block_on(async { engine.handle(input) });
        }
    }

    /// A member's own join or leave, and a level set by hand, reach hush before the next
    /// operation (the model decides on them at once; hush's own writes' echoes lag). A
    /// moderator's change seen only after a later rule's mute is planned is left out: see
    /// RELIABILITY.md.
    fn deliver_sync(&mut self) {
        if self.proc.is_some() {
            for (room_id, event) in self.st.hs.take_sync() {
                self.send(Input::State { room_id, event });
            }
        }
    }

    pub fn apply(&mut self, op: &Op) {
        let now = self.now();
        let st = &mut self.st;
        if !matches!(op, Op::Advance(_) | Op::Quiesce) {
            st.calm = false;
        }
        match *op {
            Op::Rule { list, key, entity, rec, expiry } => {
                let mut content = json!({"entity": ENTITIES[entity], "recommendation": rec.as_str(), "reason": "spam"});
                if let Some(e) = expiry {
                    content["expiry"] = (now + e).into();
                }
                let ev = st.list_event(list, key, content);
                let rule = RuleM { list, entity: ENTITIES[entity], rec, expiry: expiry.map(|e| now + e) };
                st.model.rules.insert((list, key), rule);
                self.send(Input::State { room_id: LISTS[list].into(), event: ev });
            }
            Op::Remove { list, key } => {
                let ev = st.list_event(list, key, json!({}));
                st.model.rules.remove(&(list, key));
                self.send(Input::State { room_id: LISTS[list].into(), event: ev });
            }
            Op::Redact { list, key } => {
                let Some(ev) = st.lists.get_mut(&(list, key)) else { return };
                if ev["content"] == json!({}) {
                    return;
                }
                ev["content"] = json!({});
                let redacts = ev["event_id"].as_str().unwrap_or_default().to_owned();
                st.model.rules.remove(&(list, key));
                self.send(Input::Redaction { room_id: LISTS[list].into(), redacts });
            }
            Op::Join { room, user } => {
                if st.hs.user_joins(ROOMS[room], MOVERS[user]).is_some() {
                    let cells = st.cells(room, MOVERS[user]);
                    let mut next: Vec<Cell> = Vec::new();
                    for c in cells.drain(..) {
                        let joined = Cell { present: true, intent: true, ..c.clone() };
                        // A lifted ban still on its way lands, and is lifted, after the join.
                        let gone = c.unsettled.then(|| Cell { present: false, ..joined.clone() });
                        for c in std::iter::once(joined).chain(gone) {
                            if !next.contains(&c) {
                                next.push(c);
                            }
                        }
                    }
                    *cells = next;
                    self.deliver_sync();
                }
            }
            Op::Leave { room, user } => {
                let m = st.hs.membership(ROOMS[room], MOVERS[user]);
                if matches!(m.as_deref(), Some("join" | "mute")) {
                    st.hs.user_leaves(ROOMS[room], MOVERS[user]);
                    let cells = st.cells(room, MOVERS[user]);
                    // A ban not written yet is not written to someone who has left.
                    let unbanned: Vec<Cell> =
                        cells.iter().filter(|c| c.banned).map(|c| Cell { banned: false, ..c.clone() }).collect();
                    cells.extend(unbanned);
                    // Nor a power-level mute still waiting (behind a 429, in its batch): a
                    // member who left is restricted when they come back (soak seed
                    // 1796063770656786516).
                    let unmuted: Vec<Cell> = cells
                        .iter()
                        .filter(|c| room == 0 && c.muted && c.mute_unsettled && !c.banned)
                        .map(|c| Cell { muted: false, mute_unsettled: false, ..c.clone() })
                        .collect();
                    cells.extend(unmuted);
                    cells.iter_mut().for_each(|c| (c.present, c.intent) = (false, false));
                    cells.dedup();
                    self.deliver_sync();
                }
            }
            Op::SetLevel { room, user, level } => {
                if st.hs.power_levels_now(ROOMS[room])["users"][MOVERS[user]].as_i64() == Some(level) {
                    return;
                }
                let shown = st.hs.power_levels_now(ROOMS[room])["users"][MOVERS[user]].as_i64() == Some(MUTED);
                st.hs.set_level_as(ROOMS[room], MOD, MOVERS[user], level);
                let cells = st.cells(room, MOVERS[user]);
                let mut next: Vec<Cell> = Vec::new();
                for c in cells.drain(..) {
                    let set = Cell { natural: Some(level), ..c };
                    let mut outcomes =
                        vec![Cell { overridden: set.overridden || (room == 0 && set.muted), ..set.clone() }];
                    if room == 0 && set.muted && !shown {
                        // hush's mute is not written yet. Killed, at its start the ledger's
                        // pending mute is written over the level the moderator set (which
                        // comes back when it ends), or the level is taken as theirs. Running,
                        // its write (waiting behind a 429) finds the level it read when it
                        // planned the mute, when the moderator set it back to that (0, then
                        // 30 again): the mute goes on, and the same level comes back at its
                        // end. A level that differs is theirs, and the restore check tells.
                        outcomes.push(set);
                    }
                    for o in outcomes {
                        if !next.contains(&o) {
                            next.push(o);
                        }
                    }
                }
                *cells = next;
                self.deliver_sync();
            }
            Op::Advance(ms) => match &mut self.proc {
                Some(p) => pump(p, st, now + ms, Duration::ZERO),
                None => st.down_now += ms,
            },
            Op::Fault(kind, n) => {
                let fault = match kind {
                    FaultKind::RateLimited(ms) => Fault::RateLimited(ms),
                    FaultKind::ServerError => Fault::ServerError,
                    FaultKind::LostAnswer => Fault::LostAnswer,
                };
                st.hs.inject(fault, n);
            }
            Op::Kill => {
                if let Some(p) = self.proc.take() {
                    st.down_now = p.now();
                    let Proc { engine, inbox, expired, rt, .. } = p;
                    drop((engine, inbox, expired));
                    drop(rt);
                }
            }
            Op::Start { rooms_first } => {
                if self.proc.is_none() {
                    self.proc = Some(start(st, rooms_first));
                    let now = self.now();
                    if rooms_first {
                        self.st.model.started_list_by_list(now);
                    }
                }
            }
            Op::Quiesce => {
                if let Some(p) = &mut self.proc {
                    pump(p, st, 0, QUIET);
                    st.check_settled(&p.engine, p.now());
                    st.calm = st.hs.pending_faults() == 0;
                    st.recent.clear();
                }
                return;
            }
        }
        if self.proc.is_some() {
            let now = self.now();
            self.st.model.step(now);
            self.st.model.now = now;
        }
    }
}

/// A new process over the ledger file, sent what a real start sends.
fn start(st: &mut State, rooms_first: bool) -> Proc {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    let now = st.down_now;
    let (mut engine, inbox, expired, clock) = rt.block_on(async {
        let clock = TokioClock::starting_at(now);
        let (timers, expired, _task) = driver::spawn(clock, DriverOptions::default());
        let (tx, inbox) = mpsc::unbounded_channel();
        let ledger = Ledger::open(&st.path).expect("ledger");
        (Engine::new(config(), st.hs.clone(), clock, ledger, timers, tx), inbox, expired, clock)
    });
    // The full state is loaded: what sync had not delivered before the kill is in it.
    st.hs.take_sync();
    let lists: Vec<(String, Vec<Value>)> = LISTS
        .iter()
        .enumerate()
        .map(|(i, l)| ((*l).to_owned(), st.lists.range((i, 0)..(i + 1, 0)).map(|(_, e)| e.clone()).collect()))
        .collect();
    let hs = st.hs.clone();
    rt.block_on(async {
        engine.arm_ledger_users();
        engine.handle(Input::Configure {
            management_room: Some(MGMT.into()),
            lists: LISTS.iter().map(|l| ((*l).to_owned(), hush_core::policy::ListTrust::OTHER_LIST)).collect(),
            protected: ROOMS.iter().map(|r| (*r).to_owned()).collect(),
        });
        engine.handle(Input::ManagementLoaded { room_id: MGMT.into(), events: hs.state(MGMT) });
        engine.handle(Input::ListsKnown { pinned: vec![] });
        let load_rooms = |engine: &mut Engine<_, _>| {
            for r in ROOMS {
                engine.handle(Input::RoomLoaded { room_id: r.into(), events: hs.state(r) });
            }
        };
        if rooms_first {
            load_rooms(&mut engine);
        }
        for (room_id, events) in lists {
            engine.handle(Input::ListLoaded { room_id, events });
        }
        if !rooms_first {
            load_rooms(&mut engine);
        }
    });
    Proc { engine, inbox, expired, clock, rt }
}

/// Runs the process until `to` (ms since the epoch), or with `quiet` > 0 until nothing
/// happens for that long; sync delivers what the homeserver accepted 200 ms after it.
/// Checks after each input.
fn pump(p: &mut Proc, st: &mut State, to: u64, quiet: Duration) {
    let Proc { engine, inbox, expired, clock, rt } = p;
    rt.block_on(async {
        let at = |ms: u64| tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(clock.now_ms()));
        let deadline = at(to);
        let mut pending: Vec<(String, Value)> = Vec::new();
        let mut sync_due: Option<tokio::time::Instant> = None;
        loop {
            pending.extend(st.hs.take_sync());
            if !pending.is_empty() && sync_due.is_none() {
                sync_due = Some(tokio::time::Instant::now() + Duration::from_millis(200));
            }
            let check = st.next_check(clock.now_ms()).map(at);
            let end = if quiet.is_zero() {
                deadline
            } else {
                // A settle never ends within the time hush has to act on an expiry: the
                // check would judge a lift that is not late yet.
                let quiet_end = clock.now_ms() + quiet.as_millis() as u64;
                let acting = st
                    .model
                    .rules
                    .values()
                    .filter_map(|r| r.expiry)
                    .filter(|e| *e + LATE_MS >= quiet_end && *e <= quiet_end);
                at(acting.map(|e| e + LATE_MS + 1).fold(quiet_end, u64::max))
            };
            tokio::select! {
                biased;
                Some(i) = inbox.recv() => engine.handle(i),
                Some(e) = expired.recv() => engine.handle(Input::Timers(e)),
                _ = tokio::time::sleep_until(sync_due.unwrap_or(end)), if sync_due.is_some() => {
                    sync_due = None;
                    for (room_id, event) in std::mem::take(&mut pending) {
                        engine.handle(Input::State { room_id, event });
                    }
                }
                _ = tokio::time::sleep_until(check.unwrap_or(end)), if check.is_some() => {}
                _ = tokio::time::sleep_until(end) => break,
            }
            st.observe(engine, clock.now_ms());
        }
        // What sync has not delivered yet is delivered by the next pump (or dropped by a kill).
        st.hs.requeue_sync(pending);
        st.observe(engine, clock.now_ms());
    });
}

impl State {
    fn cells(&mut self, room: usize, user: &str) -> &mut Vec<Cell> {
        self.model.cells.iter_mut().find(|((r, u), _)| *r == room && *u == user).map(|(_, c)| c).expect("cell")
    }

    /// While calm, the next instant to look at the rooms: an expiry, or the end of the
    /// time allowed to act on one.
    fn next_check(&self, now: u64) -> Option<u64> {
        if !self.calm {
            return None;
        }
        let next_expiry = self.model.rules.values().filter_map(|r| r.expiry).filter(|e| *e > now).min();
        let next_late = self.recent.values().map(|(at, _)| at + LATE_MS + 1).filter(|t| *t > now).min();
        next_expiry.into_iter().chain(next_late).min()
    }

    fn list_event(&mut self, list: usize, key: usize, content: Value) -> Value {
        self.next_event += 1;
        let ev = json!({"type": "m.policy.rule.user", "state_key": format!("k{key}"), "sender": MOD,
                        "event_id": format!("$rule{}", self.next_event), "content": content});
        self.lists.insert((list, key), ev.clone());
        ev
    }

    fn seen(&self, room: usize, user: &str) -> Seen {
        let membership = self.hs.membership(ROOMS[room], user).unwrap_or_else(|| "leave".to_owned());
        let level = self.hs.power_levels_now(ROOMS[room])["users"][user].as_i64();
        Seen { membership, level }
    }

    /// After each input: hush's restrictions are all in its ledger; while calm, the room
    /// follows the model within [`LATE_MS`] of each expiry, never before it.
    fn observe(&mut self, engine: &Engine<FakeHomeserver, TokioClock>, now: u64) {
        for at in self.model.expiries_until(now) {
            let before: BTreeMap<(usize, &'static str), Vec<Seen>> =
                self.model.cells.keys().map(|&(r, u)| ((r, u), self.model.expected(r, u))).collect();
            self.model.step(at);
            for (cell, was) in before {
                if self.model.expected(cell.0, cell.1) != was {
                    self.recent.insert(cell, (at, was));
                }
            }
        }
        self.model.now = self.model.now.max(now);
        let ledger = engine.ledger.all().expect("ledger");
        let has = |room: usize, user: &str, kind: Kind| {
            ledger.iter().any(|e| e.scope == Scope::Room(ROOMS[room].into()) && e.user_id == user && e.kind == kind)
        };
        let cells: Vec<(usize, &'static str)> = self.model.cells.keys().copied().collect();
        for (room, user) in cells {
            let seen = self.seen(room, user);
            if std::env::var_os("HUSH_MODEL_TRACE").is_some() && room == 1 && user == "@a1:x" {
                eprintln!("observe {now} {seen:?} {ledger:?}");
            }
            let kind = match (room, seen.membership.as_str()) {
                (_, "ban") => Some(Kind::Ban),
                (1, "mute" | "leave-mute") => Some(Kind::MuteMembership),
                (0, _) if seen.level == Some(MUTED) => Some(Kind::MutePowerLevel),
                _ => None,
            };
            // (Until defect 12, a retry refused after a lost answer left the restriction in
            // memory only until sync showed it; it now stays in the ledger, and this holds
            // without that exception.)
            if let Some(kind) = kind.filter(|k| !has(room, user, *k)) {
                self.violation(format!(
                    "at {}: {user} in {} is {seen:?} with no {kind:?} in the ledger",
                    now - T0,
                    ROOMS[room]
                ));
            }
            if self.calm {
                let expected = self.model.expected(room, user);
                let pending = self.recent.get(&(room, user)).filter(|(at, _)| now <= at + LATE_MS);
                if !expected.contains(&seen) && !pending.is_some_and(|(_, was)| was.contains(&seen)) {
                    let why = match self.recent.get(&(room, user)) {
                        Some((at, _)) => format!("late: the expiry at {} passed", at - T0),
                        None => "early: no expiry has passed".to_owned(),
                    };
                    self.violation(format!(
                        "at {}: {user} in {} is {seen:?}, the model says {expected:?} ({why})",
                        now - T0,
                        ROOMS[room]
                    ));
                }
            }
        }
    }

    /// Once settled: each member is exactly as one of the model's states says, and the
    /// ledger holds exactly hush's restrictions in force in that state, all applied.
    fn check_settled(&mut self, engine: &Engine<FakeHomeserver, TokioClock>, now: u64) {
        let ledger = engine.ledger.all().expect("ledger");
        let mut problems = Vec::new();
        for e in &ledger {
            let known = ROOMS.iter().any(|r| e.scope == Scope::Room((*r).into()))
                && USERS.contains(&e.user_id.as_str())
                && matches!(e.kind, Kind::Ban | Kind::MutePowerLevel | Kind::MuteMembership);
            // A banned member's mute is left as it is, applied or not.
            // A mute under a ban (or a ban rule) is left as it is, applied, lifting or not.
            let under_ban = e.kind.is_mute()
                && (matches!(&e.scope, Scope::Room(r) if self.hs.membership(r, &e.user_id).as_deref() == Some("ban"))
                    || self.model.wanted(&e.user_id, now) == Some(Rec::Ban));
            if !known || (e.phase != Phase::Applied && !under_ban) {
                problems.push(format!("the ledger holds {e:?}"));
            }
        }
        let ban_rules: Vec<&str> =
            USERS.iter().copied().filter(|u| self.model.wanted(u, now) == Some(Rec::Ban)).collect();
        for (&(room, user), cells) in self.model.cells.iter_mut() {
            let ban_rule = ban_rules.contains(&user);
            // Every lift has been written by now.
            cells.retain(|c| !c.lifting);
            let seen = {
                let membership = self.hs.membership(ROOMS[room], user).unwrap_or_else(|| "leave".to_owned());
                Seen { membership, level: self.hs.power_levels_now(ROOMS[room])["users"][user].as_i64() }
            };
            let entries: Vec<&hush_core::record::Entry> =
                ledger.iter().filter(|e| e.scope == Scope::Room(ROOMS[room].into()) && e.user_id == user).collect();
            let has = |kind: Kind| entries.iter().find(|e| e.kind == kind);
            let fits = |c: &Cell| {
                let mute_kind = if room == 0 { Kind::MutePowerLevel } else { Kind::MuteMembership };
                // A banned member's mute is left as it is, written or not, recorded or not.
                let mute_ok = match has(mute_kind) {
                    _ if c.banned => true,
                    Some(e) => c.muted && e.overridden == c.overridden,
                    // An MSC3909 mute that never landed (the member had left) is not hush's.
                    None => !c.muted || (room == 1 && !c.present),
                };
                // Under a ban rule the mute is left as it is: the level is hush's or the member's.
                let as_expected = Model::expected_of(room, c).iter().any(|x| {
                    x == &seen
                        || (ban_rule
                            && x.membership == seen.membership
                            && (seen.level == Some(MUTED) || seen.level == c.natural))
                });
                as_expected && (mute_ok || ban_rule) && has(Kind::Ban).is_some() == c.banned
            };
            if cells.iter().any(fits) {
                cells.retain(fits);
                cells.iter_mut().for_each(|c| (c.unsettled, c.mute_unsettled) = (false, false));
                cells.dedup();
            } else {
                problems.push(format!(
                    "{user} in {} is {seen:?} with {entries:?} in the ledger; the model says {cells:?}",
                    ROOMS[room]
                ));
            }
        }
        for p in problems {
            self.violation(format!("settled at {}: {p}", now - T0));
        }
    }

    fn violation(&mut self, v: String) {
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }
}
