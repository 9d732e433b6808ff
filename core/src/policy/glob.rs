//! Glob matching (`*`, `?`, ASCII case-insensitive) and `GlobSet`, many globs matched at once.
//!
//! `GlobSet` is an incremental multi-pattern matcher. Each glob is filed under one literal
//! "anchor" chosen at insert time:
//! - its literal prefix (text before the first wildcard), in a dictionary keyed by a rolling
//!   hash of the prefix; a lookup walks the text once, hashing every prefix of it, and
//!   probes only the prefix lengths that some glob uses;
//! - else its literal suffix, the same over the reversed text;
//! - else the rarest 3-byte window of its literal fragments, probed for every window of
//!   the text;
//! - else (globs like `*`, `@?:*`) a short list checked for every text.
//!
//! A probe hit is a candidate; unless it needs a byte the text lacks (each glob keeps the
//! set of its literal bytes), it is verified with [`glob_match`], each glob at most once per
//! text even when its 3-byte window recurs in the text. The cost of matching one text is
//! therefore O(text length) hash steps plus O(glob length x text length) per candidate,
//! linear in the text (globs are at most 255 bytes: [`super::MAX_ENTITY_LEN`]), not one
//! comparison per glob, and inserting or removing a glob is O(1): no automaton rebuild.
//! The rolling hash is polynomial modulo 2^61-1 with a random base chosen per set, so
//! collisions cannot be forced by whoever writes rules or picks user ids, and a collision
//! could only cost a wasted verification, never a wrong answer.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Whether `s` contains a glob wildcard.
pub fn is_glob(s: &str) -> bool {
    s.bytes().any(|b| b == b'*' || b == b'?')
}

/// Whether a rule entity (user id or server name glob) is so broad that it must be taken
/// to match everyone: a glob whose literal characters are all ASCII punctuation, such as
/// `*`, `@*:*`, `@*:*.*`, `@?*:*` or `*.*`. Such a rule names no one in particular, so
/// hush never acts on it, nor lets a command write it, without a moderator's confirmation.
pub fn matches_everyone(pattern: &str) -> bool {
    is_glob(pattern) && pattern.chars().all(|c| c == '*' || c == '?' || c.is_ascii_punctuation())
}

/// Deterministic work counters for tests: steps of the glob matcher, globs verified, and
/// bytes scanned when tracked ids are searched. Compiled out of non-test builds.
pub(crate) mod work {
    #[cfg(test)]
    thread_local! {
        static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        static VERIFIED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Count `n` steps of work.
    #[inline(always)]
    pub(crate) fn steps(n: usize) {
        #[cfg(test)]
        STEPS.with(|s| s.set(s.get() + n as u64));
        #[cfg(not(test))]
        let _ = n;
    }

    /// Count one glob verified against one text.
    #[inline(always)]
    pub(crate) fn verified() {
        #[cfg(test)]
        VERIFIED.with(|s| s.set(s.get() + 1));
    }

    /// (steps, verifications) since the last call, on this thread.
    #[cfg(test)]
    pub(crate) fn take() -> (u64, u64) {
        (STEPS.with(|s| s.replace(0)), VERIFIED.with(|s| s.replace(0)))
    }
}

/// Match `text` against the glob `pattern`: `*` is zero or more characters, `?` exactly one
/// character (a whole UTF-8 scalar, not a byte); everything else is literal, compared
/// ASCII-case-insensitively. Worst case O(|pattern| x |text|), no recursion, no allocation:
/// with rule entities capped at 255 bytes ([`super::MAX_ENTITY_LEN`]) that is linear in the
/// length of the id, at most 256 steps per byte of it whatever the pattern.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_bytes(pattern.as_bytes(), text.as_bytes())
}

