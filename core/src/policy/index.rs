//! `PolicyIndex`: all watched lists' rules, matching, effective decisions and change detection.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use super::glob::{self, choose_end, is_glob, End, GlobSet, PremixedMap};
use super::rule::{
    classify_event_type, host_without_port, parse_rule, sha256_of, EntityKind, ParseWarning, Recommendation,
    Restriction, Rule, RuleFamily, RuleId, RuleParse,
};

const NONE: u32 = u32::MAX;
/// The winner of a decision: (restriction, internal expiry, slot).
type Winner = (Restriction, u64, u32);
/// Internal expiry of a permanent rule.
const PERMANENT: u64 = u64::MAX;

/// The effective restriction of one user at one time, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Ban or mute.
    pub action: Restriction,
    /// When the winning rule expires (ms since the epoch); `None` = permanent.
    pub expires_at_ms: Option<u64>,
    /// The winning rule (a user rule, or a server rule matching the user's server).
    pub rule: RuleId,
    /// Its reason.
    pub reason: String,
    /// Who sent it.
    pub sender: String,
}

/// A rule [`PolicyIndex::decide_where`] asks about: its identity and what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The list's room id.
    pub list: &'a str,
    pub kind: EntityKind,
    pub state_key: &'a str,
    /// What the rule would do; for an allow rule, the restriction it would lift (it is
    /// asked about once for bans and once for mutes).
    pub restriction: Restriction,
}

/// What applying one state event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A rule was stored (new or replacing one of the same type and state key). It may be
    /// shadowed by a higher-precedence type at the same state key.
    Stored,
    /// A rule existed at this type and state key and was removed (empty content,
    /// redaction, or malformed replacement).
    Removed,
    /// Nothing existed and nothing was stored (removal of an unknown rule, or malformed).
    Nothing,
    /// Not a policy rule event type.
    NotPolicy,
}

/// Result of [`PolicyIndex::apply`] and [`PolicyIndex::remove_list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Tracked users whose [`PolicyIndex::decide`] at the given `now_ms` changed (in
    /// restriction, expiry or provenance), sorted.
    pub changed: Vec<String>,
    /// Every tracked user the old or the new rule matches, changed or not: what a caller
    /// that filters decisions ([`PolicyIndex::decide_where`]) must look at again, since a
    /// rule hidden from it can leave the unfiltered decision as it was.
    pub candidates: Vec<String>,
    /// The parse warning, when the event was a malformed rule.
    pub warning: Option<ParseWarning>,
    /// What happened to the stored rules.
    pub outcome: Outcome,
}

impl Applied {
    fn nothing(outcome: Outcome, warning: Option<ParseWarning>) -> Self {
        Applied { changed: Vec::new(), candidates: Vec::new(), warning, outcome }
    }
}

/// Rule counts of one watched list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCounts {
    /// Rules in force at their identity (user + room + server).
    pub effective: usize,
    /// Legacy-type rules hidden by a higher-precedence type at the same state key.
    pub shadowed: usize,
    /// Effective user rules.
    pub user: usize,
    /// Effective room rules.
    pub room: usize,
    /// Effective server rules.
    pub server: usize,
}

// ---------------------------------------------------------------------------------------
// Compact rule storage

const F_FREE: u8 = 1;
const F_EFFECTIVE: u8 = 2;
const F_ENTITY: u8 = 4;
const F_GLOB: u8 = 8;
const F_HASH_ONLY: u8 = 16;

const REC_BAN: u8 = 0;
const REC_MUTE: u8 = 1;
const REC_TAKEDOWN: u8 = 2;
const REC_OTHER: u8 = 3;
const REC_ALLOW: u8 = 4;

/// One stored rule: 64 bytes plus one heap string (state key; entity unless it is a suffix
/// of the state key; an unknown recommendation; reason) and, for hashed rules, a digest.
#[derive(Debug)]
struct Slot {
    text: Box<str>,
    sha256: Option<Box<[u8; 32]>>,
    expiry: u64,
    list: u32,
    sender: u32,
    /// Next slot with the same identity key.
    next_key: u32,
    /// Next slot in the same exact/hash chain, or the `GlobSet` entry id of a glob.
    next_match: u32,
    /// Offsets into `text` (it is at most `MAX_RULE_TEXT` bytes long).
    sk_end: u16,
    ent_start: u16,
    ent_end: u16,
    /// End of the unknown recommendation (which starts at `max(sk_end, ent_end)`); the
    /// reason follows.
    rec_end: u16,
    kind: u8,
    family: u8,
    rec: u8,
    flags: u8,
}

fn free_slot_value() -> Slot {
    Slot {
        text: Box::from(""),
        sha256: None,
        expiry: 0,
        list: NONE,
        sender: NONE,
        next_key: NONE,
        next_match: NONE,
        sk_end: 0,
        ent_start: 0,
        ent_end: 0,
        rec_end: 0,
        kind: 0,
        family: 0,
        rec: 0,
        flags: F_FREE,
    }
}

impl Slot {
    fn state_key(&self) -> &str {
        self.text.get(..usize::from(self.sk_end)).unwrap_or("")
    }
    fn entity(&self) -> Option<&str> {
        (self.flags & F_ENTITY != 0)
            .then(|| self.text.get(usize::from(self.ent_start)..usize::from(self.ent_end)))
            .flatten()
    }
    fn other_recommendation(&self) -> &str {
        let start = usize::from(self.sk_end.max(self.ent_end));
        self.text.get(start..usize::from(self.rec_end)).unwrap_or("")
    }
    fn reason(&self) -> &str {
        self.text.get(usize::from(self.rec_end)..).unwrap_or("")
    }
    fn kind(&self) -> EntityKind {
        EntityKind::ALL[usize::from(self.kind).min(2)]
    }
    fn restriction(&self) -> Option<Restriction> {
        match self.rec {
            REC_BAN | REC_TAKEDOWN => Some(Restriction::Ban),
            REC_MUTE => Some(Restriction::Mute),
            _ => None,
        }
    }
    fn is_allow(&self) -> bool {
        self.rec == REC_ALLOW
    }
    /// How closely the rule names a user, for an allow and a restriction of the same list:
    /// an exact user id or hash (2), a user glob (1), a server rule (0).
    fn specificity(&self) -> u8 {
        match self.kind() {
            EntityKind::User if self.has(F_GLOB) => 1,
            EntityKind::User => 2,
            _ => 0,
        }
    }
    fn active(&self, now_ms: u64) -> bool {
        self.expiry == PERMANENT || now_ms < self.expiry
    }
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Slots in fixed-size chunks: growing never copies and wastes at most one chunk, where a
/// doubling `Vec` would leave up to half its capacity unused.
#[derive(Debug, Default)]
struct Slab {
    chunks: Vec<Vec<Slot>>,
    len: u32,
}

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

impl Slab {
    fn get(&self, s: u32) -> Option<&Slot> {
        self.chunks.get((s >> CHUNK_BITS) as usize)?.get(s as usize & (CHUNK - 1))
    }
    fn get_mut(&mut self, s: u32) -> Option<&mut Slot> {
        self.chunks.get_mut((s >> CHUNK_BITS) as usize)?.get_mut(s as usize & (CHUNK - 1))
    }
    fn push(&mut self, slot: Slot) -> u32 {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(slot);
        }
        self.len += 1;
        self.len - 1
    }
    fn iter(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.chunks.iter().flatten().enumerate().map(|(i, s)| (i as u32, s))
    }
}

