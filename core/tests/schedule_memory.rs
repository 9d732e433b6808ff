//! Measured memory per entry of the timer wheel (counting global allocator), and no allocation per tick.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use hush_core::schedule::Wheel;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread is counted: the test harness allocates on its other
    /// threads at any moment (output capture, progress), which made "everything freed"
    /// fail now and then. Const-initialised and without a destructor, so reading it
    /// never allocates.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards every call to `System` unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size(), Ordering::SeqCst);
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(new_size, Ordering::SeqCst);
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
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

/// The largest number of bytes per entry held by a wheel of `u64` ids with
/// deadlines over a year, beyond what the empty wheel holds, over every size
/// from `from` to `to` entries (measured after each insert).
fn worst_bytes_per_entry(from: u64, to: u64) -> (f64, u64) {
    let before = LIVE.load(Ordering::SeqCst);
    let mut wheel = Wheel::new(START);
    let empty = LIVE.load(Ordering::SeqCst) - before;
    let mut worst = (0.0f64, 0);
    for id in 0..to {
        wheel.insert(id, START + mix(id) % YEAR_MS);
        let n = id + 1;
        if n >= from {
            let per = (LIVE.load(Ordering::SeqCst) - before - empty) as f64 / n as f64;
            if per > worst.0 {
                worst = (per, n);
            }
        }
    }
    let at_end = (LIVE.load(Ordering::SeqCst) - before - empty) as f64 / to as f64;
    drop(wheel);
    assert_eq!(LIVE.load(Ordering::SeqCst), before, "everything freed");
    println!("empty wheel {empty} B; worst {:.1} B/entry at n = {}; {at_end:.1} B/entry at n = {to}", worst.0, worst.1);
    worst
}

// One test function: the counters are global, parallel tests would disturb them.
#[test]
fn memory_per_entry_and_no_allocation_per_tick() {
    COUNTED.with(|c| c.set(true));
    // Every size from 1,000 to 2,100,000 entries: covers a growth of the node
    // Vec and of the hash table at and beyond one million.
    let (worst, at) = worst_bytes_per_entry(1_000, 2_100_000);
    assert!(worst <= 64.0, "{worst} bytes per entry at n = {at}");
    let (at_million, _) = worst_bytes_per_entry(1_000_000, 1_000_000);
    assert!(at_million <= 64.0);

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
