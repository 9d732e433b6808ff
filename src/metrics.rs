//! The process's metrics and health: counters and the latency histogram updated where things happen, when sync last answered and whether the ledger's last commit worked, and their Prometheus text with the engine's gauges (the listener is `metrics/http.rs`).
//!
//! Counters are updated where the engine records an outcome, through one function each
//! ([`Metrics::action`], [`Metrics::refusal`]); the gauges (rules, restrictions in force,
//! held rules, timers, rooms) are the engine's counts at scrape time ([`Snapshot`], asked
//! for with `Input::Metrics`). Nothing here holds a secret: labels are action kinds,
//! outcomes, refusal reasons and policy list room ids.

pub mod http;

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use hush_core::reconcile::{Action, Refusal, ServerRefusal};
use hush_core::record::Kind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text (OpenMetrics, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// hush syncs with a 30 s long poll: without a response for two of them it is not syncing.
pub const SYNC_STALE_AFTER: Duration = Duration::from_secs(60);

/// The restriction kinds `hush_restrictions` always reports (zero when none is in force).
pub const RESTRICTION_KINDS: [Kind; 5] =
    [Kind::MuteMembership, Kind::MutePowerLevel, Kind::Ban, Kind::Suspension, Kind::ServerDeny];

/// 429 answers to hush's writes, process-wide: the retry loop (`enforce::with_retries`)
/// runs in the write tasks, which have no engine to ask.
static RATE_LIMITED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Write attempts made again after a 429, a network error or a 5xx, process-wide.
static WRITE_RETRIES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// A write was answered 429 (`M_LIMIT_EXCEEDED`) and will be tried again.
pub fn rate_limited() {
    RATE_LIMITED.inc();
}

/// A write will be tried again (after a 429, a network error or a 5xx).
pub fn write_retried() {
    WRITE_RETRIES.inc();
}

/// How an action ended, as `hush_actions_total`'s `outcome` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The homeserver has it.
    Done,
    /// It failed for good (the ledger says it was not done).
    Failed,
    /// Someone else changed the user first, and hush left their change (a power level).
    Overridden,
    /// Dry run: it would have been done.
    DryRun,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Overridden => "overridden",
            Outcome::DryRun => "dry_run",
        }
    }

    /// `Done` for `Ok`, `Failed` for `Err`.
    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }
}

/// A restriction kind as the metrics name it (`mute_power_level`, `server_deny`, ...).
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::MuteMembership => "mute_membership",
        Kind::MutePowerLevel => "mute_power_level",
        Kind::Ban => "ban",
        Kind::Suspension => "suspension",
        Kind::ServerDeny => "server_deny",
        Kind::Redaction => "redaction",
    }
}

/// The `kind` label of an action on a restriction of `kind`: its name when applying it,
/// `lift_` and its name when lifting it (`lift_mute_power_level`, `lift_ban`, ...).
pub fn action_kind(kind: Kind, lifting: bool) -> &'static str {
    match (kind, lifting) {
        (Kind::MuteMembership, true) => "lift_mute_membership",
        (Kind::MutePowerLevel, true) => "lift_mute_power_level",
        (Kind::Ban, true) => "lift_ban",
        (Kind::Suspension, true) => "lift_suspension",
        (Kind::ServerDeny, true) => "lift_server_deny",
        (k, _) => kind_label(k),
    }
}

/// The `kind` label of a planned action that changes a room or an account; `None` for
/// refusals and ledger bookkeeping.
pub fn planned_kind(action: &Action) -> Option<&'static str> {
    let (kind, lifting) = match action {
        Action::MutePowerLevel { .. } => (Kind::MutePowerLevel, false),
        Action::UnmutePowerLevel { .. } => (Kind::MutePowerLevel, true),
        Action::MuteMembership { .. } => (Kind::MuteMembership, false),
        Action::UnmuteMembership { .. } => (Kind::MuteMembership, true),
        Action::Ban { .. } => (Kind::Ban, false),
        Action::Unban { .. } => (Kind::Ban, true),
        Action::Suspend { .. } | Action::Resuspend { .. } => (Kind::Suspension, false),
        Action::Unsuspend { .. } => (Kind::Suspension, true),
        Action::DenyServer { .. } => (Kind::ServerDeny, false),
        Action::UndenyServer { .. } => (Kind::ServerDeny, true),
        Action::Redact { .. } => (Kind::Redaction, false),
        _ => return None,
    };
    Some(action_kind(kind, lifting))
}

/// The `reason` label of a refusal.
pub fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Itself => "itself",
        Refusal::Creator => "room_creator",
        Refusal::ProtectedUser => "protected_user",
        Refusal::ManagementModerator => "management_moderator",
        Refusal::RoomModerator { .. } => "room_moderator",
        Refusal::NotBelowHush { .. } => "not_below_hush",
        Refusal::CannotChangePowerLevels { .. } => "cannot_change_power_levels",
        Refusal::CannotBan { .. } => "cannot_ban",
        Refusal::NotExact { .. } => "not_exact",
        Refusal::InRoom { refusal, .. } => refusal_reason(refusal),
    }
}

/// The `reason` label of a server ACL refusal.
pub fn server_refusal_reason(refusal: &ServerRefusal) -> &'static str {
    match refusal {
        ServerRefusal::Protected { .. } => "never_denied_server",
        ServerRefusal::CannotChangeAcl { .. } => "cannot_change_server_acl",
    }
}

