//! `history` and `undo`, and logging each moderator's command in the action log before it acts (owns no state: the log is the engine's ledger).

use hush_core::commands::{self, Command, HistoryAbout, Target};
use hush_core::history::{Cause, Change, Logged, Outcome, What};
use hush_core::policy::{EntityKind, Recommendation, RuleId};
use hush_core::record::Scope;
use tokio::sync::oneshot;

use super::{allow::kind_of, fmt_time, remove_rule, rule_state_key, writable_list_ids, Context, Reply};
use crate::engine::{protection_name, Input, Undone, UNDO_PREFIX};
use crate::ledger::About;
use crate::local_rules::LOCAL_LIST;

/// The rule a command writes or removes in `default_policy_list`, if it names one.
async fn rule_written(ctx: &Context<'_>, recommendation: Recommendation, target: &Target) -> Option<RuleId> {
    let list = ctx.config.default_policy_list.as_ref()?;
    let room_id = crate::matrix::resolve(ctx.client, list).await.ok()?;
    Some(RuleId {
        room_id: room_id.to_string(),
        kind: kind_of(target),
        state_key: rule_state_key(&recommendation, target.as_str()),
    })
}

/// Logs a command that acts (writes or removes rules, redacts, decides a hold, undoes)
/// before it acts, so that what follows from it can name the moderator: its row's id.
/// Commands that only read are not logged.
pub(super) async fn command_started(ctx: &Context<'_>, cmd: &Command, sender: &str) -> Option<u64> {
    let (target, rule) = match cmd {
        Command::Mute { target, .. } | Command::Unmute { target } => {
            (target.to_string(), rule_written(ctx, Recommendation::Mute, target).await)
        }
        Command::Ban { target, .. } | Command::Unban { target } => {
            (target.to_string(), rule_written(ctx, Recommendation::Ban, target).await)
        }
        Command::Allow { target, .. } | Command::Unallow { target } => {
            (target.to_string(), rule_written(ctx, Recommendation::Allow, target).await)
        }
        Command::Redact { user, .. } => {
            // The engine names the management room, with no state key, as a redaction's rule.
            let room = ctx.management_room.read().unwrap_or_else(|e| e.into_inner()).clone();
            let rule = RuleId {
                room_id: room.map(|r| r.to_string()).unwrap_or_default(),
                kind: EntityKind::User,
                state_key: String::new(),
            };
            (user.clone(), Some(rule))
        }
        Command::Confirm { id } | Command::Reject { id } => (id.clone(), None),
        Command::Undo { id } => (format!("#{id}"), None),
        _ => return None,
    };
    let command = match cmd {
        Command::Undo { id } => format!("undo {id}"),
        other => other.name().to_owned(),
    };
    let (tx, rx) = oneshot::channel();
    let input = Input::CommandStarted { moderator: sender.to_owned(), command, target, rule, reply: tx };
    ctx.engine.send(input).ok()?;
    rx.await.ok().filter(|id| *id > 0)
}

/// The command's reply is known: its row says whether it worked.
pub(super) fn command_finished(ctx: &Context<'_>, row: u64, reply: &Reply) {
    let outcome = if reply.ok {
        Outcome::Done
    } else {
        Outcome::Failed(reply.plain.lines().next().unwrap_or_default().to_owned())
    };
    let _ = ctx.engine.send(Input::CommandFinished { id: row, outcome });
}

