//! The action log in the ledger's database (table `history`, schema version 2): core's [`Logged`] rows, written where the engine carries out an action, read by `history` and `undo`, bounded to the newest [`KEEP`] rows.

use anyhow::Result;
use hush_core::history::{Cause, Change, Logged, Outcome, What};
use hush_core::policy::{EntityKind, RuleId};
use hush_core::record::Scope;
use rusqlite::{params, OptionalExtension, Row};

use super::{scope_columns, Ledger};

/// How many rows the log keeps: each insert drops those older than the newest `KEEP`.
pub const KEEP: u64 = 10_000;

pub(super) const HISTORY: &str = "
CREATE TABLE IF NOT EXISTS history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms          INTEGER NOT NULL,
    scope          TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    target         TEXT NOT NULL,
    what           TEXT NOT NULL,
    change         TEXT NOT NULL,
    rule_list      TEXT,
    rule_kind      TEXT,
    rule_state_key TEXT,
    cause          TEXT NOT NULL,
    rule_sender    TEXT NOT NULL DEFAULT '',
    moderator      TEXT NOT NULL DEFAULT '',
    command        TEXT NOT NULL DEFAULT '',
    outcome        TEXT NOT NULL,
    error          TEXT NOT NULL DEFAULT '',
    detail         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_by_target ON history (target);
CREATE INDEX IF NOT EXISTS history_by_room ON history (room_id);
CREATE INDEX IF NOT EXISTS history_commands_by_rule ON history (rule_list, rule_state_key) WHERE change = 'command';
";

/// Which rows `history` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    All,
    /// Rows whose target is this user (or server glob).
    Target(String),
    /// Rows in this room.
    Room(String),
}

/// The scope's columns; a command's are ('', '').
fn scope_of(scope: &Option<Scope>) -> (&'static str, &str) {
    scope.as_ref().map_or(("", ""), scope_columns)
}

impl Ledger {
    /// Appends a row and returns its id; drops the rows older than the newest [`KEEP`].
    pub fn log(&self, e: &Logged) -> Result<u64> {
        let (scope, room) = scope_of(&e.scope);
        let (sender, moderator, command) = match &e.cause {
            Cause::Rule { sender, written_by } => {
                let (m, c) = written_by.clone().unwrap_or_default();
                (sender.clone(), m, c)
            }
            Cause::Command { moderator, command } => (String::new(), moderator.clone(), command.clone()),
            Cause::Protection | Cause::Expiry => Default::default(),
        };
        let error = match &e.outcome {
            Outcome::Failed(err) => err.as_str(),
            _ => "",
        };
        self.conn.prepare_cached("INSERT INTO history (at_ms, scope, room_id, target, what, change, rule_list, rule_kind, rule_state_key,
                                  cause, rule_sender, moderator, command, outcome, error, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)")?.execute(
            params![
                e.at_ms as i64,
                scope,
                room,
                e.target,
                e.what.as_str(),
                e.change.as_str(),
                e.rule.as_ref().map(|r| r.room_id.as_str()),
                e.rule.as_ref().map(|r| r.kind.as_str()),
                e.rule.as_ref().map(|r| r.state_key.as_str()),
                e.cause.as_str(),
                sender,
                moderator,
                command,
                e.outcome.as_str(),
                error,
                e.detail
            ],
        )?;
        let id = self.conn.last_insert_rowid() as u64;
        if id > KEEP {
            self.conn.prepare_cached("DELETE FROM history WHERE id <= ?1")?.execute(params![(id - KEEP) as i64])?;
        }
        Ok(id)
    }

    /// Sets the outcome of the newest row still pending for this action, applied or lifted
    /// (the write's answer came). Nothing pending: nothing changes.
    pub fn settle_logged(
        &self,
        scope: &Scope,
        target: &str,
        what: What,
        change: Change,
        outcome: &Outcome,
    ) -> Result<()> {
        let (s, room) = scope_columns(scope);
        let error = if let Outcome::Failed(e) = outcome { e.as_str() } else { "" };
        self.conn
            .prepare_cached(
                "UPDATE history SET outcome = ?5, error = ?6 WHERE id = (
                 SELECT max(id) FROM history
                 WHERE target = ?3 AND room_id = ?2 AND scope = ?1 AND what = ?4 AND change = ?7
                   AND outcome = 'pending')",
            )?
            .execute(params![s, room, target, what.as_str(), outcome.as_str(), error, change.as_str()])?;
        Ok(())
    }

    /// Sets the outcome of one row (a command's, when its reply is known).
    pub fn settle_logged_id(&self, id: u64, outcome: &Outcome) -> Result<()> {
        let error = if let Outcome::Failed(e) = outcome { e.as_str() } else { "" };
        self.conn.prepare_cached("UPDATE history SET outcome = ?2, error = ?3 WHERE id = ?1")?.execute(params![
            id as i64,
            outcome.as_str(),
            error
        ])?;
        Ok(())
    }

    /// Names what a command row is about once it is known (`undo` learns its user and rule).
    pub fn set_logged_subject(&self, id: u64, target: &str, rule: Option<&RuleId>) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE history SET target = ?2, rule_list = ?3, rule_kind = ?4, rule_state_key = ?5 WHERE id = ?1",
            )?
            .execute(params![
                id as i64,
                target,
                rule.map(|r| r.room_id.as_str()),
                rule.map(|r| r.kind.as_str()),
                rule.map(|r| r.state_key.as_str())
            ])?;
        Ok(())
    }

    /// One row by id (None: no such row, or pruned).
    pub fn logged(&self, id: u64) -> Result<Option<Logged>> {
        Ok(self
            .conn
            .prepare_cached("SELECT * FROM history WHERE id = ?1")?
            .query_row(params![id as i64], row_to_logged)
            .optional()?
            .flatten())
    }

    /// The newest row about `target` in `scope`, if any (a refusal is logged again only
    /// when it differs from it).
    pub fn last_logged_about(&self, scope: &Scope, target: &str) -> Result<Option<Logged>> {
        let (s, room) = scope_columns(scope);
        Ok(self
            .conn
            .prepare_cached(
                "SELECT * FROM history WHERE target = ?3 AND room_id = ?2 AND scope = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![s, room, target], row_to_logged)
            .optional()?
            .flatten())
    }

    /// The moderator and command that last wrote or removed this rule through hush, if any.
    pub fn last_command_for(&self, rule: &RuleId) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT moderator, command FROM history
                 WHERE change = 'command' AND rule_list = ?1 AND rule_state_key = ?2 AND rule_kind = ?3
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![rule.room_id, rule.state_key, rule.kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// The newest `limit` rows, newest first, about a target, a room, or all.
    pub fn history(&self, about: &About, limit: u32) -> Result<Vec<Logged>> {
        let limit = i64::from(limit);
        let mut out = Vec::new();
        let mut push = |rows: rusqlite::MappedRows<'_, _>| -> Result<()> {
            for r in rows {
                if let Some(e) = r? {
                    out.push(e);
                }
            }
            Ok(())
        };
        match about {
            About::All => {
                let mut stmt = self.conn.prepare_cached("SELECT * FROM history ORDER BY id DESC LIMIT ?1")?;
                push(stmt.query_map(params![limit], row_to_logged)?)?;
            }
            About::Target(t) => {
                let mut stmt =
                    self.conn.prepare_cached("SELECT * FROM history WHERE target = ?1 ORDER BY id DESC LIMIT ?2")?;
                push(stmt.query_map(params![t, limit], row_to_logged)?)?;
            }
            About::Room(r) => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT * FROM history WHERE room_id = ?1 AND scope = 'room' ORDER BY id DESC LIMIT ?2",
                )?;
                push(stmt.query_map(params![r, limit], row_to_logged)?)?;
            }
        }
        Ok(out)
    }
}