/// Byte-level core of [`glob_match`]; `pattern` and `text` must be valid UTF-8 for `?` to
/// mean "one character".
///
/// Greedy, backtracking only to the last `*` (a match found for the part before a `*`
/// never needs revisiting: the `*` can absorb whatever a later choice would have left).
/// Bound: every iteration advances the pattern index or backtracks; a backtrack moves the
/// start of the last `*`'s extent one byte right, and that start never moves left (a new
/// `*` starts where the text index is), so there are at most |text| backtracks, with at
/// most |pattern| + 1 iterations after each: (|pattern| + 1) x (|text| + 1) in all.
pub(crate) fn glob_match_bytes(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // (pattern index after the last `*`, text index the `*` currently extends to)
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        work::steps(1);
        if let Some(&c) = p.get(pi) {
            match c {
                b'*' => {
                    pi += 1;
                    star = Some((pi, ti));
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti = next_char(t, ti);
                    continue;
                }
                _ if c.eq_ignore_ascii_case(&t[ti]) => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            // Let the last `*` absorb one more byte. It may stop inside a multi-byte
            // character: a literal cannot match a continuation byte and `?` consumes the
            // rest of the character, so that is equivalent to stopping at its start.
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, ti));
            }
            None => return false,
        }
    }
    let rest = &p[pi.min(p.len())..];
    work::steps(rest.len() + 1);
    rest.iter().all(|&c| c == b'*')
}

/// Index just past the character at `i` (or past the rest of a character if `i` is inside one).
fn next_char(t: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < t.len() && (t[i] & 0xC0) == 0x80 {
        i += 1;
    }
    i
}

/// Literal prefix and suffix of a glob (bytes before the first and after the last wildcard).
pub(crate) fn literal_ends(p: &[u8]) -> (&[u8], &[u8]) {
    let first = p.iter().position(|&b| b == b'*' || b == b'?');
    let last = p.iter().rposition(|&b| b == b'*' || b == b'?');
    match (first, last) {
        (Some(f), Some(l)) => (&p[..f], &p[l + 1..]),
        _ => (p, p),
    }
}

/// Which literal end of a glob is the more selective anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End<'a> {
    Prefix(&'a [u8]),
    Suffix(&'a [u8]),
    None,
}

/// Choose the anchor of a glob by a selectivity score: in Matrix ids the start (sigil
/// excepted) is far more selective than the server name, which many ids share. Each anchor
/// byte scores 4, except a leading sigil (`@`, `!`, `#`: 0) and bytes from the first `:` on
/// (the server part: 1). The better end wins (the prefix on ties) if it scores at least 4.
pub(crate) fn choose_end(p: &[u8]) -> End<'_> {
    let (pre, suf) = literal_ends(p);
    let sigil = matches!(p.first(), Some(b'@' | b'!' | b'#'));
    let colon = p.iter().position(|&b| b == b':').unwrap_or(p.len());
    let weight = |j: usize| -> usize {
        if j == 0 && sigil {
            0
        } else if j >= colon {
            1
        } else {
            4
        }
    };
    let pre_score: usize = (0..pre.len()).map(weight).sum();
    let suf_score: usize = (p.len() - suf.len()..p.len()).map(weight).sum();
    if pre_score >= suf_score && pre_score >= 4 {
        End::Prefix(pre)
    } else if suf_score >= 4 {
        End::Suffix(suf)
    } else {
        End::None
    }
}

/// Hasher for keys that are already well-distributed numbers; mixes the high bits in.
#[derive(Default, Clone, Copy)]
pub(crate) struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type PremixedMap<K, V> = HashMap<K, V, BuildHasherDefault<PremixedHasher>>;

/// A 64 Ki-bucket counting filter in front of a hash map: a zero bucket proves a key is
/// absent without probing the map. Counts stick at 255 (then that bucket always probes).
/// Allocated (64 KiB) on first use.
#[derive(Debug, Clone, Default)]
struct Filter(Option<Box<[u8]>>);

impl Filter {
    fn new() -> Self {
        Filter(None)
    }
    #[inline]
    fn bucket(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
    }
    fn add(&mut self, key: u64) {
        let counts = self.0.get_or_insert_with(|| vec![0; 1 << 16].into_boxed_slice());
        if let Some(c) = counts.get_mut(Self::bucket(key)) {
            *c = c.saturating_add(1);
        }
    }
    fn remove(&mut self, key: u64) {
        if let Some(c) = self.0.as_mut().and_then(|c| c.get_mut(Self::bucket(key))) {
            if *c != u8::MAX {
                *c = c.saturating_sub(1);
            }
        }
    }
    #[inline]
    fn may_contain(&self, key: u64) -> bool {
        self.0.as_ref().and_then(|c| c.get(Self::bucket(key))).is_some_and(|&c| c != 0)
    }
}

