//! Policy engine benchmarks: index build, full evaluation vs the naive scan, one rule change,
//! index memory measured with a counting global allocator, and a list change of 100
//! adversarial globs against 5,000 tracked members.
//!
//! Run: `cargo bench -p hush-core --bench policy` (only the adversarial globs:
//! `cargo bench -p hush-core --bench policy -- adversarial_globs`)

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hush_core::policy::naive::NaiveIndex;
use hush_core::policy::{encode_sha256, parse_rule, sha256_of, PolicyIndex, RuleParse};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Counting allocator: live bytes requested and live allocations.

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_ALLOCS.load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// Deterministic data.

const NOW: u64 = 1_800_000_000_000;
const USERS: usize = 100_000;
const EXACT: usize = 45_000;
const GLOBS: usize = 5_000;
const SERVERS: usize = 200;
const LISTS: [&str; 3] = ["!community-bans:example.org", "!hush-local:example.org", "!legacy-mjolnir:example.org"];
const WORDS: [&str; 8] = ["crypto", "spam", "bot", "nft", "promo", "troll", "raid", "scam"];
const REASONS: [&str; 10] = [
    "spam",
    "harassment",
    "ban evasion",
    "csam",
    "crypto scam",
    "raid participant",
    "bot",
    "hate speech",
    "doxxing",
    "impersonation",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn member(i: usize) -> String {
    format!("@user{i}:hs{}.example", i % SERVERS)
}

struct Event {
    room: &'static str,
    ty: &'static str,
    key: String,
    sender: &'static str,
    content: Value,
}

fn content(rng: &mut Rng, entity: &str, n: usize) -> Value {
    let rec = match rng.below(100) {
        0..=84 => "m.ban",
        85..=94 => "m.mute",
        95..=97 => "org.matrix.msc4204.takedown",
        _ => "org.example.watch",
    };
    let reason =
        if rng.below(10) == 0 { format!("spam wave #{n}") } else { REASONS[rng.below(REASONS.len())].to_string() };
    let mut c = json!({"entity": entity, "recommendation": rec, "reason": reason});
    if rng.below(20) == 0 {
        c["expiry"] = json!(NOW + 1 + rng.below(30 * 86_400_000) as u64);
    }
    c
}

/// State key in one of three styles seen in the wild.
fn state_key(rng: &mut Rng, entity: &str) -> String {
    match rng.below(3) {
        0 => entity.to_string(),
        1 => format!("rule:{entity}"),
        _ => encode_sha256(&sha256_of(&format!("{entity}m.ban"))),
    }
}

fn rules() -> Vec<Event> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(EXACT + GLOBS);
    let senders = ["@mod:example.org", "@draupnir:example.org", "@alice:example.org"];
    for n in 0..EXACT {
        let (ty, entity) = match n % 100 {
            // 1% server rules (two of them on real member servers).
            0 if n < 200 => ("m.policy.rule.server", format!("hs{}.example", n / 100)),
            0 => ("m.policy.rule.server", format!("bad{n}.example")),
            // ~2% aimed at actual members (so about 1% of members are restricted).
            1 | 2 => ("m.policy.rule.user", member(rng.below(USERS))),
            _ => ("m.policy.rule.user", format!("@{}{n}:hs{}.example", WORDS[n % 8], rng.below(SERVERS))),
        };
        let key = state_key(&mut rng, &entity);
        out.push(Event { room: LISTS[n % 3], ty, key, sender: senders[n % 3], content: content(&mut rng, &entity, n) });
    }
    for n in 0..GLOBS {
        let w = WORDS[n % 8];
        let (ty, entity) = match n % 50 {
            0..=19 => ("m.policy.rule.user", format!("@{w}{n}*:hs{}.example", rng.below(SERVERS))),
            20..=34 => ("m.policy.rule.user", format!("*:bad{n}.example")),
            35..=39 => ("m.policy.rule.user", format!("@*{w}{n}*:*")),
            40..=44 => ("m.policy.rule.user", format!("@{w}{n}??:hs{}.example", rng.below(SERVERS))),
            45..=47 => ("m.policy.rule.server", format!("*.bad{n}.example")),
            // A few globs that do hit members: @user<k>*.
            _ => ("m.policy.rule.user", format!("@user{}*", 1000 + n)),
        };
        let key = state_key(&mut rng, &entity);
        out.push(Event { room: LISTS[n % 3], ty, key, sender: senders[n % 3], content: content(&mut rng, &entity, n) });
    }
    out
}