/// The engine's counts at scrape time (`Input::Metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Rules in force in each followed list (room id; `hush.local` for the local rules).
    pub rules: Vec<(String, usize)>,
    /// Restrictions hush has in force (applied, not overridden), by kind.
    pub restrictions: Vec<(Kind, usize)>,
    /// Rules the safety guard holds for a moderator.
    pub held_rules: usize,
    /// Users with an expiry timer pending.
    pub timers_pending: usize,
    /// Protected rooms whose state is loaded, and all protected rooms.
    pub rooms_loaded: usize,
    pub rooms_total: usize,
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The process's metrics; one per process (the engine and the listener share it), a
/// fresh one per engine test.
pub struct Metrics {
    actions: Family<Labels<2>, Counter>,
    refusals: Family<Labels<1>, Counter>,
    decision_to_write: Histogram,
    sync_responses: Counter,
    /// When the last sync response arrived (`None`: none yet).
    last_sync: Mutex<Option<Instant>>,
    /// Why the engine's last ledger commit failed; `None` when it worked.
    ledger_error: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            actions: Family::default(),
            refusals: Family::default(),
            // 5 ms to ~80 s.
            decision_to_write: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            sync_responses: Counter::default(),
            last_sync: Mutex::new(None),
            ledger_error: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// An action ended (`kind` from [`action_kind`] or [`planned_kind`]).
    pub fn action(&self, kind: &'static str, outcome: Outcome) {
        self.actions.get_or_create(&[("kind", kind), ("outcome", outcome.as_str())]).inc();
    }

    /// hush refused to act on someone (`reason` from [`refusal_reason`]).
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&[("reason", reason)]).inc();
    }

    /// A planned action reaches the engine's consequences: a refusal counts by reason, and
    /// in a dry run an action that would change a room or an account counts as `dry_run`.
    pub fn planned(&self, action: &Action, dry_run: bool) {
        match action {
            Action::Refuse { refusal, .. } => self.refusal(refusal_reason(refusal)),
            Action::RefuseServerDeny { refusal, .. } => self.refusal(server_refusal_reason(refusal)),
            _ if dry_run => {
                if let Some(kind) = planned_kind(action) {
                    self.action(kind, Outcome::DryRun);
                }
            }
            _ => {}
        }
    }

    /// The time from hush's decision to the homeserver's answer to the write.
    pub fn decision_to_write(&self, elapsed: Duration) {
        self.decision_to_write.observe(elapsed.as_secs_f64());
    }

    /// A sync response arrived.
    pub fn synced(&self) {
        self.sync_responses.inc();
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// How long from the last sync response to `now`; `None` before the first.
    fn since_sync(&self, now: Instant) -> Option<Duration> {
        let last = (*self.last_sync.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some(now.saturating_duration_since(last))
    }

    /// The engine's ledger commit worked (`Ok`) or failed (why).
    pub fn ledger_committed(&self, result: Result<(), String>) {
        *self.ledger_error.lock().unwrap_or_else(|e| e.into_inner()) = result.err();
    }

    /// Why hush is not healthy (not syncing, the ledger not writable); empty when it is.
    pub fn unhealthy(&self) -> Vec<String> {
        self.unhealthy_at(Instant::now())
    }

    /// [`Metrics::unhealthy`] as of `now`.
    pub fn unhealthy_at(&self, now: Instant) -> Vec<String> {
        let mut why = Vec::new();
        match self.since_sync(now) {
            None => why.push("not syncing: no sync response yet".to_owned()),
            Some(d) if d > SYNC_STALE_AFTER => {
                why.push(format!("not syncing: the last sync response was {} s ago", d.as_secs()))
            }
            Some(_) => {}
        }
        if let Some(e) = self.ledger_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            why.push(format!("ledger not writable: the last commit failed: {e}"));
        }
        why
    }

    /// The metrics in the text format, with the engine's gauges when it answered.
    pub fn encode(&self, snapshot: Option<&Snapshot>) -> String {
        let mut r = Registry::default();
        r.register("hush_actions", "Actions hush carried out, by kind and outcome", self.actions.clone());
        r.register("hush_refusals", "Times hush refused to act on someone, by reason", self.refusals.clone());
        r.register(
            "hush_decision_to_write_seconds",
            "From hush's decision to the homeserver's answer to the write",
            self.decision_to_write.clone(),
        );
        r.register("hush_sync_responses", "Sync responses received", self.sync_responses.clone());
        r.register("hush_rate_limited", "429 answers to hush's writes", RATE_LIMITED.clone());
        r.register(
            "hush_write_retries",
            "Writes tried again (after a 429, a network error or a 5xx)",
            WRITE_RETRIES.clone(),
        );
        if let Some(since) = self.since_sync(Instant::now()) {
            let lag = Gauge::<f64, AtomicU64>::default();
            lag.set(since.as_secs_f64());
            r.register("hush_sync_lag_seconds", "Time since the last sync response", lag);
        }
        if let Some(s) = snapshot {
            let rules = Family::<[(&'static str, String); 1], Gauge>::default();
            for (list, n) in &s.rules {
                rules.get_or_create(&[("list", list.clone())]).set(gauge(*n));
            }
            r.register("hush_rules", "Rules in force, by policy list", rules);
            let restrictions = Family::<Labels<1>, Gauge>::default();
            for kind in RESTRICTION_KINDS {
                let n = s.restrictions.iter().filter(|(k, _)| *k == kind).map(|(_, n)| *n).sum();
                restrictions.get_or_create(&[("kind", kind_label(kind))]).set(gauge(n));
            }
            r.register("hush_restrictions", "Restrictions hush has in force, by kind", restrictions);
            for (name, help, n) in [
                ("hush_held_rules", "Rules the safety guard holds for a moderator", s.held_rules),
                ("hush_timers_pending", "Users with an expiry timer pending", s.timers_pending),
                ("hush_protected_rooms_loaded", "Protected rooms whose state is loaded", s.rooms_loaded),
                ("hush_protected_rooms", "Protected rooms", s.rooms_total),
            ] {
                let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
                g.set(gauge(n));
                r.register(name, help, g);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
