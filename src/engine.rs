//! The engine: one task that owns the policy index, the room views, the ledger and the timers, and turns every trigger into reconciled actions.
//!
//! Inputs arrive on one channel (policy events, room state, timers, write results), so
//! they are handled one at a time, in order, and the ledger is written by one owner.
//! Each input names the users it may affect; each of those is reconciled in each
//! protected room, and the actions are carried out (or, in dry-run, reported: the
//! engine's `consequences`, chosen at construction).
//!
//! This root holds the engine's parts and the inbox dispatch (the inputs themselves are in
//! `input`); each part owns its state in a submodule (`view`, `guard`, `reports`,
//! `power_batch`, `acl_batch`, `writes`, `expiry`, `policy_events`, `protections`,
//! `redactions`, `history`), and what needs several parts is the engine's, in the module of what it
//! does (`state_events`, `reconcile`, `execute`, `consequences`, `preview`, `accounts`,
//! `server_acl`).

use std::collections::{BTreeSet, HashMap};

use hush_core::policy::{EntityKind, PolicyIndex, Rule, RuleId};
use hush_core::reconcile::Membership;
use hush_core::schedule::{Clock, Expired, TimerHandle};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::enforce::RoomWriter;
use crate::holds::{Holds, Status};

use crate::ledger::Ledger;
use crate::rooms::RoomState;

mod accounts;
mod acl_batch;
mod consequences;
mod execute;
mod expiry;
mod guard;
mod history;
mod input;
mod list_gaps;
mod member_writes;
mod mention_spam;
mod own_limits;
mod policy_events;
mod power_batch;
mod power_join;
mod preview;
mod progress;
mod protections;
mod reconcile;
mod redactions;
mod reports;
mod scrape;
mod server_acl;
mod state_events;
#[cfg(test)]
pub(crate) mod tests;
mod view;
mod writes;

use expiry::Expiry;
use guard::Guard;
pub use history::{protection_name, Undone, UNDO_PREFIX};
pub use input::{EngineConfig, Input, StatusReport};
use power_batch::PowerBatch;
use reports::Reports;
use view::View;

pub use progress::Loading;
pub use protections::{MentionSettings, ProtectionReach, ProtectionSettings};
use writes::Writes;

/// At most this many bans, unbans and membership changes are sent at once, for the whole
/// engine: a rule over hundreds of members must not become hundreds of concurrent requests
/// (issue 13). 8 keeps a mass ban quick (each request is one round trip) while staying
/// under a homeserver's usual burst allowance (Synapse's `rc_message` default is 10), so a
/// few requests meet a 429 and wait, not hundreds.
pub const MEMBER_WRITES_IN_FLIGHT: usize = 8;

/// The engine state; see the module doc. Each part owns its state (see the modules);
/// the methods that need several parts are the engine's, in the module of what they do.
pub struct Engine<W: RoomWriter, C: Clock> {
    cfg: EngineConfig,
    writer: W,
    clock: C,
    ledger: Ledger,
    index: PolicyIndex,
    inbox: mpsc::UnboundedSender<Input>,
    management_room: Option<String>,
    /// What hush knows of the followed lists, the protected rooms and the management room.
    view: View,
    /// The input's planned actions and the rules the guard holds.
    guard: Guard,
    /// What the input being handled reports, and what was reported already.
    reports: Reports,
    /// Power-level edits waiting for each room's next write.
    power: PowerBatch,
    /// Server ACL edits waiting for each room's next write, and the rooms to look at again.
    acl: acl_batch::AclBatch,
    /// Who has a write in flight, who waits for it, and the writes to start after the commit.
    writes: Writes,
    /// Each user's expiry timer.
    expiry: Expiry,
    /// The policy event in force at each key, so redacting it can be turned into a removal.
    policy_events: policy_events::PolicyEvents,
    /// Lists read again after a gap in sync.
    list_gaps: list_gaps::ListGaps,
    /// Users who may have left every protected room during the input being handled:
    /// untracked at its end if so ([`Engine::forget_departed`]).
    departed: BTreeSet<String>,
    /// Account suspension, when enabled (see `accounts`).
    suspensions: Option<crate::suspension::Suspensions>,
    /// Whether hush's own account can write.
    own: crate::suspension::OwnAccount,
    /// What carrying out an action means (enforce, or dry run), fixed at construction.
    consequences: std::sync::Arc<dyn consequences::Consequences<W, C>>,
    /// Redactions under way, and those waiting for the member's write in flight.
    redactions: redactions::Redactions,
    /// Flood protection, escalation and the local rules they write.
    protections: protections::Protections,
    /// How far start-up loading got.
    progress: progress::Progress,
    /// The command an undo acts for, while it acts (see `history`).
    history: history::History,
    /// The process's metrics (a fresh set unless wiring shares one, see `with_metrics`).
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The write tasks run inside it: the first 429 they meet tells the engine (`own_limits`).
    own_limits: crate::rate_limits::Watch,
}

