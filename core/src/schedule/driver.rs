//! Tokio driver: one task that owns a [`Wheel`], sleeps until its next deadline and sends expired ids.
//!
//! [`spawn`] starts the task and returns a cloneable [`TimerHandle`] (schedule,
//! cancel, shutdown) and the receiving end of a channel of [`Expired`] batches.
//! The task sleeps on a single `tokio::time::Sleep`, re-armed only when the
//! wheel's next wake-up changes (an earlier insert wakes it early), so there is
//! no task per timer and no polling; with a `max_sleep` bound it also wakes at
//! least that often, to follow a wall clock that jumped.
//!
//! Sleeps are computed as "deadline minus `clock.now_ms()`" and slept on tokio's
//! clock, so with [`TokioClock`](super::TokioClock) the driver runs exactly under
//! `tokio::time::pause()`. It ends when every handle is dropped, on
//! [`TimerHandle::shutdown`], or when the receiver is dropped.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Clock, DefaultHashBuilder, Wheel};

/// The ids that expired at one wake-up, in deadline order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired<Id> {
    /// The clock's time (ms since the epoch) when they were collected.
    pub now_ms: u64,
    /// The expired ids, in deadline order (ties in scheduling order).
    pub ids: Vec<Id>,
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Longest single sleep. `None`: sleep until the next deadline, however far.
    /// With a wall clock, a bound lets the driver notice clock jumps and suspend;
    /// default 60 s.
    pub max_sleep: Option<Duration>,
    /// Capacity of the channel of [`Expired`] batches; when it is full the driver
    /// waits for the consumer (commands keep queueing meanwhile). Default 64.
    pub channel_capacity: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions { max_sleep: Some(Duration::from_secs(60)), channel_capacity: 64 }
    }
}

/// The driver task has ended; the command was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverStopped;

impl fmt::Display for DriverStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timer driver has stopped")
    }
}

impl std::error::Error for DriverStopped {}

/// Commands applied between two advances at most, so expiries are not starved.
const MAX_COMMANDS_PER_ADVANCE: usize = 1024;

enum Command<Id> {
    Schedule(Id, u64),
    Cancel(Id),
    Shutdown,
}

/// A cloneable handle to a running driver. Commands are applied in the order
/// they are sent; the driver ends when the last handle is dropped.
pub struct TimerHandle<Id> {
    tx: mpsc::UnboundedSender<Command<Id>>,
}

impl<Id> Clone for TimerHandle<Id> {
    fn clone(&self) -> Self {
        TimerHandle { tx: self.tx.clone() }
    }
}

impl<Id> fmt::Debug for TimerHandle<Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle").field("closed", &self.tx.is_closed()).finish()
    }
}

impl<Id> TimerHandle<Id> {
    /// Schedules `id` at `deadline_ms` (ms since the epoch), moving it if it is
    /// already scheduled. A deadline in the past fires at once.
    pub fn schedule(&self, id: Id, deadline_ms: u64) -> Result<(), DriverStopped> {
        self.send(Command::Schedule(id, deadline_ms))
    }

    /// Cancels `id`; unknown ids are ignored.
    pub fn cancel(&self, id: Id) -> Result<(), DriverStopped> {
        self.send(Command::Cancel(id))
    }

    /// Asks the driver to stop; pending timers are dropped.
    pub fn shutdown(&self) -> Result<(), DriverStopped> {
        self.send(Command::Shutdown)
    }

    /// True once the driver task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn send(&self, command: Command<Id>) -> Result<(), DriverStopped> {
        self.tx.send(command).map_err(|_| DriverStopped)
    }
}

/// Spawns the driver on the current tokio runtime (it must be called from
/// inside one), with the wheel's default hasher. Its wheel starts at `clock.now_ms()`.
pub fn spawn<Id, C>(clock: C, options: DriverOptions) -> (TimerHandle<Id>, mpsc::Receiver<Expired<Id>>, JoinHandle<()>)
where
    Id: Eq + Hash + Send + 'static,
    C: Clock + Send + 'static,
{
    spawn_with_hasher(clock, options, DefaultHashBuilder::default())
}

/// Like [`spawn`], with the id index hashed by `hasher` (for instance
/// [`HandleHasher`](super::HandleHasher) for counter-allocated `u64` handles).
pub fn spawn_with_hasher<Id, C, S>(
    clock: C,
    options: DriverOptions,
    hasher: S,
) -> (TimerHandle<Id>, mpsc::Receiver<Expired<Id>>, JoinHandle<()>)
where
    Id: Eq + Hash + Send + 'static,
    C: Clock + Send + 'static,
    S: BuildHasher + Send + 'static,
{
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (expired_tx, expired_rx) = mpsc::channel(options.channel_capacity.max(1));
    let wheel = Wheel::with_capacity_and_hasher(clock.now_ms(), 0, hasher);
    let task = tokio::spawn(run(clock, wheel, options.max_sleep, command_rx, expired_tx));
    (TimerHandle { tx: command_tx }, expired_rx, task)
}

async fn run<Id, C, S>(
    clock: C,
    mut wheel: Wheel<Id, S>,
    max_sleep: Option<Duration>,
    mut commands: mpsc::UnboundedReceiver<Command<Id>>,
    expired: mpsc::Sender<Expired<Id>>,
) where
    Id: Eq + Hash,
    C: Clock,
    S: BuildHasher,
{
    let max_sleep_ms = max_sleep.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    // The wheel time the sleep is armed for; None: not armed (or already fired).
    let mut armed: Option<u64> = None;
    loop {
        let now = clock.now_ms();
        let mut ids = Vec::new();
        wheel.advance_with(now, |id, _| ids.push(id));
        if !ids.is_empty() {
            // Backpressure: a slow consumer holds the driver here; commands queue.
            if expired.send(Expired { now_ms: now, ids }).await.is_err() {
                return;
            }
            continue;
        }
        // After advance(now) every remaining entry lies after `now`.
        let target = wheel.next_wakeup().map(|t| match max_sleep_ms {
            Some(max) => t.min(now.saturating_add(max)),
            None => t,
        });
        if target != armed {
            if let Some(t) = target {
                let wait = Duration::from_millis(t.saturating_sub(now));
                let at = Instant::now().checked_add(wait).unwrap_or_else(far_future);
                sleep.as_mut().reset(at);
            }
            armed = target;
        }
        tokio::select! {
            biased;
            command = commands.recv() => {
                let mut command = command;
                // Apply a burst of queued commands before advancing once.
                for applied in 1.. {
                    match command {
                        None | Some(Command::Shutdown) => return,
                        Some(Command::Schedule(id, deadline)) => {
                            wheel.insert(id, deadline);
                        }
                        Some(Command::Cancel(id)) => {
                            wheel.cancel(&id);
                        }
                    }
                    if applied == MAX_COMMANDS_PER_ADVANCE {
                        break;
                    }
                    match commands.try_recv() {
                        Ok(next) => command = Some(next),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => command = None,
                    }
                }
            }
            () = &mut sleep, if armed.is_some() => armed = None,
            () = expired.closed() => return,
        }
    }
}

/// About 30 years from now: tokio's own "far future".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
