//! The ledger: a durable record (SQLite in `data_dir`) of every change hush made to a room or account, what to restore, and the action log (`history`).
//!
//! It stores core's record as it is: [`hush_core::record::Entry`], one row each, in typed
//! columns (scope, room, rule list, rule kind, rule state key); there is no vocabulary of
//! the ledger's own.
//!
//! Write-ahead discipline: an entry is written in phase `Applying` (with the previous
//! power level) *before* the room is changed, and marked `Applied` after. Lifting marks
//! `Lifting` before and deletes after. After a crash, an entry still `Applying` or
//! `Lifting` is settled at start-up by comparing with the room's real state, so nothing
//! hush did is forgotten and no previous level is lost.
//!
//! The engine gathers the entries of one input into one transaction (`begin_batch`,
//! `commit_batch`) and sends the writes that input started only after the commit.
//!
//! # Schema versions (`PRAGMA user_version`)
//! - 0: `changes` keyed by (room_id, user_id, kind), the rule as one string
//!   `"list|kind|state key"`, and `room_id = ''` for an account suspension.
//! - 1: `scope` ('room' | 'account') and the rule in `rule_list`, `rule_kind`
//!   ('user' | 'room' | 'server'), `rule_state_key`. `room_id` is the room for scope
//!   'room'; for scope 'account' it is '' — only inside SQL, so that the primary key
//!   (scope, room_id, user_id, kind) needs no NULL; Rust only ever sees [`Scope`].
//! - 2: `event_ids`, the events a [`Kind::Redaction`] entry redacts (a JSON array; NULL:
//!   the user's recent events), added as a NULL column.
//! - 3: adds the action log, table `history` (see `ledger/history.rs`); the tables of
//!   version 2 are kept as they are.
//!
//! An older database is migrated at open, in one transaction, every row kept.

use std::path::Path;

use anyhow::{Context, Result};
use hush_core::policy::{EntityKind, RuleId};
use hush_core::record::{parse_legacy_rule_ref, Entry, Kind, Phase, Scope};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::holds::{Guarded, Status};

/// The ledger on disk.
pub struct Ledger {
    conn: Connection,
}

/// The schema this code writes (see the module documentation).
const VERSION: i64 = 3;

const CHANGES: &str = "
CREATE TABLE IF NOT EXISTS changes (
    scope          TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    phase          TEXT NOT NULL,
    previous_level INTEGER,
    applied_level  INTEGER,
    rule_list      TEXT NOT NULL,
    rule_kind      TEXT NOT NULL,
    rule_state_key TEXT NOT NULL,
    reason         TEXT NOT NULL,
    applied_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER,
    overridden     INTEGER NOT NULL DEFAULT 0,
    event_ids      TEXT,
    PRIMARY KEY (scope, room_id, user_id, kind)
);
-- Per-user look-ups (expiry re-arming, departed members) on every input: not a scan.
CREATE INDEX IF NOT EXISTS changes_by_user ON changes (user_id);
";

const GUARDED: &str = "
CREATE TABLE IF NOT EXISTS guarded_rules (
    list        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      TEXT NOT NULL,
    hold_id     TEXT NOT NULL,
    held_at_ms  INTEGER NOT NULL,
    why         TEXT NOT NULL,
    PRIMARY KEY (list, kind, state_key)
);
";

/// The scope's two columns: ('room', the room) or ('account', '').
fn scope_columns(scope: &Scope) -> (&'static str, &str) {
    match scope {
        Scope::Room(room) => ("room", room.as_str()),
        Scope::Account => ("account", ""),
    }
}

/// One row of a version-0 `changes` table.
struct OldRow {
    room_id: String,
    user_id: String,
    kind: String,
    phase: String,
    previous_level: Option<i64>,
    applied_level: Option<i64>,
    rule: String,
    reason: String,
    applied_at_ms: i64,
    expires_at_ms: Option<i64>,
    overridden: i64,
}