/// `history [user|room] [N]`: one notice, a line per row, newest first.
pub(super) async fn history(ctx: &Context<'_>, about: Option<&HistoryAbout>, limit: Option<u32>) -> Reply {
    let limit = limit.unwrap_or(commands::HISTORY_DEFAULT).min(commands::HISTORY_MAX);
    let (about, shown) = match about {
        None => (About::All, String::new()),
        Some(HistoryAbout::User(u)) => (About::Target(u.clone()), format!(" about {u}")),
        Some(HistoryAbout::Room(r)) => match crate::matrix::resolve(ctx.client, r.as_str()).await {
            Ok(id) => (About::Room(id.to_string()), format!(" in {r}")),
            Err(e) => return Reply::error(format!("Cannot resolve {r}: {e:#}")),
        },
    };
    let (tx, rx) = oneshot::channel();
    if ctx.engine.send(Input::History { about, limit, reply: tx }).is_err() {
        return Reply::error("The engine is not running.".to_owned());
    }
    let rows = match rx.await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Reply::error(e),
        Err(_) => return Reply::error("The engine is not running.".to_owned()),
    };
    if rows.is_empty() {
        return Reply::ok(format!("Nothing in the history{shown}."));
    }
    let prefix = ctx.config.command_prefix.trim();
    let mut text = format!("History{shown}, newest first ({} entries):\n", rows.len());
    for row in &rows {
        text.push_str(&line(row, prefix));
        text.push('\n');
    }
    Reply::ok(text.trim_end().to_owned())
}

/// `#id time what target where — cause (outcome)`.
pub(super) fn line(row: &Logged, prefix: &str) -> String {
    let what = match row.change {
        Change::Apply => row.what.words().to_owned(),
        Change::Lift => format!("lift {}", row.what.words()),
        Change::Refused => format!("refused {}", row.what.words()),
        Change::Held => format!("held {}", row.what.words()),
        Change::Command => match &row.cause {
            Cause::Command { command, .. } => format!("{prefix} {command}"),
            _ => "command".to_owned(),
        },
    };
    let target = if row.what == What::Command && row.target.starts_with('#') { "" } else { row.target.as_str() };
    let where_ = match &row.scope {
        Some(Scope::Room(room)) => format!(" in {room}"),
        Some(Scope::Account) => " (account)".to_owned(),
        None => String::new(),
    };
    let rule = row.rule.as_ref().filter(|r| !r.state_key.is_empty());
    let rule_words = rule.map(|r| format!("rule `{}` in {}", r.state_key, r.room_id));
    let cause = match &row.cause {
        Cause::Command { moderator, .. } if row.change == Change::Command => match &rule_words {
            Some(r) => format!("by {moderator}, {r}"),
            None => format!("by {moderator}"),
        },
        Cause::Command { moderator, command } => format!("by {moderator} with {prefix} {command}"),
        Cause::Protection => {
            let key = rule.map_or("", |r| r.state_key.as_str());
            format!("{} (rule `{key}` in {LOCAL_LIST})", protection_name(key))
        }
        Cause::Expiry => format!("{} expired", rule_words.unwrap_or_else(|| "the rule".to_owned())),
        Cause::Rule { sender, written_by } => {
            let mut s = rule_words.unwrap_or_else(|| "a rule".to_owned());
            if !sender.is_empty() {
                s.push_str(&format!(" by {sender}"));
            }
            if let Some((moderator, command)) = written_by {
                s.push_str(&format!(", written by {moderator} with {prefix} {command}"));
            }
            s
        }
    };
    let detail = if row.detail.is_empty() { String::new() } else { format!(": {}", row.detail) };
    let outcome = match (&row.change, &row.outcome) {
        (Change::Refused | Change::Held, Outcome::Done) => String::new(),
        (_, o) => format!(" ({})", o.words()),
    };
    let space = if target.is_empty() { "" } else { " " };
    format!("#{} {} {what}{space}{target}{where_} — {cause}{detail}{outcome}", row.id, fmt_time(row.at_ms))
}

/// `undo <id>`: the engine decides and acts on what is local; a rule hush wrote to one of
/// its lists is removed here, as `unmute`/`unban` remove it.
pub(super) async fn undo(ctx: &Context<'_>, id: u64, sender: &str, row: u64) -> Reply {
    let writable = writable_list_ids(ctx).await;
    let (tx, rx) = oneshot::channel();
    let input = Input::Undo { id, moderator: sender.to_owned(), command: row, writable, reply: tx };
    if ctx.engine.send(input).is_err() {
        return Reply::error("The engine is not running.".to_owned());
    }
    match rx.await {
        Ok(Ok(Undone::Done(text))) => Reply::ok(text),
        Ok(Ok(Undone::RemoveListRule(rule))) => match remove_rule(ctx, &rule).await {
            Ok(()) => Reply::ok(format!(
                "undo #{id}: removed the rule `{}` hush wrote to {} (as {} would); what it caused is lifted.",
                rule.id.state_key,
                rule.id.room_id,
                match rule.recommendation {
                    Recommendation::Mute => "unmute",
                    Recommendation::Allow => "unallow",
                    _ => "unban",
                }
            )),
            Err(e) => Reply::error(format!("undo #{id}: cannot remove the rule `{}`: {e}", rule.id.state_key)),
        },
        Ok(Err(text)) => Reply::error(text),
        Err(_) => Reply::error("The engine is not running.".to_owned()),
    }
}

