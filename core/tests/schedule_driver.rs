//! Driver tests under paused tokio time: exact firing instants, early wake-ups, cancel, shutdown.

use std::time::Duration;

use hush_core::schedule::driver::{self, DriverOptions, Expired};
use hush_core::schedule::{ManualClock, TokioClock};
use tokio::time::Instant;

const BASE: u64 = 1_763_000_000_000;

fn start(
    options: DriverOptions,
) -> (driver::TimerHandle<u64>, tokio::sync::mpsc::Receiver<Expired<u64>>, tokio::task::JoinHandle<()>, Instant) {
    let t0 = Instant::now();
    let (handle, rx, task) =
        driver::spawn_with_hasher(TokioClock::starting_at(BASE), options, hush_core::schedule::HandleHasher);
    (handle, rx, task, t0)
}

fn no_cap() -> DriverOptions {
    DriverOptions { max_sleep: None, ..DriverOptions::default() }
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_exact_paused_instant() {
    let (handle, mut rx, _task, t0) = start(no_cap());
    handle.schedule(7, BASE + 5_000).unwrap();
    let batch = rx.recv().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(5_000));
    assert_eq!(batch, Expired { now_ms: BASE + 5_000, ids: vec![7] });
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_exact_instant_with_a_sleep_cap() {
    // Capped sleeps (default 60 s) only add wake-ups; the deadline stays exact.
    let (handle, mut rx, _task, t0) = start(DriverOptions::default());
    handle.schedule(1, BASE + 3_600_123).unwrap();
    let batch = rx.recv().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(3_600_123));
    assert_eq!(batch.ids, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_insert_wakes_the_driver_early() {
    let (handle, mut rx, _task, t0) = start(no_cap());
    handle.schedule(1, BASE + 100_000).unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    handle.schedule(2, BASE + 10_000).unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(first.ids, vec![2]);
    assert_eq!(t0.elapsed(), Duration::from_millis(10_000));
    let second = rx.recv().await.unwrap();
    assert_eq!(second.ids, vec![1]);
    assert_eq!(t0.elapsed(), Duration::from_millis(100_000));
}

#[tokio::test(start_paused = true)]
async fn cancel_prevents_firing() {
    let (handle, mut rx, _task, t0) = start(no_cap());
    handle.schedule(1, BASE + 5_000).unwrap();
    handle.schedule(2, BASE + 10_000).unwrap();
    handle.cancel(1).unwrap();
    handle.cancel(99).unwrap(); // unknown: ignored
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.ids, vec![2]);
    assert_eq!(t0.elapsed(), Duration::from_millis(10_000));
}

#[tokio::test(start_paused = true)]
async fn schedule_again_moves_the_deadline() {
    let (handle, mut rx, _task, t0) = start(no_cap());
    handle.schedule(1, BASE + 5_000).unwrap();
    handle.schedule(1, BASE + 8_000).unwrap();
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.ids, vec![1]);
    assert_eq!(t0.elapsed(), Duration::from_millis(8_000));
}

#[tokio::test(start_paused = true)]
async fn past_deadlines_fire_at_once_in_deadline_order() {
    let (handle, mut rx, _task, t0) = start(no_cap());
    handle.schedule(1, BASE - 10).unwrap();
    handle.schedule(2, 0).unwrap();
    handle.schedule(3, BASE).unwrap();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        ids.extend(rx.recv().await.unwrap().ids);
    }
    assert_eq!(ids, vec![2, 1, 3]);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn many_timers_one_task_in_order() {
    let (handle, mut rx, _task, t0) = start(DriverOptions::default());
    // 10,000 timers over ten days, inserted in a scrambled order; ties at every 7th.
    let n = 10_000u64;
    let deadline = |id: u64| BASE + (id / 7) * 86_400;
    let mut inserted_at = vec![0u64; n as usize];
    for k in 0..n {
        let id = (k * 7_919) % n;
        inserted_at[id as usize] = k;
        handle.schedule(id, deadline(id)).unwrap();
    }
    let mut order: Vec<u64> = (0..n).collect();
    order.sort_by_key(|&id| (deadline(id), inserted_at[id as usize]));
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        let batch = rx.recv().await.unwrap();
        // Every batch arrives exactly at its deadline.
        let last = *batch.ids.last().unwrap();
        assert_eq!(batch.now_ms, deadline(last));
        assert_eq!(t0.elapsed(), Duration::from_millis(batch.now_ms - BASE));
        got.extend(batch.ids);
    }
    assert_eq!(got, order);
}

#[tokio::test(start_paused = true)]
async fn far_deadlines_do_not_fire_and_do_not_spin() {
    let (handle, mut rx, _task, _t0) = start(no_cap());
    handle.schedule(1, u64::MAX).unwrap();
    handle.schedule(2, BASE + 86_400_000 * 365 * 200).unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(86_400 * 365), rx.recv()).await;
    assert!(waited.is_err(), "nothing may fire within a year");
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_ends_the_task() {
    let (handle, mut rx, task, _t0) = start(no_cap());
    handle.schedule(1, BASE + 1_000_000).unwrap();
    let other = handle.clone();
    drop(handle);
    assert!(!other.is_closed());
    drop(other);
    task.await.unwrap();
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_task_and_handles_report_it() {
    let (handle, _rx, task, _t0) = start(no_cap());
    handle.schedule(1, BASE + 1_000).unwrap();
    handle.shutdown().unwrap();
    task.await.unwrap();
    assert!(handle.is_closed());
    assert_eq!(handle.schedule(2, BASE), Err(driver::DriverStopped));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_receiver_ends_the_task() {
    let (handle, rx, task, _t0) = start(no_cap());
    drop(rx);
    task.await.unwrap();
    assert!(handle.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_manual_clock_is_followed_on_each_capped_wake_up() {
    // With a clock that is not tokio's (a wall clock that jumps, say), the sleep
    // cap bounds how late a deadline can be noticed.
    let clock = ManualClock::new(BASE);
    let options = DriverOptions { max_sleep: Some(Duration::from_secs(1)), ..DriverOptions::default() };
    let (handle, mut rx, _task) = driver::spawn(clock.clone(), options);
    let t0 = Instant::now();
    handle.schedule(5, BASE + 86_400_000).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    clock.set(BASE + 86_400_000); // the wall clock jumps a day
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.ids, vec![5]);
    assert!(t0.elapsed() <= Duration::from_millis(1_010), "{:?}", t0.elapsed());
}