fn build(events: &[Event]) -> PolicyIndex {
    let mut idx = PolicyIndex::new();
    for e in events {
        idx.apply(e.room, e.ty, &e.key, e.sender, &e.content, NOW);
    }
    idx
}

fn naive(events: &[Event]) -> NaiveIndex {
    let rules = events
        .iter()
        .filter_map(|e| match parse_rule(e.room, e.ty, &e.key, e.sender, &e.content) {
            RuleParse::Rule(r) => Some(r),
            _ => None,
        })
        .collect();
    NaiveIndex { rules }
}

fn evaluate(idx: &PolicyIndex, users: &[String]) -> usize {
    users.iter().filter(|u| idx.decide(u, NOW).is_some()).count()
}

fn evaluate_naive(idx: &NaiveIndex, users: &[String]) -> usize {
    users.iter().filter(|u| idx.decide(u, NOW).is_some()).count()
}

// ---------------------------------------------------------------------------------------

fn memory_report(events: &[Event], users: &[String]) {
    let (b0, a0) = live();
    let idx = build(events);
    let (b1, a1) = live();
    let (bytes, allocs) = ((b1 - b0) as f64, (a1 - a0) as f64);
    let n = idx.len() as f64;
    println!(
        "index memory: {} rules, {:.0} bytes requested ({:.1} B/rule), {:.0} live allocations \
         ({:.2}/rule); with 16 B malloc overhead per allocation: {:.1} B/rule",
        idx.len(),
        bytes,
        bytes / n,
        allocs,
        allocs / n,
        (bytes + 16.0 * allocs) / n
    );
    let mut idx = idx;
    let (b2, a2) = live();
    for u in users {
        idx.track_user(u);
    }
    let (b3, a3) = live();
    println!(
        "tracked users: {} users, {:.1} B/user requested, {:.2} allocations/user",
        users.len(),
        (b3 - b2) as f64 / users.len() as f64,
        (a3 - a2) as f64 / users.len() as f64
    );
    drop(idx);
}

