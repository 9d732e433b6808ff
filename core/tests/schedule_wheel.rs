//! Property tests: the timer wheel against a BTreeMap reference model.

use std::collections::{BTreeMap, HashMap};

use std::hash::BuildHasher;

use hush_core::schedule::{DefaultHashBuilder, HandleHasher, Wheel};
use proptest::prelude::*;

/// The reference: a BTreeMap ordered by (deadline, insertion sequence).
#[derive(Debug, Default)]
struct Model {
    now: u64,
    seq: u64,
    by_time: BTreeMap<(u64, u64), u32>,
    by_id: HashMap<u32, (u64, u64)>,
}

impl Model {
    fn new(now: u64) -> Self {
        Model { now, ..Model::default() }
    }

    fn insert(&mut self, id: u32, deadline: u64) -> Option<u64> {
        let old = self.cancel(id);
        self.seq += 1;
        self.by_time.insert((deadline, self.seq), id);
        self.by_id.insert(id, (deadline, self.seq));
        old
    }

    fn reschedule(&mut self, id: u32, deadline: u64) -> Option<u64> {
        if self.by_id.contains_key(&id) {
            self.insert(id, deadline)
        } else {
            None
        }
    }

    fn cancel(&mut self, id: u32) -> Option<u64> {
        let key = self.by_id.remove(&id)?;
        self.by_time.remove(&key);
        Some(key.0)
    }

    fn advance(&mut self, now: u64) -> Vec<u32> {
        self.now = self.now.max(now);
        let mut fired = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
            fired.push(id);
        }
        fired
    }

    fn next_deadline(&self) -> Option<u64> {
        self.by_time.keys().next().map(|k| k.0)
    }
}

/// A deadline, chosen relative to the current time when the operation runs.
#[derive(Clone, Debug)]
enum When {
    Past(u64),
    Now,
    Near(u64),
    Mid(u64),
    Year(u64),
    /// Beyond the 139-year span of levels 0-6: the overflow levels.
    Far(u64),
    Absolute(u64),
    Zero,
    Max,
    /// The deadline of an existing entry (the n-th in time order): makes ties.
    Existing(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, When),
    Reschedule(u32, When),
    Cancel(u32),
    /// Advance by a number of ms (saturating).
    Step(u64),
    /// Advance to an absolute time (may be in the past: ignored by both).
    To(u64),
    ToMax,
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        (0u64..100_000).prop_map(When::Past),
        Just(When::Now),
        (0u64..200).prop_map(When::Near),
        (0u64..(1 << 24)).prop_map(When::Mid),
        (0u64..(1 << 35)).prop_map(When::Year),
        ((1u64 << 42)..(1 << 62)).prop_map(When::Far),
        any::<u64>().prop_map(When::Absolute),
        Just(When::Zero),
        Just(When::Max),
        (0usize..64).prop_map(When::Existing),
        (0usize..64).prop_map(When::Existing),
    ]
}

fn op(ids: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..ids, when()).prop_map(|(id, w)| Op::Insert(id, w)),
        2 => (0..ids, when()).prop_map(|(id, w)| Op::Reschedule(id, w)),
        2 => (0..ids).prop_map(Op::Cancel),
        2 => (0u64..300).prop_map(Op::Step),
        1 => (0u64..(1 << 30)).prop_map(Op::Step),
        1 => (0u64..(1 << 45)).prop_map(Op::Step),
        1 => any::<u64>().prop_map(Op::To),
        1 => Just(Op::ToMax),
    ]
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1_763_000_000_000u64),
        any::<u64>(),
        (0u64..1_000_000).prop_map(|x| u64::MAX - x),
        (0u64..1_000).prop_map(|x| (1u64 << 42) - x),
    ]
}

fn resolve(w: &When, model: &Model) -> u64 {
    let now = model.now;
    match *w {
        When::Past(x) => now.saturating_sub(x),
        When::Now => now,
        When::Near(x) | When::Mid(x) | When::Year(x) | When::Far(x) => now.saturating_add(x),
        When::Absolute(x) => x,
        When::Zero => 0,
        When::Max => u64::MAX,
        When::Existing(n) => {
            let len = model.by_time.len();
            if len == 0 {
                now
            } else {
                model.by_time.keys().nth(n % len).map_or(now, |k| k.0)
            }
        }
    }
}

fn run<S: BuildHasher>(start: u64, ops: &[Op], hasher: S) -> Result<(), TestCaseError> {
    let mut wheel = Wheel::with_hasher(start, hasher);
    let mut model = Model::new(start);
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Insert(id, w) => {
                let d = resolve(w, &model);
                prop_assert_eq!(wheel.insert(*id, d), model.insert(*id, d), "step {}", step);
            }
            Op::Reschedule(id, w) => {
                let d = resolve(w, &model);
                prop_assert_eq!(wheel.reschedule(id, d), model.reschedule(*id, d), "step {}", step);
            }
            Op::Cancel(id) => {
                prop_assert_eq!(wheel.cancel(id), model.cancel(*id), "step {}", step);
            }
            Op::Step(ms) => {
                let to = model.now.saturating_add(*ms);
                prop_assert_eq!(wheel.advance(to), model.advance(to), "step {}", step);
            }
            Op::To(t) => {
                prop_assert_eq!(wheel.advance(*t), model.advance(*t), "step {}", step);
            }
            Op::ToMax => {
                prop_assert_eq!(wheel.advance(u64::MAX), model.advance(u64::MAX), "step {}", step);
            }
        }
        prop_assert_eq!(wheel.len(), model.by_id.len());
        prop_assert_eq!(wheel.now(), model.now);
        let next = model.next_deadline();
        prop_assert_eq!(wheel.next_deadline(), next, "step {}", step);
        match (wheel.next_wakeup(), next) {
            (None, None) => {}
            (Some(wake), Some(next)) => {
                // Never later than the next deadline, except for overdue entries (reported as due now).
                prop_assert!(wake <= next.max(model.now), "wake {} next {}", wake, next);
                prop_assert!(wake >= model.now);
            }
            (wake, next) => prop_assert!(false, "wake {:?} next {:?}", wake, next),
        }
    }
    // Drain: whatever is left fires in the same order.
    prop_assert_eq!(wheel.advance(u64::MAX), model.advance(u64::MAX));
    prop_assert!(wheel.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn wheel_matches_reference_few_ids(start in start(), ops in prop::collection::vec(op(12), 1..120)) {
        run(start, &ops, DefaultHashBuilder::default())?;
        run(start, &ops, HandleHasher)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn wheel_matches_reference_many_ids(start in start(), ops in prop::collection::vec(op(2_000), 500..3_000)) {
        run(start, &ops, DefaultHashBuilder::default())?;
        run(start, &ops, HandleHasher)?;
    }
}

#[test]
fn deadlines_for_every_bit_position_fire_in_order() {
    let mut wheel = Wheel::new(0);
    let mut model = Model::new(0);
    let mut id = 0;
    for bit in 0..64 {
        for d in [1u64 << bit, (1u64 << bit) - 1, (1u64 << bit) + 1, u64::MAX >> bit] {
            id += 1;
            assert_eq!(wheel.insert(id, d), model.insert(id, d));
        }
    }
    let mut t = 0u64;
    while !model.by_id.is_empty() {
        t = t.saturating_mul(3).saturating_add(7);
        assert_eq!(wheel.advance(t), model.advance(t));
    }
    assert!(wheel.is_empty());
}
