//! What the engine is told and tells: its inputs (`Input`), its settings (`EngineConfig`) and its status (`StatusReport`).

use crate::enforce::{AclSent, PowerLevelsSent, WriteError};
use hush_core::guard::Limits;
use hush_core::policy::{ListTrust, Rule};
use hush_core::power_levels::UserLevelEdit;
use hush_core::record::{Entry, Kind};
use hush_core::schedule::Expired;
use serde_json::Value;
use std::time::Duration;

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
    /// `Ok` holds the member event's id, when the homeserver gave one.
    MemberWriteDone {
        room_id: String,
        user_id: String,
        kind: Kind,
        lifting: bool,
        result: Result<Option<String>, WriteError>,
        /// An attempt's answer was lost (a network error or 5xx, then retried): a final
        /// failure may still have been applied.
        uncertain: bool,
    },
    /// Time to send a room's pending power-level edits.
    Flush { room_id: String },
    /// Time to send a room's pending server ACL edits.
    AclFlush { room_id: String },
    /// A batch of server ACL edits was written (or failed for good).
    AclDone { room_id: String, edit: hush_core::server_acl::AclEdit, result: Result<AclSent, WriteError> },
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
    /// Events of members in a protected room (sender, `origin_server_ts`), for the
    /// protections' counters (hush's own are not counted).
    Activity { room_id: String, events: Vec<(String, u64)> },
    /// An account suspension (or its lift) was made, or failed for good.
    Suspension(crate::suspension::Done),
    /// hush's own account can write again (the probe of this block generation wrote).
    OwnAccountWritable { generation: u64 },
    /// A moderator's `redact`: the user's recent events in one protected room (None: all of
    /// them), at most `limit` per room (None: the configured cap). `Ok` says what happens.
    Redact {
        user: String,
        room: Option<String>,
        limit: Option<u32>,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// A redaction of a user's recent events in a room finished (or failed for good).
    RedactionDone { room_id: String, user_id: String, result: Result<crate::redaction::Redacted, WriteError> },
    /// Take a local rule (a protection's mute, a local exception) out of `data_dir` and the
    /// index, which lifts what it caused. `Ok(false)`: there was no such rule.
    RemoveLocalRule { kind: String, state_key: String, reply: tokio::sync::oneshot::Sender<Result<bool, String>> },
    /// Messages of a protected room that mention more users than the mention-spam
    /// protection allows, or the room (sync keeps only these, and only what the check needs).
    Mentions { room_id: String, messages: Vec<hush_core::mentions::Message> },
    /// An alias the protections name (`rooms`, the list to publish to) resolved.
    ProtectionRoomResolved { alias: String, room_id: String },
    /// A protection's rule could not be published to the policy list.
    PublishFailed { what: String, error: String },
    /// `history`: the newest `limit` rows of the action log about a user, a room, or all.
    History {
        about: crate::ledger::About,
        limit: u32,
        reply: tokio::sync::oneshot::Sender<Result<Vec<hush_core::history::Logged>, String>>,
    },
    /// A moderator's command, logged before it acts (so that what the rule it writes
    /// causes names it); the reply is its row's id (0 if it could not be logged).
    CommandStarted {
        moderator: String,
        /// The command's name (`mute`, `undo 3`).
        command: String,
        target: String,
        /// The rule it writes or removes, if any.
        rule: Option<hush_core::policy::RuleId>,
        reply: tokio::sync::oneshot::Sender<u64>,
    },
    /// The command's reply is known: its row's outcome.
    CommandFinished { id: u64, outcome: hush_core::history::Outcome },
    /// `undo`: revert the action of row `id`, for `moderator`, whose own command row is
    /// `command`; `writable` are the lists hush writes to.
    Undo {
        id: u64,
        moderator: String,
        command: u64,
        writable: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Result<super::Undone, String>>,
    },
    /// The engine's counts for a metrics scrape (no full ledger read).
    Metrics(tokio::sync::oneshot::Sender<crate::metrics::Snapshot>),
    /// hush's own account is rate-limited (a write met a 429, or the admin API says so at
    /// start-up): told once per run (`own_limits`).
    OwnRateLimit(crate::rate_limits::OwnLimit),
    /// A list's or protected room's whole state is about to be read: what sync brought of
    /// it until now, waiting for the load, is in that state and is dropped.
    Loading { room_id: String },
    /// Sync had a gap in this room without `state_after` (engine/list_gaps.rs): a list's
    /// whole state is being read again.
    ListGap { room_id: String },
    /// A list's whole state, read again after [`Input::ListGap`].
    ListReread { room_id: String, events: Vec<Value> },
    /// A room's power-levels write is about to be retried (after a 429 or a fault): the
    /// edits planned for the room meanwhile, but for the users it holds (`have`), join it
    /// (`power_join`).
    PowerLevelsJoin { room_id: String, have: Vec<String>, reply: tokio::sync::oneshot::Sender<Vec<UserLevelEdit>> },
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
    /// How far start-up loading got, while it lasts.
    pub loading: Option<super::Loading>,
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
    /// Which restrictions also redact the member's recent events, how far back, how many.
    pub redaction: hush_core::reconcile::RedactPolicy,
    /// Bans that redact carry MSC4293's `redact_events` flag.
    pub redact_with_msc4293: bool,
}