// Slot ids are internal (handed out by `push`, never taken from events).
impl std::ops::Index<u32> for Slab {
    type Output = Slot;
    fn index(&self, s: u32) -> &Slot {
        &self.chunks[(s >> CHUNK_BITS) as usize][s as usize & (CHUNK - 1)]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    fn index_mut(&mut self, s: u32) -> &mut Slot {
        &mut self.chunks[(s >> CHUNK_BITS) as usize][s as usize & (CHUNK - 1)]
    }
}

/// Reference-counted string table of rule senders (few distinct values).
#[derive(Debug, Default)]
struct Strings {
    ids: HashMap<Box<str>, u32>,
    items: Vec<(Box<str>, u32)>,
    free: Vec<u32>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            self.items[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.items[id as usize] = (Box::from(s), 1);
                id
            }
            None => {
                self.items.push((Box::from(s), 1));
                (self.items.len() - 1) as u32
            }
        };
        self.ids.insert(Box::from(s), id);
        id
    }
    fn get(&self, id: u32) -> &str {
        self.items.get(id as usize).map_or("", |e| &e.0)
    }
    fn release(&mut self, id: u32) {
        let Some(item) = self.items.get_mut(id as usize) else {
            return;
        };
        item.1 = item.1.saturating_sub(1);
        if item.1 == 0 {
            let s = std::mem::take(&mut item.0);
            self.ids.remove(&s);
            self.free.push(id);
        }
    }
}

/// Keyed SipHash of identities and entities, truncated to 32 bits: collisions only cost a
/// chain step (every chain entry is verified) and cannot be forced without the key.
#[derive(Debug, Clone)]
struct Keyer(RandomState);

impl Keyer {
    fn folded(&self, s: &str) -> u32 {
        let mut h = self.0.build_hasher();
        let mut buf = [0u8; 64];
        for chunk in s.as_bytes().chunks(64) {
            for (d, &b) in buf.iter_mut().zip(chunk) {
                *d = b.to_ascii_lowercase();
            }
            h.write(&buf[..chunk.len()]);
        }
        h.finish() as u32
    }
    fn identity(&self, list: u32, kind: EntityKind, state_key: &str) -> u32 {
        let mut h = self.0.build_hasher();
        h.write_u32(list);
        h.write_u8(kind as u8);
        h.write(state_key.as_bytes());
        h.finish() as u32
    }
    fn digest(&self, d: &[u8; 32]) -> u32 {
        let mut h = self.0.build_hasher();
        h.write(d);
        h.finish() as u32
    }
}

/// Per-kind matching structures; only effective slots are in them.
#[derive(Debug, Default)]
struct KindIndex {
    /// Keyed hash of the lower-cased entity -> chain of exact-entity slots.
    exact: PremixedMap<u32, u32>,
    /// Keyed hash of the digest -> chain of hash-only slots.
    hashed: PremixedMap<u32, u32>,
    globs: GlobSet,
}

// ---------------------------------------------------------------------------------------
// Tracked users

/// A user id ordered ASCII-case-insensitively (ties broken by raw bytes), so that all case
/// variants of an id, and all ids sharing a folded prefix, are contiguous.
#[derive(Debug, Clone)]
struct Folded(Arc<str>);

fn cmp_folded(a: &[u8], b: &[u8]) -> Ordering {
    // Skip the part that folds equally eight bytes at a time: ids sharing a long prefix
    // (such as `@aaaa…`) would otherwise be folded and compared byte by byte at every step
    // of a tree search.
    let mut i = 0;
    while let (Some(x), Some(y)) = (a.get(i..i + 8), b.get(i..i + 8)) {
        let (x, y) = (word(x), word(y));
        if x != y && lower8(x) != lower8(y) {
            break;
        }
        i += 8;
    }
    a[i..].iter().map(u8::to_ascii_lowercase).cmp(b[i..].iter().map(u8::to_ascii_lowercase)).then_with(|| a.cmp(b))
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// `to_ascii_lowercase` of each of eight bytes at once.
fn lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = x & (0x7f * ONES);
    // High bit of each byte: set if its low 7 bits are >= 'A', and if they are > 'Z'.
    let ge_a = low7 + (0x80 - u64::from(b'A')) * ONES;
    let gt_z = low7 + (0x7f - u64::from(b'Z')) * ONES;
    let upper = (ge_a ^ gt_z) & !x & (0x80 * ONES);
    x | (upper >> 2)
}

impl Ord for Folded {
    fn cmp(&self, o: &Self) -> Ordering {
        cmp_folded(self.0.as_bytes(), o.0.as_bytes())
    }
}
impl PartialOrd for Folded {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Folded {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for Folded {}

/// A user id with its bytes reversed, ordered like [`Folded`]: ids sharing a suffix are
/// contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reversed(Box<[u8]>);

impl Ord for Reversed {
    fn cmp(&self, o: &Self) -> Ordering {
        cmp_folded(&self.0, &o.0)
    }
}
impl PartialOrd for Reversed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn reversed(s: &[u8]) -> Box<[u8]> {
    s.iter().rev().copied().collect()
}

#[derive(Debug, Default)]
struct Tracked {
    fwd: BTreeSet<Folded>,
    rev: BTreeSet<Reversed>,
    /// Lower-cased server name -> number of tracked users on it.
    servers: HashMap<Box<str>, u32>,
    /// SHA-256 of the user id -> user; built on first use by a hashed user rule.
    by_digest: Option<HashMap<[u8; 32], Arc<str>>>,
    /// Lower-cased ids, each followed by `\n`, for a SIMD substring search when a glob has
    /// no anchor. Append-only: untracked ids stay until compaction, so every hit is
    /// confirmed against `fwd`.
    blob: Vec<u8>,
    stale: usize,
    /// Ids containing `\n` (they cannot go in the blob; not seen in practice).
    odd: Vec<Arc<str>>,
}

impl Tracked {
    /// Users whose lower-cased id starts with `prefix` (any case).
    fn with_prefix(&self, prefix: &[u8], out: &mut Vec<Arc<str>>, filter: impl Fn(&str) -> bool) {
        let probe = Folded(Arc::from(String::from_utf8_lossy(&prefix.to_ascii_uppercase()).as_ref()));
        for u in self.fwd.range(probe..) {
            let b = u.0.as_bytes();
            if b.len() < prefix.len() || !b[..prefix.len()].eq_ignore_ascii_case(prefix) {
                break;
            }
            if filter(&u.0) {
                out.push(u.0.clone());
            }
        }
    }

    /// Users whose id ends with `suffix` (any case).
    fn with_suffix(&self, suffix: &[u8], out: &mut Vec<Arc<str>>, filter: impl Fn(&str) -> bool) {
        let want = reversed(&suffix.to_ascii_uppercase());
        let n = want.len();
        for u in self.rev.range(Reversed(want.clone())..) {
            if u.0.len() < n || !u.0[..n].eq_ignore_ascii_case(&want) {
                break;
            }
            let Ok(id) = String::from_utf8(u.0.iter().rev().copied().collect()) else {
                continue;
            };
            if filter(&id) {
                out.push(Arc::from(id));
            }
        }
    }

