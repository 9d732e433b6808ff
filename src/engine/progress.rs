//! Start-up progress: when loading began, when it was last logged, and whether everything configured has loaded; logged at info level while it lasts.

use hush_core::schedule::Clock;
use tracing::info;

use super::Engine;
use crate::enforce::RoomWriter;
use crate::local_rules::LOCAL_LIST;

/// How often a long start-up logs how far it got.
const EVERY_MS: u64 = 5_000;

/// Start-up progress, from the engine's first input until every followed list and
/// protected room has loaded once.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// When the engine started (clock ms); `None` until the first input.
    started_ms: Option<u64>,
    last_logged_ms: u64,
    /// Everything configured has loaded once: start-up is over.
    done: bool,
}

/// How far loading got: loaded of known rooms and lists, and the rules in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loading {
    pub rooms_loaded: usize,
    pub rooms: usize,
    pub lists_loaded: usize,
    pub lists: usize,
    pub rules: usize,
    /// Since the engine started (ms).
    pub elapsed_ms: u64,
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    /// Loading progress, or `None` once start-up is over.
    pub(super) fn loading(&self) -> Option<Loading> {
        if self.progress.done {
            return None;
        }
        let now = self.now();
        // The local list is loaded from disk at once: not something to wait for.
        let lists = self.view.lists.iter().filter(|(l, _)| l.as_str() != LOCAL_LIST);
        let (lists, lists_loaded) = lists.fold((0, 0), |(n, k), (_, loaded)| (n + 1, k + usize::from(*loaded)));
        Some(Loading {
            rooms_loaded: self.view.rooms.values().filter(|r| r.is_some()).count(),
            rooms: self.view.rooms.len(),
            lists_loaded,
            lists,
            rules: self.index.len(),
            elapsed_ms: now.saturating_sub(self.progress.started_ms.unwrap_or(now)),
        })
    }

    /// After each input during start-up: logs how far loading got (at most every few
    /// seconds), and once when everything configured has loaded.
    pub(super) fn log_progress(&mut self) {
        let now = self.now();
        let started = *self.progress.started_ms.get_or_insert(now);
        let Some(l) = self.loading() else { return };
        // Everything configured is known once the lists are; a room added later by
        // command is not start-up.
        if self.view.lists_known && l.rooms_loaded == l.rooms && l.lists_loaded == l.lists {
            self.progress.done = true;
            info!(
                rooms = l.rooms,
                lists = l.lists,
                rules = l.rules,
                secs = format!("{:.1}", now.saturating_sub(started) as f64 / 1000.0),
                "start-up: every protected room and policy list is loaded"
            );
        } else if now.saturating_sub(self.progress.last_logged_ms) >= EVERY_MS && l.rooms_loaded + l.lists_loaded > 0 {
            self.progress.last_logged_ms = now;
            info!(
                rooms = format!("{} of {}", l.rooms_loaded, l.rooms),
                lists = format!("{} of {}", l.lists_loaded, l.lists),
                rules = l.rules,
                "start-up: loading"
            );
        }
    }
}
