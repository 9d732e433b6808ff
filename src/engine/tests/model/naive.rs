//! The model test's vocabulary and oracle: the small world (rooms, lists, users), the operations a sequence is made of, their generator, and the naive model of what hush should have done.
//!
//! The model is deliberately simple: every rule is checked for every user (no index), and
//! each room member's restriction follows from README "Which rule wins" and "For
//! moderators" (refusals, ban beats mute, a moderator's hand change stands), evaluated at
//! each operation and at each expiry instant while hush runs.

use std::collections::BTreeMap;

use proptest::prelude::*;

pub const HUSH: &str = "@hush:x";
pub const MOD: &str = "@mod:x";
pub const PROTECTED: &str = "@p:x";
pub const MGMT: &str = "!mgmt:x";
/// A room of a version without MSC3909: mutes are power levels.
pub const R1: &str = "!r1:x";
/// A room of an MSC3909 version: mutes are the `mute` membership.
pub const R2: &str = "!r2:x";
pub const MSC3909: &str = "org.example.msc3909";
pub const ROOMS: [&str; 2] = [R1, R2];
pub const LISTS: [&str; 3] = ["!l1:x", "!l2:x", "!l3:x"];
/// Users whose membership and level are checked (hush and the moderator never change).
pub const USERS: [&str; 5] = ["@a1:x", "@a2:x", "@b1:x", PROTECTED, MOD];
/// Users who join, leave and get levels by hand.
pub const MOVERS: [&str; 4] = ["@a1:x", "@a2:x", "@b1:x", PROTECTED];
/// What rules name: users, globs over them, and everyone (hush and the moderator too).
pub const ENTITIES: [&str; 8] = ["@a1:x", "@a2:x", "@b1:x", PROTECTED, MOD, "@a*:x", "@*1:x", "@*:x"];
/// Levels a moderator sets by hand: all below the room's moderator level (50).
pub const HAND_LEVELS: [i64; 3] = [0, 20, 30];
/// The power-level mute in R1 (one below `events_default` 0).
pub const MUTED: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rec {
    Allow,
    Mute,
    Ban,
}

impl Rec {
    pub fn as_str(self) -> &'static str {
        match self {
            Rec::Allow => "m.allow",
            Rec::Mute => "m.mute",
            Rec::Ban => "m.ban",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum FaultKind {
    RateLimited(u64),
    ServerError,
    LostAnswer,
}

/// One step of a sequence. Indices are into [`LISTS`], [`ENTITIES`], [`ROOMS`], [`MOVERS`].
#[derive(Debug, Clone)]
pub enum Op {
    /// A rule at `(list, key)` is set (added or changed); `expiry`: ms from now.
    Rule {
        list: usize,
        key: usize,
        entity: usize,
        rec: Rec,
        expiry: Option<u64>,
    },
    /// The rule's state event is replaced by an empty one.
    Remove {
        list: usize,
        key: usize,
    },
    /// The rule's state event is redacted.
    Redact {
        list: usize,
        key: usize,
    },
    Join {
        room: usize,
        user: usize,
    },
    Leave {
        room: usize,
        user: usize,
    },
    /// The moderator sets a user's power level by hand.
    SetLevel {
        room: usize,
        user: usize,
        level: i64,
    },
    /// Time passes (ms) with hush running (or not, if killed).
    Advance(u64),
    /// The next `n` room writes meet this fault.
    Fault(FaultKind, usize),
    /// kill -9: the engine, its timers and its writes in flight are gone; the ledger file
    /// and the homeserver stay. Operations until the next start happen while hush is down.
    Kill,
    /// hush starts again (a no-op while it runs), rooms loaded before or after the lists.
    Start {
        rooms_first: bool,
    },
    /// Everything settles (retries done, sync delivered); the invariants are checked.
    Quiesce,
}

pub fn op() -> impl Strategy<Value = Op> {
    let expiry = prop_oneof![
        3 => Just(None),
        1 => Just(Some(0)),
        1 => Just(Some(1_000)),
        1 => Just(Some(30_000)),
        1 => Just(Some(300_000)),
        1 => Just(Some(3_600_000)),
    ];
    let rec = prop_oneof![2 => Just(Rec::Mute), 2 => Just(Rec::Ban), 1 => Just(Rec::Allow)];
    let fault = prop_oneof![
        1 => Just(FaultKind::RateLimited(100)),
        1 => Just(FaultKind::RateLimited(5_000)),
        1 => Just(FaultKind::RateLimited(60_000)),
        1 => Just(FaultKind::ServerError),
        2 => Just(FaultKind::LostAnswer),
    ];
    prop_oneof![
        24 => (0..3usize, 0..3usize, 0..ENTITIES.len(), rec, expiry)
            .prop_map(|(list, key, entity, rec, expiry)| Op::Rule { list, key, entity, rec, expiry }),
        5 => (0..3usize, 0..3usize).prop_map(|(list, key)| Op::Remove { list, key }),
        3 => (0..3usize, 0..3usize).prop_map(|(list, key)| Op::Redact { list, key }),
        5 => (0..2usize, 0..MOVERS.len()).prop_map(|(room, user)| Op::Join { room, user }),
        5 => (0..2usize, 0..MOVERS.len()).prop_map(|(room, user)| Op::Leave { room, user }),
        5 => (0..2usize, 0..MOVERS.len(), 0..HAND_LEVELS.len())
            .prop_map(|(room, user, l)| Op::SetLevel { room, user, level: HAND_LEVELS[l] }),
        14 => proptest::sample::select(vec![0u64, 100, 1_000, 5_000, 60_000, 700_000]).prop_map(Op::Advance),
        8 => (fault, 1..4usize).prop_map(|(f, n)| Op::Fault(f, n)),
        4 => Just(Op::Kill),
        4 => any::<bool>().prop_map(|rooms_first| Op::Start { rooms_first }),
        5 => Just(Op::Quiesce),
    ]
}

pub fn sequence() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// A rule as the model knows it.
#[derive(Debug, Clone)]
pub struct RuleM {
    pub list: usize,
    pub entity: &'static str,
    pub rec: Rec,
    /// Absolute, ms since the epoch.
    pub expiry: Option<u64>,
}

/// One member of one room, as the model says hush should have left it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// In the room by their own doing (joined and not since gone or banned).
    pub present: bool,
    /// The level the user has apart from hush: the initial one or the moderator's last.
    pub natural: Option<i64>,
    /// hush's mute is on (or being written).
    pub muted: bool,
    /// The moderator changed the level while hush's mute was on: the mute is left alone.
    pub overridden: bool,
    pub banned: bool,
    /// Where the member would be by their own doing (their last join or leave): a ban
    /// lifted before it was sent leaves them there.
    pub intent: bool,
    /// A ban was lifted since the last settle: it may still land (and be lifted) after a
    /// join, so the member may be gone. Cleared when hush has settled.
    pub unsettled: bool,
    /// A lift that may not have been written yet (hush killed, a write waiting): if the
    /// restriction is wanted again first, it stays. Never left at a settle.
    pub lifting: bool,
    /// The mute was wanted since the last settle: its write may still wait (behind a write in
    /// flight), and a ban that comes first lands without it (no mute is added under a ban).
    pub mute_unsettled: bool,
}

/// What the homeserver should show for a member: membership, and the level entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub membership: String,
    pub level: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub rules: BTreeMap<(usize, usize), RuleM>,
    /// (room index, user) -> what the cell may be: one state, or more where the timing
    /// decides (a ban lifted before or after it landed); each look at the room keeps those
    /// that fit.
    pub cells: BTreeMap<(usize, &'static str), Vec<Cell>>,
    /// The model's time (ms since the epoch): transitions up to it are applied.
    pub now: u64,
}

pub fn glob_match(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head) && (0..=s.len() - head.len()).any(|i| glob_match(tail, &s[head.len() + i..]))
        }
    }
}