/// `unallow` also takes out a local exception an `undo` wrote for `target`: the reply's
/// sentence about it, if there was one.
pub(super) async fn remove_undo_exception(ctx: &Context<'_>, target: &Target) -> Option<String> {
    let Target::User(user) = target else { return None };
    let state_key = format!("{UNDO_PREFIX}{user}");
    let (tx, rx) = oneshot::channel();
    let kind = "m.policy.rule.user".to_owned();
    ctx.engine.send(Input::RemoveLocalRule { kind, state_key: state_key.clone(), reply: tx }).ok()?;
    match rx.await.ok()? {
        Ok(true) => Some(format!("removed the local exception `{state_key}` (written by undo) from {LOCAL_LIST}")),
        Ok(false) => None,
        Err(e) => Some(format!("cannot remove the local exception `{state_key}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(change: Change, what: What, cause: Cause) -> Logged {
        Logged {
            id: 42,
            at_ms: 1_700_000_000_000,
            scope: Some(Scope::Room("!lobby:x".into())),
            target: "@u:x".into(),
            what,
            change,
            rule: Some(RuleId { room_id: "!list:x".into(), kind: EntityKind::User, state_key: "m.mute:@u:x".into() }),
            cause,
            outcome: Outcome::Done,
            detail: String::new(),
        }
    }

    #[test]
    fn a_line_says_what_whom_where_why_and_how_it_ended() {
        let written = Cause::Rule { sender: "@hush:x".into(), written_by: Some(("@mod:x".into(), "mute".into())) };
        assert_eq!(
            line(&row(Change::Apply, What::MutePowerLevel, written), "!hush"),
            "#42 2023-11-14 22:13:20 UTC mute (power level) @u:x in !lobby:x — rule `m.mute:@u:x` in !list:x by \
             @hush:x, written by @mod:x with !hush mute (done)"
        );
        let expired = Logged { outcome: Outcome::Failed("403".into()), ..row(Change::Lift, What::Ban, Cause::Expiry) };
        assert_eq!(
            line(&expired, "!hush"),
            "#42 2023-11-14 22:13:20 UTC lift ban @u:x in !lobby:x — rule `m.mute:@u:x` in !list:x expired (failed: 403)"
        );
        let refused = Logged {
            detail: "a moderator of the room".into(),
            ..row(Change::Refused, What::Mute, Cause::Rule { sender: "@m:x".into(), written_by: None })
        };
        assert!(line(&refused, "!hush").ends_with(
            "refused mute @u:x in !lobby:x — rule `m.mute:@u:x` in !list:x by @m:x: a moderator of the room"
        ));
        let flood = Logged {
            rule: Some(RuleId {
                room_id: LOCAL_LIST.into(),
                kind: EntityKind::User,
                state_key: "hush.flood:@u:x".into(),
            }),
            ..row(Change::Apply, What::MutePowerLevel, Cause::Protection)
        };
        assert!(line(&flood, "!hush").contains("— flood protection (rule `hush.flood:@u:x` in hush.local) (done)"));
        let command = Logged {
            scope: None,
            ..row(Change::Command, What::Command, Cause::Command { moderator: "@mod:x".into(), command: "mute".into() })
        };
        assert_eq!(
            line(&command, "!hush"),
            "#42 2023-11-14 22:13:20 UTC !hush mute @u:x — by @mod:x, rule `m.mute:@u:x` in !list:x (done)"
        );
    }
}