const NONE: u32 = u32::MAX;
const MERSENNE_61: u64 = (1 << 61) - 1;
/// Anchors longer than this are truncated (the verification checks the rest).
const MAX_ANCHOR: usize = 255;

#[inline]
fn mul_mod(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    let s = (r as u64 & MERSENNE_61) + (r >> 61) as u64;
    if s >= MERSENNE_61 {
        s - MERSENNE_61
    } else {
        s
    }
}

#[inline]
fn roll(h: u64, base: u64, byte: u8) -> u64 {
    let s = mul_mod(h, base) + u64::from(byte.to_ascii_lowercase()) + 1;
    if s >= MERSENNE_61 {
        s - MERSENNE_61
    } else {
        s
    }
}

/// A dictionary of anchors (prefixes, or reversed suffixes) keyed by rolling hash.
#[derive(Debug, Clone)]
struct Anchors {
    heads: PremixedMap<u64, u32>,
    filter: Filter,
    /// How many globs use each anchor length (index = length).
    lens: Box<[u32; MAX_ANCHOR + 1]>,
    /// Bit set of lengths in use.
    mask: [u64; 4],
    max_len: usize,
}

impl Anchors {
    fn new() -> Self {
        Anchors {
            heads: PremixedMap::default(),
            filter: Filter::new(),
            lens: Box::new([0; MAX_ANCHOR + 1]),
            mask: [0; 4],
            max_len: 0,
        }
    }

    fn key(base: u64, bytes: impl Iterator<Item = u8>) -> u64 {
        bytes.fold(0, |h, b| roll(h, base, b))
    }

    fn add_len(&mut self, len: usize) {
        self.lens[len] += 1;
        self.mask[len / 64] |= 1 << (len % 64);
        self.max_len = self.max_len.max(len);
    }

    fn remove_len(&mut self, len: usize) {
        self.lens[len] = self.lens[len].saturating_sub(1);
        if self.lens[len] == 0 {
            self.mask[len / 64] &= !(1 << (len % 64));
            if len == self.max_len {
                self.max_len = (0..len).rev().find(|&l| self.lens[l] > 0).unwrap_or(0);
            }
        }
    }

