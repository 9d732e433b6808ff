//! Management-room command parser: text in, typed commands or usage errors out.
//!
//! [`parse()`] turns a message of the management room into a [`Parsed`]: not a command, a
//! typed [`Command`], or a [`UsageError`] that names what is wrong and carries the usage of
//! the command. Nothing here touches the network; the bot executes the commands.
//!
//! Rules a moderator can rely on (the README repeats them):
//! - A command is the prefix (default `!hush`, compared ASCII case-insensitively) followed
//!   by whitespace or the end of the message; leading whitespace is ignored. `!hushx` is
//!   not a command, `!hush` alone is an error that lists the commands.
//! - Command words are case-insensitive; arguments are split on Unicode whitespace.
//! - A user is `@localpart:server`, a glob of that shape containing `*` or `?`, a pill
//!   (a matrix.to or `matrix:u/` link, as Element sends in the formatted body), a
//!   Markdown link to such a URL, or such a URL itself. Ids are never altered.
//! - A pill or Markdown link acts on the user or room it points to, whatever its text
//!   (usually a display name). But if its text is itself a user id or glob (or a room id
//!   or alias) that is not the link's target, compared ASCII case-insensitively, the
//!   command is refused and the error shows both: the moderator must never read one name
//!   while hush acts on another. (A room alias and a room id are not compared.)
//! - `mute`/`ban` refuse a glob that matches every user (`@*:*`, `@*:*.*`, `*`: its
//!   literal characters are all punctuation, see
//!   [`matches_everyone`](crate::policy::glob::matches_everyone)): such a rule would
//!   restrict every user of every server, and every other bot following the list would
//!   follow it. `unmute`/`unban` accept it, so that such a rule can be removed.
//! - `allow`/`unallow` take a user, a user glob, or a server name or glob (a token that
//!   does not start with `@`: `partner.example`, `*.partner.example`, `host:8448`); `allow`
//!   refuses one that matches everyone (`*`, `@*:*`): it would lift every other list's
//!   bans and mutes. After the target, `allow` takes a reason (the rest of the message).
//! - `mute`/`ban`: after the user comes an optional duration, then the reason (the rest
//!   of the message, internal spaces kept). A duration is one or more tokens such as
//!   `30s`, `20m`, `2h`, `7d`, `1w`, `1h30m`, `1h 30m` or `2 hours`. A token that starts
//!   with a digit and otherwise has only letters and digits (such as `2x`, `1.5h`, `90`)
//!   is read as a duration and is an error if it is not one: a moderator who typed
//!   `10mins` meant a temporary mute, and must not get a permanent one. Ordinals
//!   (`2nd`) and other words start the reason, so `mute @a:b spam` has reason `spam`.
//! - `confirm <id>` / `reject <id>` release or drop a rule (or batch) the safety guard
//!   held; the id is 1 to 32 ASCII letters, digits or `-` ([`is_hold_id`]), kept as given.
//! - `watch <room> [--actions ban,mute,suspend]` (also `--actions=ban,mute`, the flag
//!   before or after the room, action names case-insensitive, a space after a comma
//!   allowed): the actions the list may make hush do. Without `--actions` the bot applies
//!   its default for other lists (ban and mute, never suspend). An unknown, repeated or
//!   empty option or action is an error that names it.
//! - `preview <room>` names a policy list to evaluate without following it.
//! - `redact <user> [room] [--limit N]` (also `--limit=N`, the flag anywhere after the
//!   user): one user id, never a glob; `N` is 1 to [`MAX_REDACT_LIMIT`].
//! - `history [user|room] [N]`: an optional user id (not a glob) or room, then an optional
//!   count from 1 to [`HISTORY_MAX`] (default [`HISTORY_DEFAULT`]). `undo <id>`: the id of
//!   a history entry, `42` or `#42`.
//! - Every other command takes exactly the arguments of its usage; extra ones are errors.

mod duration;
mod ident;
mod parse;
mod pill;
mod usage;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use crate::policy::ListTrust;

pub use duration::{format_duration, parse_duration, MAX_DURATION};
pub use ident::{is_hold_id, parse_room, parse_server, parse_target};
pub use parse::{parse, HISTORY_DEFAULT, HISTORY_MAX, MAX_REDACT_LIMIT};
pub use usage::{help_html, help_text, html_escape, topic_help, topic_help_html, usage, COMMAND_NAMES};

/// What one management-room message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not addressed to hush: ignore it.
    NotACommand,
    /// A well-formed command.
    Command(Command),
    /// Addressed to hush but malformed: reply with the error and its usage.
    Invalid(UsageError),
}

