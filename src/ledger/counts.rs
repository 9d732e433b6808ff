//! Counts over the ledger for the metrics (owns no state: one aggregate query, not a read of every entry).

use anyhow::Result;
use hush_core::record::{Kind, Phase};
use rusqlite::params;

use super::Ledger;

impl Ledger {
    /// How many restrictions of each kind hush has in force: applied and not overridden
    /// by a moderator (what is being applied or lifted is not counted).
    pub fn in_force_by_kind(&self) -> Result<Vec<(Kind, usize)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, COUNT(*) FROM changes WHERE phase = ?1 AND overridden = 0 GROUP BY kind ORDER BY kind",
        )?;
        let rows = stmt
            .query_map(params![Phase::Applied.as_str()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (kind, n) = r?;
            if let Some(kind) = Kind::parse(&kind) {
                out.push((kind, usize::try_from(n).unwrap_or(0)));
            }
        }
        Ok(out)
    }
}
