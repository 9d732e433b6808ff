//! Timer wheel: deadlines for lifting temporary restrictions, and its tokio driver.
//!
//! - [`Wheel`]: the pure hierarchical timing wheel (no clock, no I/O).
//! - [`Clock`], [`SystemClock`], [`ManualClock`], [`TokioClock`]: injectable time.
//! - [`driver`]: one tokio task that drives a wheel and sends expired ids.

pub mod clock;
pub mod driver;
pub mod hash;
mod index;
pub mod wheel;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use driver::{DriverOptions, DriverStopped, Expired, TimerHandle};
pub use hash::{DefaultHashBuilder, HandleHasher};
pub use wheel::Wheel;
