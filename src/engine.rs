//! The engine: one task that owns the policy index, the room views, the ledger and the timers, and turns every trigger into reconciled actions.
//!
//! Inputs arrive on one channel (policy events, room state, timers, write results), so
//! they are handled one at a time, in order, and the ledger is written by one owner.
//! Each input names the users it may affect; each of those is reconciled in each
//! protected room, and the actions are carried out (or, in dry-run, reported).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use hush_core::guard::{self, Limits, RoomHits};
use hush_core::policy::glob::matches_everyone;
use hush_core::policy::{
    Candidate, Decision, EntityKind, ListTrust, Outcome, PolicyIndex, Restriction as PolicyRestriction, Rule, RuleId,
};
use hush_core::power_levels::UserLevelEdit;
use hush_core::reconcile::{reconcile_member, refusal, Action, Membership, Restriction, RoomFacts, Shield, Wanted};
use hush_core::record;
use hush_core::schedule::{Clock, Expired, TimerHandle};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::enforce::{self, PowerLevelsSent, RoomWriter, WriteError};
use crate::holds::{self, Guarded, Holds, Status};
use crate::ledger::{Entry, Kind, Ledger, Phase};
use crate::rooms::{RoomState, StateChange};

mod accounts;
mod policy_events;

/// At most this many bans, unbans and membership changes are sent at once, for the whole
/// engine: a rule over hundreds of members must not become hundreds of concurrent requests
/// (issue 13). 8 keeps a mass ban quick (each request is one round trip) while staying
/// under a homeserver's usual burst allowance (Synapse's `rc_message` default is 10), so a
/// few requests meet a 429 and wait, not hundreds.
pub const MEMBER_WRITES_IN_FLIGHT: usize = 8;

/// Everything the engine reacts to.
#[derive(Debug)]
pub enum Input {
    /// Room ids behind the configuration, as they are resolved (added to what is known),
    /// each list with what it may make hush do.
    Configure { management_room: Option<String>, lists: Vec<(String, ListTrust)>, protected: Vec<String> },
    /// The management room's full state: its moderators are never restricted.
    ManagementLoaded { room_id: String, events: Vec<Value> },
    /// A moderator releases a held rule (or batch): `Ok` says what now happens.
    Confirm { id: String, reply: tokio::sync::oneshot::Sender<Result<String, String>> },
    /// A moderator drops a held rule (or batch).
    Reject { id: String, reply: tokio::sync::oneshot::Sender<Result<String, String>> },
    /// Why hush must never restrict this user, if it must not (for commands naming them).
    Exempt { user: String, reply: tokio::sync::oneshot::Sender<Option<String>> },
    /// What a policy list's state would do in the protected rooms, without following it.
    Preview { room_id: String, events: Vec<Value>, trust: ListTrust, reply: tokio::sync::oneshot::Sender<String> },
    /// Every configured policy list has been tried once: its room id is known (it resolved,
    /// or it is in `pinned`), or it cannot be followed yet and its id is unknown. From now
    /// on an entry from a list that is not among them comes from a list that is no longer
    /// followed, and is judged without it.
    ListsKnown {
        /// The room ids configured lists were pinned to in earlier runs (`rooms.json`): what
        /// they caused stays held until they load, even if they cannot be followed now.
        pinned: Vec<String>,
    },
    /// A policy list's full state (at start, or after joining it).
    ListLoaded { room_id: String, events: Vec<Value> },
    /// A policy list that cannot be joined or read (reported; its rules are held).
    ListUnavailable { room: String, error: String },
    /// A protected room's full state.
    RoomLoaded { room_id: String, events: Vec<Value> },
    /// A protected room that cannot be joined or read.
    RoomUnavailable { room: String, error: String },
    /// A live state event from sync, in any room.
    State { room_id: String, event: Value },
    /// An event was redacted (a redacted policy rule is a removed rule).
    Redaction { room_id: String, redacts: String },
    /// Timers that fired: user ids to look at again.
    Timers(Expired<String>),
    /// A batch of power-level edits was written (or failed for good).
    PowerLevelsDone { room_id: String, edits: Vec<UserLevelEdit>, result: Result<PowerLevelsSent, WriteError> },
    /// A membership change or ban was written (or failed for good).
    MemberWriteDone { room_id: String, user_id: String, kind: Kind, lifting: bool, result: Result<(), WriteError> },
    /// Time to send a room's pending power-level edits.
    Flush { room_id: String },
    /// A report could not reach the management room: report it again when it recurs.
    ReportFailed { keys: Vec<String> },
    /// A snapshot for `status`/`mutes`.
    Status(tokio::sync::oneshot::Sender<StatusReport>),
    /// Active rules about a user or glob: rules whose entity is exactly `target`, and (for
    /// a user id) every active user or server rule that matches it.
    RulesFor { target: String, reply: tokio::sync::oneshot::Sender<Vec<Rule>> },
    /// Stop following a policy list (`unwatch`): its rules are dropped and what they caused is lifted.
    Unwatch { room_id: String },
    /// Stop protecting a room (`rooms remove`): hush no longer acts there.
    Unprotect { room_id: String },
    /// A protected room was upgraded (tombstone): what hush did in `old` that the upgrade
    /// copied is carried over to `new`, and `old` is no longer protected. `new` is loaded
    /// by a `RoomLoaded` that follows.
    RoomUpgraded { old: String, new: String },
    /// An account suspension (or its lift) was made, or failed for good.
    Suspension(crate::suspension::Done),
    /// hush's own account can write again (the probe of this block generation wrote).
    OwnAccountWritable { generation: u64 },
}

/// What the engine can tell the management room.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    pub lists: Vec<(String, usize, bool)>,
    pub protected_rooms: Vec<(String, bool)>,
    pub pending_timers: usize,
    pub ledger: Vec<Entry>,
    pub last_errors: Vec<String>,
    pub dry_run: bool,
    /// hush's own account cannot write: the cause and since when (ms since the epoch).
    pub own_account_blocked: Option<(String, u64)>,
    /// Holds waiting for a moderator: id, and one line per rule.
    pub held: Vec<(String, Vec<String>)>,
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub own_user: String,
    pub protected_users: Vec<String>,
    pub membership_room_versions: Vec<String>,
    pub batch_window: Duration,
    pub dry_run: bool,
    /// The mass-action guard's limits.
    pub safety: Limits,
    /// Who moderates the management room (None: the level needed to send power levels there).
    pub moderator_power_level: Option<i64>,
    /// The command prefix, for notices that say what to type.
    pub command_prefix: String,
}

/// The engine state; see the module doc.
pub struct Engine<W: RoomWriter, C: Clock> {
    cfg: EngineConfig,
    writer: W,
    clock: C,
    ledger: Ledger,
    index: PolicyIndex,
    timers: TimerHandle<String>,
    inbox: mpsc::UnboundedSender<Input>,
    management_room: Option<String>,
    /// Followed lists: loaded or not yet.
    lists: BTreeMap<String, bool>,
    /// What each followed list may make hush do.
    trust: HashMap<String, ListTrust>,
    /// The management room's state (its moderators are never restricted).
    management: Option<RoomState>,
    /// Rules the guard holds and what moderators decided about them.
    holds: Holds,
    /// The room actions the input being handled asks for, by (room, user): judged by the
    /// guard as one batch, then carried out.
    plan: BTreeMap<(String, String), Vec<Action>>,
    /// What the input being handled reports, sent as one message at its end.
    outbox: Vec<(Vec<String>, String)>,
    /// Room-by-room reports of the input being handled, by template: one line each.
    room_reports: BTreeMap<String, Vec<(String, String)>>,
    lists_known: bool,
    /// Live events of lists and rooms that are not loaded yet, replayed after the load.
    buffered: HashMap<String, Vec<Value>>,
    /// The policy event in force at each key, so redacting it can be turned into a removal.
    policy_events: policy_events::PolicyEvents,
    rooms: BTreeMap<String, Option<RoomState>>,
    /// Level edits waiting for each room's next power-levels write.
    pending_pl: HashMap<String, BTreeMap<String, PendingLevel>>,
    pl_in_flight: HashSet<String>,
    /// Users with a write in flight, by room: they are not reconciled until it is done
    /// (the room view and the ledger do not yet say what the write did).
    writing: HashMap<String, BTreeSet<String>>,
    /// Users whose reconciliation waited for a write, by room: reconciled when it is done.
    deferred: HashMap<String, BTreeSet<String>>,
    flush_scheduled: HashSet<String>,
    /// When each room's last power-levels write was sent (engine clock, ms): the next one
    /// waits until a batch window has passed since.
    last_pl_flush: HashMap<String, u64>,
    /// Room and account writes started by the input being handled, spawned once its
    /// ledger transaction is committed.
    after_commit: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    /// Users who may have left every protected room during the input being handled:
    /// untracked at its end if so ([`Engine::forget_departed`]).
    departed: BTreeSet<String>,
    /// Bounds the member writes in flight ([`MEMBER_WRITES_IN_FLIGHT`]).
    member_writes: std::sync::Arc<tokio::sync::Semaphore>,
    /// Each user's pending expiry timer (engine clock, ms); see [`Engine::arm_reconciled`].
    timer_count: BTreeMap<String, u64>,
    /// Users reconciled by the input being handled: their timer is re-armed at its end.
    rearm: BTreeSet<String>,
    reported: HashSet<String>,
    last_errors: Vec<String>,
    /// Account suspension, when enabled (see `accounts`).
    suspensions: Option<crate::suspension::Suspensions>,
    /// Whether hush's own account can write.
    own: crate::suspension::OwnAccount,
}

/// A user's level edit waiting for the room's next power-levels write: (level to set,
/// entry hush expects to find there).
type PendingLevel = (Option<i64>, Option<i64>);