    fn add(&mut self, id: &Arc<str>) {
        if id.contains('\n') {
            self.odd.push(id.clone());
        } else {
            self.blob.extend(id.bytes().map(|b| b.to_ascii_lowercase()));
            self.blob.push(b'\n');
        }
    }

    fn remove(&mut self, id: &str) {
        if id.contains('\n') {
            self.odd.retain(|o| &**o != id);
            return;
        }
        self.stale += 1;
        if self.stale > self.fwd.len() + 1024 {
            self.blob.clear();
            self.stale = 0;
            let ids: Vec<Arc<str>> = self.fwd.iter().filter(|u| !u.0.contains('\n')).map(|u| u.0.clone()).collect();
            for id in &ids {
                self.add(id);
            }
            self.blob.shrink_to_fit();
        }
    }

    /// Users whose lower-cased id contains `fragment` (lower-case, non-empty) and pass
    /// `filter`: one memmem pass over the blob instead of a walk over every id.
    /// Linear in the blob: after a hit the search resumes at the next line, so an id
    /// holding the fragment many times (`aa` in `@aaaa…`) is looked at once, and every
    /// byte is scanned once (the line's start is searched for back to where the search
    /// began, which is always the start of a line).
    fn containing(&self, fragment: &[u8], out: &mut Vec<Arc<str>>, filter: impl Fn(&str) -> bool) {
        let blob = &self.blob;
        let finder = memchr::memmem::Finder::new(fragment);
        let mut from = 0;
        while let Some(hit) = blob.get(from..).and_then(|rest| finder.find(rest)) {
            let pos = from + hit;
            let start = memchr::memrchr(b'\n', &blob[from..pos]).map_or(from, |i| from + i + 1);
            let end = memchr::memchr(b'\n', &blob[pos..]).map_or(blob.len(), |i| pos + i);
            glob::work::steps(end + 1 - from);
            from = end + 1;
            let Ok(line) = std::str::from_utf8(&blob[start..end]) else {
                continue;
            };
            if filter(line) {
                // Expand to the tracked ids with this lower-cased form (any case).
                self.with_prefix(line.as_bytes(), out, |u| u.len() == line.len());
            }
        }
        out.extend(self.odd.iter().filter(|u| filter(u)).cloned());
    }

    fn all(&self, out: &mut Vec<Arc<str>>, filter: impl Fn(&str) -> bool) {
        out.extend(self.fwd.iter().filter(|u| filter(&u.0)).map(|u| u.0.clone()));
    }
}

/// The longest literal run of a glob, lower-cased (`None` if it is all wildcards).
fn longest_fragment(pattern: &str) -> Option<Vec<u8>> {
    pattern
        .as_bytes()
        .split(|&b| b == b'*' || b == b'?')
        .max_by_key(|f| f.len())
        .filter(|f| !f.is_empty())
        .map(<[u8]>::to_ascii_lowercase)
}

fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, s)| s)
}

/// What a rule matches, borrowed either from a parsed [`Rule`] or from a stored slot.
#[derive(Debug, Clone, Copy)]
struct Matcher<'a> {
    kind: EntityKind,
    entity: Option<&'a str>,
    sha256: Option<&'a [u8; 32]>,
}

impl Matcher<'_> {
    /// Whether this rule matches an entity of its kind (servers: lower-cased server name).
    fn matches(&self, entity: &str) -> bool {
        match self.entity {
            Some(e) if is_glob(e) => super::glob::glob_match(e, entity),
            Some(e) => e.eq_ignore_ascii_case(entity),
            None => self.sha256.is_some_and(|d| *d == sha256_of(&hash_form(self.kind, entity))),
        }
    }
}

/// The string hashed for MSC4205: user ids exactly, server names lower-cased.
fn hash_form(kind: EntityKind, entity: &str) -> std::borrow::Cow<'_, str> {
    if kind == EntityKind::Server {
        std::borrow::Cow::Owned(entity.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(entity)
    }
}

// ---------------------------------------------------------------------------------------
// The index

/// Rules of all watched policy lists, indexed for matching. See the module documentation
/// of [`crate::policy`] for the semantics.
#[derive(Debug)]
pub struct PolicyIndex {
    keyer: Keyer,
    slots: Slab,
    free: Vec<u32>,
    /// Identity key (list, kind, state_key) -> chain of slots (one per type family).
    ids: PremixedMap<u32, u32>,
    kinds: [KindIndex; 3],
    lists: Vec<Option<Box<str>>>,
    list_ids: HashMap<Box<str>, u32>,
    strings: Strings,
    /// (expiry, slot) of effective user/server rules that restrict or allow, with an expiry.
    expiring: BTreeSet<(u64, u32)>,
    /// Effective user/server allow rules: while there are none, a decision is the best
    /// restriction alone (no allow to look for).
    allows: usize,
    tracked: Tracked,
    stored: usize,
}

impl Default for PolicyIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyIndex {
    /// An empty index.
    pub fn new() -> Self {
        PolicyIndex {
            keyer: Keyer(RandomState::new()),
            slots: Slab::default(),
            free: Vec::new(),
            ids: PremixedMap::default(),
            kinds: Default::default(),
            lists: Vec::new(),
            list_ids: HashMap::new(),
            strings: Strings::default(),
            expiring: BTreeSet::new(),
            allows: 0,
            tracked: Tracked::default(),
            stored: 0,
        }
    }

