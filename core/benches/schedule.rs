//! Timer wheel benchmarks against tokio_util's DelayQueue and a lazy-deletion BinaryHeap.
//!
//! Run: `cargo bench -p hush-core --bench schedule`. Each measurement is one batch of
//! 1,000,000 operations, so the reported time in ms equals ns per operation.
//! Bytes per entry are measured with a counting global allocator and printed first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use hush_core::schedule::{DefaultHashBuilder, HandleHasher, Wheel};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged and only counts live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: u64 = 1_000_000;
const YEAR_MS: u64 = 365 * 86_400_000;
const START: u64 = 1_763_000_000_000;

/// SplitMix64: deterministic pseudo-random numbers without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Offsets (ms after START) of entry `id`: spread uniformly over a year.
fn offsets() -> Vec<u64> {
    (0..N).map(|id| mix(id) % YEAR_MS).collect()
}

/// The ids in a scrambled order, for cancels.
fn cancel_order() -> Vec<u64> {
    let mut ids: Vec<u64> = (0..N).collect();
    ids.sort_unstable_by_key(|&id| mix(id ^ 0x5555));
    ids
}

/// Baseline: a binary heap with lazy deletion; a map keeps each live id's sequence number.
#[derive(Default)]
struct LazyHeap {
    heap: BinaryHeap<Reverse<(u64, u64, u64)>>,
    live: HashMap<u64, u64, foldhash::fast::RandomState>,
    seq: u64,
}

impl LazyHeap {
    fn insert(&mut self, id: u64, deadline: u64) {
        self.seq += 1;
        self.live.insert(id, self.seq);
        self.heap.push(Reverse((deadline, self.seq, id)));
    }

    fn cancel(&mut self, id: u64) -> bool {
        self.live.remove(&id).is_some()
    }

    fn advance_with(&mut self, now: u64, mut f: impl FnMut(u64)) -> usize {
        let mut fired = 0;
        while let Some(&Reverse((deadline, seq, id))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.live.get(&id) == Some(&seq) {
                self.live.remove(&id);
                f(id);
                fired += 1;
            }
        }
        fired
    }
}

fn build_wheel<S: BuildHasher>(offsets: &[u64], hasher: S) -> Wheel<u64, S> {
    let mut w = Wheel::with_hasher(START, hasher);
    for (id, &o) in offsets.iter().enumerate() {
        w.insert(id as u64, START + o);
    }
    w
}

fn build_heap(offsets: &[u64]) -> LazyHeap {
    let mut h = LazyHeap::default();
    for (id, &o) in offsets.iter().enumerate() {
        h.insert(id as u64, START + o);
    }
    h
}

/// DelayQueue needs a tokio context; its clock is paused so expiry can jump a year.
fn build_delay_queue(rt: &Runtime, offsets: &[u64]) -> (DelayQueue<u64>, Vec<tokio_util::time::delay_queue::Key>) {
    let _guard = rt.enter();
    let base = Instant::now();
    let mut q = DelayQueue::new();
    let keys =
        offsets.iter().enumerate().map(|(id, &o)| q.insert_at(id as u64, base + Duration::from_millis(o))).collect();
    (q, keys)
}

fn measure<T>(name: &str, build: impl FnOnce() -> T) {
    let before = LIVE.load(Ordering::SeqCst);
    let built = build();
    let bytes = LIVE.load(Ordering::SeqCst) - before;
    println!(
        "memory {name:<12} {:>6.1} bytes/entry ({bytes} bytes for {N} u64 ids over a year)",
        bytes as f64 / N as f64
    );
    drop(built);
}

fn paused_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
}

fn main() {
    let offsets = offsets();
    let order = cancel_order();
    let rt = paused_runtime();

    measure("wheel", || build_wheel(&offsets, DefaultHashBuilder::default()));
    measure("wheel_handle", || build_wheel(&offsets, HandleHasher));
    measure("delay_queue", || build_delay_queue(&rt, &offsets).0);
    measure("binary_heap", || build_heap(&offsets));

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    {
        let mut g = c.benchmark_group("insert_1M_over_a_year");
        g.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(N));
        g.bench_function("wheel", |b| {
            b.iter_batched(|| (), |()| build_wheel(&offsets, DefaultHashBuilder::default()), BatchSize::PerIteration)
        });
        g.bench_function("wheel_handle_hasher", |b| {
            b.iter_batched(|| (), |()| build_wheel(&offsets, HandleHasher), BatchSize::PerIteration)
        });
        g.bench_function("delay_queue", |b| {
            b.iter_batched(|| (), |()| build_delay_queue(&rt, &offsets), BatchSize::PerIteration)
        });
        g.bench_function("binary_heap", |b| b.iter_batched(|| (), |()| build_heap(&offsets), BatchSize::PerIteration));
        g.finish();
    }

    {
        let mut g = c.benchmark_group("cancel_1M_scrambled");
        g.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(N));
        g.bench_function("wheel", |b| {
            b.iter_batched(
                || build_wheel(&offsets, DefaultHashBuilder::default()),
                |mut w| {
                    for id in &order {
                        black_box(w.cancel(id));
                    }
                    w
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("wheel_handle_hasher", |b| {
            b.iter_batched(
                || build_wheel(&offsets, HandleHasher),
                |mut w| {
                    for id in &order {
                        black_box(w.cancel(id));
                    }
                    w
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("delay_queue", |b| {
            b.iter_batched(
                || build_delay_queue(&rt, &offsets),
                |(mut q, keys)| {
                    let _guard = rt.enter();
                    for &id in &order {
                        black_box(q.remove(&keys[id as usize]));
                    }
                    (q, keys)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("binary_heap", |b| {
            b.iter_batched(
                || build_heap(&offsets),
                |mut h| {
                    for &id in &order {
                        black_box(h.cancel(id));
                    }
                    h
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("expire_1M_advance_a_year");
        g.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(N));
        g.bench_function("wheel", |b| {
            b.iter_batched(
                || build_wheel(&offsets, DefaultHashBuilder::default()),
                |mut w| {
                    let fired = w.advance_with(START + YEAR_MS, |id, _| {
                        black_box(id);
                    });
                    assert_eq!(fired as u64, N);
                    w
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("wheel_hourly", |b| {
            // Many small advances, as the driver does, instead of one jump.
            b.iter_batched(
                || build_wheel(&offsets, DefaultHashBuilder::default()),
                |mut w| {
                    let mut fired = 0;
                    for hour in 1..=(YEAR_MS / 3_600_000) {
                        fired += w.advance_with(START + hour * 3_600_000, |id, _| {
                            black_box(id);
                        });
                    }
                    fired += w.advance_with(START + YEAR_MS, |id, _| {
                        black_box(id);
                    });
                    assert_eq!(fired as u64, N);
                    w
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("delay_queue", |b| {
            b.iter_batched(
                || build_delay_queue(&rt, &offsets),
                |(mut q, keys)| {
                    rt.block_on(async {
                        tokio::time::advance(Duration::from_millis(YEAR_MS + 1)).await;
                        let mut fired = 0u64;
                        while let Some(e) = std::future::poll_fn(|cx| q.poll_expired(cx)).await {
                            black_box(e.into_inner());
                            fired += 1;
                        }
                        assert_eq!(fired, N);
                    });
                    (q, keys)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("binary_heap", |b| {
            b.iter_batched(
                || build_heap(&offsets),
                |mut h| {
                    let fired = h.advance_with(START + YEAR_MS, |id| {
                        black_box(id);
                    });
                    assert_eq!(fired as u64, N);
                    h
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }

    c.final_summary();
}