/// Whether a rule can make hush act on a member with this membership and no ledger entry:
/// present (join, invite, knock, mute), or `leave-mute` (a ban still applies). Members
/// `leave` or `ban` with no entry are never acted on, so need not be tracked.
fn concerns_policy(m: Membership) -> bool {
    m.is_present() || m == Membership::LeaveMute
}

/// A rule in words: "`state key` in !list".
fn describe_rule(id: &RuleId) -> String {
    format!("`{}` in {}", id.state_key, id.room_id)
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
        let cfg_dry_run = cfg.dry_run;
        let inbox_for_limits = inbox.clone();
        Engine {
            cfg,
            writer,
            clock,
            ledger,
            index: PolicyIndex::new(),
            inbox,
            management_room: None,
            view: View::default(),
            guard: Guard::new(holds),
            reports: Reports::default(),
            power: PowerBatch::default(),
            acl: Default::default(),
            writes: Writes::new(MEMBER_WRITES_IN_FLIGHT),
            expiry: Expiry::new(timers),
            policy_events: Default::default(),
            list_gaps: Default::default(),
            departed: BTreeSet::new(),
            suspensions: None,
            own: Default::default(),
            consequences: consequences::chosen(cfg_dry_run),
            redactions: Default::default(),
            protections: Default::default(),
            progress: Default::default(),
            history: Default::default(),
            metrics: Default::default(),
            own_limits: own_limits::watch(&inbox_for_limits),
        }
    }

    /// Handles inputs until the channel closes.
    pub async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut timers: mpsc::Receiver<Expired<String>>,
    ) {
        self.load_local_rules();
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

    /// Handles one input. Its ledger writes are one transaction, committed before any
    /// room or account write it started is sent (write-ahead, one fsync per input).
    pub fn handle(&mut self, input: Input) {
        let batch = self.ledger.begin_batch();
        if let Err(e) = &batch {
            // Each statement then commits by itself, as durable, only slower.
            warn!("{e:#}");
            self.metrics.ledger_committed(Err(format!("{e:#}")));
        }
        self.handle_input(input);
        self.reconcile_acls();
        self.settle();
        // What the input planned is carried out: an undo no longer acts.
        self.history.input_done();
        self.arm_reconciled();
        self.forget_departed();
        self.flush_reports();
        self.log_progress();
        if batch.is_ok() {
            let committed = self.ledger.commit_batch();
            self.metrics.ledger_committed(committed.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
            if let Err(e) = committed {
                // The writes below would go out with no durable record of what to undo:
                // stop instead, as a kill -9 would; the next start settles from the ledger.
                error!("{e:#}: stopping rather than change rooms without a record");
                std::process::exit(1);
            }
        }
        for write in self.writes.take_after_commit() {
            tokio::spawn(self.own_limits.scope(write));
        }
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Configure { management_room, lists, protected } => {
                if management_room.is_some() {
                    self.management_room = management_room;
                }
                for (l, trust) in lists {
                    self.view.trust.insert(l.clone(), trust);
                    self.view.lists.entry(l).or_insert(false);
                }
                for r in protected {
                    self.view.rooms.entry(r).or_insert(None);
                }
                // A list's trust may have changed.
                self.acl.mark_all();
            }
            Input::ListsKnown { pinned } => {
                for l in pinned {
                    self.view.lists.entry(l).or_insert(false);
                }
                self.view.lists_known = true;
                self.acl.mark_all();
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
            Input::Loading { room_id } => {
                if let Some(dropped) = self.view.buffered.remove(&room_id) {
                    debug!(room = %room_id, events = dropped.len(), "state events before the load: in the state read now");
                }
            }
            Input::ListGap { room_id } => self.list_gap(&room_id),
            Input::ListReread { room_id, events } => self.list_reread(&room_id, &events),
            Input::Redaction { room_id, redacts } => {
                if let Some((ty, state_key)) = self.policy_events.take(&room_id, &redacts) {
                    info!(list = %room_id, %ty, %state_key, "a policy rule was redacted: removing it");
                    let removal = serde_json::json!({"type": ty, "state_key": state_key, "content": {}});
                    self.state_event(&room_id, &removal);
                } else if self.view.lists.get(&room_id) == Some(&true) {
                    // A replaced or removed rule, or no rule at all: the list's state is unchanged.
                    debug!(list = %room_id, %redacts, "a redacted event is not a rule in force: ignored");
                }
            }
            Input::Timers(expired) => {
                let mut users: BTreeSet<String> = expired.ids.into_iter().collect();
                self.expiry.fired(&users);
                if users.remove(server_acl::ACL_KEY) {
                    self.acl.mark_all();
                }
                debug!(count = users.len(), "timers fired");
                self.reconcile_users(users);
            }
            Input::PowerLevelsDone { room_id, edits, result } => self.power_levels_done(&room_id, edits, result),
            Input::MemberWriteDone { room_id, user_id, kind, lifting, result, uncertain } => {
                self.member_write_done(&room_id, &user_id, kind, lifting, result, uncertain)
            }
            Input::Flush { room_id } => self.flush(&room_id),
            Input::AclFlush { room_id } => self.acl_flush(&room_id),
            Input::AclDone { room_id, edit, result } => self.acl_done(&room_id, edit, result),
            Input::ReportFailed { keys } => {
                self.reports.failed(keys);
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::RulesFor { target, reply } => {
                let _ = reply.send(self.rules_for(&target));
            }
            Input::Unwatch { room_id } => {
                let now = self.now();
                self.view.lists.remove(&room_id);
                self.view.trust.remove(&room_id);
                self.view.buffered.remove(&room_id);
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
                        .filter(|e| e.rule.room_id == room_id && e.kind.is_about_a_user())
                        .map(|e| e.user_id),
                );
                self.acl.mark_all();
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
            Input::Activity { room_id, events } => self.activity(&room_id, events),
            Input::RemoveLocalRule { kind, state_key, reply } => {
                let removed = self.remove_local_rule(&kind, &state_key).map_err(|e| format!("{e:#}"));
                let _ = reply.send(removed);
            }
            Input::Mentions { room_id, messages } => self.mentions(&room_id, messages),
            Input::ProtectionRoomResolved { alias, room_id } => self.protection_room_resolved(alias, room_id),
            Input::PublishFailed { what, error } => self.error(format!("cannot {what}: {error}")),
            Input::Suspension(done) => self.account_call_done(done),
            Input::ManagementLoaded { room_id, events } => {
                let room = RoomState::from_state(&room_id, &events);
                let before = self.management_moderators();
                self.view.management = Some(room);
                let mut users = before;
                users.extend(self.management_moderators());
                self.acl.mark_all();
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
            Input::Redact { user, room, limit, reply } => {
                let _ = reply.send(self.redact_command(&user, room.as_deref(), limit));
            }
            Input::RedactionDone { room_id, user_id, result } => self.redaction_done(&room_id, &user_id, result),
            Input::History { about, limit, reply } => {
                let _ = reply.send(self.history_rows(&about, limit));
            }
            Input::CommandStarted { moderator, command, target, rule, reply } => {
                let _ = reply.send(self.command_started(moderator, command, target, rule));
            }
            Input::CommandFinished { id, outcome } => self.command_finished(id, outcome),
            Input::Undo { id, moderator, command, writable, reply } => {
                let _ = reply.send(self.undo(id, &moderator, command, &writable));
            }
            Input::Metrics(reply) => {
                let _ = reply.send(self.metrics_snapshot());
            }
            Input::OwnRateLimit(seen) => self.own_rate_limited(&seen),
            Input::PowerLevelsJoin { room_id, have, reply } => self.power_levels_join(&room_id, &have, reply),
        }
    }

    /// Forgets a protected room's view and pending edits (its ledger entries stay).
    fn unprotect(&mut self, room_id: &str) {
        self.view.rooms.remove(room_id);
        self.view.buffered.remove(room_id);
        self.power.forget_room(room_id);
        self.acl.forget_room(room_id);
    }

    /// Whether the policy index tracks this user, and how many it tracks (tests).
    #[cfg(test)]
    pub fn tracked(&self, user: &str) -> (bool, usize) {
        (self.index.is_tracked(user), self.index.tracked_len())
    }

    /// Whether a protected room's view has a membership for this user (tests).
    #[cfg(test)]
    pub fn knows_member(&self, room_id: &str, user: &str) -> bool {
        matches!(self.view.rooms.get(room_id), Some(Some(r)) if r.members.contains_key(user))
    }

    fn status(&self) -> StatusReport {
        let counts: HashMap<String, usize> =
            self.index.list_counts().into_iter().map(|(room, c)| (room, c.effective)).collect();
        StatusReport {
            lists: self
                .view
                .lists
                .iter()
                .map(|(l, loaded)| (l.clone(), counts.get(l).copied().unwrap_or(0), *loaded))
                .collect(),
            protected_rooms: self.view.rooms.iter().map(|(r, s)| (r.clone(), s.is_some())).collect(),
            pending_timers: self.expiry.pending(),
            ledger: self.ledger.all().unwrap_or_default(),
            last_errors: self.reports.last_errors().to_vec(),
            dry_run: self.cfg.dry_run,
            own_account_blocked: self.own.blocked.clone().map(|c| (c, self.own.since_ms)),
            held: self.guard.waiting(),
            loading: self.loading(),
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
}