/// Moves a version-0 `changes` table to version 1, inside the caller's transaction. Every
/// row is kept: a rule string that cannot be read is kept whole as the rule's list, with
/// kind user and an empty state key, and named in a warning.
fn migrate_from_0(tx: &rusqlite::Transaction<'_>) -> Result<usize> {
    let old: Vec<OldRow> = {
        let mut stmt = tx.prepare("SELECT * FROM changes")?;
        let rows = stmt.query_map(params![], |r| {
            Ok(OldRow {
                room_id: r.get("room_id")?,
                user_id: r.get("user_id")?,
                kind: r.get("kind")?,
                phase: r.get("phase")?,
                previous_level: r.get("previous_level")?,
                applied_level: r.get("applied_level")?,
                rule: r.get("rule")?,
                reason: r.get("reason")?,
                applied_at_ms: r.get("applied_at_ms")?,
                expires_at_ms: r.get("expires_at_ms")?,
                overridden: r.get("overridden")?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute_batch("DROP INDEX IF EXISTS changes_by_user; ALTER TABLE changes RENAME TO changes_v0;")?;
    tx.execute_batch(CHANGES)?;
    for o in &old {
        let rule = parse_legacy_rule_ref(&o.rule).unwrap_or_else(|| {
            tracing::warn!(
                rule = %o.rule, user = %o.user_id, room = %o.room_id, kind = %o.kind,
                "ledger migration: cannot read this entry's rule; kept whole as its list"
            );
            RuleId { room_id: o.rule.clone(), kind: EntityKind::User, state_key: String::new() }
        });
        let scope = if o.room_id.is_empty() { "account" } else { "room" };
        tx.execute(
            "INSERT OR REPLACE INTO changes
             (scope, room_id, user_id, kind, phase, previous_level, applied_level, rule_list, rule_kind,
              rule_state_key, reason, applied_at_ms, expires_at_ms, overridden)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                scope,
                o.room_id,
                o.user_id,
                o.kind,
                o.phase,
                o.previous_level,
                o.applied_level,
                rule.room_id,
                rule.kind.as_str(),
                rule.state_key,
                o.reason,
                o.applied_at_ms,
                o.expires_at_ms,
                o.overridden
            ],
        )?;
    }
    tx.execute_batch("DROP TABLE changes_v0")?;
    Ok(old.len())
}

/// Whether the `changes` table exists and has `column`.
fn has_column(tx: &rusqlite::Transaction<'_>, column: &str) -> Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM pragma_table_info('changes') WHERE name = ?1)";
    Ok(tx.query_row(sql, params![column], |r| r.get(0))?)
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`, migrating an older schema. Every write is
    /// durable when it returns.
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path).with_context(|| format!("cannot open the ledger {}", path.display()))?;
        Ledger::init(conn)
    }

    /// An in-memory ledger, for tests.
    pub fn in_memory() -> Result<Ledger> {
        Ledger::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Ledger> {
        // WAL + synchronous=FULL: a committed write survives a crash or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > VERSION {
            anyhow::bail!("the ledger has schema version {version}, newer than this hush knows ({VERSION})");
        }
        if version < 1 && has_column(&tx, "rule")? {
            let rows = migrate_from_0(&tx).context("cannot migrate the ledger to schema version 1")?;
            tracing::info!(rows, "ledger migrated to schema version 1 (typed scope and rule)");
        }
        if version < 2 && has_column(&tx, "scope")? && !has_column(&tx, "event_ids")? {
            tx.execute_batch("ALTER TABLE changes ADD COLUMN event_ids TEXT")
                .context("cannot migrate the ledger to schema version 2")?;
        }
        tx.execute_batch(CHANGES).context("cannot create the ledger schema")?;
        tx.execute_batch(GUARDED).context("cannot create the ledger schema")?;
        // Version 2 to 3: the action log is a new table; nothing else moves.
        tx.execute_batch(history::HISTORY).context("cannot create the ledger's action log")?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit().context("cannot commit the ledger schema")?;
        // Every statement the engine runs per input stays prepared (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Ledger { conn })
    }

    /// Records a change about to be made (phase `Applying`), replacing any entry for the same key.
    pub fn begin_apply(&self, e: &Entry) -> Result<()> {
        let (scope, room) = scope_columns(&e.scope);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO changes
             (scope, room_id, user_id, kind, phase, previous_level, applied_level, rule_list, rule_kind,
              rule_state_key, reason, applied_at_ms, expires_at_ms, overridden, event_ids)
             VALUES (?1, ?2, ?3, ?4, 'applying', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13)",
            )?
            .execute(params![
                scope,
                room,
                e.user_id,
                e.kind.as_str(),
                e.previous_level,
                e.applied_level,
                e.rule.room_id,
                e.rule.kind.as_str(),
                e.rule.state_key,
                e.reason,
                e.applied_at_ms as i64,
                e.expires_at_ms.map(|v| v as i64),
                (!e.event_ids.is_empty()).then(|| serde_json::json!(e.event_ids).to_string())
            ])?;
        Ok(())
    }

    fn set_phase(&self, scope: &Scope, user_id: &str, kind: Kind, phase: Phase) -> Result<()> {
        let (scope, room) = scope_columns(scope);
        self.conn
            .prepare_cached(
                "UPDATE changes SET phase = ?5 WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 AND kind = ?4",
            )?
            .execute(params![scope, room, user_id, kind.as_str(), phase.as_str()])?;
        Ok(())
    }

    /// The change is made.
    pub fn mark_applied(&self, scope: &Scope, user_id: &str, kind: Kind) -> Result<()> {
        self.set_phase(scope, user_id, kind, Phase::Applied)
    }

    /// The undo is about to be sent.
    pub fn begin_lift(&self, scope: &Scope, user_id: &str, kind: Kind) -> Result<()> {
        self.set_phase(scope, user_id, kind, Phase::Lifting)
    }

    /// Updates what an applied entry says about its cause and end (a rule changed, same restriction).
    pub fn update_cause(
        &self,
        scope: &Scope,
        user_id: &str,
        kind: Kind,
        rule: &RuleId,
        reason: &str,
        expires_at_ms: Option<u64>,
    ) -> Result<()> {
        let (scope, room) = scope_columns(scope);
        self.conn.prepare_cached("UPDATE changes SET rule_list = ?5, rule_kind = ?6, rule_state_key = ?7, reason = ?8, expires_at_ms = ?9
             WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 AND kind = ?4")?.execute(
            params![
                scope,
                room,
                user_id,
                kind.as_str(),
                rule.room_id,
                rule.kind.as_str(),
                rule.state_key,
                reason,
                expires_at_ms.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    /// A moderator overrode hush: keep the record (so hush does not re-apply) but never restore.
    pub fn mark_overridden(&self, scope: &Scope, user_id: &str, kind: Kind) -> Result<()> {
        let (scope, room) = scope_columns(scope);
        self.conn
            .prepare_cached(
                "UPDATE changes SET overridden = 1, phase = 'applied'
             WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 AND kind = ?4",
            )?
            .execute(params![scope, room, user_id, kind.as_str()])?;
        Ok(())
    }

    /// The change is gone (lifted, or found never to have happened).
    pub fn remove(&self, scope: &Scope, user_id: &str, kind: Kind) -> Result<()> {
        let (scope, room) = scope_columns(scope);
        self.conn
            .prepare_cached("DELETE FROM changes WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 AND kind = ?4")?
            .execute(params![scope, room, user_id, kind.as_str()])?;
        Ok(())
    }

    /// A protected room was upgraded. The homeserver copies power levels, bans and the server
    /// ACL into the replacement, so hush's power-level mutes, bans and `deny` entries there
    /// are still hush's to undo:
    /// they move to `new`, phase and previous level included. MSC3909 mute memberships are
    /// not copied by an upgrade, so their entries are dropped (the member is muted again on
    /// joining the new room). Returns (moved, dropped). One transaction: all or nothing.
    pub fn carry_over(&self, old: &str, new: &str) -> Result<(usize, usize)> {
        // A savepoint: atomic inside the engine's batch and on its own.
        self.conn.execute_batch("SAVEPOINT carry_over")?;
        let result = (|| {
            let moved = self
                .conn
                .prepare_cached(
                    "UPDATE OR REPLACE changes SET room_id = ?2
                 WHERE scope = 'room' AND room_id = ?1 AND kind IN (?3, ?4, ?5)",
                )?
                .execute(params![
                    old,
                    new,
                    Kind::MutePowerLevel.as_str(),
                    Kind::Ban.as_str(),
                    Kind::ServerDeny.as_str()
                ])?;
            let dropped = self
                .conn
                .prepare_cached("DELETE FROM changes WHERE scope = 'room' AND room_id = ?1")?
                .execute(params![old])?;
            anyhow::Ok((moved, dropped))
        })();
        match result {
            Ok(counts) => {
                self.conn.execute_batch("RELEASE carry_over")?;
                Ok(counts)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO carry_over; RELEASE carry_over");
                Err(e)
            }
        }
    }

    /// Records what the safety guard held, or what a moderator decided about it.
    pub fn put_guarded(&self, g: &Guarded) -> Result<()> {
        self.conn.prepare_cached("INSERT OR REPLACE INTO guarded_rules (list, kind, state_key, fingerprint, status, hold_id, held_at_ms, why)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(
            params![
                g.list,
                g.kind.as_str(),
                g.state_key,
                g.fingerprint,
                g.status.as_str(),
                g.hold_id,
                g.held_at_ms as i64,
                g.why
            ],
        )?;
        Ok(())
    }

    /// Forgets a guarded rule (the rule changed or went).
    pub fn remove_guarded(&self, list: &str, kind: EntityKind, state_key: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM guarded_rules WHERE list = ?1 AND kind = ?2 AND state_key = ?3")?
            .execute(params![list, kind.as_str(), state_key])?;
        Ok(())
    }

    /// Every guarded rule; rows that do not parse are skipped with a warning.
    pub fn all_guarded(&self) -> Result<Vec<Guarded>> {
        let mut stmt = self.conn.prepare_cached("SELECT * FROM guarded_rules ORDER BY list, kind, state_key")?;
        let rows = stmt.query_map(params![], |row| {
            let kind_text: String = row.get("kind")?;
            let status: String = row.get("status")?;
            let kind = EntityKind::ALL.into_iter().find(|k| k.as_str() == kind_text);
            let g = match (kind, Status::parse(&status)) {
                (Some(kind), Some(status)) => Some(Guarded {
                    list: row.get("list")?,
                    kind,
                    state_key: row.get("state_key")?,
                    fingerprint: row.get("fingerprint")?,
                    status,
                    hold_id: row.get("hold_id")?,
                    held_at_ms: row.get::<_, i64>("held_at_ms")? as u64,
                    why: row.get("why")?,
                }),
                _ => {
                    tracing::warn!(kind = %kind_text, status, "skipping an unreadable guarded rule in the ledger");
                    None
                }
            };
            Ok(g)
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Starts gathering writes into one transaction: one commit (one fsync) for all the
    /// entries of one engine input instead of one each.
    pub fn begin_batch(&self) -> Result<()> {
        self.conn.execute_batch("BEGIN").context("cannot start a ledger transaction")
    }

    /// Makes the gathered writes durable (WAL, `synchronous=FULL`). Nothing that depends on
    /// them may reach a room before this returns Ok.
    pub fn commit_batch(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT").context("cannot commit the ledger")
    }

    pub fn get(&self, scope: &Scope, user_id: &str, kind: Kind) -> Result<Option<Entry>> {
        let (scope, room) = scope_columns(scope);
        Ok(self
            .conn
            .prepare_cached("SELECT * FROM changes WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 AND kind = ?4")?
            .query_row(params![scope, room, user_id, kind.as_str()], row_to_entry)
            .optional()?
            .flatten())
    }

    /// Entries for one user in one scope.
    pub fn get_all_for(&self, scope: &Scope, user_id: &str) -> Result<Vec<Entry>> {
        let (scope, room) = scope_columns(scope);
        self.query(
            "SELECT * FROM changes WHERE scope = ?1 AND room_id = ?2 AND user_id = ?3 ORDER BY kind",
            params![scope, room, user_id],
        )
    }

    /// Every entry, in a stable order (accounts first, then rooms).
    pub fn all(&self) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes ORDER BY scope, room_id, user_id, kind", params![])
    }

    /// Entries in one scope (a room, or the accounts).
    pub fn for_scope(&self, scope: &Scope) -> Result<Vec<Entry>> {
        let (scope, room) = scope_columns(scope);
        self.query(
            "SELECT * FROM changes WHERE scope = ?1 AND room_id = ?2 ORDER BY user_id, kind",
            params![scope, room],
        )
    }

    /// Entries of one kind, everywhere (the server ACL's timer reads the `server-deny` ones).
    pub fn of_kind(&self, kind: Kind) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes WHERE kind = ?1 ORDER BY scope, room_id, user_id", params![kind.as_str()])
    }

    /// Entries for one user, in every room and their account.
    pub fn for_user(&self, user_id: &str) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes WHERE user_id = ?1 ORDER BY scope, room_id, kind", params![user_id])
    }

    /// The earliest expiry after `after_ms` among one user's entries (rooms and account),
    /// without reading the entries: what [`Ledger::for_user`] would give, cheaper.
    pub fn next_expiry_for_user(&self, user_id: &str, after_ms: u64) -> Result<Option<u64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT MIN(expires_at_ms) FROM changes WHERE user_id = ?1 AND expires_at_ms > ?2")?;
        let at: Option<i64> = stmt.query_row(params![user_id, after_ms as i64], |r| r.get(0))?;
        Ok(at.map(|v| v as u64))
    }

    /// Whether the ledger has any entry for this user (in a room or their account).
    pub fn names_user(&self, user_id: &str) -> Result<bool> {
        let mut stmt = self.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM changes WHERE user_id = ?1)")?;
        Ok(stmt.query_row(params![user_id], |r| r.get(0))?)
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(p, row_to_entry)?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(e) = r? {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// A row, or None (skipped with a warning) if a future version wrote a scope, kind, phase
/// or rule kind we do not know.
fn row_to_entry(row: &Row<'_>) -> rusqlite::Result<Option<Entry>> {
    let scope: String = row.get("scope")?;
    let kind: String = row.get("kind")?;
    let phase: String = row.get("phase")?;
    let rule_kind: String = row.get("rule_kind")?;
    let scope = match scope.as_str() {
        "room" => Some(Scope::Room(row.get("room_id")?)),
        "account" => Some(Scope::Account),
        _ => None,
    };
    let entity_kind = EntityKind::ALL.into_iter().find(|k| k.as_str() == rule_kind);
    let (Some(scope), Some(kind), Some(phase), Some(rule_kind)) =
        (scope, Kind::parse(&kind), Phase::parse(&phase), entity_kind)
    else {
        tracing::warn!(kind, phase, rule_kind, "skipping a ledger entry of unknown scope, kind, phase or rule kind");
        return Ok(None);
    };
    Ok(Some(Entry {
        scope,
        user_id: row.get("user_id")?,
        kind,
        phase,
        previous_level: row.get("previous_level")?,
        applied_level: row.get("applied_level")?,
        rule: RuleId { room_id: row.get("rule_list")?, kind: rule_kind, state_key: row.get("rule_state_key")? },
        reason: row.get("reason")?,
        applied_at_ms: row.get::<_, i64>("applied_at_ms")? as u64,
        expires_at_ms: row.get::<_, Option<i64>>("expires_at_ms")?.map(|v| v as u64),
        overridden: row.get::<_, i64>("overridden")? != 0,
        event_ids: row
            .get::<_, Option<String>>("event_ids")?
            .and_then(|ids| serde_json::from_str(&ids).ok())
            .unwrap_or_default(),
    }))
}

mod history;
pub use history::{About, KEEP as HISTORY_KEEP};

mod counts;
#[cfg(test)]
mod tests;