/// A well-formed management-room command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help [command]`; the topic is the canonical (lower-case) command name.
    Help { topic: Option<String> },
    /// `status`
    Status,
    /// `mutes`
    Mutes,
    /// `rooms`
    Rooms,
    /// `mute <user-or-glob> [duration] [reason...]`
    Mute { target: Target, duration: Option<Duration>, reason: Option<String> },
    /// `unmute <user-or-glob>`
    Unmute { target: Target },
    /// `ban <user-or-glob> [duration] [reason...]`
    Ban { target: Target, duration: Option<Duration>, reason: Option<String> },
    /// `unban <user-or-glob>`
    Unban { target: Target },
    /// `confirm <id>`: release a held rule (or batch of rules) the safety guard stopped.
    /// The id is as given ([`is_hold_id`]).
    Confirm { id: String },
    /// `reject <id>`: drop a held rule (or batch); hush will not enforce it.
    Reject { id: String },
    /// `watch <room> [--actions ban,mute,suspend]`: follow a policy list. `actions` is
    /// `None` without `--actions`: the default for other lists then applies
    /// ([`ListTrust::OTHER_LIST`]: ban and mute, never suspend).
    Watch { room: RoomRef, actions: Option<ListTrust> },
    /// `preview <room>`: what a policy list would do, without following it.
    Preview { room: RoomRef },
    /// `unwatch <room>`
    Unwatch { room: RoomRef },
    /// `rooms add <room>`
    RoomsAdd { room: RoomRef },
    /// `rooms remove <room>`
    RoomsRemove { room: RoomRef },
    /// `allow <user-glob-or-server> [reason...]`: an exception to the bans and mutes of the
    /// other lists, written to the default policy list. The target is a user, a user glob
    /// or a server name or glob ([`Target::Server`]); one that matches everyone is refused.
    Allow { target: Target, reason: Option<String> },
    /// `unallow <user-glob-or-server>`: remove that exception.
    Unallow { target: Target },
    /// `redact <user> [room] [--limit N]`: redact the user's recent events (the configured
    /// window) in one protected room or all of them, at most `limit` per room (None: the
    /// configured cap).
    Redact { user: String, room: Option<RoomRef>, limit: Option<u32> },
    /// `history [user|room] [N]`: the newest `limit` entries of the action log (None: the
    /// default, [`HISTORY_DEFAULT`]), about one user or room, or all.
    History { about: Option<HistoryAbout>, limit: Option<u32> },
    /// `undo <id>`: revert one action of the log (`42` or `#42`).
    Undo { id: u64 },
}

/// Whom or where `history` is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HistoryAbout {
    /// One user id (never a glob).
    User(String),
    /// One room.
    Room(RoomRef),
}

impl Command {
    /// The canonical name of the command, as in [`usage()`] (`rooms add` is `rooms`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help { .. } => "help",
            Command::Status => "status",
            Command::Mutes => "mutes",
            Command::Rooms | Command::RoomsAdd { .. } | Command::RoomsRemove { .. } => "rooms",
            Command::Mute { .. } => "mute",
            Command::Unmute { .. } => "unmute",
            Command::Ban { .. } => "ban",
            Command::Unban { .. } => "unban",
            Command::Confirm { .. } => "confirm",
            Command::Reject { .. } => "reject",
            Command::Watch { .. } => "watch",
            Command::Preview { .. } => "preview",
            Command::Unwatch { .. } => "unwatch",
            Command::Allow { .. } => "allow",
            Command::Unallow { .. } => "unallow",
            Command::Redact { .. } => "redact",
            Command::History { .. } => "history",
            Command::Undo { .. } => "undo",
        }
    }
}

/// Whom a `mute`/`ban`/`unmute`/`unban`/`allow`/`unallow` is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A full user id, `@localpart:server`, exactly as given.
    User(String),
    /// A user-id glob containing `*` or `?`, such as `@*:spam.example`.
    Glob(String),
    /// A server name or server glob (`partner.example`, `*.partner.example`), for a server
    /// rule: only `allow` and `unallow` take one.
    Server(String),
}

impl Target {
    /// The id or glob, as written to a policy rule's `entity`.
    pub fn as_str(&self) -> &str {
        match self {
            Target::User(s) | Target::Glob(s) | Target::Server(s) => s,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room named in a command. Room ids are opaque: never parse them for a server name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoomRef {
    /// `!opaque` (room version 12: `!` + hash, no server) or `!opaque:server`.
    Id(String),
    /// `#local:server`.
    Alias(String),
}

impl RoomRef {
    /// The id or alias as given.
    pub fn as_str(&self) -> &str {
        match self {
            RoomRef::Id(s) | RoomRef::Alias(s) => s,
        }
    }
}

impl fmt::Display for RoomRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed command: what is wrong, and how the command is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// The canonical command name, if the command word was recognised.
    pub command: Option<&'static str>,
    /// What is wrong, specifically; user text appears in backticks.
    pub message: String,
    /// Usage lines without the prefix, one synopsis per line (see [`usage()`]).
    pub usage: &'static str,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}