    /// Apply one state event of a policy room (set, replace or remove a rule) and return
    /// which tracked users' decision at `now_ms` changed. Non-policy event types are
    /// ignored. Cost: O(1) for the rule itself, plus, when users are tracked, a decision
    /// for each tracked user matched by the old or new rule (found through an exact
    /// lookup, a prefix/suffix range of the tracked set, or for unanchored globs a SIMD
    /// substring search of all tracked ids for the glob's longest literal; a server rule
    /// tests the distinct servers of tracked users), and a second one only for those the
    /// old rule decided. Start-up tip: apply the lists' state before tracking users, then
    /// nothing needs re-deciding.
    pub fn apply(
        &mut self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        sender: &str,
        content: &Value,
        now_ms: u64,
    ) -> Applied {
        let Some((family, kind)) = classify_event_type(event_type) else {
            return Applied::nothing(Outcome::NotPolicy, None);
        };
        let (rule, warning) = match parse_rule(room_id, event_type, state_key, sender, content) {
            RuleParse::Rule(r) => (Some(r), None),
            RuleParse::Removed => (None, None),
            RuleParse::Ignored(w) => (None, Some(w)),
            RuleParse::NotPolicy => return Applied::nothing(Outcome::NotPolicy, None),
        };
        let list = match (&rule, self.list_ids.get(room_id)) {
            (_, Some(&l)) => l,
            (Some(_), None) => self.intern_list(room_id),
            (None, None) => return Applied::nothing(Outcome::Nothing, warning),
        };
        let key = self.keyer.identity(list, kind, state_key);
        let existing = self.find(key, list, kind, state_key, Some(family));
        if existing.is_none() && rule.is_none() {
            return Applied::nothing(Outcome::Nothing, warning);
        }
        let old_eff = self.find(key, list, kind, state_key, None);
        // The family in force afterwards: the best of the others, and the new rule's.
        let others_best = self.best_family_except(key, list, kind, state_key, family);
        let new_is_eff = rule.is_some() && others_best.is_none_or(|f| family < f);

        // Tracked users that may change: those matched by the rule in force before and by
        // the one in force after.
        let mut cands: Vec<Arc<str>> = Vec::new();
        let track = !self.tracked.fwd.is_empty() && kind != EntityKind::Room;
        if track {
            let affects_eff = old_eff == existing || new_is_eff;
            if affects_eff {
                if let Some(s) = old_eff {
                    self.tracked_matching(self.slot_matcher(s), &mut cands);
                }
                if new_is_eff {
                    if let Some(r) = &rule {
                        let m = Matcher { kind, entity: r.entity.as_deref(), sha256: r.sha256.as_ref() };
                        self.prepare_digest_map(m);
                        self.tracked_matching(m, &mut cands);
                    }
                } else if old_eff == existing {
                    // The removed rule was in force; a shadowed one takes over.
                    if let Some(f) = others_best {
                        if let Some(s) = self.find(key, list, kind, state_key, Some(f)) {
                            self.tracked_matching(self.slot_matcher(s), &mut cands);
                        }
                    }
                }
            }
            cands.sort_unstable();
            cands.dedup();
        }
        // An allow rule entering or leaving, or any allow in force (which may lift the
        // entering rule), breaks "the best restriction wins": compare whole decisions.
        let whole = self.allows > 0
            || rule.as_ref().is_some_and(|r| r.recommendation == Recommendation::Allow)
            || self.identity_has_allow(key, list, kind, state_key);
        let before_whole: Vec<Option<Decision>> =
            if whole { cands.iter().map(|u| self.decide(u, now_ms)).collect() } else { Vec::new() };
        let before: Vec<Option<Winner>> =
            if whole { Vec::new() } else { cands.iter().map(|u| self.winner(u, now_ms, |_| true)).collect() };
        // What the decision of a candidate decided by the leaving rule was; the others are
        // compared slot to slot below.
        let before_old: Vec<Option<Decision>> =
            before.iter().map(|w| w.filter(|w| Some(w.2) == old_eff).map(|w| self.decision(w))).collect();

        // Mutate.
        if let Some(s) = old_eff {
            self.unindex(s);
        }
        if let Some(s) = existing {
            self.free_slot(key, s);
        }
        let outcome = match (rule, existing) {
            (Some(r), _) => {
                self.store(key, list, r);
                Outcome::Stored
            }
            (None, Some(_)) => Outcome::Removed,
            (None, None) => Outcome::Nothing,
        };
        let new_eff = self.find(key, list, kind, state_key, None);
        if let Some(s) = new_eff {
            self.index(s);
        }

        // Only the rule in force at this identity left the matching structures and only
        // the one in force now entered them. A user the leaving rule did not decide keeps
        // the same winner unless the entering rule beats it: one match, not a decision.
        if whole {
            let changed = cands
                .iter()
                .zip(before_whole)
                .filter(|(u, b)| self.decide(u, now_ms) != *b)
                .map(|(u, _)| u.to_string())
                .collect();
            let candidates = cands.iter().map(|u| u.to_string()).collect();
            return Applied { changed, candidates, warning, outcome };
        }
        let changed = cands
            .iter()
            .zip(before.into_iter().zip(before_old))
            .filter(|(u, (b, b_old))| match b_old {
                // Decided by the rule that left: decide again.
                Some(old) => self.decide(u, now_ms).as_ref() != Some(old),
                // Otherwise the winner stays unless the entering rule beats it.
                None => new_eff.is_some_and(|n| self.applies_to_user(n, u) && self.better(*b, n, now_ms) != *b),
            })
            .map(|(u, _)| u.to_string())
            .collect();
        let candidates = cands.iter().map(|u| u.to_string()).collect();
        Applied { changed, candidates, warning, outcome }
    }

    /// Forget every rule of a list (when it is unwatched). Returns the tracked users whose
    /// decision at `now_ms` changed. Cost: one pass over the slots; up to 1,000 rules in
    /// force, only the tracked users they match are re-decided, beyond that every tracked
    /// user is (about 30 ms per 100,000 users, twice).
    pub fn remove_list(&mut self, room_id: &str, now_ms: u64) -> Applied {
        let Some(list) = self.list_ids.get(room_id).copied() else {
            return Applied::nothing(Outcome::Nothing, None);
        };
        let slots: Vec<u32> =
            self.slots.iter().filter(|(_, sl)| !sl.has(F_FREE) && sl.list == list).map(|(s, _)| s).collect();
        let mut cands = Vec::new();
        if !self.tracked.fwd.is_empty() {
            let effective = slots.iter().filter(|&&s| self.slots[s].has(F_EFFECTIVE)).count();
            if effective > 1000 {
                self.tracked.all(&mut cands, |_| true);
            } else {
                for &s in &slots {
                    let sl = &self.slots[s];
                    if sl.has(F_EFFECTIVE) && sl.kind() != EntityKind::Room {
                        self.tracked_matching(self.slot_matcher(s), &mut cands);
                    }
                }
                cands.sort_unstable();
                cands.dedup();
            }
        }
        let before: Vec<Option<Decision>> = cands.iter().map(|u| self.decide(u, now_ms)).collect();
        for &s in &slots {
            if self.slots[s].has(F_EFFECTIVE) {
                self.unindex(s);
            }
        }
        for &s in &slots {
            let sl = &self.slots[s];
            let key = self.keyer.identity(list, sl.kind(), sl.state_key());
            self.free_slot(key, s);
        }
        self.list_ids.remove(room_id);
        if let Some(l) = self.lists.get_mut(list as usize) {
            *l = None;
        }
        let changed = cands
            .iter()
            .zip(before)
            .filter(|(u, b)| self.decide(u, now_ms) != *b)
            .map(|(u, _)| u.to_string())
            .collect();
        let candidates = cands.iter().map(|u| u.to_string()).collect();
        let outcome = if slots.is_empty() { Outcome::Nothing } else { Outcome::Removed };
        Applied { changed, candidates, warning: None, outcome }
    }

    /// The effective decision for `user_id` at `now_ms`: the strongest active restriction
    /// among the user rules matching the id and the server rules matching its server part
    /// (ban beats mute; within one restriction the latest expiry wins and permanent beats
    /// any expiry; remaining ties go to the smallest (room, kind, state key)), leaving out
    /// those an active allow rule lifts (one of another list, or of the same list naming
    /// the user more closely).
    pub fn decide(&self, user_id: &str, now_ms: u64) -> Option<Decision> {
        self.winner(user_id, now_ms, |_| true).map(|w| self.decision(w))
    }

