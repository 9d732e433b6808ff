//! Management-room commands: what each parsed command does and the reply it gets.
//!
//! `mute`/`ban` write a rule to `default_policy_list` (hush then enforces it like any
//! other rule, and every bot following that list sees it); `unmute`/`unban` remove the
//! rules hush can remove and say which remain. `allow` writes an exception
//! (`management/allow.rs`), `unallow` removes it like `unmute` removes a mute.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_core::commands::{self, html_escape, Command, Parsed, Target};
use hush_core::policy::{Recommendation, Rule};
use matrix_sdk::RoomState;
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::engine::{Input, StatusReport};
use crate::runtime::RoomOverrides;
use hush_core::record::{Entry, Kind, Phase};

mod allow;
mod history;
mod local;
mod rooms;

use allow::allow;
use rooms::{change_rooms, may_protect, preview, rooms, watch, Change};

/// What commands need from the running bot, lent to [`handle`] by `bot` (so this module
/// does not depend on `bot`).
pub struct Context<'a> {
    pub config: &'a Config,
    pub client: &'a matrix_sdk::Client,
    pub own_user: &'a matrix_sdk::ruma::UserId,
    /// When hush started (for the uptime).
    pub started: std::time::Instant,
    pub management_room: &'a std::sync::RwLock<Option<matrix_sdk::ruma::OwnedRoomId>>,
    /// The engine's inbox.
    pub engine: &'a tokio::sync::mpsc::UnboundedSender<Input>,
    /// Lists and rooms changed by commands (persisted in data_dir).
    pub overrides: &'a std::sync::Mutex<RoomOverrides>,
    /// Starts and stops following rooms.
    pub follows: &'a dyn Follow,
}

/// Following rooms in the background, as `watch`, `unwatch` and `rooms add`/`remove` ask.
pub trait Follow: Send + Sync {
    /// Starts following a policy list.
    fn watch(&self, room: String);
    /// Starts following a room to protect.
    fn protect(&self, room: String);
    /// Stops following `room` in the roles the config and `overrides` no longer give it
    /// (called after changing `overrides`).
    fn unfollow(&self, room: &str);
}

/// A reply: plain text, its HTML rendering, and whether the command succeeded
/// (a success is also acknowledged with a reaction).
#[derive(Debug, Clone)]
pub struct Reply {
    pub plain: String,
    pub html: String,
    pub ok: bool,
}

impl Reply {
    fn ok(plain: String) -> Self {
        let html = format!("<pre>{}</pre>", html_escape(&plain));
        Reply { plain, html, ok: true }
    }
    fn ok_html(plain: String, html: String) -> Self {
        Reply { plain, html, ok: true }
    }
    fn error(plain: String) -> Self {
        let html = format!("<pre>{}</pre>", html_escape(&plain));
        Reply { plain, html, ok: false }
    }
}

