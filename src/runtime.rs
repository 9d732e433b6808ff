//! Rooms changed at run time by `watch`/`unwatch` and `rooms add|remove`, persisted in `data_dir/rooms.json` on top of the config file.
//!
//! The config file stays the starting point: the effective policy lists are the config's
//! plus those watched at run time minus those unwatched at run time (likewise protected
//! rooms). Editing the config file later still works: an entry only changes what it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hush_core::policy::ListTrust;
use serde::{Deserialize, Serialize};

/// The run-time changes, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomOverrides {
    #[serde(default)]
    pub watched: Vec<String>,
    #[serde(default)]
    pub unwatched: Vec<String>,
    #[serde(default)]
    pub protected: Vec<String>,
    #[serde(default)]
    pub unprotected: Vec<String>,
    /// Lists watched with `--actions`: what each may make hush do (action names).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub actions: std::collections::BTreeMap<String, Vec<String>>,
}

fn add(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_owned());
    }
}

fn remove(list: &mut Vec<String>, item: &str) {
    list.retain(|x| x != item);
}

impl RoomOverrides {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("rooms.json")
    }

    /// Loads the overrides; a missing file means none.
    pub fn load(data_dir: &Path) -> Result<RoomOverrides> {
        let path = Self::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RoomOverrides::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Saves atomically (write then rename).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Records what a watched list may make hush do (`watch --actions`).
    pub fn set_actions(&mut self, room: &str, trust: ListTrust) {
        let names = [(trust.ban, "ban"), (trust.mute, "mute"), (trust.suspend, "suspend")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .collect();
        self.actions.insert(room.to_owned(), names);
    }

    /// What a list watched with `--actions` may make hush do; None: as configured or by default.
    pub fn actions_of(&self, room: &str) -> Option<ListTrust> {
        let names = self.actions.get(room)?;
        ListTrust::parse(names.iter().map(String::as_str)).ok()
    }

    pub fn watch(&mut self, room: &str) {
        remove(&mut self.unwatched, room);
        add(&mut self.watched, room);
    }

    pub fn unwatch(&mut self, room: &str) {
        self.actions.remove(room);
        remove(&mut self.watched, room);
        add(&mut self.unwatched, room);
    }

    pub fn protect(&mut self, room: &str) {
        remove(&mut self.unprotected, room);
        add(&mut self.protected, room);
    }

    pub fn unprotect(&mut self, room: &str) {
        remove(&mut self.protected, room);
        add(&mut self.unprotected, room);
    }

    /// The config's lists with these changes applied.
    pub fn effective_lists(&self, configured: &[String]) -> Vec<String> {
        effective(configured, &self.watched, &self.unwatched)
    }

    /// The config's protected rooms with these changes applied.
    pub fn effective_rooms(&self, configured: &[String]) -> Vec<String> {
        effective(configured, &self.protected, &self.unprotected)
    }
}

fn effective(configured: &[String], added: &[String], removed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = configured.iter().filter(|r| !removed.contains(r)).cloned().collect();
    for r in added {
        add(&mut out, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_combine_with_the_config_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = RoomOverrides::load(dir.path()).unwrap();
        assert_eq!(o, RoomOverrides::default());
        let configured = vec!["#a:x".to_owned(), "#b:x".to_owned()];
        o.watch("#c:x");
        o.unwatch("#a:x");
        o.save(dir.path()).unwrap();
        let o = RoomOverrides::load(dir.path()).unwrap();
        assert_eq!(o.effective_lists(&configured), vec!["#b:x".to_owned(), "#c:x".to_owned()]);
        let mut o = o;
        o.watch("#a:x");
        assert_eq!(o.effective_lists(&configured), vec!["#a:x", "#b:x", "#c:x"]);
        o.unprotect("#b:x");
        o.protect("#d:x");
        assert_eq!(o.effective_rooms(&configured), vec!["#a:x", "#d:x"]);
    }

    #[test]
    fn a_broken_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(RoomOverrides::path(dir.path()), "{not json").unwrap();
        assert!(RoomOverrides::load(dir.path()).is_err());
    }
}