/// Whether a rule can make hush act on a member with this membership and no ledger entry:
/// present (join, invite, knock, mute), or `leave-mute` (a ban still applies). Members
/// `leave` or `ban` with no entry are never acted on, so need not be tracked.
fn concerns_policy(m: Membership) -> bool {
    m.is_present() || m == Membership::LeaveMute
}

/// The ledger's rule reference for a policy rule: "list|kind|state key".
pub fn rule_ref(id: &RuleId) -> String {
    format!("{}|{}|{}", id.room_id, id.kind.as_str(), id.state_key)
}

/// How many rules a hold's notice names one by one (a list load can hold hundreds).
const HOLD_NOTICE_RULES: usize = 10;

/// New restrictions by room: the members hit, how many banned, how many muted.
#[allow(clippy::type_complexity)]
fn tally<'a>(
    new: impl Iterator<Item = &'a (&'a str, &'a str, RuleId, Restriction)>,
) -> BTreeMap<&'a str, (BTreeSet<&'a str>, usize, usize)> {
    let mut out: BTreeMap<&str, (BTreeSet<&str>, usize, usize)> = BTreeMap::new();
    for (room, user, _, restriction) in new {
        let e = out.entry(*room).or_default();
        if e.0.insert(*user) {
            match restriction {
                Restriction::Ban => e.1 += 1,
                Restriction::Mute => e.2 += 1,
            }
        }
    }
    out
}

/// A rule in words: "`state key` in !list".
fn describe_rule(id: &RuleId) -> String {
    format!("`{}` in {}", id.state_key, id.room_id)
}

/// The rule a ledger reference names. Temporary, until the ledger stores core's record:
/// every reference hush wrote ([`rule_ref`]) reads back; anything else is kept whole as
/// the state key of a user rule of its list, so its entry is still seen (and its cause
/// rewritten by the next update) rather than dropped.
fn parse_rule_ref(r: &str) -> RuleId {
    record::parse_legacy_rule_ref(r).unwrap_or_else(|| RuleId {
        room_id: rule_list(r).to_owned(),
        kind: EntityKind::User,
        state_key: r.to_owned(),
    })
}

fn rule_list(rule: &str) -> &str {
    rule.split('|').next().unwrap_or_default()
}

fn to_wanted(d: &Decision) -> Wanted {
    Wanted {
        restriction: match d.action {
            PolicyRestriction::Ban => Restriction::Ban,
            PolicyRestriction::Mute => Restriction::Mute,
        },
        expires_at_ms: d.expires_at_ms,
        rule: d.rule.clone(),
        reason: d.reason.clone(),
    }
}