    /// [`PolicyIndex::decide`] among the rules `allow` accepts: per-list trust (a list that
    /// may not ban), rules a moderator has not confirmed yet. A rule refused here is as if
    /// it did not exist, so a weaker rule from elsewhere can decide instead.
    pub fn decide_where(&self, user_id: &str, now_ms: u64, allow: impl Fn(Candidate<'_>) -> bool) -> Option<Decision> {
        self.winner(user_id, now_ms, allow).map(|w| self.decision(w))
    }

    /// The winning slot of [`PolicyIndex::decide_where`].
    fn winner(&self, user_id: &str, now_ms: u64, allow: impl Fn(Candidate<'_>) -> bool) -> Option<Winner> {
        if self.allows > 0 {
            return self.winner_with_allows(user_id, now_ms, allow);
        }
        let mut best: Option<Winner> = None;
        let mut consider = |s: u32| {
            if let Some(sl) = self.slots.get(s) {
                if let Some(restriction) = sl.restriction() {
                    let list = self.lists.get(sl.list as usize).and_then(|l| l.as_deref()).unwrap_or_default();
                    if !allow(Candidate { list, kind: sl.kind(), state_key: sl.state_key(), restriction }) {
                        return;
                    }
                }
            }
            best = self.better(best, s, now_ms)
        };
        self.for_each_match(EntityKind::User, user_id, &mut consider);
        if let Some(server) = server_of(user_id) {
            self.for_each_match(EntityKind::Server, server, &mut consider);
            if let Some(host) = host_without_port(server) {
                self.for_each_match(EntityKind::Server, host, &mut consider);
            }
        }
        best
    }

    /// [`PolicyIndex::winner`] when allow rules exist: the restrictions matching the user
    /// that `accept` takes and no accepted allow lifts. An allow is asked about as a
    /// candidate once per restriction (does its list have the right to lift a ban? a
    /// mute?); it lifts that restriction from every other list, and from its own list when
    /// it names the user more closely ([`Slot::specificity`]: on a tie the restriction stays).
    fn winner_with_allows(&self, user_id: &str, now_ms: u64, accept: impl Fn(Candidate<'_>) -> bool) -> Option<Winner> {
        let mut restricting: Vec<u32> = Vec::new();
        // (slot, lifts bans, lifts mutes)
        let mut allowing: Vec<(u32, bool, bool)> = Vec::new();
        let mut collect = |s: u32| {
            let Some(sl) = self.slots.get(s) else { return };
            if !sl.active(now_ms) {
                return;
            }
            let list = self.list_name(sl.list);
            let candidate = |restriction| Candidate { list, kind: sl.kind(), state_key: sl.state_key(), restriction };
            if sl.is_allow() {
                let (ban, mute) = (accept(candidate(Restriction::Ban)), accept(candidate(Restriction::Mute)));
                if ban || mute {
                    allowing.push((s, ban, mute));
                }
            } else if let Some(r) = sl.restriction() {
                if accept(candidate(r)) {
                    restricting.push(s);
                }
            }
        };
        self.for_each_match(EntityKind::User, user_id, &mut collect);
        if let Some(server) = server_of(user_id) {
            self.for_each_match(EntityKind::Server, server, &mut collect);
            if let Some(host) = host_without_port(server) {
                self.for_each_match(EntityKind::Server, host, &mut collect);
            }
        }
        let mut best = None;
        for s in restricting {
            let sl = &self.slots[s];
            let lifted = allowing.iter().any(|&(a, ban, mute)| {
                let al = &self.slots[a];
                let may = match sl.restriction() {
                    Some(Restriction::Ban) => ban,
                    Some(Restriction::Mute) => mute,
                    None => false,
                };
                may && (al.list != sl.list || al.specificity() > sl.specificity())
            });
            if !lifted {
                best = self.better(best, s, now_ms);
            }
        }
        best
    }

    /// The earliest expiry after `now_ms` of the allow rules matching `user_id` that
    /// `accept` takes (for a ban or a mute): when lifted restrictions may come back. Their
    /// decision says nothing of it (nothing applies), so a timer must ask here.
    pub fn allow_expiry_for(&self, user_id: &str, now_ms: u64, accept: impl Fn(Candidate<'_>) -> bool) -> Option<u64> {
        if self.allows == 0 {
            return None;
        }
        let mut next: Option<u64> = None;
        let mut consider = |s: u32| {
            let Some(sl) = self.slots.get(s) else { return };
            if !sl.is_allow() || sl.expiry == PERMANENT || !sl.active(now_ms) {
                return;
            }
            let list = self.list_name(sl.list);
            let candidate = |restriction| Candidate { list, kind: sl.kind(), state_key: sl.state_key(), restriction };
            if accept(candidate(Restriction::Ban)) || accept(candidate(Restriction::Mute)) {
                next = Some(next.map_or(sl.expiry, |n| n.min(sl.expiry)));
            }
        };
        self.for_each_match(EntityKind::User, user_id, &mut consider);
        if let Some(server) = server_of(user_id) {
            self.for_each_match(EntityKind::Server, server, &mut consider);
            if let Some(host) = host_without_port(server) {
                self.for_each_match(EntityKind::Server, host, &mut consider);
            }
        }
        next
    }

    /// `best`, or slot `s` if it restricts, is active and beats it.
    fn better(&self, best: Option<Winner>, s: u32, now_ms: u64) -> Option<Winner> {
        let Some(sl) = self.slots.get(s) else {
            return best;
        };
        let Some(r) = sl.restriction() else {
            return best;
        };
        if !sl.active(now_ms) {
            return best;
        }
        let wins = match best {
            None => true,
            Some((br, be, bs)) => match (r, sl.expiry).cmp(&(br, be)) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => self.tie_break(s, bs) == Ordering::Less,
            },
        };
        if wins {
            Some((r, sl.expiry, s))
        } else {
            best
        }
    }

    fn decision(&self, (action, expiry, s): Winner) -> Decision {
        let sl = &self.slots[s];
        Decision {
            action,
            expires_at_ms: (expiry != PERMANENT).then_some(expiry),
            rule: self.rule_id(sl),
            reason: sl.reason().to_owned(),
            sender: self.strings.get(sl.sender).to_owned(),
        }
    }

    /// Whether the effective slot `s` takes part in `user_id`'s decision: a user rule
    /// matching the id, a server rule matching its server part (with or without port).
    fn applies_to_user(&self, s: u32, user_id: &str) -> bool {
        let m = self.slot_matcher(s);
        match m.kind {
            EntityKind::User => m.matches(user_id),
            EntityKind::Server => server_of(user_id)
                .is_some_and(|srv| m.matches(srv) || host_without_port(srv).is_some_and(|h| m.matches(h))),
            EntityKind::Room => false,
        }
    }

    /// Effective rules of any recommendation matching `entity` of `kind` (a user id, a room
    /// id or alias, a server name) and active at `now_ms`. For users this is the user
    /// rules only (see [`PolicyIndex::decide`] for the combined decision).
    pub fn rules_matching(&self, kind: EntityKind, entity: &str, now_ms: u64) -> Vec<Rule> {
        let mut slots = Vec::new();
        self.for_each_match(kind, entity, |s| {
            if self.slots.get(s).is_some_and(|sl| sl.active(now_ms)) {
                slots.push(s);
            }
        });
        slots.sort_unstable();
        slots.dedup();
        let mut rules: Vec<Rule> = slots.into_iter().map(|s| self.rule_of(s)).collect();
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        rules
    }

    /// The earliest expiry strictly after `now_ms` among effective user and server rules
    /// that ban, mute or allow: when the next decision may change by itself.
    pub fn next_expiry_after(&self, now_ms: u64) -> Option<u64> {
        self.expiring.range((Bound::Excluded((now_ms, u32::MAX)), Bound::Unbounded)).next().map(|e| e.0)
    }

    /// Effective user/server ban, mute or allow rules expiring in `(from_ms, to_ms]`, by expiry.
    pub fn rules_expiring(&self, from_ms: u64, to_ms: u64) -> Vec<(u64, RuleId)> {
        if to_ms <= from_ms {
            return Vec::new();
        }
        self.expiring
            .range((Bound::Excluded((from_ms, u32::MAX)), Bound::Included((to_ms, u32::MAX))))
            .map(|&(t, s)| (t, self.rule_id(&self.slots[s])))
            .collect()
    }

    /// Tracked users whose decision differs between `from_ms` and `to_ms` because rules
    /// expired in `(from_ms, to_ms]` (for the timer path), sorted.
    pub fn changes_between(&self, from_ms: u64, to_ms: u64) -> Vec<String> {
        if to_ms <= from_ms {
            return Vec::new();
        }
        let mut cands = Vec::new();
        for &(_, s) in self.expiring.range((Bound::Excluded((from_ms, u32::MAX)), Bound::Included((to_ms, u32::MAX)))) {
            self.tracked_matching(self.slot_matcher(s), &mut cands);
        }
        cands.sort_unstable();
        cands.dedup();
        cands.iter().filter(|u| self.decide(u, from_ms) != self.decide(u, to_ms)).map(|u| u.to_string()).collect()
    }

    /// Tracked users matched by the effective rule `id` (for a user rule: by its entity or
    /// hash; for a server rule: users on matching servers; room rules: none), sorted.
    pub fn tracked_users_matching(&self, id: &RuleId) -> Vec<String> {
        let Some(&list) = self.list_ids.get(id.room_id.as_str()) else {
            return Vec::new();
        };
        let key = self.keyer.identity(list, id.kind, &id.state_key);
        let Some(s) = self.find(key, list, id.kind, &id.state_key, None) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let m = self.slot_matcher(s);
        if m.kind == EntityKind::User && m.entity.is_none() && self.tracked.by_digest.is_none() {
            // The digest map is built lazily by `apply`; scan instead of mutating here.
            self.tracked.all(&mut out, |u| m.matches(u));
        } else {
            self.tracked_matching(m, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out.into_iter().map(|u| u.to_string()).collect()
    }

    /// The effective rule with this identity.
    pub fn rule(&self, id: &RuleId) -> Option<Rule> {
        let &list = self.list_ids.get(id.room_id.as_str())?;
        let key = self.keyer.identity(list, id.kind, &id.state_key);
        self.find(key, list, id.kind, &id.state_key, None).map(|s| self.rule_of(s))
    }

    /// Every stored rule as `(rule, in_force)`: `in_force` is false for a legacy-type rule
    /// shadowed at its identity. No particular order; allocates one [`Rule`] per item
    /// (meant for status and persistence, not hot paths).
    pub fn rules(&self) -> impl Iterator<Item = (Rule, bool)> + '_ {
        self.slots.iter().filter(|(_, sl)| !sl.has(F_FREE)).map(|(s, sl)| (self.rule_of(s), sl.has(F_EFFECTIVE)))
    }

    /// The server rules in force (not shadowed at their identity), active or not: what the
    /// server ACLs are built from. Allocates one [`Rule`] per server rule only; user and
    /// room rules are skipped by their slot's kind.
    pub fn server_rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.slots
            .iter()
            .filter(|(_, sl)| !sl.has(F_FREE) && sl.has(F_EFFECTIVE) && sl.kind() == EntityKind::Server)
            .map(|(s, _)| self.rule_of(s))
    }

    /// Number of stored rules (effective and shadowed).
    pub fn len(&self) -> usize {
        self.stored
    }

    /// Whether no rule is stored.
    pub fn is_empty(&self) -> bool {
        self.stored == 0
    }

    /// Rule counts per watched list (lists with at least one stored rule), by room id.
    pub fn list_counts(&self) -> Vec<(String, ListCounts)> {
        let mut counts: Vec<ListCounts> = vec![ListCounts::default(); self.lists.len()];
        for (_, sl) in self.slots.iter().filter(|(_, s)| !s.has(F_FREE)) {
            let Some(c) = counts.get_mut(sl.list as usize) else {
                continue;
            };
            if sl.has(F_EFFECTIVE) {
                c.effective += 1;
                match sl.kind() {
                    EntityKind::User => c.user += 1,
                    EntityKind::Room => c.room += 1,
                    EntityKind::Server => c.server += 1,
                }
            } else {
                c.shadowed += 1;
            }
        }
        let mut out: Vec<(String, ListCounts)> = self
            .lists
            .iter()
            .zip(counts)
            .filter_map(|(l, c)| l.as_ref().map(|l| (l.to_string(), c)))
            .filter(|(_, c)| c.effective + c.shadowed > 0)
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Add a user (a member of a protected room) to the set whose changes `apply` reports.
    /// Returns false if already tracked.
    pub fn track_user(&mut self, user_id: &str) -> bool {
        let id: Arc<str> = Arc::from(user_id);
        if !self.tracked.fwd.insert(Folded(id.clone())) {
            return false;
        }
        self.tracked.rev.insert(Reversed(reversed(user_id.as_bytes())));
        self.tracked.add(&id);
        if let Some(server) = server_of(user_id) {
            *self.tracked.servers.entry(Box::from(server.to_ascii_lowercase())).or_insert(0) += 1;
        }
        if let Some(map) = &mut self.tracked.by_digest {
            map.insert(sha256_of(user_id), id);
        }
        true
    }

    /// Stop tracking a user. Returns false if it was not tracked.
    pub fn untrack_user(&mut self, user_id: &str) -> bool {
        if !self.tracked.fwd.remove(&Folded(Arc::from(user_id))) {
            return false;
        }
        self.tracked.rev.remove(&Reversed(reversed(user_id.as_bytes())));
        self.tracked.remove(user_id);
        if let Some(server) = server_of(user_id) {
            let s = server.to_ascii_lowercase();
            if let Some(n) = self.tracked.servers.get_mut(s.as_str()) {
                *n -= 1;
                if *n == 0 {
                    self.tracked.servers.remove(s.as_str());
                }
            }
        }
        if let Some(map) = &mut self.tracked.by_digest {
            map.remove(&sha256_of(user_id));
        }
        true
    }

    /// Number of tracked users.
    pub fn tracked_len(&self) -> usize {
        self.tracked.fwd.len()
    }

    /// Whether `user_id` is tracked (exact id).
    pub fn is_tracked(&self, user_id: &str) -> bool {
        self.tracked.fwd.contains(&Folded(Arc::from(user_id)))
    }

    // --- internals ------------------------------------------------------------------

    fn intern_list(&mut self, room_id: &str) -> u32 {
        if let Some(&l) = self.list_ids.get(room_id) {
            return l;
        }
        let id = match self.lists.iter().position(Option::is_none) {
            Some(i) => {
                self.lists[i] = Some(Box::from(room_id));
                i as u32
            }
            None => {
                self.lists.push(Some(Box::from(room_id)));
                (self.lists.len() - 1) as u32
            }
        };
        self.list_ids.insert(Box::from(room_id), id);
        id
    }

    fn list_name(&self, list: u32) -> &str {
        self.lists.get(list as usize).and_then(|l| l.as_deref()).unwrap_or("")
    }

    /// The slot at an identity with `family`, or (family `None`) the effective one.
    fn find(&self, key: u32, list: u32, kind: EntityKind, state_key: &str, family: Option<RuleFamily>) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        let mut cur = self.ids.get(&key).copied().unwrap_or(NONE);
        while let Some(sl) = self.slots.get(cur) {
            if sl.list == list && sl.kind() == kind && sl.state_key() == state_key {
                match family {
                    Some(f) if sl.family == f as u8 => return Some(cur),
                    Some(_) => {}
                    None if best.is_none_or(|b| sl.family < b.0) => best = Some((sl.family, cur)),
                    None => {}
                }
            }
            cur = sl.next_key;
        }
        best.map(|b| b.1)
    }

    /// Whether a rule of any family at this identity is an allow (one shadowed now may be
    /// the one in force after a change).
    fn identity_has_allow(&self, key: u32, list: u32, kind: EntityKind, state_key: &str) -> bool {
        let mut cur = self.ids.get(&key).copied().unwrap_or(NONE);
        while let Some(sl) = self.slots.get(cur) {
            if sl.list == list && sl.kind() == kind && sl.state_key() == state_key && sl.is_allow() {
                return true;
            }
            cur = sl.next_key;
        }
        false
    }

    fn best_family_except(
        &self,
        key: u32,
        list: u32,
        kind: EntityKind,
        state_key: &str,
        except: RuleFamily,
    ) -> Option<RuleFamily> {
        let mut best: Option<u8> = None;
        let mut cur = self.ids.get(&key).copied().unwrap_or(NONE);
        while let Some(sl) = self.slots.get(cur) {
            if sl.list == list && sl.kind() == kind && sl.state_key() == state_key && sl.family != except as u8 {
                best = Some(best.map_or(sl.family, |b| b.min(sl.family)));
            }
            cur = sl.next_key;
        }
        best.map(RuleFamily::from_index)
    }

    fn store(&mut self, key: u32, list: u32, r: Rule) {
        let sk = r.id.state_key.as_str();
        let mut text = String::with_capacity(sk.len() + r.reason.len());
        text.push_str(sk);
        let mut flags = 0;
        let (ent_start, ent_end) = match r.entity.as_deref() {
            Some(e) => {
                flags |= F_ENTITY;
                if is_glob(e) {
                    flags |= F_GLOB;
                }
                if sk.ends_with(e) {
                    (sk.len() - e.len(), sk.len())
                } else {
                    text.push_str(e);
                    (sk.len(), text.len())
                }
            }
            None => {
                flags |= F_HASH_ONLY;
                (sk.len(), sk.len())
            }
        };
        let rec = match &r.recommendation {
            Recommendation::Ban => REC_BAN,
            Recommendation::Mute => REC_MUTE,
            Recommendation::Takedown => REC_TAKEDOWN,
            Recommendation::Allow => REC_ALLOW,
            Recommendation::Other(o) => {
                text.push_str(o);
                REC_OTHER
            }
        };
        let rec_end = text.len();
        text.push_str(&r.reason);
        // `parse_rule` caps the text at MAX_RULE_TEXT (u16::MAX); saturating keeps a
        // hypothetical longer one from panicking (its slices then read as empty).
        let off = |x: usize| u16::try_from(x).unwrap_or(u16::MAX);
        let slot = Slot {
            text: text.into_boxed_str(),
            sha256: r.sha256.map(Box::new),
            expiry: r.expiry_ms.unwrap_or(PERMANENT),
            list,
            sender: self.strings.intern(&r.sender),
            next_key: self.ids.get(&key).copied().unwrap_or(NONE),
            next_match: NONE,
            sk_end: off(sk.len()),
            ent_start: off(ent_start),
            ent_end: off(ent_end),
            rec_end: off(rec_end),
            kind: r.id.kind as u8,
            family: r.family as u8,
            rec,
            flags,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s] = slot;
                s
            }
            None => self.slots.push(slot),
        };
        self.ids.insert(key, s);
        self.stored += 1;
    }

    fn free_slot(&mut self, key: u32, s: u32) {
        let Some(sl) = self.slots.get(s) else {
            return;
        };
        if sl.has(F_FREE) {
            return;
        }
        let next = sl.next_key;
        match self.ids.get(&key).copied() {
            Some(h) if h == s => {
                if next == NONE {
                    self.ids.remove(&key);
                } else {
                    self.ids.insert(key, next);
                }
            }
            Some(h) => Self::unlink_after(&mut self.slots, h, s, next, |sl| &mut sl.next_key),
            None => {}
        }
        let sender = std::mem::replace(&mut self.slots[s], free_slot_value()).sender;
        self.strings.release(sender);
        self.free.push(s);
        self.stored -= 1;
    }

    fn unlink_after(slots: &mut Slab, mut cur: u32, target: u32, next: u32, field: impl Fn(&mut Slot) -> &mut u32) {
        while let Some(sl) = slots.get_mut(cur) {
            let f = field(sl);
            if *f == target {
                *f = next;
                return;
            }
            cur = *f;
        }
    }

    /// Put an effective slot into the matching structures.
    fn index(&mut self, s: u32) {
        let sl = &self.slots[s];
        let kind = sl.kind();
        let ki = kind.index();
        if sl.has(F_GLOB) {
            let pattern = sl.entity().unwrap_or("").to_owned();
            let g = self.kinds[ki].globs.insert(&pattern, s);
            self.slots[s].next_match = g;
        } else {
            let (map_key, hashed) = match (sl.entity(), sl.sha256.as_deref()) {
                (Some(e), _) => (self.keyer.folded(e), false),
                (None, Some(d)) => (self.keyer.digest(d), true),
                (None, None) => return,
            };
            let map = if hashed { &mut self.kinds[ki].hashed } else { &mut self.kinds[ki].exact };
            let head = map.insert(map_key, s).unwrap_or(NONE);
            self.slots[s].next_match = head;
        }
        let sl = &mut self.slots[s];
        sl.flags |= F_EFFECTIVE;
        let decides = kind != EntityKind::Room && (sl.restriction().is_some() || sl.is_allow());
        if sl.expiry != PERMANENT && decides {
            self.expiring.insert((sl.expiry, s));
        }
        if sl.is_allow() && kind != EntityKind::Room {
            self.allows += 1;
        }
    }

    /// Take an effective slot out of the matching structures.
    fn unindex(&mut self, s: u32) {
        let sl = &self.slots[s];
        if !sl.has(F_EFFECTIVE) {
            return;
        }
        let ki = sl.kind().index();
        if sl.is_allow() && sl.kind() != EntityKind::Room {
            self.allows -= 1;
        }
        let (expiry, next) = (sl.expiry, sl.next_match);
        if sl.has(F_GLOB) {
            self.kinds[ki].globs.remove(next);
        } else {
            let (map_key, hashed) = match (sl.entity(), sl.sha256.as_deref()) {
                (Some(e), _) => (self.keyer.folded(e), false),
                (None, Some(d)) => (self.keyer.digest(d), true),
                (None, None) => (0, false),
            };
            let map = if hashed { &mut self.kinds[ki].hashed } else { &mut self.kinds[ki].exact };
            match map.get(&map_key).copied() {
                Some(h) if h == s => {
                    if next == NONE {
                        map.remove(&map_key);
                    } else {
                        map.insert(map_key, next);
                    }
                }
                Some(h) => Self::unlink_after(&mut self.slots, h, s, next, |sl| &mut sl.next_match),
                None => {}
            }
        }
        self.expiring.remove(&(expiry, s));
        let sl = &mut self.slots[s];
        sl.flags &= !F_EFFECTIVE;
        sl.next_match = NONE;
    }

    /// Call `f(slot)` for every effective rule of `kind` matching `text`.
    fn for_each_match(&self, kind: EntityKind, text: &str, mut f: impl FnMut(u32)) {
        let ki = &self.kinds[kind.index()];
        if !ki.exact.is_empty() {
            let mut cur = ki.exact.get(&self.keyer.folded(text)).copied().unwrap_or(NONE);
            while let Some(sl) = self.slots.get(cur) {
                if sl.entity().is_some_and(|e| e.eq_ignore_ascii_case(text)) {
                    f(cur);
                }
                cur = sl.next_match;
            }
        }
        if !ki.hashed.is_empty() {
            let d = sha256_of(&hash_form(kind, text));
            let mut cur = ki.hashed.get(&self.keyer.digest(&d)).copied().unwrap_or(NONE);
            while let Some(sl) = self.slots.get(cur) {
                if sl.sha256.as_deref() == Some(&d) {
                    f(cur);
                }
                cur = sl.next_match;
            }
        }
        ki.globs.for_each_match(text, f);
    }

    fn tie_break(&self, a: u32, b: u32) -> Ordering {
        let (x, y) = (&self.slots[a], &self.slots[b]);
        self.list_name(x.list)
            .cmp(self.list_name(y.list))
            .then(x.kind.cmp(&y.kind))
            .then_with(|| x.state_key().cmp(y.state_key()))
    }

    fn rule_id(&self, sl: &Slot) -> RuleId {
        RuleId { room_id: self.list_name(sl.list).to_owned(), kind: sl.kind(), state_key: sl.state_key().to_owned() }
    }

    fn rule_of(&self, s: u32) -> Rule {
        let sl = &self.slots[s];
        Rule {
            id: self.rule_id(sl),
            family: RuleFamily::from_index(sl.family),
            entity: sl.entity().map(str::to_owned),
            sha256: sl.sha256.as_deref().copied(),
            recommendation: match sl.rec {
                REC_BAN => Recommendation::Ban,
                REC_MUTE => Recommendation::Mute,
                REC_TAKEDOWN => Recommendation::Takedown,
                REC_ALLOW => Recommendation::Allow,
                _ => Recommendation::Other(sl.other_recommendation().to_owned()),
            },
            reason: sl.reason().to_owned(),
            sender: self.strings.get(sl.sender).to_owned(),
            expiry_ms: (sl.expiry != PERMANENT).then_some(sl.expiry),
        }
    }

    fn slot_matcher(&self, s: u32) -> Matcher<'_> {
        let sl = &self.slots[s];
        Matcher { kind: sl.kind(), entity: sl.entity(), sha256: sl.sha256.as_deref() }
    }