/// Exact user id 2, user glob 1 (README "Which rule wins").
fn closeness(entity: &str) -> u8 {
    if entity.contains('*') {
        1
    } else {
        2
    }
}

impl Model {
    pub fn new(now: u64) -> Model {
        let mut cells = BTreeMap::new();
        for room in 0..2 {
            for u in USERS {
                // @b1 starts outside R2 (to join later); @a2 has an explicit level in R1.
                let present = !(room == 1 && u == "@b1:x");
                let natural = match (room, u) {
                    (_, MOD) => Some(100),
                    (0, "@a2:x") => Some(10),
                    _ => None,
                };
                cells.insert((room, u), vec![Cell { present, intent: present, natural, ..Cell::default() }]);
            }
        }
        Model { rules: BTreeMap::new(), cells, now }
    }

    /// The naive evaluator: the restriction the rules in force at `now` want for `user`
    /// (None for the users hush must never restrict).
    pub fn wanted(&self, user: &str, now: u64) -> Option<Rec> {
        if [HUSH, MOD, PROTECTED].contains(&user) {
            return None;
        }
        let hits: Vec<&RuleM> =
            self.rules.values().filter(|r| r.expiry.is_none_or(|e| now < e) && glob_match(r.entity, user)).collect();
        hits.iter()
            .filter(|r| r.rec != Rec::Allow)
            .filter(|r| {
                !hits
                    .iter()
                    .any(|a| a.rec == Rec::Allow && (a.list != r.list || closeness(a.entity) > closeness(r.entity)))
            })
            .map(|r| r.rec)
            .max()
    }

    /// A start that loads the rooms first, then the lists one by one: each list acts as it
    /// loads, before the next (README "Lists hush cannot join": the other lists work
    /// meanwhile), so a ban or mute another list overrides may come and go.
    pub fn started_list_by_list(&mut self, at: u64) {
        for loaded in 1..=LISTS.len() {
            let mut partial = Model {
                rules: self.rules.iter().filter(|(k, _)| k.0 < loaded).map(|(k, r)| (*k, r.clone())).collect(),
                cells: std::mem::take(&mut self.cells),
                now: self.now,
            };
            partial.step(at);
            self.cells = partial.cells;
        }
    }