/// The stronger of two restrictions, as the policy ranks rules: a ban beats a mute, then
/// the one that lasts longer (permanent beats any expiry); `a` on a tie.
fn stronger(a: Wanted, b: Wanted) -> Wanted {
    let rank = |w: &Wanted| (w.restriction == Restriction::Ban, w.expires_at_ms.is_none(), w.expires_at_ms);
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

/// hush's power-level mutes in force that a power-levels event undid because its writer
/// worked from a state older than the mute ([`hush_core::power_levels::stale_undo`], judged
/// on the event's `unsigned.prev_content`). Without `prev_content` nothing is stale: the
/// change is taken as a moderator's.
fn stale_undone_mutes(ev: &Value, content: &Value, entries: &[Entry]) -> Vec<Entry> {
    let Some(prev) = ev.pointer("/unsigned/prev_content") else { return Vec::new() };
    entries
        .iter()
        .filter(|e| e.kind == Kind::MutePowerLevel && e.phase == Phase::Applied && !e.overridden)
        .filter(|e| hush_core::power_levels::stale_undo(prev, content, &e.user_id, e.previous_level, e.applied_level))
        .cloned()
        .collect()
}

fn record_kind(k: Kind) -> record::Kind {
    match k {
        Kind::MuteMembership => record::Kind::MuteMembership,
        Kind::MutePowerLevel => record::Kind::MutePowerLevel,
        Kind::Ban => record::Kind::Ban,
        Kind::Suspension => record::Kind::Suspension,
    }
}

fn ledger_kind(k: record::Kind) -> Kind {
    match k {
        record::Kind::MuteMembership => Kind::MuteMembership,
        record::Kind::MutePowerLevel => Kind::MutePowerLevel,
        record::Kind::Ban => Kind::Ban,
        record::Kind::Suspension => Kind::Suspension,
    }
}

/// A ledger entry for a change about to be made (write-ahead).
fn applying_entry(
    room_id: &str,
    user_id: &str,
    kind: Kind,
    previous_level: Option<i64>,
    applied_level: Option<i64>,
    wanted: &Wanted,
    now: u64,
) -> Entry {
    Entry {
        room_id: room_id.to_owned(),
        user_id: user_id.to_owned(),
        kind,
        phase: Phase::Applying,
        previous_level,
        applied_level,
        rule: rule_ref(&wanted.rule),
        reason: wanted.reason.clone(),
        applied_at_ms: now,
        expires_at_ms: wanted.expires_at_ms,
        overridden: false,
    }
}

/// The ledger's entry in core's vocabulary (temporary, until the ledger stores core's
/// record): room "" is the account.
fn to_record(e: &Entry) -> record::Entry {
    record::Entry {
        scope: if e.room_id.is_empty() { record::Scope::Account } else { record::Scope::Room(e.room_id.clone()) },
        user_id: e.user_id.clone(),
        kind: record_kind(e.kind),
        phase: match e.phase {
            Phase::Applying => record::Phase::Applying,
            Phase::Applied => record::Phase::Applied,
            Phase::Lifting => record::Phase::Lifting,
        },
        previous_level: e.previous_level,
        applied_level: e.applied_level,
        rule: parse_rule_ref(&e.rule),
        reason: e.reason.clone(),
        applied_at_ms: e.applied_at_ms,
        expires_at_ms: e.expires_at_ms,
        overridden: e.overridden,
    }
}

impl<W: RoomWriter, C: Clock> Engine<W, C> {
    pub fn new(
        cfg: EngineConfig,
        writer: W,
        clock: C,
        ledger: Ledger,
        timers: TimerHandle<String>,
        inbox: mpsc::UnboundedSender<Input>,
    ) -> Self {
        let holds = match ledger.all_guarded() {
            Ok(rows) => Holds::new(rows),
            Err(e) => {
                // Without them a held rule would be enforced: stop, as for any ledger failure.
                error!("cannot read the held rules from the ledger: {e:#}");
                std::process::exit(1);
            }
        };
        Engine {
            cfg,
            writer,
            clock,
            ledger,
            index: PolicyIndex::new(),
            timers,
            inbox,
            management_room: None,
            lists: BTreeMap::new(),
            trust: HashMap::new(),
            management: None,
            holds,
            plan: BTreeMap::new(),
            outbox: Vec::new(),
            room_reports: BTreeMap::new(),
            lists_known: false,
            buffered: HashMap::new(),
            policy_events: Default::default(),
            rooms: BTreeMap::new(),
            pending_pl: HashMap::new(),
            pl_in_flight: HashSet::new(),
            writing: HashMap::new(),
            deferred: HashMap::new(),
            flush_scheduled: HashSet::new(),
            last_pl_flush: HashMap::new(),
            after_commit: Vec::new(),
            departed: BTreeSet::new(),
            member_writes: std::sync::Arc::new(tokio::sync::Semaphore::new(MEMBER_WRITES_IN_FLIGHT)),
            timer_count: BTreeMap::new(),
            rearm: BTreeSet::new(),
            reported: HashSet::new(),
            last_errors: Vec::new(),
            suspensions: None,
            own: Default::default(),
        }
    }

    /// Handles inputs until the channel closes.
    pub async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut timers: mpsc::Receiver<Expired<String>>,
    ) {
        self.arm_ledger_users();
        self.flush_reports();
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(i) => {
                        let large = matches!(&i, Input::ListLoaded { events, .. } if events.len() >= 1000);
                        self.handle(i);
                        if large {
                            trim_heap();
                        }
                    }
                    None => break,
                },
                Some(expired) = timers.recv() => self.handle(Input::Timers(expired)),
            }
        }
        info!("engine stopped");
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Arms each user in the ledger once, at their earliest recorded expiry (one already
    /// past fires at once). Called at start-up, before any input; from then on a user's
    /// timer is re-armed after each reconciliation of them ([`Engine::arm_reconciled`]).
    pub(crate) fn arm_ledger_users(&mut self) {
        match self.ledger.all() {
            Ok(entries) => {
                let mut earliest: BTreeMap<String, u64> = BTreeMap::new();
                for e in entries {
                    if let Some(at) = e.expires_at_ms {
                        let t = earliest.entry(e.user_id).or_insert(at);
                        *t = (*t).min(at);
                    }
                }
                for (user, at) in earliest {
                    self.set_timer(&user, Some(at));
                }
            }
            Err(e) => self.error(format!("cannot read the ledger: {e:#}")),
        }
    }

    /// The one place expiry timers are set: re-arms the timer of each user reconciled by
    /// the input being handled at their earliest future expiry, among what the policy
    /// decides for them and every ledger entry of theirs (rooms and account); none if
    /// there is none. A user has one timer, so it must be the earliest, whatever order
    /// their rooms were looked at in.
    fn arm_reconciled(&mut self) {
        let users = std::mem::take(&mut self.rearm);
        let now = self.now();
        for user in users {
            let entries = match self.ledger.for_user(&user) {
                Ok(e) => e,
                Err(e) => {
                    error!("cannot read the ledger: {e:#}");
                    continue;
                }
            };
            let decided = self.decision_for(&user, now, &entries).and_then(|d| d.expires_at_ms);
            let next = entries.iter().filter_map(|e| e.expires_at_ms).chain(decided).filter(|&at| at > now).min();
            self.set_timer(&user, next);
        }
    }

    fn set_timer(&mut self, user: &str, at_ms: Option<u64>) {
        match at_ms {
            Some(at) if self.timer_count.get(user) != Some(&at) => {
                if self.timers.schedule(user.to_owned(), at).is_ok() {
                    self.timer_count.insert(user.to_owned(), at);
                }
            }
            Some(_) => {}
            None => {
                if self.timer_count.remove(user).is_some() {
                    let _ = self.timers.cancel(user.to_owned());
                }
            }
        }
    }

    /// Handles one input. Its ledger writes are one transaction, committed before any
    /// room or account write it started is sent (write-ahead, one fsync per input).
    pub fn handle(&mut self, input: Input) {
        let batch = self.ledger.begin_batch();
        if let Err(e) = &batch {
            // Each statement then commits by itself, as durable, only slower.
            warn!("{e:#}");
        }
        self.handle_input(input);
        self.settle();
        self.arm_reconciled();
        self.forget_departed();
        self.flush_reports();
        if batch.is_ok() {
            if let Err(e) = self.ledger.commit_batch() {
                // The writes below would go out with no durable record of what to undo:
                // stop instead, as a kill -9 would; the next start settles from the ledger.
                error!("{e:#}: stopping rather than change rooms without a record");
                std::process::exit(1);
            }
        }
        for write in self.after_commit.drain(..) {
            tokio::spawn(write);
        }
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Configure { management_room, lists, protected } => {
                if management_room.is_some() {
                    self.management_room = management_room;
                }
                for (l, trust) in lists {
                    self.trust.insert(l.clone(), trust);
                    self.lists.entry(l).or_insert(false);
                }
                for r in protected {
                    self.rooms.entry(r).or_insert(None);
                }
            }
            Input::ListsKnown { pinned } => {
                for l in pinned {
                    self.lists.entry(l).or_insert(false);
                }
                self.lists_known = true;
                let users = self.all_known_users();
                self.reconcile_users(users);
            }
            Input::ListLoaded { room_id, events } => self.list_loaded(&room_id, &events),
            Input::ListUnavailable { room, error } => {
                self.report_once(
                    &format!("list-unavailable|{room}"),
                    &format!("Cannot follow the policy list {room}: {error}. Retrying; its rules stay as they were."),
                );
            }
            Input::RoomLoaded { room_id, events } => self.room_loaded(&room_id, &events),
            Input::RoomUnavailable { room, error } => {
                self.report_once(
                    &format!("room-unavailable|{room}"),
                    &format!("Cannot protect {room}: {error}. Retrying."),
                );
            }
            Input::State { room_id, event } => self.state_event(&room_id, &event),
            Input::Redaction { room_id, redacts } => {
                if let Some((ty, state_key)) = self.policy_events.take(&room_id, &redacts) {
                    info!(list = %room_id, %ty, %state_key, "a policy rule was redacted: removing it");
                    let removal = serde_json::json!({"type": ty, "state_key": state_key, "content": {}});
                    self.state_event(&room_id, &removal);
                } else if self.lists.get(&room_id) == Some(&true) {
                    // A replaced or removed rule, or no rule at all: the list's state is unchanged.
                    debug!(list = %room_id, %redacts, "a redacted event is not a rule in force: ignored");
                }
            }
            Input::Timers(expired) => {
                let users: BTreeSet<String> = expired.ids.into_iter().collect();
                for u in &users {
                    self.timer_count.remove(u);
                }
                debug!(count = users.len(), "timers fired");
                self.reconcile_users(users);
            }
            Input::PowerLevelsDone { room_id, edits, result } => self.power_levels_done(&room_id, edits, result),
            Input::MemberWriteDone { room_id, user_id, kind, lifting, result } => {
                self.member_write_done(&room_id, &user_id, kind, lifting, result)
            }
            Input::Flush { room_id } => self.flush(&room_id),
            Input::ReportFailed { keys } => {
                for key in keys {
                    self.reported.remove(&key);
                }
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::RulesFor { target, reply } => {
                let _ = reply.send(self.rules_for(&target));
            }
            Input::Unwatch { room_id } => {
                let now = self.now();
                self.lists.remove(&room_id);
                self.trust.remove(&room_id);
                self.buffered.remove(&room_id);
                self.policy_events.forget_list(&room_id);
                let removed = self.index.remove_list(&room_id, now);
                let filtered = self.filters_decisions();
                let mut users: BTreeSet<String> =
                    if filtered { removed.candidates } else { removed.changed }.into_iter().collect();
                // Entries caused by the list are no longer held: look at them too.
                users.extend(
                    self.ledger
                        .all()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|e| rule_list(&e.rule) == room_id)
                        .map(|e| e.user_id),
                );
                info!(list = %room_id, "no longer following the list");
                self.reconcile_users(users);
            }
            Input::Unprotect { room_id } => {
                self.unprotect(&room_id);
                info!(room = %room_id, "no longer protecting the room");
            }
            Input::RoomUpgraded { old, new } => {
                self.unprotect(&old);
                match self.ledger.carry_over(&old, &new) {
                    Ok((moved, dropped)) => info!(
                        %old, %new, moved, dropped,
                        "protected room upgraded: hush's power-level mutes and bans carried over to the new room"
                    ),
                    Err(e) => error!(%old, %new, "cannot carry the ledger over to the upgraded room: {e:#}"),
                }
            }
            Input::Suspension(done) => self.account_call_done(done),
            Input::ManagementLoaded { room_id, events } => {
                let room = RoomState::from_state(&room_id, &events);
                let before = self.management_moderators();
                self.management = Some(room);
                let mut users = before;
                users.extend(self.management_moderators());
                self.reconcile_users(users);
            }
            Input::Confirm { id, reply } => {
                let _ = reply.send(self.decide_hold(&id, Status::Confirmed));
            }
            Input::Reject { id, reply } => {
                let _ = reply.send(self.decide_hold(&id, Status::Rejected));
            }
            Input::Exempt { user, reply } => {
                let _ = reply.send(self.exemption(&user));
            }
            Input::Preview { room_id, events, trust, reply } => {
                let _ = reply.send(self.preview(&room_id, &events, trust));
            }
            Input::OwnAccountWritable { generation } => self.own_account_writable(generation),
        }
    }

    /// Forgets a protected room's view and pending edits (its ledger entries stay).
    fn unprotect(&mut self, room_id: &str) {
        self.rooms.remove(room_id);
        self.buffered.remove(room_id);
        self.pending_pl.remove(room_id);
        self.last_pl_flush.remove(room_id);
    }

    /// Whether the policy index tracks this user, and how many it tracks (tests).
    #[cfg(test)]
    pub fn tracked(&self, user: &str) -> (bool, usize) {
        (self.index.is_tracked(user), self.index.tracked_len())
    }

    /// Whether a protected room's view has a membership for this user (tests).
    #[cfg(test)]
    pub fn knows_member(&self, room_id: &str, user: &str) -> bool {
        matches!(self.rooms.get(room_id), Some(Some(r)) if r.members.contains_key(user))
    }

    fn status(&self) -> StatusReport {
        let counts: HashMap<String, usize> =
            self.index.list_counts().into_iter().map(|(room, c)| (room, c.effective)).collect();
        StatusReport {
            lists: self
                .lists
                .iter()
                .map(|(l, loaded)| (l.clone(), counts.get(l).copied().unwrap_or(0), *loaded))
                .collect(),
            protected_rooms: self.rooms.iter().map(|(r, s)| (r.clone(), s.is_some())).collect(),
            pending_timers: self.timer_count.len(),
            ledger: self.ledger.all().unwrap_or_default(),
            last_errors: self.last_errors.clone(),
            dry_run: self.cfg.dry_run,
            own_account_blocked: self.own.blocked.clone().map(|c| (c, self.own.since_ms)),
            held: self
                .holds
                .waiting()
                .into_iter()
                .map(|(id, rules)| {
                    let n = rules.len();
                    let mut lines: Vec<String> =
                        rules.into_iter().take(HOLD_NOTICE_RULES).map(|g| g.why.clone()).collect();
                    if n > HOLD_NOTICE_RULES {
                        lines.push(format!("and {} more rule(s)", n - HOLD_NOTICE_RULES));
                    }
                    (id, lines)
                })
                .collect(),
        }
    }

    fn rules_for(&self, target: &str) -> Vec<Rule> {
        let now = self.now();
        let mut rules: Vec<Rule> = self
            .index
            .rules()
            .filter(|(r, in_force)| *in_force && r.is_active(now) && r.entity.as_deref() == Some(target))
            .map(|(r, _)| r)
            .collect();
        if !hush_core::policy::glob::is_glob(target) {
            rules.extend(self.index.rules_matching(EntityKind::User, target, now));
            if let Some((_, server)) = target.split_once(':') {
                rules.extend(self.index.rules_matching(EntityKind::Server, server, now));
            }
        }
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        rules.dedup_by(|a, b| a.id == b.id);
        rules
    }

    fn list_loaded(&mut self, room_id: &str, events: &[Value]) {
        let now = self.now();
        // A reload replaces the list: rules no longer in its state are gone.
        let removed = self.index.remove_list(room_id, now);
        self.policy_events.forget_list(room_id);
        let filtered = self.filters_decisions();
        let mut changed: BTreeSet<String> =
            if filtered { removed.candidates } else { removed.changed }.into_iter().collect();
        // Local users named by its rules, and those suspended before, wherever they are.
        let mut accounts = self.suspended_accounts();
        let mut untrusted = Vec::new();
        for ev in events {
            changed.extend(self.apply_policy_event(room_id, ev, now, &mut untrusted));
            accounts.extend(self.named_accounts(room_id, ev, false));
        }
        let first = !self.lists.insert(room_id.to_owned(), true).unwrap_or(false);
        for ev in self.buffered.remove(room_id).unwrap_or_default() {
            changed.extend(self.apply_policy_event(room_id, &ev, now, &mut untrusted));
            accounts.extend(self.named_accounts(room_id, &ev, false));
        }
        self.report_untrusted(room_id, untrusted);
        info!(list = room_id, rules = events.len(), "policy list loaded");
        if first {
            // Held entries of this list can now be judged: look at everyone.
            changed.extend(self.all_known_users());
        }
        accounts.retain(|u| !changed.contains(u));
        self.reconcile_users(changed);
        self.reconcile_accounts(&accounts);
    }

    /// Applies one policy event; rules the list may not cause are added to `untrusted`.
    fn apply_policy_event(&mut self, room_id: &str, ev: &Value, now: u64, untrusted: &mut Vec<Rule>) -> Vec<String> {
        let (Some(ty), Some(state_key)) =
            (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
        else {
            return Vec::new();
        };
        let sender = ev.get("sender").and_then(Value::as_str).unwrap_or_default();
        let empty = Value::Object(Default::default());
        let content = ev.get("content").unwrap_or(&empty);
        if hush_core::policy::classify_event_type(ty).is_some() {
            // This event replaces the one before at its key; an empty one (a removal) leaves none.
            let event_id = ev.get("event_id").and_then(Value::as_str);
            let in_force = event_id.filter(|_| content.as_object().is_some_and(|c| !c.is_empty()));
            self.policy_events.set(room_id, ty, state_key, in_force);
        }
        let applied = self.index.apply(room_id, ty, state_key, sender, content, now);
        if let Some(w) = applied.warning {
            // parse_rule already logged it with room, type and state key.
            self.note_error(format!("ignored a malformed rule: {w}"));
        }
        if matches!(applied.outcome, Outcome::Stored | Outcome::Removed) {
            if let Some((_, kind)) = hush_core::policy::classify_event_type(ty) {
                let id = RuleId { room_id: room_id.to_owned(), kind, state_key: state_key.to_owned() };
                let rule = self.index.rule(&id);
                if let Some(g) = self.holds.forget_if_changed(room_id, kind, state_key, rule.as_ref()) {
                    info!(list = room_id, state_key, hold = %g.hold_id, "a guarded rule changed: judged afresh");
                    if let Err(e) = self.ledger.remove_guarded(room_id, kind, state_key) {
                        self.error(format!("cannot forget the guarded rule `{state_key}`: {e:#}"));
                    }
                    // Their decision may read the same without the guard (same identity,
                    // same restriction), so the index does not report them: look again.
                    let mut changed = applied.candidates;
                    changed.extend(self.index.tracked_users_matching(&id));
                    return changed;
                }
                let trust = self.trust_of(room_id);
                if let Some(r) = rule.filter(|r| r.recommendation.restriction().is_some_and(|x| !trust.allows(x))) {
                    untrusted.push(r);
                }
            }
        }
        if self.filters_decisions() {
            // The index reports changes of the unfiltered decision; a rule hidden by trust
            // or a hold can leave that as it was while the filtered one changes.
            return applied.candidates;
        }
        applied.changed
    }

    /// Whether decisions are filtered beyond the index's own (a list not trusted for
    /// everything, a rule held or rejected).
    fn filters_decisions(&self) -> bool {
        self.holds.any_blocking() || self.trust.values().any(|t| !t.ban || !t.mute)
    }

    /// Tells the management room, once, about rules a list may not cause.
    fn report_untrusted(&mut self, list: &str, rules: Vec<Rule>) {
        let trust = self.trust_of(list);
        match &rules[..] {
            [] => {}
            [r] => self.report_once(
                &format!("untrusted|{list}|{}|{}", r.id.kind, r.id.state_key),
                &format!(
                    "Ignoring the {} rule `{}` ({}) in {list}: this list may cause only: {trust} (policy_lists[].actions).",
                    r.recommendation.as_str(),
                    r.id.state_key,
                    r.entity.as_deref().unwrap_or("(hashed)")
                ),
            ),
            many => {
                let keys: Vec<&str> = many.iter().take(5).map(|r| r.id.state_key.as_str()).collect();
                self.report_once(
                    &format!("untrusted|{list}|load"),
                    &format!(
                        "Ignoring {} rules in {list} that ask for what this list may not cause (it may cause only: {trust}; policy_lists[].actions), such as `{}`.",
                        many.len(),
                        keys.join("`, `")
                    ),
                )
            }
        }
    }

    fn room_loaded(&mut self, room_id: &str, events: &[Value]) {
        let mut room = RoomState::from_state(room_id, events);
        for ev in self.buffered.remove(room_id).unwrap_or_default() {
            room.apply_state(&ev);
        }
        for (user, membership) in &room.members {
            self.index.track_user(user);
            if !concerns_policy(*membership) {
                // A room's state names everyone who ever left it.
                self.departed.insert(user.clone());
            }
        }
        let users: BTreeSet<String> = room.members.keys().cloned().collect();
        info!(room = room_id, members = users.len(), version = %room.version, "protected room loaded");
        self.rooms.insert(room_id.to_owned(), Some(room));
        let mut users = users;
        if let Ok(entries) = self.ledger.for_room(room_id) {
            users.extend(entries.into_iter().map(|e| e.user_id));
        }
        self.reconcile_room_users(room_id, &users);
        // Members hush did not know before may have an account-wide rule.
        self.reconcile_accounts(&users);
    }

    fn state_event(&mut self, room_id: &str, ev: &Value) {
        match self.lists.get(room_id) {
            Some(true) => {
                let now = self.now();
                // Before applying: the ledger still names whom the replaced rule suspended.
                let mut accounts = self.named_accounts(room_id, ev, true);
                let mut untrusted = Vec::new();
                let changed: BTreeSet<String> =
                    self.apply_policy_event(room_id, ev, now, &mut untrusted).into_iter().collect();
                self.report_untrusted(room_id, untrusted);
                if !changed.is_empty() {
                    debug!(list = room_id, users = changed.len(), "policy change affects users");
                }
                accounts.retain(|u| !changed.contains(u));
                self.reconcile_users(changed);
                self.reconcile_accounts(&accounts);
            }
            Some(false) => self.buffered.entry(room_id.to_owned()).or_default().push(ev.clone()),
            None => {}
        }
        if self.management_room.as_deref() == Some(room_id) {
            self.management_state(ev);
        }
        let room = match self.rooms.get_mut(room_id) {
            Some(Some(room)) => room,
            Some(None) => {
                self.buffered.entry(room_id.to_owned()).or_default().push(ev.clone());
                return;
            }
            None => return,
        };
        let levels_before = room.power_levels.clone();
        match room.apply_state(ev) {
            StateChange::Member(user) => {
                self.index.track_user(&user);
                if !concerns_policy(room.membership(&user)) {
                    self.departed.insert(user.clone());
                }
                let user = BTreeSet::from([user]);
                self.reconcile_room_users(room_id, &user);
                self.reconcile_accounts(&user);
            }
            StateChange::PowerLevels => {
                // A moderator may have changed a level hush set: look at hush's entries here,
                // and at everyone whose standing changed (a moderator demoted may now be
                // restricted, a member promoted is no longer).
                let entries = self.ledger.for_room(room_id).unwrap_or_default();
                let levels_after = &room.power_levels;
                let stale = stale_undone_mutes(ev, levels_after, &entries);
                let mut users: BTreeSet<String> = entries.into_iter().map(|e| e.user_id).collect();
                match hush_core::power_levels::users_with_changed_standing(&levels_before, levels_after) {
                    Some(changed) => users.extend(changed),
                    None => users.extend(room.members.keys().cloned()),
                }
                for e in stale {
                    self.stale_undo(e);
                }
                self.reconcile_room_users(room_id, &users);
                self.reconcile_accounts(&users);
            }
            StateChange::Stale | StateChange::Other => {}
        }
    }

    /// A client working from a state older than hush's mute wrote power levels that put the
    /// muted user back where they were: not a moderator's decision about them. hush's entry
    /// goes back to `Applying` (same level to restore), so reconciling mutes them again, and
    /// the management room is told once.
    fn stale_undo(&mut self, e: Entry) {
        let (room_id, user_id) = (e.room_id.clone(), e.user_id.clone());
        info!(room = %room_id, user = %user_id, "a power-levels write from an older state undid hush's mute: muting again");
        self.report_in_room(
            &format!("stale-undo|{room_id}|{user_id}"),
            &format!(
                "A client working from an older state of {{rooms}} put {user_id}'s power level back to what it was before hush's mute; hush mutes them again."
            ),
            &room_id,
        );
        if let Err(err) = self.ledger.begin_apply(&Entry { phase: Phase::Applying, overridden: false, ..e }) {
            self.error(format!("ledger write failed in {room_id}: {err:#}"));
        }
    }

    /// A state event of the management room: a moderator gained or lost that standing.
    fn management_state(&mut self, ev: &Value) {
        let ty = ev.get("type").and_then(Value::as_str);
        if self.management.is_none() || !matches!(ty, Some("m.room.power_levels" | "m.room.member")) {
            return;
        }
        let before = self.management_moderators();
        if let Some(room) = self.management.as_mut() {
            room.apply_state(ev);
        }
        let after = self.management_moderators();
        let changed: BTreeSet<String> = before.symmetric_difference(&after).cloned().collect();
        if !changed.is_empty() {
            debug!(users = changed.len(), "management room moderators changed");
            self.reconcile_users(changed);
        }
    }

    fn all_known_users(&self) -> BTreeSet<String> {
        let mut users: BTreeSet<String> =
            self.rooms.values().flatten().flat_map(|r| r.members.keys().cloned()).collect();
        users.extend(self.ledger.all().unwrap_or_default().into_iter().map(|e| e.user_id));
        users
    }

    /// Reconciles each user in every loaded protected room.
    fn reconcile_users(&mut self, users: BTreeSet<String>) {
        if users.is_empty() {
            return;
        }
        let rooms: Vec<String> = self.rooms.iter().filter(|(_, s)| s.is_some()).map(|(r, _)| r.clone()).collect();
        for room in rooms {
            self.reconcile_room_users(&room, &users);
        }
        self.reconcile_accounts(&users);
    }

    fn reconcile_room_users(&mut self, room_id: &str, users: &BTreeSet<String>) {
        self.rearm.extend(users.iter().cloned());
        if self.own.blocked.is_some() {
            // hush cannot write: everyone is looked at again when it can.
            return;
        }
        for user in users {
            let actions = self.reconcile_one(room_id, user);
            // A later plan for the same member in the same input replaces the earlier one:
            // nothing was carried out in between, so it sees the same state or newer.
            let key = (room_id.to_owned(), user.clone());
            if actions.is_empty() {
                self.plan.remove(&key);
            } else {
                self.plan.insert(key, actions);
            }
        }
    }

    fn reconcile_one(&mut self, room_id: &str, user: &str) -> Vec<Action> {
        if self.writing.get(room_id).is_some_and(|w| w.contains(user)) {
            debug!(room = room_id, user, "a write is in flight: reconciling when it is done");
            self.deferred.entry(room_id.to_owned()).or_default().insert(user.to_owned());
            return Vec::new();
        }
        let Some(Some(room)) = self.rooms.get(room_id) else { return Vec::new() };
        let now = self.now();
        let entries = match self.ledger.get_all_for(room_id, user) {
            Ok(e) => e,
            Err(e) => {
                error!("cannot read the ledger: {e:#}");
                return Vec::new();
            }
        };
        let applied: Vec<record::Entry> = entries.iter().map(to_record).collect();
        let decided = self.decision_for(user, now, &entries).map(|d| to_wanted(&d));
        // What a not-yet-loaded list caused is held whatever the loaded lists say: its rule
        // may well still be there. A loaded list's stronger restriction still applies.
        let held = entries
            .iter()
            .filter(|e| self.list_held(rule_list(&e.rule)))
            .map(|e| Wanted {
                restriction: if e.kind == Kind::Ban { Restriction::Ban } else { Restriction::Mute },
                expires_at_ms: e.expires_at_ms,
                rule: parse_rule_ref(&e.rule),
                reason: e.reason.clone(),
            })
            .reduce(stronger);
        let wanted = match (held, decided) {
            (Some(h), Some(d)) => Some(stronger(h, d)),
            (h, d) => h.or(d),
        };
        let facts = self.facts(room);
        reconcile_member(&facts, user, room.membership(user), wanted.as_ref(), &applied, self.shield(user))
    }

    /// Whether what `list` caused is held: the list is followed but not loaded yet, or
    /// (before every configured list is known) not known at all.
    fn list_held(&self, list: &str) -> bool {
        match self.lists.get(list) {
            Some(loaded) => !loaded,
            None => !self.lists_known,
        }
    }

    /// What the reconciler knows of a protected room.
    fn facts<'a>(&'a self, room: &'a RoomState) -> RoomFacts<'a> {
        RoomFacts {
            room_id: &room.room_id,
            strategy: room.strategy(&self.cfg.membership_room_versions),
            power_levels: &room.power_levels,
            creators: &room.creators,
            creators_privileged: room.creators_privileged,
            own_user: &self.cfg.own_user,
            own_level: room.own_level(&self.cfg.own_user),
        }
    }

    /// What hush knows of a user beyond any one protected room.
    fn shield(&self, user: &str) -> Shield {
        Shield {
            protected_user: self.cfg.protected_users.iter().any(|p| hush_core::policy::glob::glob_match(p, user)),
            management_moderator: self.is_management_moderator(user),
        }
    }

    fn trust_of(&self, list: &str) -> ListTrust {
        self.trust.get(list).copied().unwrap_or(ListTrust::OTHER_LIST)
    }

    /// Whether the rule's list may cause what it asks for.
    fn trusted(&self, c: &Candidate<'_>) -> bool {
        self.trust_of(c.list).allows(c.restriction)
    }

    /// The policy's decision for a user, among the rules their lists may cause and that
    /// the guard does not hold. Holding never lifts: a held rule already in force for this
    /// user (hush's ledger names it) still decides for them.
    fn decision_for(&self, user: &str, now: u64, entries: &[Entry]) -> Option<Decision> {
        let fresh = self.index.decide_where(user, now, |c| self.trusted(&c) && !self.holds.blocks(&c));
        if !self.holds.any_blocking() {
            return fresh;
        }
        match self.index.decide_where(user, now, |c| self.trusted(&c)) {
            Some(full)
                if Some(&full) != fresh.as_ref()
                    && entries.iter().any(|e| !e.overridden && e.rule == rule_ref(&full.rule)) =>
            {
                Some(full)
            }
            _ => fresh,
        }
    }

    /// The management room's moderators: those who may command hush there.
    fn management_moderators(&self) -> BTreeSet<String> {
        let Some(room) = &self.management else { return BTreeSet::new() };
        room.members
            .iter()
            .filter(|(_, m)| m.is_present())
            .map(|(u, _)| u)
            .chain(&room.creators)
            .filter(|u| self.is_management_moderator(u))
            .cloned()
            .collect()
    }

    fn is_management_moderator(&self, user: &str) -> bool {
        let Some(room) = &self.management else { return false };
        if room.creators_privileged && room.creators.iter().any(|c| c == user) {
            return true;
        }
        let needed = self
            .cfg
            .moderator_power_level
            .unwrap_or_else(|| hush_core::power_levels::power_levels_send_level(&room.power_levels));
        hush_core::power_levels::user_level(&room.power_levels, user) >= needed
    }

    /// Why a user may never be restricted by hush in some room or account, if so: the
    /// same refusals as the reconciler's, judged in every protected room and the
    /// management room (for commands naming the user, and for suspension).
    fn exemption(&self, user: &str) -> Option<String> {
        let shield = self.shield(user);
        if user == self.cfg.own_user {
            return Some("that is hush itself".to_owned());
        }
        if shield.protected_user {
            return Some("the user is in protected_users".to_owned());
        }
        if shield.management_moderator {
            return Some("the user is a moderator of the management room".to_owned());
        }
        self.rooms.iter().find_map(|(room_id, room)| {
            let room = room.as_ref()?;
            refusal(&self.facts(room), user, Shield::default()).map(|r| format!("{r} (in {room_id})"))
        })
    }

    /// Judges the input's planned room actions as one batch (the mass-action guard), then
    /// carries them out. Restrictions hush already recorded (re-applied after a crash) are
    /// not new; rules a moderator confirmed pass.
    fn settle(&mut self) {
        if self.plan.is_empty() {
            return;
        }
        let mut plan = std::mem::take(&mut self.plan);
        let held = self.guard(&plan);
        if !held.is_empty() {
            // Plan the members these rules would have hit again, with the rules held.
            for (room, user) in held {
                let actions = self.reconcile_one(&room, &user);
                plan.insert((room, user), actions);
            }
        }
        for ((room, _), actions) in plan {
            for a in actions {
                self.execute(&room, a);
            }
        }
    }

    /// The mass-action guard over one batch: holds the rules of a batch that would newly
    /// restrict more members than `safety` allows, and rules that match everyone whatever
    /// the count, and tells the management room once. Returns the (room, member) pairs
    /// whose plan used a rule it held.
    fn guard(&mut self, plan: &BTreeMap<(String, String), Vec<Action>>) -> Vec<(String, String)> {
        let mut new: Vec<(&str, &str, RuleId, Restriction)> = Vec::new();
        for ((room, user), actions) in plan {
            for a in actions {
                let (kind, wanted) = match a {
                    Action::Ban { wanted, .. } => (Kind::Ban, wanted),
                    Action::MutePowerLevel { wanted, .. } => (Kind::MutePowerLevel, wanted),
                    Action::MuteMembership { wanted, .. } => (Kind::MuteMembership, wanted),
                    _ => continue,
                };
                if self.ledger.get(room, user, kind).ok().flatten().is_some() {
                    continue;
                }
                new.push((room, user, wanted.rule.clone(), wanted.restriction));
            }
        }
        if new.is_empty() {
            return Vec::new();
        }
        let rules: BTreeMap<RuleId, Option<Rule>> =
            new.iter().map(|(_, _, id, _)| (id.clone(), self.index.rule(id))).collect();
        let unconfirmed = |id: &RuleId| rules.get(id).and_then(Option::as_ref).is_none_or(|r| !self.holds.confirmed(r));
        let mut to_hold: BTreeMap<RuleId, String> = BTreeMap::new();
        for (id, rule) in &rules {
            let entity = rule.as_ref().and_then(|r| r.entity.as_deref());
            if unconfirmed(id) && entity.is_some_and(matches_everyone) {
                let whom = if id.kind == EntityKind::Server { "every server" } else { "every user of every server" };
                to_hold.insert(id.clone(), format!("`{}` matches {whom}", entity.unwrap_or_default()));
            }
        }
        let counted: Vec<&(&str, &str, RuleId, Restriction)> =
            new.iter().filter(|(_, _, id, _)| unconfirmed(id) && !to_hold.contains_key(id)).collect();
        let per_room = tally(counted.iter().copied());
        let distinct: BTreeSet<&str> = counted.iter().map(|(_, u, _, _)| *u).collect();
        let hits: Vec<RoomHits> = per_room
            .iter()
            .map(|(room, (users, _, _))| RoomHits {
                room_id: room.to_string(),
                members: self.present_members(room),
                hit: users.len(),
            })
            .collect();
        if let Some(why) = guard::judge(&self.cfg.safety, distinct.len(), &hits) {
            for (_, _, id, _) in &counted {
                to_hold.entry(id.clone()).or_insert_with(|| why.clone());
            }
        }
        if to_hold.is_empty() {
            return Vec::new();
        }
        // What the held rules would have done, for the notice.
        let effect = tally(new.iter().filter(|(_, _, id, _)| to_hold.contains_key(id)));
        let hold_id = self.holds.next_id();
        let now = self.now();
        let mut text = format!(
            "Held {hold_id}: {} rule(s) not enforced, because the safety guard stopped them. Nothing is done for them until a moderator decides.\n",
            to_hold.len()
        );
        for (i, (id, why)) in to_hold.iter().enumerate() {
            let rule = rules.get(id).and_then(Option::as_ref);
            let (rec, entity) = rule.map_or(("?".to_owned(), "(hashed)".to_owned()), |r| {
                (r.recommendation.as_str().to_owned(), r.entity.clone().unwrap_or_else(|| "(hashed)".to_owned()))
            });
            // A whole list can be one hold: name the first rules, count the rest.
            if i < HOLD_NOTICE_RULES {
                text.push_str(&format!(
                    "  {rec} {} rule `{}` ({entity}) in {}: {why}\n",
                    id.kind, id.state_key, id.room_id
                ));
            } else if i == HOLD_NOTICE_RULES {
                text.push_str(&format!("  and {} more rule(s)\n", to_hold.len() - HOLD_NOTICE_RULES));
            }
            let g = Guarded {
                list: id.room_id.clone(),
                kind: id.kind,
                state_key: id.state_key.clone(),
                fingerprint: rule.map(holds::fingerprint).unwrap_or_default(),
                status: Status::Held,
                hold_id: hold_id.clone(),
                held_at_ms: now,
                why: format!("{rec} `{entity}` in {}: {why}", id.room_id),
            };
            if let Err(e) = self.ledger.put_guarded(&g) {
                self.error(format!("cannot record the held rule `{}`: {e:#}", id.state_key));
            }
            self.holds.put(g);
        }
        for (room, (users, bans, mutes)) in &effect {
            let names: Vec<&str> = users.iter().take(5).copied().collect();
            let more = users.len().saturating_sub(names.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            text.push_str(&format!(
                "  {room}: would ban {bans} and mute {mutes} of {} members: {}{more}\n",
                self.present_members(room),
                names.join(", ")
            ));
        }
        let p = &self.cfg.command_prefix;
        text.push_str(&format!("Type `{p} confirm {hold_id}` to enforce, or `{p} reject {hold_id}` to drop."));
        warn!(hold = %hold_id, rules = to_hold.len(), "the safety guard held rules");
        self.report_once(&format!("hold|{hold_id}"), &text);
        // Plan again whoever a held rule touched: those it would restrict, and those it
        // would have been refused for (a held rule is not worth a refusal notice).
        let held_rule = |a: &Action| match a {
            Action::Ban { wanted, .. }
            | Action::MutePowerLevel { wanted, .. }
            | Action::MuteMembership { wanted, .. } => to_hold.contains_key(&wanted.rule),
            Action::Refuse { rule, .. } => to_hold.contains_key(rule),
            _ => false,
        };
        plan.iter()
            .filter(|(_, actions)| actions.iter().any(held_rule))
            .map(|((room, user), _)| (room.clone(), user.clone()))
            .collect()
    }

    /// What a list's rules would do in the protected rooms if hush followed it with this
    /// trust, judged as the engine would (refusals, the guard), without following it.
    fn preview(&self, list: &str, events: &[Value], trust: ListTrust) -> String {
        let now = self.now();
        let mut index = PolicyIndex::new();
        let (mut bans, mut mutes, mut other, mut malformed) = (0usize, 0usize, 0usize, 0usize);
        let mut by_kind: BTreeMap<EntityKind, usize> = BTreeMap::new();
        let mut everyone = Vec::new();
        for ev in events {
            let (Some(ty), Some(key)) =
                (ev.get("type").and_then(Value::as_str), ev.get("state_key").and_then(Value::as_str))
            else {
                continue;
            };
            let empty = Value::Object(Default::default());
            let sender = ev.get("sender").and_then(Value::as_str).unwrap_or_default();
            let applied = index.apply(list, ty, key, sender, ev.get("content").unwrap_or(&empty), now);
            if applied.warning.is_some() {
                malformed += 1;
            }
            if applied.outcome != Outcome::Stored {
                continue;
            }
            let Some((_, kind)) = hush_core::policy::classify_event_type(ty) else { continue };
            let Some(rule) = index.rule(&RuleId { room_id: list.to_owned(), kind, state_key: key.to_owned() }) else {
                continue;
            };
            if !rule.is_active(now) {
                continue;
            }
            *by_kind.entry(kind).or_default() += 1;
            match rule.recommendation.restriction() {
                Some(PolicyRestriction::Ban) => bans += 1,
                Some(PolicyRestriction::Mute) => mutes += 1,
                None => other += 1,
            }
            if rule.entity.as_deref().is_some_and(matches_everyone) && kind != EntityKind::Room {
                everyone.push(format!("`{}` ({})", key, rule.entity.clone().unwrap_or_default()));
            }
        }
        let mut text = format!("Preview of {list} (not followed; with actions: {trust}):\n");
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        text.push_str(&format!(
            "  rules in force: {} ({}); {bans} ban, {mutes} mute, {other} other{}\n",
            by_kind.values().sum::<usize>(),
            if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
            if malformed > 0 { format!("; {malformed} malformed, skipped") } else { String::new() }
        ));
        let mut distinct = BTreeSet::new();
        let mut hits = Vec::new();
        let mut accounts = BTreeSet::new();
        for (room_id, room) in &self.rooms {
            let Some(room) = room else {
                text.push_str(&format!("  {room_id}: not loaded yet\n"));
                continue;
            };
            let facts = self.facts(room);
            let (mut banned, mut muted, mut refused) = (Vec::new(), Vec::new(), Vec::new());
            let mut members: Vec<&String> =
                room.members.iter().filter(|(_, m)| m.is_present()).map(|(u, _)| u).collect();
            members.sort();
            for user in &members {
                let Some(d) = index.decide_where(user, now, |c| trust.allows(c.restriction)) else { continue };
                if refusal(&facts, user, self.shield(user)).is_some() {
                    refused.push(user.as_str());
                    continue;
                }
                distinct.insert(user.as_str());
                match d.action {
                    PolicyRestriction::Ban => banned.push(user.as_str()),
                    PolicyRestriction::Mute => {
                        muted.push(user.as_str());
                        let exact = index.rule(&d.rule).is_some_and(|r| {
                            r.id.kind == EntityKind::User && r.entity.as_deref() == Some(user.as_str())
                        });
                        let local = self
                            .suspensions
                            .as_ref()
                            .is_some_and(|s| crate::suspension::server_of(user) == Some(s.server_name.as_str()));
                        if trust.suspend && exact && local {
                            accounts.insert(user.as_str());
                        }
                    }
                }
            }
            let names = |v: &[&str]| {
                let shown: Vec<&str> = v.iter().take(5).copied().collect();
                let more = v.len().saturating_sub(shown.len());
                if v.is_empty() {
                    String::new()
                } else if more > 0 {
                    format!(" ({} and {more} more)", shown.join(", "))
                } else {
                    format!(" ({})", shown.join(", "))
                }
            };
            text.push_str(&format!(
                "  {room_id}: of {} members, would ban {}{}, mute {}{}; never restricted: {}{}\n",
                members.len(),
                banned.len(),
                names(&banned),
                muted.len(),
                names(&muted),
                refused.len(),
                names(&refused)
            ));
            hits.push(RoomHits { room_id: room_id.clone(), members: members.len(), hit: banned.len() + muted.len() });
        }
        if !accounts.is_empty() {
            text.push_str(&format!("  would suspend {} local account(s)\n", accounts.len()));
        }
        if !everyone.is_empty() {
            text.push_str(&format!(
                "  the guard would hold {} rule(s) that match everyone: {}\n",
                everyone.len(),
                everyone.join(", ")
            ));
        }
        match guard::judge(&self.cfg.safety, distinct.len(), &hits) {
            Some(why) => {
                text.push_str(&format!("  the guard would hold these rules until a moderator confirms them: {why}\n"))
            }
            None if everyone.is_empty() => text.push_str("  the guard would let this through\n"),
            None => {}
        }
        text.trim_end().to_owned()
    }

    /// Members present in a protected room (joined, invited, knocking, muted).
    fn present_members(&self, room_id: &str) -> usize {
        match self.rooms.get(room_id) {
            Some(Some(room)) => room.members.values().filter(|m| m.is_present()).count(),
            _ => 0,
        }
    }

    /// A moderator confirmed or rejected a hold.
    fn decide_hold(&mut self, id: &str, status: Status) -> Result<String, String> {
        let rules = self.holds.of_hold(id);
        if rules.is_empty() {
            let waiting: Vec<String> = self.holds.waiting().into_keys().collect();
            return Err(if waiting.is_empty() {
                format!("There is no hold `{id}`, and nothing is held.")
            } else {
                format!("There is no hold `{id}`. Waiting: {}.", waiting.join(", "))
            });
        }
        let waiting: Vec<Guarded> = rules.into_iter().filter(|g| g.status == Status::Held).collect();
        if waiting.is_empty() {
            return Err(format!("Hold {id} was already decided."));
        }
        let mut users = BTreeSet::new();
        for mut g in waiting.iter().cloned() {
            g.status = status;
            if let Err(e) = self.ledger.put_guarded(&g) {
                return Err(format!("cannot record the decision: {e:#}"));
            }
            if status == Status::Confirmed {
                let rule = RuleId { room_id: g.list.clone(), kind: g.kind, state_key: g.state_key.clone() };
                users.extend(self.index.tracked_users_matching(&rule));
            }
            self.holds.put(g);
        }
        info!(hold = id, ?status, rules = waiting.len(), "a moderator decided a hold");
        let mut what: Vec<String> = waiting.iter().take(HOLD_NOTICE_RULES).map(|g| g.why.clone()).collect();
        if waiting.len() > HOLD_NOTICE_RULES {
            what.push(format!("and {} more", waiting.len() - HOLD_NOTICE_RULES));
        }
        if status == Status::Confirmed {
            let n = users.len();
            self.reconcile_users(users);
            Ok(format!("Confirmed {id}: enforcing {} rule(s) for {n} member(s): {}.", waiting.len(), what.join("; ")))
        } else {
            Ok(format!("Rejected {id}: hush will not enforce {} rule(s): {}.", waiting.len(), what.join("; ")))
        }
    }

    fn execute(&mut self, room_id: &str, action: Action) {
        let now = self.now();
        if self.cfg.dry_run {
            return self.execute_dry(room_id, action);
        }
        let result = match action {
            Action::MutePowerLevel { user_id, level, previous, wanted } => {
                let entry =
                    applying_entry(room_id, &user_id, Kind::MutePowerLevel, previous, Some(level), &wanted, now);
                info!(room = room_id, user = %user_id, level, ?previous, rule = %wanted.rule, "muting by power level");
                self.ledger.begin_apply(&entry).map(|()| {
                    // hush expects the entry it saw, the one it will restore.
                    self.queue_level(room_id, &user_id, Some(level), previous);
                })
            }
            Action::UnmutePowerLevel { user_id, restore } => {
                info!(room = room_id, user = %user_id, ?restore, "lifting a power-level mute");
                // hush expects the level it set.
                let applied = self.ledger.get(room_id, &user_id, Kind::MutePowerLevel).ok().flatten();
                let expected = applied.and_then(|e| e.applied_level);
                self.ledger.begin_lift(room_id, &user_id, Kind::MutePowerLevel).map(|()| {
                    self.queue_level(room_id, &user_id, restore, expected);
                })
            }
            Action::MuteMembership { user_id, wanted } => {
                let entry = applying_entry(room_id, &user_id, Kind::MuteMembership, None, None, &wanted, now);
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::MuteMembership, false, "mute", &wanted.reason);
                })
            }
            Action::UnmuteMembership { user_id, to } => {
                let to = if to == Membership::Leave { "leave" } else { "join" };
                self.ledger.begin_lift(room_id, &user_id, Kind::MuteMembership).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::MuteMembership, true, to, "mute lifted");
                })
            }
            Action::Ban { user_id, wanted } => {
                let entry = applying_entry(room_id, &user_id, Kind::Ban, None, None, &wanted, now);
                info!(room = room_id, user = %user_id, rule = %wanted.rule, "banning");
                self.ledger.begin_apply(&entry).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::Ban, false, "ban", &wanted.reason);
                })
            }
            Action::Unban { user_id } => {
                info!(room = room_id, user = %user_id, "lifting a ban");
                self.ledger.begin_lift(room_id, &user_id, Kind::Ban).map(|()| {
                    self.spawn_member_write(room_id, &user_id, Kind::Ban, true, "unban", "ban lifted");
                })
            }
            Action::MarkApplied { user_id, kind } => {
                if let Some(p) = self.pending_pl.get_mut(room_id) {
                    p.remove(&user_id);
                }
                self.ledger.mark_applied(room_id, &user_id, ledger_kind(kind))
            }
            Action::MarkOverridden { user_id, kind, note } => {
                self.report_in_room(
                    &format!("override|{room_id}|{user_id}|{kind:?}"),
                    &format!("{note} (in {{rooms}})."),
                    room_id,
                );
                self.ledger.mark_overridden(room_id, &user_id, ledger_kind(kind))
            }
            Action::Forget { user_id, kind } => {
                if let Some(p) = self.pending_pl.get_mut(room_id) {
                    p.remove(&user_id);
                }
                self.departed.insert(user_id.clone());
                self.ledger.remove(room_id, &user_id, ledger_kind(kind))
            }
            Action::UpdateCause { user_id, kind, wanted } => self.ledger.update_cause(
                room_id,
                &user_id,
                ledger_kind(kind),
                &rule_ref(&wanted.rule),
                &wanted.reason,
                wanted.expires_at_ms,
            ),
            Action::Refuse { user_id, restriction, refusal, rule } => {
                let what = if restriction == Restriction::Ban { "ban" } else { "mute" };
                warn!(room = room_id, user = %user_id, %refusal, %rule, "refusing to {what}");
                self.report_in_room(
                    &format!("refuse|{room_id}|{user_id}|{what}|{refusal}|{rule}"),
                    &format!("Not going to {what} {user_id} in {{rooms}}: {refusal} (rule {}).", describe_rule(&rule)),
                    room_id,
                );
                Ok(())
            }
            // Account actions come from `reconcile_account`, never from a room's reconcile.
            Action::Suspend { user_id, .. } | Action::Resuspend { user_id } | Action::Unsuspend { user_id } => {
                warn!(room = room_id, user = %user_id, "ignored an account action planned for a room");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
    }

    fn execute_dry(&mut self, room_id: &str, action: Action) {
        // `{rooms}` is filled in when the input's reports are gathered: one line for all
        // the rooms where the same would be done.
        let template = match &action {
            Action::MutePowerLevel { user_id, level, wanted, .. } => {
                format!(
                    "[dry run] would mute {user_id} in {{rooms}} (power level {level}); rule {}",
                    rule_ref(&wanted.rule)
                )
            }
            Action::UnmutePowerLevel { user_id, restore } => format!(
                "[dry run] would lift the mute of {user_id} in {{rooms}} (back to {})",
                restore.map_or("no entry".to_owned(), |l| l.to_string())
            ),
            Action::MuteMembership { user_id, .. } => {
                format!("[dry run] would mute {user_id} in {{rooms}} (membership)")
            }
            Action::UnmuteMembership { user_id, .. } => {
                format!("[dry run] would unmute {user_id} in {{rooms}} (membership)")
            }
            Action::Ban { user_id, wanted } => {
                format!("[dry run] would ban {user_id} from {{rooms}}: {}", wanted.reason)
            }
            Action::Unban { user_id } => format!("[dry run] would unban {user_id} in {{rooms}}"),
            Action::Refuse { user_id, refusal, .. } => {
                format!("[dry run] would refuse to act on {user_id} in {{rooms}}: {refusal}")
            }
            // Ledger bookkeeping: nothing was applied in a dry run, so nothing to keep.
            _ => return,
        };
        info!(room = room_id, "{template}");
        let key = template.replace("{rooms}", room_id);
        self.report_in_room(&key, &template, room_id);
    }

    /// Queues one user's level change. The first change after a quiet batch window goes
    /// out at once (after the inputs already queued, so one rule over many members is
    /// still one event); later ones wait until a window has passed since the last write,
    /// or until the write in flight is done, and go out together. `expected` is the entry
    /// hush expects to find; a user queued again keeps the first expectation (the room has
    /// not been written for them in between).
    fn queue_level(&mut self, room_id: &str, user_id: &str, level: Option<i64>, expected: Option<i64>) {
        let pending = self.pending_pl.entry(room_id.to_owned()).or_default();
        let expected = pending.get(user_id).map_or(expected, |(_, first)| *first);
        pending.insert(user_id.to_owned(), (level, expected));
        if self.pl_in_flight.contains(room_id) || !self.flush_scheduled.insert(room_id.to_owned()) {
            return;
        }
        let window = self.cfg.batch_window.as_millis() as u64;
        let due = self.last_pl_flush.get(room_id).map_or(0, |last| last.saturating_add(window));
        let wait = Duration::from_millis(due.saturating_sub(self.now()));
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        if wait.is_zero() {
            let _ = inbox.send(Input::Flush { room_id });
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = inbox.send(Input::Flush { room_id });
        });
    }

    fn flush(&mut self, room_id: &str) {
        self.flush_scheduled.remove(room_id);
        if self.pl_in_flight.contains(room_id) {
            return;
        }
        let Some(pending) = self.pending_pl.remove(room_id) else { return };
        if pending.is_empty() {
            return;
        }
        let edits: Vec<UserLevelEdit> = pending
            .into_iter()
            .map(|(user_id, (level, expected))| UserLevelEdit { user_id, level, expected })
            .collect();
        self.pl_in_flight.insert(room_id.to_owned());
        self.last_pl_flush.insert(room_id.to_owned(), self.now());
        self.writing.entry(room_id.to_owned()).or_default().extend(edits.iter().map(|e| e.user_id.clone()));
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        let room_id = room_id.to_owned();
        debug!(room = %room_id, edits = edits.len(), "sending power levels");
        self.after_commit.push(Box::pin(async move {
            let result = enforce::send_power_levels(&writer, &room_id, &edits).await;
            let _ = inbox.send(Input::PowerLevelsDone { room_id, edits, result });
        }));
    }

    fn power_levels_done(
        &mut self,
        room_id: &str,
        edits: Vec<UserLevelEdit>,
        result: Result<PowerLevelsSent, WriteError>,
    ) {
        self.pl_in_flight.remove(room_id);
        match result {
            Ok(sent) => {
                if let Some(Some(room)) = self.rooms.get_mut(room_id) {
                    room.own_power_levels_written(sent.content.clone(), sent.event_id);
                }
                for edit in &edits {
                    let entry = self.ledger.get(room_id, &edit.user_id, Kind::MutePowerLevel).ok().flatten();
                    if sent.skipped.contains(&edit.user_id) {
                        let now = hush_core::power_levels::user_entry(&sent.content, &edit.user_id);
                        if let Err(e) = self.changed_before_written(room_id, &edit.user_id, entry, now) {
                            self.error(format!("ledger write failed in {room_id}: {e:#}"));
                        }
                        // Judged again now that the ledger says what happened (an ended
                        // rule's overridden entry is forgotten).
                        self.deferred.entry(room_id.to_owned()).or_default().insert(edit.user_id.clone());
                        continue;
                    }
                    let r = match entry {
                        Some(e)
                            if e.phase == Phase::Applying && edit.level.is_some() && edit.level == e.applied_level =>
                        {
                            self.ledger.mark_applied(room_id, &edit.user_id, Kind::MutePowerLevel)
                        }
                        Some(e) if e.phase == Phase::Lifting => {
                            self.ledger.remove(room_id, &edit.user_id, Kind::MutePowerLevel)
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = r {
                        self.error(format!("ledger write failed in {room_id}: {e:#}"));
                    }
                }
                info!(room = room_id, edits = edits.len(), "power levels updated");
            }
            Err(e) => {
                if !self.own_account_error(&e) {
                    self.error(format!("cannot change power levels in {room_id}: {e}"));
                }
                for edit in &edits {
                    let entry = self.ledger.get(room_id, &edit.user_id, Kind::MutePowerLevel).ok().flatten();
                    let _ = match entry {
                        Some(e) if e.phase == Phase::Applying => {
                            self.ledger.remove(room_id, &edit.user_id, Kind::MutePowerLevel)
                        }
                        Some(e) if e.phase == Phase::Lifting => {
                            self.ledger.mark_applied(room_id, &edit.user_id, Kind::MutePowerLevel)
                        }
                        _ => Ok(()),
                    };
                }
            }
        }
        self.departed.extend(edits.iter().map(|e| e.user_id.clone()));
        self.write_finished(room_id, edits.iter().map(|e| e.user_id.as_str()));
        if self.pending_pl.get(room_id).is_some_and(|p| !p.is_empty()) {
            self.flush(room_id);
        }
    }

    /// Someone else (a moderator) changed a user's entry while hush's write for them waited,
    /// so the write left it alone: that level is the moderator's decision. A mute not yet
    /// applied is not applied, a lift leaves the moderator's level; either way hush's entry
    /// is kept as overridden (so the rule does not mute them again, and nothing is restored
    /// when it ends), and the management room is told once.
    fn changed_before_written(
        &mut self,
        room_id: &str,
        user_id: &str,
        entry: Option<Entry>,
        now: Option<i64>,
    ) -> anyhow::Result<()> {
        let now = now.map_or("the default".to_owned(), |l| l.to_string());
        let Some(e) = entry else { return Ok(()) };
        let note = match e.phase {
            Phase::Applying => format!(
                "Did not mute {user_id} in {{rooms}}: their power level was changed to {now} while hush's mute waited to be written; hush leaves it so."
            ),
            Phase::Lifting => format!(
                "The mute of {user_id} ended, but their power level in {{rooms}} was changed to {now} while hush's lift waited to be written; hush leaves it so."
            ),
            Phase::Applied => return Ok(()),
        };
        info!(room = room_id, user = user_id, phase = ?e.phase, "a level changed by someone else is left as it is");
        self.report_in_room(&format!("changed-before-written|{room_id}|{user_id}|{:?}", e.phase), &note, room_id);
        self.ledger.mark_overridden(room_id, user_id, Kind::MutePowerLevel)
    }

    fn write_started(&mut self, room_id: &str, user_id: &str) {
        self.writing.entry(room_id.to_owned()).or_default().insert(user_id.to_owned());
    }

    /// The writes for these users are done and the ledger says what they did: reconcile
    /// the ones whose reconciliation waited (their rule may have changed meanwhile).
    fn write_finished<'a>(&mut self, room_id: &str, users: impl Iterator<Item = &'a str>) {
        let mut again = BTreeSet::new();
        for user in users {
            if let Some(w) = self.writing.get_mut(room_id) {
                w.remove(user);
            }
            if let Some(d) = self.deferred.get_mut(room_id) {
                if d.remove(user) {
                    again.insert(user.to_owned());
                }
            }
        }
        if self.writing.get(room_id).is_some_and(BTreeSet::is_empty) {
            self.writing.remove(room_id);
        }
        if self.deferred.get(room_id).is_some_and(BTreeSet::is_empty) {
            self.deferred.remove(room_id);
        }
        self.reconcile_room_users(room_id, &again);
    }

    /// Stops tracking the input's candidates who are in no protected room any more (see
    /// [`concerns_policy`]) and of whom hush's ledger has nothing, and drops their `leave`
    /// from the room views (an unknown member is `leave` anyway): busy rooms see thousands
    /// of drive-by joins. Users hush restricted stay, so rule changes still reach them; a
    /// departed user who comes back is tracked and reconciled again by their membership event.
    fn forget_departed(&mut self) {
        let candidates = std::mem::take(&mut self.departed);
        if candidates.is_empty() {
            return;
        }
        // One scan of the ledger for many (a room loaded), a lookup each for a few.
        let entries = if candidates.len() > 16 {
            self.ledger.all()
        } else {
            candidates.iter().try_fold(Vec::new(), |mut all, u| {
                all.extend(self.ledger.for_user(u)?);
                anyhow::Ok(all)
            })
        };
        let named: HashSet<String> = match entries {
            Ok(entries) => entries.into_iter().map(|e| e.user_id).collect(),
            Err(e) => {
                // Keep tracking them: a user tracked for nothing costs only memory.
                warn!("cannot read the ledger to forget departed members: {e:#}");
                return;
            }
        };
        let mut forgotten = 0usize;
        for user in candidates {
            if named.contains(&user) || self.rooms.values().flatten().any(|r| concerns_policy(r.membership(&user))) {
                continue;
            }
            for room in self.rooms.values_mut().flatten() {
                if room.members.get(&user) == Some(&Membership::Leave) {
                    room.members.remove(&user);
                }
            }
            forgotten += usize::from(self.index.untrack_user(&user));
        }
        if forgotten > 0 {
            debug!(users = forgotten, "no longer tracking members who left every protected room");
        }
    }

    fn spawn_member_write(
        &mut self,
        room_id: &str,
        user_id: &str,
        kind: Kind,
        lifting: bool,
        op: &'static str,
        reason: &str,
    ) {
        self.write_started(room_id, user_id);
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        let (room_id, user_id, reason) = (room_id.to_owned(), user_id.to_owned(), reason.to_owned());
        let slots = self.member_writes.clone();
        self.after_commit.push(Box::pin(async move {
            // Held through the retries: a rate-limited write waits without letting another start.
            let _slot = slots.acquire_owned().await.expect("the semaphore is never closed");
            let what = format!("{op} {user_id} in {room_id}");
            let result = enforce::with_retries(&what, || async {
                match op {
                    "ban" => writer.ban(&room_id, &user_id, &reason).await,
                    "unban" => writer.unban(&room_id, &user_id, &reason).await,
                    membership => writer.set_membership(&room_id, &user_id, membership, &reason).await,
                }
            })
            .await;
            let _ = inbox.send(Input::MemberWriteDone { room_id, user_id, kind, lifting, result });
        }));
    }

    fn member_write_done(
        &mut self,
        room_id: &str,
        user_id: &str,
        kind: Kind,
        lifting: bool,
        result: Result<(), WriteError>,
    ) {
        let r = match (&result, lifting) {
            (Ok(()), false) => self.ledger.mark_applied(room_id, user_id, kind),
            (Ok(()), true) => self.ledger.remove(room_id, user_id, kind),
            (Err(_), false) => self.ledger.remove(room_id, user_id, kind),
            (Err(_), true) => self.ledger.mark_applied(room_id, user_id, kind),
        };
        let written = result.is_ok();
        if let Err(e) = result {
            if !self.own_account_error(&e) {
                self.error(format!(
                    "cannot {} {user_id} in {room_id}: {e}",
                    if lifting { "lift the restriction of" } else { "restrict" }
                ));
            }
        }
        if let Err(e) = r {
            self.error(format!("ledger write failed in {room_id}: {e:#}"));
        }
        if written {
            // The room has it now, before sync brings the event back: a check that waited
            // for this write must not read the older view as someone else's undo.
            if let Some(Some(room)) = self.rooms.get_mut(room_id) {
                let now = match (kind, lifting, room.membership(user_id)) {
                    (Kind::Ban, false, _) => Some(Membership::Ban),
                    (Kind::Ban, true, _) => Some(Membership::Leave),
                    (Kind::MuteMembership, false, Membership::Join) => Some(Membership::Mute),
                    (Kind::MuteMembership, true, Membership::Mute) => Some(Membership::Join),
                    (Kind::MuteMembership, true, Membership::LeaveMute) => Some(Membership::Leave),
                    _ => None,
                };
                if let Some(m) = now {
                    room.members.insert(user_id.to_owned(), m);
                }
            }
        }
        // The entry may be gone (lifted, or never applied): the user may be departed.
        self.departed.insert(user_id.to_owned());
        self.write_finished(room_id, std::iter::once(user_id));
    }

    fn note_error(&mut self, text: String) {
        self.last_errors.push(text);
        if self.last_errors.len() > 10 {
            self.last_errors.remove(0);
        }
    }

    fn error(&mut self, text: String) {
        error!("{text}");
        self.report_once(&text, &text);
        self.note_error(text);
    }

    /// Tells the management room, once per key per run. What one input reports goes out
    /// as one message, at the end of the input ([`Engine::flush_reports`]).
    fn report_once(&mut self, key: &str, text: &str) {
        if self.own.blocked.is_some() {
            // hush cannot write to the management room either: keep it for later.
            debug!(key, "not reporting while hush's own account cannot write");
            return;
        }
        if self.reported.insert(key.to_owned()) {
            self.outbox.push((vec![key.to_owned()], text.to_owned()));
        }
    }

    /// Like [`Engine::report_once`] for something that happens room by room: the same
    /// `template` for several rooms in one input is one line naming the rooms (`{rooms}`
    /// in the template is replaced by them).
    fn report_in_room(&mut self, key: &str, template: &str, room_id: &str) {
        if self.own.blocked.is_some() || !self.reported.insert(key.to_owned()) {
            return;
        }
        self.room_reports.entry(template.to_owned()).or_default().push((key.to_owned(), room_id.to_owned()));
    }

    /// Sends what this input reported, gathered into one message: one line per report,
    /// identical lines once with a count.
    fn flush_reports(&mut self) {
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
            return;
        }
        let reports = std::mem::take(&mut self.outbox);
        let Some(room) = self.management_room.clone() else { return };
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
        let writer = self.writer.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
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
        });
    }
}

/// Gives the heap freed after loading a large list back to the system: glibc keeps it
/// otherwise, and a 20,000-rule list would leave ~40 MiB of resident memory unused.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns glibc's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