/// A row, or None (skipped with a warning) if a future version wrote a value we do not know.
fn row_to_logged(row: &Row<'_>) -> rusqlite::Result<Option<Logged>> {
    let scope: String = row.get("scope")?;
    let what: String = row.get("what")?;
    let change: String = row.get("change")?;
    let cause: String = row.get("cause")?;
    let outcome: String = row.get("outcome")?;
    let error: String = row.get("error")?;
    let rule_kind: Option<String> = row.get("rule_kind")?;
    let scope = match scope.as_str() {
        "room" => Some(Some(Scope::Room(row.get("room_id")?))),
        "account" => Some(Some(Scope::Account)),
        "" => Some(None),
        _ => None,
    };
    let rule = match (row.get::<_, Option<String>>("rule_list")?, rule_kind, row.get("rule_state_key")?) {
        (Some(room_id), Some(kind), Some(state_key)) => EntityKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .map(|kind| Some(RuleId { room_id, kind, state_key })),
        _ => Some(None),
    };
    let (moderator, command): (String, String) = (row.get("moderator")?, row.get("command")?);
    let cause = match cause.as_str() {
        "rule" => Some(Cause::Rule {
            sender: row.get("rule_sender")?,
            written_by: (!moderator.is_empty()).then(|| (moderator.clone(), command.clone())),
        }),
        "protection" => Some(Cause::Protection),
        "command" => Some(Cause::Command { moderator, command }),
        "expiry" => Some(Cause::Expiry),
        _ => None,
    };
    let (Some(scope), Some(what), Some(change), Some(rule), Some(cause), Some(outcome)) =
        (scope, What::parse(&what), Change::parse(&change), rule, cause, Outcome::parse(&outcome, &error))
    else {
        tracing::warn!(what, change, "skipping a history row with a value this hush does not know");
        return Ok(None);
    };
    Ok(Some(Logged {
        id: row.get::<_, i64>("id")? as u64,
        at_ms: row.get::<_, i64>("at_ms")? as u64,
        scope,
        target: row.get("target")?,
        what,
        change,
        rule,
        cause,
        outcome,
        detail: row.get("detail")?,
    }))
}
