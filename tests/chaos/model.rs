//! The chaos run's model: the rules the moderators wrote, the levels they set by hand, and what the rules ask of each member now (the naive evaluator), plus a small seeded generator.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

/// xorshift64*: small, seeded, replayable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, of: &'a [T]) -> &'a T {
        &of[self.below(of.len() as u64) as usize]
    }
}

/// One user rule in a list, as the moderators wrote it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub list: usize,
    pub key: String,
    pub entity: String,
    pub ban: bool,
    pub expiry: Option<u64>,
}

impl Rule {
    pub fn content(&self) -> Value {
        let mut c = json!({
            "entity": self.entity,
            "recommendation": if self.ban { "m.ban" } else { "m.mute" },
            "reason": "chaos",
        });
        if let Some(e) = self.expiry {
            c["expiry"] = e.into();
        }
        c
    }

    fn active(&self, now: u64) -> bool {
        self.expiry.is_none_or(|e| e > now)
    }
}

/// What the rules ask of a member in every protected room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ban,
    Mute,
    Free,
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Rules in force (or expired), by (list, state key), with their event id.
    rules: BTreeMap<(usize, String), (Rule, String)>,
    next_key: u64,
    /// Never restricted: the moderator, hush, the protected user.
    exempt: Vec<String>,
    /// The level a moderator last set by hand: (room, user) -> level (None: no entry).
    pub hand_levels: HashMap<(String, String), Option<i64>>,
    /// When a moderator last wrote a room's power levels (ms).
    pub hand_write_ms: HashMap<String, u64>,
    /// (room, user) whose entry a moderator's write overwrote: hush changed it between the
    /// moderator's read and write (Matrix has no compare-and-swap), so hush took the
    /// moderator's stale value as their decision. Not judged at the end; counted.
    pub clobbered: std::collections::HashSet<(String, String)>,
    /// A moderator's power-levels writes: (room, user whose level it set, the id of the
    /// event it replaced). One that replaced the same event as one of hush's is a fork of
    /// two concurrent writes, which state resolution settles by keeping one.
    pub hand_writes: Vec<(String, String, String)>,
    /// (room, user) whose hand-set level was in such a fork: not judged; counted.
    pub forked: std::collections::HashSet<(String, String)>,
}

/// Matrix globs: `*` any run, `?` one character.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

impl Model {
    pub fn new(moderator: &str, bot: &str, protected: &str) -> Model {
        Model {
            rules: BTreeMap::new(),
            next_key: 0,
            exempt: vec![moderator.to_owned(), bot.to_owned(), protected.to_owned()],
            hand_levels: HashMap::new(),
            hand_write_ms: HashMap::new(),
            clobbered: Default::default(),
            hand_writes: Vec::new(),
            forked: Default::default(),
        }
    }

    /// A state key never used before: a removed rule's key is never reused, so hush
    /// cannot mistake a new rule for an old one it saw before a kill.
    pub fn fresh_key(&mut self) -> String {
        self.next_key += 1;
        format!("k{}", self.next_key)
    }

    pub fn set(&mut self, rule: Rule, event_id: String) {
        self.rules.insert((rule.list, rule.key.clone()), (rule, event_id));
    }

    pub fn remove(&mut self, list: usize, key: &str) {
        self.rules.remove(&(list, key.to_owned()));
    }

    pub fn event_of(&self, list: usize, key: &str) -> String {
        self.rules.get(&(list, key.to_owned())).map(|(_, e)| e.clone()).unwrap_or_default()
    }

    /// Rules of `list` that may be changed or removed: in force and not about to expire
    /// (an expired rule is never revived, for the same reason keys are not reused).
    pub fn changeable(&self, list: usize, now: u64) -> Vec<Rule> {
        self.rules
            .values()
            .map(|(r, _)| r)
            .filter(|r| r.list == list && r.expiry.is_none_or(|e| e > now + 2_000))
            .cloned()
            .collect()
    }

    /// What the rules ask of `user` at `now`: a ban beats a mute; exempt users are free.
    pub fn expect(&self, user: &str, now: u64) -> Expect {
        if self.exempt.iter().any(|e| e == user) {
            return Expect::Free;
        }
        let mut want = Expect::Free;
        for (r, _) in self.rules.values() {
            if r.active(now) && glob(&r.entity, user) {
                if r.ban {
                    return Expect::Ban;
                }
                want = Expect::Mute;
            }
        }
        want
    }

    /// Whether the user is still restricted at `t`.
    pub fn restriction_lasts(&self, user: &str, t: u64) -> bool {
        self.expect(user, t) != Expect::Free
    }

    /// No rule names the user now (a moderator may then set their level by hand without
    /// overruling a mute of hush's).
    pub fn unnamed(&self, user: &str, now: u64) -> bool {
        !self.rules.values().any(|(r, _)| r.active(now) && glob(&r.entity, user))
    }

    /// The latest expiry of a rule still in force.
    pub fn last_expiry(&self) -> Option<u64> {
        self.rules.values().filter_map(|(r, _)| r.expiry).max()
    }

    pub fn rules_now(&self, now: u64) -> Vec<String> {
        self.rules
            .values()
            .filter(|(r, _)| r.active(now))
            .map(|(r, _)| format!("list {} {}: {} {}", r.list, r.key, r.entity, if r.ban { "ban" } else { "mute" }))
            .collect()
    }
}

#[test]
fn globs_match_as_the_spec_says() {
    assert!(glob("@c1g2?:localhost", "@c1g2a:localhost"));
    assert!(!glob("@c1g2?:localhost", "@c1g20a:localhost"));
    assert!(glob("@*:localhost", "@x:localhost"));
    assert!(!glob("@c1g2?:localhost", "@c1g3a:localhost"));
}