    #[inline]
    fn has_len(&self, len: usize) -> bool {
        self.mask[len / 64] & (1 << (len % 64)) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Prefix anchor: (key, length).
    Prefix(u64, u16),
    /// Suffix anchor: (key, length).
    Suffix(u64, u16),
    /// 3-byte window, packed.
    Gram(u32),
    /// Checked against every text.
    Always,
    /// Free slab entry.
    Free,
}

/// Set of the ASCII bytes, lower-cased, of a text or of a glob's literals. Every literal of
/// a glob must occur in a text it matches, so a glob needing a byte the text lacks is
/// rejected with two AND operations instead of a match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ByteSet([u64; 2]);

impl ByteSet {
    fn add(&mut self, b: u8) {
        if b < 128 {
            let b = b.to_ascii_lowercase();
            self.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    }
    fn of_text(t: &[u8]) -> Self {
        work::steps(t.len());
        let mut set = ByteSet::default();
        for &b in t {
            set.add(b);
        }
        set
    }
    fn of_literals(p: &[u8]) -> Self {
        let mut set = ByteSet::default();
        for &b in p.iter().filter(|&&b| b != b'*' && b != b'?') {
            set.add(b);
        }
        set
    }
    #[inline]
    fn within(self, text: ByteSet) -> bool {
        self.0[0] & !text.0[0] == 0 && self.0[1] & !text.0[1] == 0
    }
}

#[derive(Debug, Clone)]
struct Entry {
    pattern: Box<str>,
    /// The bytes its literals need ([`ByteSet`]).
    needs: ByteSet,
    value: u32,
    next: u32,
    place: Place,
}

/// An incremental set of globs, each carrying a `u32` value (the rule slot).
#[derive(Debug, Clone)]
pub(crate) struct GlobSet {
    base: u64,
    entries: Vec<Entry>,
    free: Vec<u32>,
    prefix: Anchors,
    suffix: Anchors,
    /// 3-byte window -> (chain head, number of globs filed under it).
    grams: PremixedMap<u32, (u32, u32)>,
    gram_filter: Filter,
    always: Vec<u32>,
    len: usize,
}

impl Default for GlobSet {
    fn default() -> Self {
        Self::new()
    }
}

fn gram_key(w: &[u8]) -> u32 {
    w.iter().fold(0u32, |k, &b| (k << 8) | u32::from(b.to_ascii_lowercase()))
}

impl GlobSet {
    pub(crate) fn new() -> Self {
        // A random base in [256, 2^61 - 2]: a random polynomial hash is collision-resistant
        // against inputs chosen without knowledge of the base.
        let r = RandomState::new().hash_one(0x5eed_u64);
        GlobSet {
            base: 256 + r % (MERSENNE_61 - 258),
            entries: Vec::new(),
            free: Vec::new(),
            prefix: Anchors::new(),
            suffix: Anchors::new(),
            grams: PremixedMap::default(),
            gram_filter: Filter::new(),
            always: Vec::new(),
            len: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Add `pattern` with `value`; returns the entry id to pass to [`GlobSet::remove`].
    pub(crate) fn insert(&mut self, pattern: &str, value: u32) -> u32 {
        let bytes = pattern.as_bytes();
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.entries.push(Entry {
                    pattern: Box::from(""),
                    needs: ByteSet::default(),
                    value: NONE,
                    next: NONE,
                    place: Place::Free,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let (place, next) = match choose_end(bytes) {
            End::Prefix(pre) => {
                let pre = &pre[..pre.len().min(MAX_ANCHOR)];
                let key = Anchors::key(self.base, pre.iter().copied());
                self.prefix.add_len(pre.len());
                self.prefix.filter.add(key);
                let head = self.prefix.heads.insert(key, id).unwrap_or(NONE);
                (Place::Prefix(key, pre.len() as u16), head)
            }
            End::Suffix(suf) => {
                let suf = &suf[suf.len().saturating_sub(MAX_ANCHOR)..];
                let key = Anchors::key(self.base, suf.iter().rev().copied());
                self.suffix.add_len(suf.len());
                self.suffix.filter.add(key);
                let head = self.suffix.heads.insert(key, id).unwrap_or(NONE);
                (Place::Suffix(key, suf.len() as u16), head)
            }
            End::None => match self.rarest_gram(bytes) {
                Some(g) => {
                    self.gram_filter.add(u64::from(g));
                    let slot = self.grams.entry(g).or_insert((NONE, 0));
                    let head = slot.0;
                    *slot = (id, slot.1 + 1);
                    (Place::Gram(g), head)
                }
                None => {
                    self.always.push(id);
                    (Place::Always, NONE)
                }
            },
        };
        self.entries[id as usize] =
            Entry { pattern: Box::from(pattern), needs: ByteSet::of_literals(bytes), value, next, place };
        self.len += 1;
        id
    }

    /// The 3-byte literal window of `p` shared by the fewest globs so far.
    fn rarest_gram(&self, p: &[u8]) -> Option<u32> {
        p.split(|&b| b == b'*' || b == b'?')
            .flat_map(|frag| frag.windows(3))
            .map(gram_key)
            .min_by_key(|g| self.grams.get(g).map_or(0, |e| e.1))
    }

    /// Remove the entry `id` returned by [`GlobSet::insert`].
    pub(crate) fn remove(&mut self, id: u32) {
        let Some(entry) = self.entries.get(id as usize) else {
            return;
        };
        let (place, next) = (entry.place, entry.next);
        match place {
            Place::Free => return,
            Place::Prefix(key, len) => {
                Self::unlink(&mut self.entries, &mut self.prefix.heads, key, id, next);
                self.prefix.remove_len(usize::from(len));
                self.prefix.filter.remove(key);
            }
            Place::Suffix(key, len) => {
                Self::unlink(&mut self.entries, &mut self.suffix.heads, key, id, next);
                self.suffix.remove_len(usize::from(len));
                self.suffix.filter.remove(key);
            }
            Place::Gram(g) => {
                self.gram_filter.remove(u64::from(g));
                if let Some(slot) = self.grams.get_mut(&g) {
                    if slot.0 == id {
                        slot.0 = next;
                    } else {
                        Self::unlink_after(&mut self.entries, slot.0, id, next);
                    }
                    slot.1 = slot.1.saturating_sub(1);
                    if slot.1 == 0 {
                        self.grams.remove(&g);
                    }
                }
            }
            Place::Always => self.always.retain(|&e| e != id),
        }
        self.entries[id as usize] =
            Entry { pattern: Box::from(""), needs: ByteSet::default(), value: NONE, next: NONE, place: Place::Free };
        self.free.push(id);
        self.len -= 1;
    }

    fn unlink(entries: &mut [Entry], heads: &mut PremixedMap<u64, u32>, key: u64, id: u32, next: u32) {
        let Some(head) = heads.get_mut(&key) else {
            return;
        };
        if *head == id {
            if next == NONE {
                heads.remove(&key);
            } else {
                *head = next;
            }
        } else {
            let h = *head;
            Self::unlink_after(entries, h, id, next);
        }
    }

    fn unlink_after(entries: &mut [Entry], mut cur: u32, id: u32, next: u32) {
        while cur != NONE {
            let Some(e) = entries.get_mut(cur as usize) else {
                return;
            };
            if e.next == id {
                e.next = next;
                return;
            }
            cur = e.next;
        }
    }

    #[inline]
    fn walk(&self, mut cur: u32, text: &str, has: &mut Option<ByteSet>, f: &mut impl FnMut(u32)) {
        while let Some(e) = self.entries.get(cur as usize) {
            self.verify(e, text, has, f);
            cur = e.next;
        }
    }

    /// Report `e` if it matches `text`; `has` caches the text's [`ByteSet`].
    #[inline]
    fn verify(&self, e: &Entry, text: &str, has: &mut Option<ByteSet>, f: &mut impl FnMut(u32)) {
        if !e.needs.within(*has.get_or_insert_with(|| ByteSet::of_text(text.as_bytes()))) {
            return;
        }
        work::verified();
        if glob_match(&e.pattern, text) {
            f(e.value);
        }
    }

    /// Call `f(value)` for every glob matching `text` (ASCII case-insensitively). Each glob
    /// is verified at most once (twice only after a hash collision between two prefixes or
    /// two suffixes of `text`, which may then report its value twice), so the work is
    /// O(|text|) hashing plus O(|glob| x |text|) per candidate glob: linear in the text.
    pub(crate) fn for_each_match(&self, text: &str, mut f: impl FnMut(u32)) {
        if self.len == 0 {
            return;
        }
        let bytes = text.as_bytes();
        let mut has = None;
        if !self.prefix.heads.is_empty() {
            let mut h = 0;
            for (i, &b) in bytes.iter().take(self.prefix.max_len).enumerate() {
                h = roll(h, self.base, b);
                if self.prefix.has_len(i + 1) && self.prefix.filter.may_contain(h) {
                    if let Some(&head) = self.prefix.heads.get(&h) {
                        self.walk(head, text, &mut has, &mut f);
                    }
                }
            }
        }
        if !self.suffix.heads.is_empty() {
            let mut h = 0;
            for (i, &b) in bytes.iter().rev().take(self.suffix.max_len).enumerate() {
                h = roll(h, self.base, b);
                if self.suffix.has_len(i + 1) && self.suffix.filter.may_contain(h) {
                    if let Some(&head) = self.suffix.heads.get(&h) {
                        self.walk(head, text, &mut has, &mut f);
                    }
                }
            }
        }
        if !self.grams.is_empty() {
            // A window may recur in the text (`aaa` 250 times in `@aaaa…`): walk each chain
            // once, or the work would grow with the square of the text length.
            let mut hits: Vec<(u32, u32)> = Vec::new();
            for w in bytes.windows(3) {
                let g = gram_key(w);
                if !self.gram_filter.may_contain(u64::from(g)) {
                    continue;
                }
                if let Some(&(head, _)) = self.grams.get(&g) {
                    hits.push((g, head));
                }
            }
            if hits.len() > 1 {
                hits.sort_unstable();
                hits.dedup_by_key(|h| h.0);
            }
            for (_, head) in hits {
                self.walk(head, text, &mut has, &mut f);
            }
        }
        for &id in &self.always {
            if let Some(e) = self.entries.get(id as usize) {
                self.verify(e, text, &mut has, &mut f);
            }
        }
    }

    /// Every (pattern, value) in the set, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.entries.iter().filter(|e| e.place != Place::Free).map(|e| (&*e.pattern, e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_match_everyone() {
        for p in ["*", "@*:*", "@*:*.*", "@*:*.*.*", "@?*:*", "*:*", "@*", "*.*", "?*", "@**:**"] {
            assert!(matches_everyone(p), "{p}");
        }
        for p in ["@spam:example.org", "@*:spam.example", "@spam*:*", "*.org", "@a*:*", "example.org", "", "@:."] {
            assert!(!matches_everyone(p), "{p}");
        }
    }

    /// Reference matcher: plain recursion over characters.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && reference(rest, &t[1..]),
        }
    }

    fn reference_match(p: &str, t: &str) -> bool {
        let p: Vec<char> = p.chars().collect();
        let t: Vec<char> = t.chars().collect();
        reference(&p, &t)
    }

    #[test]
    fn basic_globs() {
        let yes = [
            ("*", ""),
            ("*", "anything"),
            ("@*:evil.org", "@spam:evil.org"),
            ("@*:evil.org", "@:evil.org"),
            ("@spam?:evil.org", "@spam1:evil.org"),
            ("@spam?:evil.org", "@spamé:evil.org"),
            ("*.evil.org", "a.b.evil.org"),
            ("EVIL.org", "evil.ORG"),
            ("a*b*c", "aXbYc"),
            ("a*b*c", "abc"),
            ("?", "€"),
            ("*??", "ab"),
        ];
        let no = [
            ("?", ""),
            ("??", "é"),
            ("*??", "€"),
            ("@*:evil.org", "@spam:evil.org.uk"),
            ("@spam?:evil.org", "@spam:evil.org"),
            ("a*b*c", "acb"),
            ("", "a"),
            ("évil", "Évil"), // only ASCII folds
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p} should match {t}");
            assert!(reference_match(p, t), "reference: {p} should match {t}");
        }
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p} should not match {t}");
            assert!(!reference_match(p, t), "reference: {p} should not match {t}");
        }
    }

