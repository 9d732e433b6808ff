//! What the engine tells the management room: the reports of the input being handled, the keys reported already this run, and the last errors.
//!
//! Gathering is pure ([`Reports::take`]); the engine sends what it returns.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hush_core::schedule::Clock;
use tracing::{debug, error, warn};

use super::{Engine, Input};
use crate::enforce::{self, RoomWriter};

#[derive(Debug, Default)]
pub(super) struct Reports {
    /// What the input being handled reports, sent as one message at its end.
    outbox: Vec<(Vec<String>, String)>,
    /// Room-by-room reports of the input being handled, by template: one line each.
    room_reports: BTreeMap<String, Vec<(String, String)>>,
    /// Keys reported this run (each is reported once, unless its report failed).
    reported: HashSet<String>,
    /// The last errors, for `status`.
    last_errors: Vec<String>,
}

impl Reports {
    /// Queues `text` unless `key` was reported already this run.
    pub(super) fn report_once(&mut self, key: &str, text: &str) {
        if self.reported.insert(key.to_owned()) {
            self.outbox.push((vec![key.to_owned()], text.to_owned()));
        }
    }

    /// Queues a room's report under `template` unless `key` was reported already this run.
    pub(super) fn report_in_room(&mut self, key: &str, template: &str, room_id: &str) {
        if !self.reported.insert(key.to_owned()) {
            return;
        }
        self.room_reports.entry(template.to_owned()).or_default().push((key.to_owned(), room_id.to_owned()));
    }

    /// Whether `key` was reported already this run.
    pub(super) fn was_reported(&self, key: &str) -> bool {
        self.reported.contains(key)
    }

    /// Keeps an error for `status` (the last ten).
    pub(super) fn note_error(&mut self, text: String) {
        self.last_errors.push(text);
        if self.last_errors.len() > 10 {
            self.last_errors.remove(0);
        }
    }

    pub(super) fn last_errors(&self) -> &[String] {
        &self.last_errors
    }

    /// These reports could not be sent: report them again when they recur.
    pub(super) fn failed(&mut self, keys: Vec<String>) {
        for key in keys {
            self.reported.remove(&key);
        }
    }

    /// What this input reported, gathered into one message (with the keys it reports):
    /// one line per report, a room-by-room template once naming all its rooms, identical
    /// lines once with a count. `None` if it reported nothing.
    pub(super) fn take(&mut self) -> Option<(Vec<String>, String)> {
        for (template, rooms) in std::mem::take(&mut self.room_reports) {
            let names: Vec<&str> = rooms.iter().map(|(_, r)| r.as_str()).collect();
            let where_ = match &names[..] {
                [one] => (*one).to_owned(),
                many => format!("{} rooms ({})", many.len(), many.join(", ")),
            };
            let text = template.replace("{rooms}", &where_);
            self.outbox.push((rooms.into_iter().map(|(key, _)| key).collect(), text));
        }
        if self.outbox.is_empty() {
            return None;
        }
        let reports = std::mem::take(&mut self.outbox);
        let mut lines: Vec<(String, usize)> = Vec::new();
        for (_, text) in &reports {
            match lines.iter_mut().find(|(t, _)| t == text) {
                Some((_, n)) => *n += 1,
                None => lines.push((text.clone(), 1)),
            }
        }
        let text = lines
            .into_iter()
            .map(|(t, n)| if n > 1 { format!("{t} (x{n})") } else { t })
            .collect::<Vec<_>>()
            .join("\n");
        let keys: Vec<String> = reports.into_iter().flat_map(|(k, _)| k).collect();
        Some((keys, text))
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    pub(super) fn error(&mut self, text: String) {
        error!("{text}");
        self.report_once(&text, &text);
        self.reports.note_error(text);
    }

    /// Tells the management room, once per key per run. What one input reports goes out
    /// as one message, at the end of the input ([`Engine::flush_reports`]).
    pub(super) fn report_once(&mut self, key: &str, text: &str) {
        if self.own.blocked.is_some() {
            // hush cannot write to the management room either: keep it for later.
            debug!(key, "not reporting while hush's own account cannot write");
            return;
        }
        self.reports.report_once(key, text);
    }

    /// Like [`Engine::report_once`] for something that happens room by room: the same
    /// `template` for several rooms in one input is one line naming the rooms (`{rooms}`
    /// in the template is replaced by them).
    pub(super) fn report_in_room(&mut self, key: &str, template: &str, room_id: &str) {
        if self.own.blocked.is_some() {
            return;
        }
        self.reports.report_in_room(key, template, room_id);
    }

    /// Sends what this input reported, gathered into one message ([`Reports::take`]).
    pub(super) fn flush_reports(&mut self) {
        let Some((keys, text)) = self.reports.take() else { return };
        let Some(room) = self.management_room.clone() else { return };
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(self.own_limits.scope(async move {
            let html = hush_core::commands::html_escape(&text);
            // hush may not have joined the management room yet (start-up): try for a while.
            let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            for attempt in 0..8 {
                match enforce::with_retries("report", || writer.notice(&room, &text, &html)).await {
                    Ok(()) => return,
                    Err(e) if attempt == 7 => warn!("cannot report to the management room: {e}"),
                    Err(_) => tokio::time::sleep(backoff.next()).await,
                }
            }
            // Let a later occurrence be reported again.
            let _ = inbox.send(Input::ReportFailed { keys });
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::Reports;

    #[test]
    fn one_line_per_template_names_all_its_rooms() {
        let mut r = Reports::default();
        r.report_in_room("k1", "Refused in {rooms}.", "!a:x");
        r.report_in_room("k2", "Refused in {rooms}.", "!b:x");
        r.report_in_room("k3", "Other in {rooms}.", "!a:x");
        let (keys, text) = r.take().unwrap();
        assert_eq!(text, "Other in !a:x.\nRefused in 2 rooms (!a:x, !b:x).");
        assert_eq!(keys, ["k3", "k1", "k2"]);
        assert!(r.take().is_none(), "taken once");
    }

    #[test]
    fn identical_lines_are_counted_and_a_key_is_reported_once() {
        let mut r = Reports::default();
        r.report_once("a", "Cannot write.");
        r.report_once("b", "Cannot write.");
        r.report_once("a", "Cannot write.");
        r.report_once("c", "Something else.");
        let (keys, text) = r.take().unwrap();
        assert_eq!(text, "Cannot write. (x2)\nSomething else.");
        assert_eq!(keys, ["a", "b", "c"]);
        r.report_once("a", "Cannot write.");
        assert!(r.take().is_none(), "already reported this run");
        r.failed(vec!["a".into()]);
        r.report_once("a", "Cannot write.");
        assert_eq!(r.take().unwrap().1, "Cannot write.");
    }

    #[test]
    fn nothing_reported_is_nothing_to_send() {
        assert!(Reports::default().take().is_none());
    }

    #[test]
    fn only_the_last_ten_errors_are_kept() {
        let mut r = Reports::default();
        for i in 0..12 {
            r.note_error(format!("e{i}"));
        }
        assert_eq!(r.last_errors().first().map(String::as_str), Some("e2"));
        assert_eq!(r.last_errors().len(), 10);
    }
}
