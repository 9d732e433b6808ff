//! The ledger: a durable record (SQLite in `data_dir`) of every change hush made to a room or account, and what to restore.
//!
//! Write-ahead discipline: an entry is written in phase `Applying` (with the previous
//! power level) *before* the room is changed, and marked `Applied` after. Lifting marks
//! `Lifting` before and deletes after. After a crash, an entry still `Applying` or
//! `Lifting` is settled at start-up by comparing with the room's real state, so nothing
//! hush did is forgotten and no previous level is lost.
//!
//! The engine gathers the entries of one input into one transaction (`begin_batch`,
//! `commit_batch`) and sends the writes that input started only after the commit.

use std::path::Path;

use anyhow::{Context, Result};
use hush_core::policy::EntityKind;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::holds::{Guarded, Status};

/// What kind of change hush made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// MSC3909 `mute` membership.
    MuteMembership,
    /// A `users` entry in `m.room.power_levels` lowered below the send level.
    MutePowerLevel,
    Ban,
    /// MSC3823 account suspension (room is empty).
    Suspension,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MuteMembership => "mute-membership",
            Kind::MutePowerLevel => "mute-power-level",
            Kind::Ban => "ban",
            Kind::Suspension => "suspension",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "mute-membership" => Kind::MuteMembership,
            "mute-power-level" => Kind::MutePowerLevel,
            "ban" => Kind::Ban,
            "suspension" => Kind::Suspension,
            _ => return None,
        })
    }
    /// Whether this kind is a mute (by either strategy).
    pub fn is_mute(self) -> bool {
        matches!(self, Kind::MuteMembership | Kind::MutePowerLevel)
    }
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Written before the change was sent; the change may or may not have happened.
    Applying,
    /// The change is in the room.
    Applied,
    /// Written before the undo was sent; the undo may or may not have happened.
    Lifting,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Applying => "applying",
            Phase::Applied => "applied",
            Phase::Lifting => "lifting",
        }
    }
    fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "applying" => Phase::Applying,
            "applied" => Phase::Applied,
            "lifting" => Phase::Lifting,
            _ => return None,
        })
    }
}

/// One change hush made (or is making).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The room, or "" for an account-wide change (suspension).
    pub room_id: String,
    pub user_id: String,
    pub kind: Kind,
    pub phase: Phase,
    /// For power-level mutes: the user's explicit entry before the mute (None = absent).
    pub previous_level: Option<i64>,
    /// For power-level mutes: the level hush set.
    pub applied_level: Option<i64>,
    /// The rule that caused it: "list room id|event type|state key".
    pub rule: String,
    pub reason: String,
    pub applied_at_ms: u64,
    /// When the restriction ends by itself (None = until the rule goes).
    pub expires_at_ms: Option<u64>,
    /// A moderator changed the user's level while hush's mute was on: hush leaves it alone.
    pub overridden: bool,
}

/// The ledger on disk.
pub struct Ledger {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS changes (
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    phase          TEXT NOT NULL,
    previous_level INTEGER,
    applied_level  INTEGER,
    rule           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    applied_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER,
    overridden     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id, kind)
);
-- Per-user look-ups (expiry re-arming, departed members) on every input: not a scan.
CREATE INDEX IF NOT EXISTS changes_by_user ON changes (user_id);
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