    #[test]
    fn anchors() {
        assert_eq!(choose_end(b"@spam*:evil.org"), End::Prefix(b"@spam"));
        assert_eq!(choose_end(b"@a*:evil.org"), End::Suffix(b":evil.org"));
        assert_eq!(choose_end(b"*:evil.org"), End::Suffix(b":evil.org"));
        assert_eq!(choose_end(b"@*bot*:*"), End::None);
        assert_eq!(choose_end(b"evil*"), End::Prefix(b"evil"));
        assert_eq!(choose_end(b"*.io"), End::Suffix(b".io"));
        assert_eq!(choose_end(b"@*:a.io"), End::Suffix(b":a.io"));
        assert_eq!(choose_end(b"@*:a?"), End::None);
        assert_eq!(choose_end(b"@a*"), End::Prefix(b"@a"));
        assert_eq!(literal_ends(b"abc"), (&b"abc"[..], &b"abc"[..]));
    }

    fn matches(set: &GlobSet, text: &str) -> Vec<u32> {
        let mut v = Vec::new();
        set.for_each_match(text, |x| v.push(x));
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn set_insert_match_remove() {
        let mut set = GlobSet::new();
        let pats = [
            "@spam*:evil.org", // prefix
            "*:evil.org",      // suffix
            "@*bot*:*",        // gram
            "*",               // always
            "@?:*",            // always
            "@Spam*",          // prefix, case-folded
        ];
        let ids: Vec<u32> = pats.iter().enumerate().map(|(i, p)| set.insert(p, i as u32)).collect();
        assert_eq!(set.len(), 6);
        assert_eq!(matches(&set, "@spammer:evil.org"), vec![0, 1, 3, 5]);
        assert_eq!(matches(&set, "@SPAMMER:EVIL.ORG"), vec![0, 1, 3, 5]);
        assert_eq!(matches(&set, "@robot1:good.org"), vec![2, 3]);
        assert_eq!(matches(&set, "@x:good.org"), vec![3, 4]);
        set.remove(ids[3]);
        set.remove(ids[1]);
        set.remove(ids[1]); // double remove is harmless
        assert_eq!(set.len(), 4);
        assert_eq!(matches(&set, "@spammer:evil.org"), vec![0, 5]);
        assert_eq!(matches(&set, "@good:good.org"), Vec::<u32>::new());
        // Reuse of a freed entry.
        set.insert("*:good.org", 9);
        assert_eq!(matches(&set, "@good:good.org"), vec![9]);
        assert_eq!(set.iter().count(), 5);
    }

    #[test]
    fn shared_anchor_chains() {
        let mut set = GlobSet::new();
        let ids: Vec<u32> = (0..50).map(|i| set.insert(&format!("@spam{i}*:evil.org"), i)).collect();
        let b = set.insert("@spam*", 100);
        assert_eq!(matches(&set, "@spam42x:evil.org"), vec![4, 42, 100]);
        for (i, id) in ids.iter().enumerate() {
            if i % 2 == 0 {
                set.remove(*id);
            }
        }
        assert_eq!(matches(&set, "@spam42x:evil.org"), vec![100]);
        assert_eq!(matches(&set, "@spam41x:evil.org"), vec![41, 100]);
        set.remove(b);
        assert_eq!(matches(&set, "@spam41x:evil.org"), vec![41]);
    }

    /// Upper bound on the steps of one [`glob_match`] call (see `glob_match_bytes`).
    fn step_bound(p: &str, t: &str) -> u64 {
        (p.len() as u64 + 1) * (t.len() as u64 + 2)
    }

    fn steps_of(p: &str, t: &str) -> (bool, u64) {
        work::take();
        let m = glob_match(p, t);
        (m, work::take().0)
    }

    /// Globs written to make a backtracking matcher work, all at most 255 bytes.
    fn adversarial_globs() -> Vec<String> {
        let mut v: Vec<String> =
            ["@*a*a*a*a*b:*", "@*a*?*a*b*:*", "*a*a*a*a*a*a*c*", "*a?a?a?a?b*", "?*?*?*?*?*b", "@*aaa*:*"]
                .map(String::from)
                .to_vec();
        v.push(format!("@{}*b", "*a".repeat(126))); // 255 bytes of `*a`
        v.push(format!("*{}b", "a".repeat(253))); // the greedy worst case: 255 bytes
        v.push(format!("*{}b*", "a?".repeat(100)));
        v.push(format!("{}:*", "?".repeat(200)));
        assert!(v.iter().all(|p| p.len() <= crate::policy::MAX_ENTITY_LEN));
        v
    }

    fn adversarial_texts(n: usize) -> Vec<String> {
        let a = "a".repeat(n);
        vec![a.clone(), format!("@{a}:a.org"), format!("@{a}b:a.org"), format!("{a}b"), format!("@{a}é:x")]
    }

    #[test]
    fn matcher_work_is_linear_in_the_text_for_any_pattern() {
        for p in adversarial_globs() {
            for n in [0, 1, 16, 64, 253, 4096] {
                for t in adversarial_texts(n) {
                    let (m, steps) = steps_of(&p, &t);
                    assert_eq!(m, glob_match_bytes(p.as_bytes(), t.as_bytes()));
                    assert!(steps <= step_bound(&p, &t), "{p} on {} bytes: {steps} steps", t.len());
                    // With patterns capped at 255 bytes: at most 256 steps per byte, plus a constant.
                    assert!(steps <= 256 * t.len() as u64 + 512, "{p}");
                }
            }
        }
        // The globs of the issue cost about one step per byte of the id, not per pattern byte.
        for p in ["@*a*a*a*a*b:*", "@*a*?*a*b*:*", "*a*a*a*a*a*a*c*"] {
            for n in [16, 253, 4096] {
                for t in adversarial_texts(n) {
                    let (_, steps) = steps_of(p, &t);
                    assert!(steps <= 2 * t.len() as u64 + 32, "{p} on {} bytes: {steps} steps", t.len());
                }
            }
        }
        // The worst case is reached (so the bound is not loose) and is still linear.
        let p = format!("*{}b", "a".repeat(20));
        let (_, s1) = steps_of(&p, &"a".repeat(1000));
        let (_, s4) = steps_of(&p, &"a".repeat(4000));
        assert!(s1 > 20 * 900, "{s1}");
        // 4x the text, 4x the work (up to a term in the pattern length alone).
        assert!(s4 <= 4 * s1 + 4 * 22 * 22, "{s1} {s4}");
    }

    #[test]
    fn set_verifies_each_glob_at_most_once_per_text() {
        let mut set = GlobSet::new();
        let mut globs = adversarial_globs();
        // Anchored by a 3-byte window that recurs in the text (`aaa`, `a.a`), by a prefix, by
        // a suffix, and globs that every text is checked against.
        globs.extend(
            ["*aaa*", "@*aaa*:*", "*a.a*", "@*a?aaa*b:*", "@aaaa*", "@aa*", "*a:a.org", "*", "@*:*"].map(String::from),
        );
        for (i, g) in globs.iter().enumerate() {
            set.insert(g, i as u32);
        }
        for n in [3, 64, 253, 2000] {
            for t in adversarial_texts(n).into_iter().chain([format!("@{}.a.a.a.a:a.org", "a".repeat(n))]) {
                work::take();
                let mut got = Vec::new();
                set.for_each_match(&t, |v| got.push(v));
                let (steps, verified) = work::take();
                assert!(verified <= globs.len() as u64, "{verified} verifications on {} bytes", t.len());
                let bound: u64 = globs.iter().map(|g| step_bound(g, &t)).sum::<u64>() + t.len() as u64;
                assert!(steps <= bound, "{steps} > {bound}");
                got.sort_unstable();
                let want: Vec<u32> =
                    globs.iter().enumerate().filter(|(_, g)| glob_match(g, &t)).map(|(i, _)| i as u32).collect();
                assert_eq!(got, want, "{t}");
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn pattern() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    3 => Just("*".to_string()),
                    3 => Just("?".to_string()),
                    6 => "[abAB:@é€]".prop_map(|s| s),
                ],
                0..8,
            )
            .prop_map(|v| v.concat())
        }

        fn text() -> impl Strategy<Value = String> {
            "[abAB:@é€]{0,10}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            #[test]
            fn matcher_work_is_bounded(
                p in proptest::collection::vec(prop_oneof![Just('*'), Just('?'), Just('a'), Just('b'), Just(':')], 0..=255),
                a in 0usize..600,
                tail in "[ab:é]{0,4}",
            ) {
                let p: String = p.into_iter().collect();
                let t = format!("{}{tail}", "a".repeat(a));
                let (_, steps) = steps_of(&p, &t);
                prop_assert!(steps <= step_bound(&p, &t), "{} steps", steps);
            }

            #[test]
            fn matcher_agrees_with_reference(p in pattern(), t in text()) {
                prop_assert_eq!(glob_match(&p, &t), reference_match(&p, &t));
            }

            #[test]
            fn set_agrees_with_single_matcher(
                pats in proptest::collection::vec(pattern(), 0..12),
                removed in proptest::collection::vec(any::<bool>(), 12),
                texts in proptest::collection::vec(text(), 1..6),
            ) {
                let mut set = GlobSet::new();
                let ids: Vec<u32> =
                    pats.iter().enumerate().map(|(i, p)| set.insert(p, i as u32)).collect();
                for (i, id) in ids.iter().enumerate() {
                    if removed[i] {
                        set.remove(*id);
                    }
                }
                for t in &texts {
                    let expected: Vec<u32> = pats
                        .iter()
                        .enumerate()
                        .filter(|(i, p)| !removed[*i] && reference_match(p, t))
                        .map(|(i, _)| i as u32)
                        .collect();
                    prop_assert_eq!(matches(&set, t), expected, "text {}", t);
                }
            }
        }
    }
}
