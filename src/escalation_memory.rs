//! The protections' escalation memory: who tripped a protection, when, and how long the mute was, kept in `data_dir/escalation.json` so that a restart (even a kill -9) does not reset escalation.
//!
//! Written durably (like the local rules) after each trigger, before the mute's rule is
//! written, so a trigger whose mute is in force is always remembered. Records older than
//! the escalation window are dropped when the file is read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::local_rules::write_durably;

/// One user's last trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub user: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The mute it gave (ms).
    pub mute_ms: u64,
}

/// Where the escalation records are kept (`None`: in memory only, as in most tests).
#[derive(Debug, Default)]
pub struct EscalationMemory {
    path: Option<PathBuf>,
}

impl EscalationMemory {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("escalation.json")
    }

    /// Reads `data_dir/escalation.json` (none yet: no records), keeping the records of
    /// triggers within `within_ms` of `now_ms`.
    pub fn load(data_dir: &Path, now_ms: u64, within_ms: u64) -> Result<(EscalationMemory, Vec<Record>)> {
        let path = Self::path(data_dir);
        let records: Vec<Record> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let recent = records.into_iter().filter(|r| now_ms.saturating_sub(r.at_ms) < within_ms).collect();
        Ok((EscalationMemory { path: Some(path) }, recent))
    }

    /// Replaces what is kept with `records`, durably.
    pub fn save<'a>(&self, records: impl Iterator<Item = (&'a str, u64, u64)>) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut records: Vec<Record> =
            records.map(|(user, at_ms, mute_ms)| Record { user: user.to_owned(), at_ms, mute_ms }).collect();
        records.sort_by(|a, b| a.user.cmp(&b.user));
        write_durably(path, &serde_json::to_vec_pretty(&records)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_restart_and_old_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, none) = EscalationMemory::load(dir.path(), 0, 1000).unwrap();
        assert!(none.is_empty());
        memory.save([("@a:x", 100, 10), ("@b:x", 900, 20)].into_iter()).unwrap();
        let (_, kept) = EscalationMemory::load(dir.path(), 1150, 1000).unwrap();
        assert_eq!(
            kept,
            vec![Record { user: "@b:x".into(), at_ms: 900, mute_ms: 20 }],
            "@a:x is older than the window"
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(EscalationMemory::path(dir.path()), "[{").unwrap();
        assert!(EscalationMemory::load(dir.path(), 0, 1000).is_err());
    }
}