impl Ledger {
    /// Opens (or creates) the ledger at `path`. Every write is durable when it returns.
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path).with_context(|| format!("cannot open the ledger {}", path.display()))?;
        Ledger::init(conn)
    }

    /// An in-memory ledger, for tests.
    pub fn in_memory() -> Result<Ledger> {
        Ledger::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Ledger> {
        // WAL + synchronous=FULL: a committed write survives a crash or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA).context("cannot create the ledger schema")?;
        Ok(Ledger { conn })
    }

    /// Records a change about to be made (phase `Applying`), replacing any entry for the same key.
    pub fn begin_apply(&self, e: &Entry) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO changes
             (room_id, user_id, kind, phase, previous_level, applied_level, rule, reason, applied_at_ms, expires_at_ms, overridden)
             VALUES (?1, ?2, ?3, 'applying', ?4, ?5, ?6, ?7, ?8, ?9, 0)",
            params![
                e.room_id,
                e.user_id,
                e.kind.as_str(),
                e.previous_level,
                e.applied_level,
                e.rule,
                e.reason,
                e.applied_at_ms as i64,
                e.expires_at_ms.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    fn set_phase(&self, room_id: &str, user_id: &str, kind: Kind, phase: Phase) -> Result<()> {
        self.conn.execute(
            "UPDATE changes SET phase = ?4 WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3",
            params![room_id, user_id, kind.as_str(), phase.as_str()],
        )?;
        Ok(())
    }

    /// The change is in the room.
    pub fn mark_applied(&self, room_id: &str, user_id: &str, kind: Kind) -> Result<()> {
        self.set_phase(room_id, user_id, kind, Phase::Applied)
    }

    /// The undo is about to be sent.
    pub fn begin_lift(&self, room_id: &str, user_id: &str, kind: Kind) -> Result<()> {
        self.set_phase(room_id, user_id, kind, Phase::Lifting)
    }

    /// Updates what an applied entry says about its cause and end (a rule changed, same restriction).
    pub fn update_cause(
        &self,
        room_id: &str,
        user_id: &str,
        kind: Kind,
        rule: &str,
        reason: &str,
        expires_at_ms: Option<u64>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE changes SET rule = ?4, reason = ?5, expires_at_ms = ?6 WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3",
            params![room_id, user_id, kind.as_str(), rule, reason, expires_at_ms.map(|v| v as i64)],
        )?;
        Ok(())
    }

    /// A moderator overrode hush: keep the record (so hush does not re-apply) but never restore.
    pub fn mark_overridden(&self, room_id: &str, user_id: &str, kind: Kind) -> Result<()> {
        self.conn.execute(
            "UPDATE changes SET overridden = 1, phase = 'applied' WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3",
            params![room_id, user_id, kind.as_str()],
        )?;
        Ok(())
    }

    /// The change is gone (lifted, or found never to have happened).
    pub fn remove(&self, room_id: &str, user_id: &str, kind: Kind) -> Result<()> {
        self.conn.execute(
            "DELETE FROM changes WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3",
            params![room_id, user_id, kind.as_str()],
        )?;
        Ok(())
    }

    /// A protected room was upgraded. The homeserver copies power levels and bans into the
    /// replacement, so hush's power-level mutes and bans there are still hush's to undo:
    /// they move to `new`, phase and previous level included. MSC3909 mute memberships are
    /// not copied by an upgrade, so their entries are dropped (the member is muted again on
    /// joining the new room). Returns (moved, dropped). One transaction: all or nothing.
    pub fn carry_over(&self, old: &str, new: &str) -> Result<(usize, usize)> {
        // A savepoint: atomic inside the engine's batch and on its own.
        self.conn.execute_batch("SAVEPOINT carry_over")?;
        let result = (|| {
            let moved = self.conn.execute(
                "UPDATE OR REPLACE changes SET room_id = ?2 WHERE room_id = ?1 AND kind IN (?3, ?4)",
                params![old, new, Kind::MutePowerLevel.as_str(), Kind::Ban.as_str()],
            )?;
            let dropped = self.conn.execute("DELETE FROM changes WHERE room_id = ?1", params![old])?;
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
        self.conn.execute(
            "INSERT OR REPLACE INTO guarded_rules (list, kind, state_key, fingerprint, status, hold_id, held_at_ms, why)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        self.conn.execute(
            "DELETE FROM guarded_rules WHERE list = ?1 AND kind = ?2 AND state_key = ?3",
            params![list, kind.as_str(), state_key],
        )?;
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

    pub fn get(&self, room_id: &str, user_id: &str, kind: Kind) -> Result<Option<Entry>> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM changes WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3",
                params![room_id, user_id, kind.as_str()],
                row_to_entry,
            )
            .optional()?
            .flatten())
    }

    /// Entries for one user in one room.
    pub fn get_all_for(&self, room_id: &str, user_id: &str) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes WHERE room_id = ?1 AND user_id = ?2 ORDER BY kind", params![room_id, user_id])
    }

    /// Every entry, in a stable order.
    pub fn all(&self) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes ORDER BY room_id, user_id, kind", params![])
    }

    /// Entries for one room.
    pub fn for_room(&self, room_id: &str) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes WHERE room_id = ?1 ORDER BY user_id, kind", params![room_id])
    }

    /// Entries for one user, in every room.
    pub fn for_user(&self, user_id: &str) -> Result<Vec<Entry>> {
        self.query("SELECT * FROM changes WHERE user_id = ?1 ORDER BY room_id, kind", params![user_id])
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

/// A row, or None (skipped with a warning) if a future version wrote a kind we do not know.
fn row_to_entry(row: &Row<'_>) -> rusqlite::Result<Option<Entry>> {
    let kind: String = row.get("kind")?;
    let phase: String = row.get("phase")?;
    let (Some(kind), Some(phase)) = (Kind::parse(&kind), Phase::parse(&phase)) else {
        tracing::warn!(kind, phase, "skipping a ledger entry of unknown kind or phase");
        return Ok(None);
    };
    Ok(Some(Entry {
        room_id: row.get("room_id")?,
        user_id: row.get("user_id")?,
        kind,
        phase,
        previous_level: row.get("previous_level")?,
        applied_level: row.get("applied_level")?,
        rule: row.get("rule")?,
        reason: row.get("reason")?,
        applied_at_ms: row.get::<_, i64>("applied_at_ms")? as u64,
        expires_at_ms: row.get::<_, Option<i64>>("expires_at_ms")?.map(|v| v as u64),
        overridden: row.get::<_, i64>("overridden")? != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, previous: Option<i64>) -> Entry {
        Entry {
            room_id: "!room".into(),
            user_id: user.into(),
            kind: Kind::MutePowerLevel,
            phase: Phase::Applying,
            previous_level: previous,
            applied_level: Some(-1),
            rule: "!list|m.policy.rule.user|spam".into(),
            reason: "spam".into(),
            applied_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_060_000),
            overridden: false,
        }
    }

    #[test]
    fn write_ahead_then_applied_then_lifted() {
        let l = Ledger::in_memory().unwrap();
        l.begin_apply(&entry("@a:x", Some(10))).unwrap();
        assert_eq!(l.get("!room", "@a:x", Kind::MutePowerLevel).unwrap().unwrap().phase, Phase::Applying);
        l.mark_applied("!room", "@a:x", Kind::MutePowerLevel).unwrap();
        let e = l.get("!room", "@a:x", Kind::MutePowerLevel).unwrap().unwrap();
        assert_eq!(e.phase, Phase::Applied);
        assert_eq!(e.previous_level, Some(10));
        l.begin_lift("!room", "@a:x", Kind::MutePowerLevel).unwrap();
        assert_eq!(l.all().unwrap()[0].phase, Phase::Lifting);
        l.remove("!room", "@a:x", Kind::MutePowerLevel).unwrap();
        assert!(l.all().unwrap().is_empty());
    }

    #[test]
    fn absent_previous_level_stays_absent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        {
            let l = Ledger::open(&path).unwrap();
            l.begin_apply(&entry("@absent:x", None)).unwrap();
            l.begin_apply(&entry("@ten:x", Some(10))).unwrap();
            l.mark_applied("!room", "@ten:x", Kind::MutePowerLevel).unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        let absent = l.get("!room", "@absent:x", Kind::MutePowerLevel).unwrap().unwrap();
        assert_eq!(absent.previous_level, None);
        assert_eq!(absent.phase, Phase::Applying);
        let ten = l.get("!room", "@ten:x", Kind::MutePowerLevel).unwrap().unwrap();
        assert_eq!(ten.previous_level, Some(10));
        assert_eq!(ten.expires_at_ms, Some(1_700_000_060_000));
        assert_eq!(l.for_user("@ten:x").unwrap().len(), 1);
        assert_eq!(l.for_room("!room").unwrap().len(), 2);
    }

    #[test]
    fn overridden_and_cause_updates() {
        let l = Ledger::in_memory().unwrap();
        l.begin_apply(&entry("@a:x", None)).unwrap();
        l.update_cause("!room", "@a:x", Kind::MutePowerLevel, "r2", "longer", None).unwrap();
        l.mark_overridden("!room", "@a:x", Kind::MutePowerLevel).unwrap();
        let e = l.get("!room", "@a:x", Kind::MutePowerLevel).unwrap().unwrap();
        assert!(e.overridden);
        assert_eq!(e.phase, Phase::Applied);
        assert_eq!((e.rule.as_str(), e.reason.as_str(), e.expires_at_ms), ("r2", "longer", None));
    }
}