    /// Build the tracked digest map the first time a hashed user rule needs it.
    fn prepare_digest_map(&mut self, m: Matcher<'_>) {
        if m.kind == EntityKind::User && m.entity.is_none() && self.tracked.by_digest.is_none() {
            let map = self.tracked.fwd.iter().map(|u| (sha256_of(&u.0), u.0.clone())).collect();
            self.tracked.by_digest = Some(map);
        }
    }

    /// Tracked users (possibly with duplicates) that the rule `m` matches.
    fn tracked_matching(&self, m: Matcher<'_>, out: &mut Vec<Arc<str>>) {
        let t = &self.tracked;
        match m.kind {
            EntityKind::Room => {}
            EntityKind::User => match m.entity {
                Some(e) if is_glob(e) => match choose_end(e.as_bytes()) {
                    End::Prefix(p) => t.with_prefix(p, out, |u| m.matches(u)),
                    End::Suffix(s) => t.with_suffix(s, out, |u| m.matches(u)),
                    End::None => match longest_fragment(e) {
                        Some(f) => t.containing(&f, out, |u| m.matches(u)),
                        None => t.all(out, |u| m.matches(u)),
                    },
                },
                Some(e) => t.with_prefix(e.as_bytes(), out, |u| u.eq_ignore_ascii_case(e)),
                None => match (&t.by_digest, m.sha256) {
                    (Some(map), Some(d)) => out.extend(map.get(d).cloned()),
                    (None, Some(_)) => t.all(out, |u| m.matches(u)),
                    _ => {}
                },
            },
            EntityKind::Server => {
                let mut on_server = |server: &str| {
                    let suffix = format!(":{server}");
                    t.with_suffix(suffix.as_bytes(), out, |u| {
                        server_of(u).is_some_and(|s| s.eq_ignore_ascii_case(server))
                    });
                };
                // Distinct servers of tracked users are few: test the rule on each.
                let servers =
                    t.servers.keys().filter(|s| m.matches(s) || host_without_port(s).is_some_and(|h| m.matches(h)));
                for server in servers {
                    on_server(server);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower8_folds_every_byte_in_every_lane() {
        for lane in 0..8 {
            for b in 0..=255u8 {
                let mut bytes = [b'Q', b'z', 0xC3, b'@', b'a', 0x7f, b'Z', b'['];
                bytes[lane] = b;
                let want = bytes.map(|c| c.to_ascii_lowercase());
                assert_eq!(lower8(u64::from_le_bytes(bytes)).to_le_bytes(), want, "{bytes:?}");
            }
        }
    }

    #[test]
    fn cmp_folded_is_folded_then_raw() {
        let ids = [
            "@aaaaaaaaaaaaaaaaB:x",
            "@AAAAAAAAAAAAAAAAb:x",
            "@aaaaaaaaaaaaaaaab:x",
            "@aaaaaaaaaaaaaaaa:x",
            "@aaaaaaaa",
            "",
            "@AAAAAAAAAAAAAAAAC",
            "é@aaaaaaaaÀ",
        ];
        for a in ids {
            for b in ids {
                let (x, y) = (a.as_bytes(), b.as_bytes());
                let want = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()).then_with(|| x.cmp(y));
                assert_eq!(cmp_folded(x, y), want, "{a} {b}");
            }
        }
    }

    #[test]
    fn slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn index_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PolicyIndex>();
    }
}
