//! Measured memory per entry of the timer wheel (counting global allocator), and no allocation per tick.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hush_core::schedule::Wheel;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::SeqCst);
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::SeqCst);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const YEAR_MS: u64 = 365 * 86_400_000;
const START: u64 = 1_763_000_000_000;

/// SplitMix64: deterministic spread of deadlines without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Bytes held per entry by a wheel of `n` u64 ids with deadlines over a year,
/// beyond what the empty wheel holds.
fn bytes_per_entry(n: u64) -> f64 {
    let before = LIVE.load(Ordering::SeqCst);
    let mut wheel = Wheel::new(START);
    let empty = LIVE.load(Ordering::SeqCst) - before;
    for id in 0..n {
        wheel.insert(id, START + mix(id) % YEAR_MS);
    }
    let full = LIVE.load(Ordering::SeqCst) - before;
    assert_eq!(wheel.len() as u64, n);
    drop(wheel);
    assert_eq!(LIVE.load(Ordering::SeqCst), before, "everything freed");
    println!("n = {n}: empty wheel {empty} B, {:.1} B/entry", (full - empty) as f64 / n as f64);
    (full - empty) as f64 / n as f64
}

// One test function: the counters are global, parallel tests would disturb them.
#[test]
fn memory_per_entry_and_no_allocation_per_tick() {
    // Sizes include the worst cases just past a doubling of the node Vec
    // (2^20 + 1) and of the hash table (7/8 * 2^21 + 1).
    for n in [1_000, 100_000, 1_000_000, 1_048_577, 1_835_009] {
        let b = bytes_per_entry(n);
        assert!(b <= 64.0, "{b} bytes per entry at n = {n}");
    }

    // No allocation per tick: advancing, firing, cancelling and rescheduling.
    let mut wheel = Wheel::with_capacity(START, 10_000);
    for id in 0..10_000u64 {
        wheel.insert(id, START + mix(id) % 10_000_000);
    }
    let calls = CALLS.load(Ordering::SeqCst);
    let mut fired = 0;
    let mut now = START;
    for _ in 0..200_000 {
        now += 1;
        fired += wheel.advance_with(now, |_, _| {});
    }
    for id in 0..1_000u64 {
        wheel.cancel(&id);
        wheel.reschedule(&(id + 5_000), now + mix(id) % 1_000_000);
    }
    for _ in 0..20_000 {
        now += 1_000;
        fired += wheel.advance_with(now, |_, _| {});
    }
    fired += wheel.advance_with(u64::MAX, |_, _| {});
    assert_eq!(CALLS.load(Ordering::SeqCst), calls, "allocations while ticking");
    assert!(fired > 1_000, "{fired}");
    assert!(wheel.is_empty());
}