    /// Brings every cell to what the rules want at `at` (hush running).
    pub fn step(&mut self, at: u64) {
        let wanted: BTreeMap<&str, Option<Rec>> = USERS.iter().map(|u| (*u, self.wanted(u, at))).collect();
        for ((room, user), cells) in self.cells.iter_mut() {
            let w = wanted[user];
            let mut next = Vec::new();
            for mut c in cells.drain(..) {
                if c.lifting && w.is_some() {
                    // Wanted again before the lift was written: the restriction stays. A ban
                    // wanted now still lands over a mute that stays (the mute under it is left
                    // as it is).
                    c.lifting = false;
                    if w != Some(Rec::Ban) || c.banned {
                        if !next.contains(&c) {
                            next.push(c);
                        }
                        continue;
                    }
                }
                if w == Some(Rec::Ban) && !c.banned && !c.present && *room == 1 && c.muted {
                    // Gone while muted: `leave-mute` (banned) if the mute had landed, else
                    // `leave` (nothing to do).
                    let never_muted = Cell { muted: false, ..c.clone() };
                    if !next.contains(&never_muted) {
                        next.push(never_muted);
                    }
                }
                if w == Some(Rec::Ban) && !c.banned && !c.present && *room == 0 && c.muted && c.mute_unsettled {
                    // Gone before a power-level mute was written, then a ban wanted: the mute
                    // waiting in its batch is not written (no mute is added under a ban), and
                    // nobody is banned who is not there (soak seed 1796063770656786516).
                    let never_muted = Cell { muted: false, mute_unsettled: false, ..c.clone() };
                    if !next.contains(&never_muted) {
                        next.push(never_muted);
                    }
                }
                if w == Some(Rec::Ban) && !c.banned && (c.present || (*room == 1 && c.muted)) {
                    c.banned = true;
                    c.present = false;
                    if *room == 0 && c.muted && c.mute_unsettled {
                        let never_muted = Cell { muted: false, mute_unsettled: false, ..c.clone() };
                        if !next.contains(&never_muted) {
                            next.push(never_muted);
                        }
                    }
                }
                let mut lifted = Vec::new();
                if w != Some(Rec::Ban) && c.banned {
                    lifted.push(Cell { lifting: true, ..c.clone() });
                    // The ban may never have been sent: the member is as they were.
                    lifted.push(Cell { banned: false, unsettled: true, present: c.intent, ..c.clone() });
                    // Or it landed and is lifted: gone, and in an MSC3909 room the membership
                    // mute under the ban is gone with it (a member who comes back is muted again).
                    c.banned = false;
                    c.unsettled = true;
                    c.present = false;
                    if *room == 1 {
                        c.muted = false;
                    }
                }
                lifted.push(c);
                for mut c in lifted {
                    if c.lifting {
                        if !next.contains(&c) {
                            next.push(c);
                        }
                        continue;
                    }
                    if w == Some(Rec::Mute) && !c.muted && c.present && !c.banned {
                        c.muted = true;
                        c.overridden = false;
                        c.mute_unsettled = true;
                    }
                    if w.is_none() && c.muted {
                        // Not lifted (or, overridden, not forgotten) yet while a write is
                        // in flight: if wanted again first, it stays as it is.
                        let pending = Cell { lifting: true, ..c.clone() };
                        if !next.contains(&pending) {
                            next.push(pending);
                        }
                        c.muted = false;
                        c.overridden = false;
                    }
                    if !next.contains(&c) {
                        next.push(c);
                    }
                }
            }
            *cells = next;
        }
    }

    /// The instants in `(self.now, to]` at which a rule expires, in order.
    pub fn expiries_until(&self, to: u64) -> Vec<u64> {
        let mut out: Vec<u64> =
            self.rules.values().filter_map(|r| r.expiry).filter(|e| *e > self.now && *e <= to).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// What the homeserver may show for `user` in room `room`.
    pub fn expected(&self, room: usize, user: &str) -> Vec<Seen> {
        let mut out: Vec<Seen> = Vec::new();
        for c in &self.cells[&(room, user)] {
            for seen in Self::expected_of(room, c) {
                if !out.contains(&seen) {
                    out.push(seen);
                }
            }
        }
        out
    }

    /// What the homeserver may show for a cell in this state (a muted member who left an
    /// MSC3909 room before the mute landed is `leave`).
    pub fn expected_of(room: usize, c: &Cell) -> Vec<Seen> {
        let seen = |m: &str, level: Option<i64>| Seen { membership: m.to_owned(), level };
        let present = if c.present { "join" } else { "leave" };
        if room == 0 && c.banned {
            // A banned member's mute is left as it is, written or not (README "For moderators").
            vec![seen("ban", Some(MUTED)), seen("ban", c.natural)]
        } else if room == 0 {
            let level = if c.muted && !c.overridden { Some(MUTED) } else { c.natural };
            vec![seen(if c.banned { "ban" } else { present }, level)]
        } else if c.banned {
            vec![seen("ban", c.natural)]
        } else if c.muted && c.present {
            vec![seen("mute", c.natural)]
        } else if c.muted {
            vec![seen("leave-mute", c.natural), seen("leave", c.natural)]
        } else {
            vec![seen(present, c.natural)]
        }
    }
}