fn benches(c: &mut Criterion) {
    let events = rules();
    let users: Vec<String> = (0..USERS).map(member).collect();
    memory_report(&events, &users);

    let idx = build(&events);
    let naive_idx = naive(&events);
    let sample: Vec<String> = users.iter().step_by(USERS / 1000).cloned().collect();
    let (a, b) = (evaluate(&idx, &sample), evaluate_naive(&naive_idx, &sample));
    assert_eq!(a, b, "index and naive disagree");
    for u in &sample {
        assert_eq!(idx.decide(u, NOW), naive_idx.decide(u, NOW), "{u}");
    }
    let restricted = evaluate(&idx, &users);
    println!(
        "evaluation: {restricted} of {USERS} members restricted; index agrees with naive on a \
         {}-user sample",
        sample.len()
    );

    let mut g = c.benchmark_group("policy");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.bench_function("build_50k_rules", |b| b.iter(|| black_box(build(&events))));
    g.bench_function("evaluate_100k_members/index", |b| b.iter(|| black_box(evaluate(&idx, &users))));
    g.bench_function("evaluate_1k_members/index", |b| b.iter(|| black_box(evaluate(&idx, &sample))));
    g.measurement_time(Duration::from_secs(6));
    g.bench_function("evaluate_1k_members/naive", |b| b.iter(|| black_box(evaluate_naive(&naive_idx, &sample))));
    g.measurement_time(Duration::from_secs(3));

    // One rule change against 100,000 tracked members: time the add, then (untimed) the
    // removal that restores the state; and the other way round.
    let mut tracked = build(&events);
    for u in &users {
        tracked.track_user(u);
    }
    let changes: [(&str, &str, Value); 6] = [
        ("exact_user", "m.policy.rule.user", json!({"entity": member(4242), "recommendation": "m.mute"})),
        ("prefix_glob", "m.policy.rule.user", json!({"entity": "@user4242*", "recommendation": "m.ban"})),
        (
            "suffix_glob_500_members",
            "m.policy.rule.user",
            json!({"entity": "*:hs77.example", "recommendation": "m.mute"}),
        ),
        (
            "server_rule_500_members",
            "m.policy.rule.server",
            json!({"entity": "hs78.example", "recommendation": "m.ban"}),
        ),
        // No literal prefix/suffix: memmem for "zz" over the tracked-id blob.
        ("unanchored_glob", "m.policy.rule.user", json!({"entity": "@*zz*:*", "recommendation": "m.ban"})),
        // Worst case: only one-byte literals ("@", ":"), every tracked id is verified.
        (
            "wildcard_only_glob_scans_all",
            "m.policy.rule.user",
            json!({"entity": "@?????????????:*", "recommendation": "m.ban"}),
        ),
    ];
    for (name, ty, rule) in &changes {
        let add = tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", rule, NOW);
        let del = tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", &json!({}), NOW);
        println!("apply {name}: add changed {} members, removal changed {}", add.changed.len(), del.changed.len());
        g.bench_function(format!("apply_one_change_100k_tracked/{name}/add"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    black_box(tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", rule, NOW));
                    total += t.elapsed();
                    tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", &json!({}), NOW);
                }
                total
            })
        });
        g.bench_function(format!("apply_one_change_100k_tracked/{name}/remove"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", rule, NOW);
                    let t = Instant::now();
                    black_box(tracked.apply(LISTS[1], ty, "bench", "@mod:example.org", &json!({}), NOW));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Adversarial globs (issue 12): globs written to make a backtracking matcher work hard,
// against members some of whose ids are long runs of `a`.

const ADV_MEMBERS: usize = 5_000;
const ADV_GLOBS: usize = 100;
const ADV_LIST: &str = "!adversarial:example.org";
const FIRST: [&str; 12] =
    ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"];
const LAST: [&str; 6] = ["smith", "nguyen", "garcia", "kowalski", "okafor", "tanaka"];
const HOMESERVERS: [&str; 6] =
    ["matrix.org", "example.com", "t2bot.io", "libera.chat", "mozilla.org", "chat.example-university.edu"];

/// Member ids: 90% of realistic shapes (plain, first.last, bridged puppets, numbered), 10%
/// long runs of `a` (up to the 255-byte limit), half of them with a `b` before the `:`.
fn adversarial_member(i: usize, rng: &mut Rng) -> String {
    let hs = HOMESERVERS[rng.below(HOMESERVERS.len())];
    match i % 20 {
        0 | 1 => {
            let server = format!("{}.example", "a".repeat(4 + rng.below(40)));
            let local = 255 - 2 - server.len() - usize::from(i % 20 == 1);
            let local = local - rng.below(local / 2);
            let b = if i % 20 == 1 { "b" } else { "" };
            format!("@{}{b}:{server}", "a".repeat(local))
        }
        2..=7 => format!("@{}{i}:{hs}", FIRST[rng.below(FIRST.len())]),
        8..=11 => format!("@{}.{}{}:{hs}", FIRST[rng.below(FIRST.len())], LAST[rng.below(LAST.len())], i % 97),
        12 | 13 => format!("@telegram_{}:t2bot.io", 100_000_000 + rng.below(900_000_000)),
        14 => format!("@_discord_{}:t2bot.io", 100_000_000_000_000_000u64 + rng.next() % 800_000_000_000_000_000),
        15 => format!("@irc_{}_{}:libera.chat", FIRST[rng.below(FIRST.len())], i),
        _ => format!("@user{i}:hs{}.example", i % SERVERS),
    }
}

/// 100 distinct globs from five families: `@*a*a*a*a*b:*`, `@*a*?*a*b*:*`,
/// `*a*a*a*a*a*a*c*`, mixes of `?` and `*`, and `*aaaa…ab*` (a long literal after a `*`:
/// the case where greedy backtracking redoes the most work).
fn adversarial_globs() -> Vec<String> {
    const ENDS: &[u8] = b"bcdefghjkmnpqrstuvwxyz";
    let mut out: Vec<String> = Vec::new();
    let mut n = 0usize;
    while out.len() < ADV_GLOBS {
        let x = ENDS[(n / 5) % ENDS.len()] as char;
        let k = 2 + (n / 5) % 7;
        let g = match n % 5 {
            0 => format!("@{}*{x}:*", "*a".repeat(k)),
            1 => format!("@*a*{}a*{x}*:*", "?*".repeat(k - 1)),
            2 => format!("{}*{x}*", "*a".repeat(k + 2)),
            3 => format!("?*a?{}*{x}*", "a*?".repeat(k - 1)),
            _ => format!("*{}{x}*", "a".repeat(8 * k)),
        };
        if !out.contains(&g) {
            out.push(g);
        }
        n += 1;
    }
    out
}

fn adversarial(c: &mut Criterion) {
    let mut rng = Rng(0xADBE_EF00_1234_5678);
    let mut members: Vec<String> = Vec::with_capacity(ADV_MEMBERS);
    let mut i = 0;
    while members.len() < ADV_MEMBERS {
        let m = adversarial_member(i, &mut rng);
        if !members.contains(&m) {
            members.push(m);
        }
        i += 1;
    }
    assert!(members.iter().all(|m| m.len() <= 255));
    let globs = adversarial_globs();
    let rule = |g: &str| json!({"entity": g, "recommendation": "m.ban", "reason": "adversarial"});
    let mut idx = PolicyIndex::new();
    for m in &members {
        idx.track_user(m);
    }
    let add_all = |idx: &mut PolicyIndex| -> usize {
        let mut changed = std::collections::BTreeSet::new();
        for (i, g) in globs.iter().enumerate() {
            changed.extend(
                idx.apply(ADV_LIST, "m.policy.rule.user", &format!("g{i}"), "@mod:example.org", &rule(g), NOW).changed,
            );
        }
        changed.len()
    };
    let remove_all = |idx: &mut PolicyIndex| {
        for i in 0..globs.len() {
            idx.apply(ADV_LIST, "m.policy.rule.user", &format!("g{i}"), "@mod:example.org", &json!({}), NOW);
        }
    };

    // Check against the naive evaluator once.
    let changed = add_all(&mut idx);
    let naive_idx = naive(
        &globs
            .iter()
            .enumerate()
            .map(|(i, g)| Event {
                room: ADV_LIST,
                ty: "m.policy.rule.user",
                key: format!("g{i}"),
                sender: "@mod:example.org",
                content: rule(g),
            })
            .collect::<Vec<_>>(),
    );
    let banned = members.iter().filter(|m| idx.decide(m, NOW).is_some()).count();
    for m in &members {
        assert_eq!(idx.decide(m, NOW), naive_idx.decide(m, NOW), "{m}");
    }
    assert_eq!(changed, banned);
    let extra = "@*a*?*a*?*a*?*a*b:*";
    let one = idx.apply(ADV_LIST, "m.policy.rule.user", "extra", "@mod:example.org", &rule(extra), NOW);
    idx.apply(ADV_LIST, "m.policy.rule.user", "extra", "@mod:example.org", &json!({}), NOW);
    remove_all(&mut idx);
    println!(
        "adversarial globs: {} rules, {ADV_MEMBERS} tracked members ({} bytes of ids); the 100 rules change {changed} \
         members (index agrees with naive on all), one more rule `{extra}` changes {}",
        globs.len(),
        members.iter().map(String::len).sum::<usize>(),
        one.changed.len()
    );

    let mut g = c.benchmark_group("policy");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    g.bench_function("adversarial_globs_5k_tracked/apply_100_rules", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                black_box(add_all(&mut idx));
                total += t.elapsed();
                remove_all(&mut idx);
            }
            total
        })
    });
    add_all(&mut idx);
    g.bench_function("adversarial_globs_5k_tracked/apply_one_more_with_100_present", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                black_box(idx.apply(ADV_LIST, "m.policy.rule.user", "extra", "@mod:example.org", &rule(extra), NOW));
                total += t.elapsed();
                idx.apply(ADV_LIST, "m.policy.rule.user", "extra", "@mod:example.org", &json!({}), NOW);
            }
            total
        })
    });
    // The matcher's worst case, for scale: a 255-byte glob `*aaaa…ab` against a 255-byte id
    // of `a`s, where greedy backtracking retries the 253-byte literal at every position.
    let worst_glob = format!("*{}b", "a".repeat(253));
    let worst_id = format!("@{}:a.example", "a".repeat(244));
    assert_eq!((worst_glob.len(), worst_id.len()), (255, 255));
    g.bench_function("glob_match_worst_case_255_byte_glob_and_id", |b| {
        b.iter(|| black_box(hush_core::policy::glob::glob_match(black_box(&worst_glob), black_box(&worst_id))))
    });
    g.finish();
}

criterion_group!(policy, adversarial, benches);
criterion_main!(policy);
