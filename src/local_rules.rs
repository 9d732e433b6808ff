//! The local policy list: rules hush's protections wrote (a flood mute with its expiry) and the exceptions `undo` wrote (an allow rule, `hush.undo:<user>`), kept in `data_dir/local_rules.json` and never published.
//!
//! They enter the policy index as the rules of the pseudo list [`LOCAL_LIST`], so the
//! same reconcile, ledger and expiry timers apply and lift them; `mutes` shows them.
//! The file is written (and synced) before the rule reaches the index, so a mute the
//! ledger records always has its rule on disk: after a kill -9 it is loaded again and
//! lifted on time. Expired rules are dropped when the file is read or written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The pseudo list id of the local rules: not a room id (no `!`), so no room can be it.
pub const LOCAL_LIST: &str = "hush.local";

/// The local rules as policy state events, by (type, state key).
#[derive(Debug, Default)]
pub struct LocalRules {
    /// `None`: kept in memory only (tests).
    path: Option<PathBuf>,
    events: BTreeMap<(String, String), Value>,
}

fn key(ev: &Value) -> Option<(String, String)> {
    Some((ev.get("type")?.as_str()?.to_owned(), ev.get("state_key")?.as_str()?.to_owned()))
}

fn expired(ev: &Value, now_ms: u64) -> bool {
    ev.pointer("/content/expiry").and_then(Value::as_u64).is_some_and(|e| e <= now_ms)
}

impl LocalRules {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("local_rules.json")
    }

    /// Reads `data_dir/local_rules.json` (none yet: no rules).
    pub fn load(data_dir: &Path, now_ms: u64) -> Result<LocalRules> {
        let path = Self::path(data_dir);
        let events: Vec<Value> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let events = events.into_iter().filter(|e| !expired(e, now_ms)).filter_map(|e| Some((key(&e)?, e))).collect();
        Ok(LocalRules { path: Some(path), events })
    }

    /// Rules kept in memory only (tests).
    pub fn in_memory() -> LocalRules {
        LocalRules::default()
    }

    /// The rules in force, as policy state events.
    pub fn events(&self) -> Vec<Value> {
        self.events.values().cloned().collect()
    }

    /// Adds (or replaces) a rule and writes the file durably before returning.
    pub fn insert(&mut self, ev: Value, now_ms: u64) -> Result<()> {
        let k = key(&ev).context("a local rule needs a type and a state key")?;
        let before = self.events.insert(k.clone(), ev);
        self.events.retain(|_, e| !expired(e, now_ms));
        if let Err(e) = self.save() {
            // Not on disk: not in force either, so memory and file agree.
            match before {
                Some(b) => self.events.insert(k, b),
                None => self.events.remove(&k),
            };
            return Err(e);
        }
        Ok(())
    }

    /// The rule kept under (`type`, `state_key`), if any.
    pub fn get(&self, kind: &str, state_key: &str) -> Option<&Value> {
        self.events.get(&(kind.to_owned(), state_key.to_owned()))
    }

    /// Takes a rule out and writes the file durably before returning; `Ok(None)` when there
    /// was none. On a write error the rule stays, in memory as on disk.
    pub fn remove(&mut self, kind: &str, state_key: &str) -> Result<Option<Value>> {
        let k = (kind.to_owned(), state_key.to_owned());
        let Some(before) = self.events.remove(&k) else { return Ok(None) };
        if let Err(e) = self.save() {
            self.events.insert(k, before);
            return Err(e);
        }
        Ok(Some(before))
    }

    /// Writes atomically and durably ([`write_durably`]).
    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        write_durably(path, &serde_json::to_vec_pretty(&self.events.values().collect::<Vec<_>>())?)
    }
}

/// Writes a file in `data_dir` atomically and durably: a temporary file, synced, renamed
/// over the old one, and the directory synced (the local rules, the escalation memory).
pub(crate) fn write_durably(path: &Path, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(body).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(user: &str, expiry: u64) -> Value {
        json!({"type": "m.policy.rule.user", "state_key": format!("flood:{user}"),
               "content": {"entity": user, "recommendation": "m.mute", "expiry": expiry}})
    }

    #[test]
    fn rules_survive_a_restart_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = LocalRules::load(dir.path(), 0).unwrap();
        rules.insert(rule("@a:x", 1_000), 0).unwrap();
        rules.insert(rule("@b:x", 5_000), 0).unwrap();
        rules.insert(rule("@a:x", 2_000), 0).unwrap();
        let again = LocalRules::load(dir.path(), 0).unwrap();
        assert_eq!(again.events(), vec![rule("@a:x", 2_000), rule("@b:x", 5_000)], "one rule per key, the latest");
        let later = LocalRules::load(dir.path(), 2_000).unwrap();
        assert_eq!(later.events(), vec![rule("@b:x", 5_000)]);
    }

    #[test]
    fn a_removed_rule_stays_removed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = LocalRules::load(dir.path(), 0).unwrap();
        rules.insert(rule("@a:x", 9_000), 0).unwrap();
        rules.insert(rule("@b:x", 9_000), 0).unwrap();
        assert_eq!(rules.get("m.policy.rule.user", "flood:@a:x"), Some(&rule("@a:x", 9_000)));
        assert_eq!(rules.remove("m.policy.rule.user", "flood:@a:x").unwrap(), Some(rule("@a:x", 9_000)));
        assert_eq!(rules.remove("m.policy.rule.user", "flood:@a:x").unwrap(), None, "already gone");
        assert_eq!(LocalRules::load(dir.path(), 0).unwrap().events(), vec![rule("@b:x", 9_000)]);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(LocalRules::path(dir.path()), "{not json").unwrap();
        assert!(LocalRules::load(dir.path(), 0).is_err());
    }
}
