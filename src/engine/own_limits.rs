//! Nothing of its own: the engine's side of hush's own rate limit, the watch its write tasks run in and the one notice a run (see `crate::rate_limits`).

use hush_core::schedule::Clock;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Engine, Input};
use crate::enforce::RoomWriter;
use crate::rate_limits::{self, OwnLimit, Watch};

/// The key of the notice: one per run, whichever way hush learnt it first.
const KEY: &str = "own-rate-limit";

/// The watch the engine's write tasks run in: their first 429 comes back as an input.
pub(super) fn watch(inbox: &mpsc::UnboundedSender<Input>) -> Watch {
    let inbox = inbox.clone();
    Watch::new(move |seen| {
        let _ = inbox.send(Input::OwnRateLimit(seen));
    })
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// hush's own account is rate-limited: logged, and told to the management room once
    /// per run, with how to exempt it (dry run says the same).
    pub(super) fn own_rate_limited(&mut self, seen: &OwnLimit) {
        let text = rate_limits::notice(&self.cfg.own_user, seen);
        if !self.reports.was_reported(KEY) {
            warn!("{text}");
        }
        self.report_once(KEY, &text);
    }
}