/// Splits a long reply into pieces below the event size limit (64 KiB for the whole
/// event; a piece keeps plain + HTML well under it), at line ends.
pub fn split_reply(reply: &Reply, max_bytes: usize) -> Vec<Reply> {
    if reply.plain.len() + reply.html.len() <= max_bytes {
        return vec![reply.clone()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    // HTML escaping can grow text up to six times (`'` -> `&#39;`); budget for it.
    let budget = (max_bytes / 7).max(64);
    for line in reply.plain.lines() {
        // A line that fits in a piece of its own is never cut: start a new piece for it.
        if current.len() + line.len() + 1 > budget && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        let mut line = line;
        // Only a line longer than a whole piece is cut (at a character boundary).
        while current.len() + line.len() + 1 > budget {
            let mut cut = budget.saturating_sub(current.len() + 1).min(line.len());
            while cut > 0 && !line.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                pieces.push(std::mem::take(&mut current));
                continue;
            }
            current.push_str(&line[..cut]);
            pieces.push(std::mem::take(&mut current));
            line = &line[cut..];
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
        .into_iter()
        .map(|p| {
            let plain = p.trim_end().to_owned();
            Reply { html: format!("<pre>{}</pre>", html_escape(&plain)), plain, ok: reply.ok }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn fmt_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn fmt_left(until_ms: u64, now: u64) -> String {
    if until_ms <= now {
        "now".to_owned()
    } else {
        commands::format_duration(Duration::from_secs((until_ms - now).div_ceil(1000)))
    }
}

/// Executes a parsed command from a moderator (`sender`) and says what happened. A
/// command that acts is logged in the action log before it acts, and its outcome after.
pub async fn handle(ctx: &Context<'_>, parsed: Parsed, sender: &str) -> Reply {
    let row = match &parsed {
        Parsed::Command(cmd) => history::command_started(ctx, cmd, sender).await,
        _ => None,
    };
    let reply = dispatch(ctx, parsed, sender, row.unwrap_or(0)).await;
    if let Some(row) = row {
        history::command_finished(ctx, row, &reply);
    }
    reply
}

/// What each command does; `row` is the command's row in the action log (0: none).
async fn dispatch(ctx: &Context<'_>, parsed: Parsed, sender: &str, row: u64) -> Reply {
    let prefix = ctx.config.command_prefix.clone();
    match parsed {
        Parsed::NotACommand => Reply::error(String::new()),
        Parsed::Invalid(e) => Reply { plain: e.render(&prefix), html: e.render_html(&prefix), ok: false },
        Parsed::Command(cmd) => match cmd {
            Command::Help { topic } => match topic.as_deref().and_then(|t| commands::topic_help(&prefix, t)) {
                Some(text) => {
                    let html = topic.as_deref().and_then(|t| commands::topic_help_html(&prefix, t)).unwrap_or_default();
                    Reply::ok_html(text, html)
                }
                None => Reply::ok_html(commands::help_text(&prefix), commands::help_html(&prefix)),
            },
            Command::Status => status(ctx).await,
            Command::Mutes => mutes(ctx).await,
            Command::Mute { target, duration, reason } => {
                restrict(ctx, Recommendation::Mute, &target, duration, reason).await
            }
            Command::Ban { target, duration, reason } => {
                restrict(ctx, Recommendation::Ban, &target, duration, reason).await
            }
            Command::Unmute { target } => lift(ctx, Recommendation::Mute, &target).await,
            Command::Unban { target } => lift(ctx, Recommendation::Ban, &target).await,
            Command::Watch { room, actions } => watch(ctx, &room, actions).await,
            Command::Unwatch { room } => change_rooms(ctx, Change::Unwatch, &room).await,
            Command::RoomsAdd { room } => match may_protect(ctx, &room, sender).await {
                Ok(()) => change_rooms(ctx, Change::Protect, &room).await,
                Err(why) => Reply::error(why),
            },
            Command::Confirm { id } => decide_hold(ctx, &id, true).await,
            Command::Reject { id } => decide_hold(ctx, &id, false).await,
            Command::Preview { room } => match preview(ctx, &room, None).await {
                Ok(text) => Reply::ok(text),
                Err(e) => Reply::error(e),
            },
            Command::RoomsRemove { room } => change_rooms(ctx, Change::Unprotect, &room).await,
            Command::Rooms => rooms(ctx).await,
            Command::Allow { target, reason } => allow(ctx, &target, reason).await,
            Command::Unallow { target } => lift(ctx, Recommendation::Allow, &target).await,
            Command::Redact { user, room, limit } => redact(ctx, &user, room.as_ref(), limit).await,
            Command::History { about, limit } => history::history(ctx, about.as_ref(), limit).await,
            Command::Undo { id } => history::undo(ctx, id, sender, row).await,
        },
    }
}

async fn engine_status(ctx: &Context<'_>) -> Option<StatusReport> {
    let (tx, rx) = oneshot::channel();
    ctx.engine.send(Input::Status(tx)).ok()?;
    rx.await.ok()
}

async fn rules_for(ctx: &Context<'_>, target: &str) -> Vec<Rule> {
    let (tx, rx) = oneshot::channel();
    if ctx.engine.send(Input::RulesFor { target: target.to_owned(), reply: tx }).is_err() {
        return Vec::new();
    }
    rx.await.unwrap_or_default()
}

/// The deterministic state key of a rule hush writes: repeating a command updates it.
pub fn rule_state_key(recommendation: &Recommendation, entity: &str) -> String {
    format!("{}:{entity}", recommendation.as_str())
}

async fn restrict(
    ctx: &Context<'_>,
    recommendation: Recommendation,
    target: &Target,
    duration: Option<Duration>,
    reason: Option<String>,
) -> Reply {
    let verb = if recommendation == Recommendation::Mute { "mute" } else { "ban" };
    let Some(list) = ctx.config.default_policy_list.clone() else {
        return Reply::error(format!(
            "Cannot {verb}: no default_policy_list is configured, so hush has nowhere to write the rule."
        ));
    };
    let list_id = match crate::matrix::resolve(ctx.client, &list).await {
        Ok(id) => id,
        Err(e) => return Reply::error(format!("Cannot {verb}: the policy list {list} cannot be resolved: {e:#}")),
    };
    let entity = target.as_str();
    if let Some(why) = exemption(ctx, entity).await {
        return Reply::error(format!(
            "Not going to {verb} {entity}: {why}. hush never restricts such a user, and would not write a rule that every bot following the list would enforce."
        ));
    }
    let reason = reason.unwrap_or_default();
    let mut content = json!({"entity": entity, "recommendation": recommendation.as_str(), "reason": reason});
    let expiry = duration.map(|d| now_ms().saturating_add(d.as_millis() as u64));
    if let Some(at) = expiry {
        content["expiry"] = at.into();
        content["support.feline.policy.expiry.rev.2"] = at.into();
    }
    let state_key = rule_state_key(&recommendation, entity);
    if let Err(e) = crate::matrix::put_state(ctx.client, &list_id, "m.policy.rule.user", &state_key, &content).await {
        return Reply::error(format!("Cannot write the {verb} rule to {list}: {e:#}"));
    }
    let until = match (duration, expiry) {
        (Some(d), Some(at)) => format!(" for {} (until {})", commands::format_duration(d), fmt_time(at)),
        _ => String::new(),
    };
    let why = if reason.is_empty() { String::new() } else { format!(", reason: {reason}") };
    Reply::ok(format!(
        "{verb} {entity}{until}{why}: rule `{state_key}` written to {list}; hush enforces it in the protected rooms."
    ))
}

/// Removes a rule from its list (an empty state event at its key).
async fn remove_rule(ctx: &Context<'_>, rule: &Rule) -> Result<(), String> {
    let room_id = matrix_sdk::ruma::OwnedRoomId::try_from(rule.id.room_id.as_str()).map_err(|e| e.to_string())?;
    crate::matrix::put_state(ctx.client, &room_id, rule.event_type(), &rule.id.state_key, &json!({}))
        .await
        .map_err(|e| format!("hush cannot remove it: {e:#}"))
}

async fn lift(ctx: &Context<'_>, recommendation: Recommendation, target: &Target) -> Reply {
    let verb = match recommendation {
        Recommendation::Mute => "unmute",
        Recommendation::Allow => "unallow",
        _ => "unban",
    };
    let wanted = |r: &Rule| match recommendation {
        Recommendation::Mute | Recommendation::Allow => r.recommendation == recommendation,
        _ => matches!(r.recommendation, Recommendation::Ban | Recommendation::Takedown),
    };
    // An undo's local exception is an allow too: `unallow` takes it out (from data_dir).
    let local = match recommendation {
        Recommendation::Allow => history::remove_undo_exception(ctx, target).await,
        _ => None,
    };
    let rules: Vec<Rule> = rules_for(ctx, target.as_str()).await.into_iter().filter(wanted).collect();
    if rules.is_empty() {
        return match local {
            Some(note) => Reply::ok(format!("{verb} {target}: {note}.")),
            None => Reply::error(format!("No active {} rule applies to {target}.", recommendation.as_str())),
        };
    }
    let writable = writable_list_ids(ctx).await;
    let mut removed = Vec::new();
    let mut remaining = Vec::new();
    for rule in rules {
        if let Some(outcome) = local::lift(ctx, &rule).await {
            match outcome {
                Ok(Some(lifted)) => removed.push(lifted),
                Ok(None) => {}
                Err(kept) => remaining.push(kept),
            }
            continue;
        }
        if !writable.iter().any(|l| l == &rule.id.room_id) {
            remaining.push(format!(
                "`{}` in {} (a list hush does not write to: ask its moderators, or mark it `write: true` in policy_lists)",
                rule.id.state_key, rule.id.room_id
            ));
            continue;
        }
        let exact = rule.id.kind == allow::kind_of(target) && rule.entity.as_deref() == Some(target.as_str());
        let where_ = format!("`{}` in {}", rule.id.state_key, rule.id.room_id);
        if !exact {
            remaining.push(format!(
                "{where_} ({} `{}` matches more than {target}: remove or narrow it there)",
                rule.id.kind,
                rule.entity.as_deref().unwrap_or("(hashed)")
            ));
            continue;
        }
        match remove_rule(ctx, &rule).await {
            Ok(()) => removed.push(where_),
            Err(e) => remaining.push(format!("{where_} ({e})")),
        }
    }
    let mut text = String::new();
    if let Some(note) = &local {
        let _ = writeln!(text, "{verb} {target}: {note}.");
    }
    if !removed.is_empty() {
        let _ = writeln!(text, "{verb} {target}: removed {} rule(s): {}.", removed.len(), removed.join(", "));
    }
    if !remaining.is_empty() {
        let _ = writeln!(text, "Still in force:");
        for r in &remaining {
            let _ = writeln!(text, "  {r}");
        }
    }
    let text = text.trim_end().to_owned();
    if removed.is_empty() && local.is_none() {
        Reply::error(text)
    } else {
        Reply::ok(text)
    }
}

/// Why hush must never restrict `user`, if so (asked of the engine, which sees every
/// protected room and the management room).
async fn exemption(ctx: &Context<'_>, user: &str) -> Option<String> {
    let (tx, rx) = oneshot::channel();
    ctx.engine.send(Input::Exempt { user: user.to_owned(), reply: tx }).ok()?;
    rx.await.ok().flatten()
}

/// The room ids of the lists hush writes to: `default_policy_list` and lists marked
/// `write: true`. `unmute`/`unban` remove rules from these only.
async fn writable_list_ids(ctx: &Context<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for list in ctx.config.writable_lists() {
        if let Ok(id) = crate::matrix::resolve(ctx.client, &list).await {
            out.push(id.to_string());
        }
    }
    out
}

async fn decide_hold(ctx: &Context<'_>, id: &str, confirm: bool) -> Reply {
    let (tx, rx) = oneshot::channel();
    let input = if confirm {
        Input::Confirm { id: id.to_owned(), reply: tx }
    } else {
        Input::Reject { id: id.to_owned(), reply: tx }
    };
    if ctx.engine.send(input).is_err() {
        return Reply::error("The engine is not running.".to_owned());
    }
    match rx.await {
        Ok(Ok(text)) => Reply::ok(text),
        Ok(Err(text)) => Reply::error(text),
        Err(_) => Reply::error("The engine is not running.".to_owned()),
    }
}

/// `redact`: the engine plans the redaction like a ban's, with the same refusals.
async fn redact(ctx: &Context<'_>, user: &str, room: Option<&commands::RoomRef>, limit: Option<u32>) -> Reply {
    let room_id = match room {
        None => None,
        Some(r) => match crate::matrix::resolve(ctx.client, r.as_str()).await {
            Ok(id) => Some(id.to_string()),
            Err(e) => return Reply::error(format!("Cannot resolve {r}: {e:#}")),
        },
    };
    let (tx, rx) = oneshot::channel();
    if ctx.engine.send(Input::Redact { user: user.to_owned(), room: room_id, limit, reply: tx }).is_err() {
        return Reply::error("The engine is not running.".to_owned());
    }
    match rx.await {
        Ok(Ok(text)) => Reply::ok(text),
        Ok(Err(text)) => Reply::error(text),
        Err(_) => Reply::error("The engine is not running.".to_owned()),
    }
}

async fn mutes(ctx: &Context<'_>) -> Reply {
    let Some(status) = engine_status(ctx).await else {
        return Reply::error("The engine is not running.".to_owned());
    };
    let now = now_ms();
    let mut by_user: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for e in status.ledger.iter().filter(|e| e.kind.is_mute() && e.phase != Phase::Lifting && !e.overridden) {
        by_user.entry(e.user_id.clone()).or_default().push(e);
    }
    if by_user.is_empty() {
        return Reply::ok("No active mutes.".to_owned());
    }
    let mut text = format!("{} muted user(s):\n", by_user.len());
    for (user, entries) in &by_user {
        let first = entries[0];
        let since = entries.iter().map(|e| e.applied_at_ms).min().unwrap_or(first.applied_at_ms);
        let left = match first.expires_at_ms {
            Some(at) => format!("ends in {}", fmt_left(at, now)),
            None => "permanent".to_owned(),
        };
        let cause = local::describe(&first.rule.room_id, &first.rule.state_key);
        let reason = if first.reason.is_empty() { String::new() } else { format!(", reason: {}", first.reason) };
        let _ =
            writeln!(text, "  {user}: {} room(s), since {}, {left}; {cause}{reason}", entries.len(), fmt_time(since));
    }
    Reply::ok(text.trim_end().to_owned())
}

async fn status(ctx: &Context<'_>) -> Reply {
    let uptime = ctx.started.elapsed();
    let joined = ctx.client.rooms().into_iter().filter(|r| r.state() == RoomState::Joined).count();
    let mut plain = String::new();
    let _ = writeln!(plain, "hush {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(plain, "homeserver: {}", ctx.config.homeserver_url);
    let _ = writeln!(plain, "user: {}", ctx.own_user);
    let _ = writeln!(plain, "uptime: {}", commands::format_duration(Duration::from_secs(uptime.as_secs().max(1))));
    let _ = writeln!(plain, "dry run: {}", if ctx.config.dry_run { "on (nothing is changed)" } else { "off" });
    let _ = writeln!(plain, "rooms joined: {joined}");
    if let Some(room) = ctx.management_room.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = writeln!(plain, "management room: {room}");
    }
    match engine_status(ctx).await {
        Some(s) => {
            if let Some(l) = &s.loading {
                let _ = writeln!(
                    plain,
                    "starting: {} of {} protected rooms and {} of {} policy lists loaded ({} rules), for {}",
                    l.rooms_loaded,
                    l.rooms,
                    l.lists_loaded,
                    l.lists,
                    l.rules,
                    commands::format_duration(Duration::from_secs((l.elapsed_ms / 1000).max(1)))
                );
            }
            let _ = writeln!(plain, "policy lists ({}):", s.lists.len());
            for (list, rules, loaded) in &s.lists {
                let _ = writeln!(plain, "  {list}: {rules} rules{}", if *loaded { "" } else { " (not loaded yet)" });
            }
            let _ = writeln!(plain, "protected rooms ({}):", s.protected_rooms.len());
            for (room, loaded) in &s.protected_rooms {
                let _ = writeln!(plain, "  {room}{}", if *loaded { "" } else { " (not joined yet)" });
            }
            let mutes = s.ledger.iter().filter(|e| e.kind.is_mute() && !e.overridden).count();
            let bans = s.ledger.iter().filter(|e| e.kind == Kind::Ban && !e.overridden).count();
            let _ = writeln!(plain, "restrictions in force: {mutes} mute(s), {bans} ban(s)");
            let denied = s.ledger.iter().filter(|e| e.kind == Kind::ServerDeny && !e.overridden).count();
            if denied > 0 {
                let _ = writeln!(plain, "server ACL deny entries by hush: {denied}");
            }
            let redactions = s.ledger.iter().filter(|e| e.kind == Kind::Redaction).count();
            if redactions > 0 {
                let _ = writeln!(plain, "redactions under way: {redactions}");
            }
            let suspensions = s.ledger.iter().filter(|e| e.kind == Kind::Suspension).count();
            if ctx.config.suspension.enabled || suspensions > 0 {
                let _ = writeln!(plain, "account suspensions by hush: {suspensions}");
            }
            match &s.own_account_blocked {
                None => {
                    let _ = writeln!(plain, "own account: can write");
                }
                Some((cause, since_ms)) => {
                    let since = Duration::from_millis(now_ms().saturating_sub(*since_ms));
                    let _ = writeln!(
                        plain,
                        "own account: CANNOT WRITE ({cause}) for {}; writes paused, resuming by itself when it can",
                        commands::format_duration(Duration::from_secs(since.as_secs().max(1)))
                    );
                }
            }
            if s.held.is_empty() {
                let _ = writeln!(plain, "held by the safety guard: nothing");
            } else {
                let _ = writeln!(plain, "held by the safety guard (confirm or reject):");
                for (id, rules) in &s.held {
                    let _ = writeln!(plain, "  {id}: {}", rules.join("; "));
                }
            }
            let _ = writeln!(plain, "pending timers: {}", s.pending_timers);
            if s.last_errors.is_empty() {
                let _ = writeln!(plain, "last errors: none");
            } else {
                let _ = writeln!(plain, "last errors:");
                for e in &s.last_errors {
                    let _ = writeln!(plain, "  {e}");
                }
            }
        }
        None => {
            let _ = writeln!(plain, "engine: not running");
        }
    }
    Reply::ok(plain.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(html_escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn long_replies_are_split_below_the_limit() {
        let long: String = (0..5000).map(|i| format!("line {i} <with> 'quotes'\n")).collect();
        let reply = Reply::ok(long.clone());
        let pieces = split_reply(&reply, 30_000);
        assert!(pieces.len() > 1);
        for p in &pieces {
            assert!(p.plain.len() + p.html.len() <= 30_000, "{}", p.plain.len() + p.html.len());
        }
        let joined: Vec<String> = pieces.iter().map(|p| p.plain.clone()).collect();
        assert_eq!(joined.join("\n"), long.trim_end());
        let one_huge_line = Reply::ok("x".repeat(100_000));
        assert!(split_reply(&one_huge_line, 30_000).iter().all(|p| p.plain.len() + p.html.len() <= 30_000));
    }

    #[test]
    fn rule_state_keys_are_deterministic() {
        assert_eq!(rule_state_key(&Recommendation::Mute, "@a:x"), "m.mute:@a:x");
        assert_eq!(rule_state_key(&Recommendation::Ban, "@*:x"), "m.ban:@*:x");
    }
}
