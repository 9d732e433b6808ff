//! Rooms changed at run time by `watch`/`unwatch` and `rooms add|remove`, persisted in `data_dir/rooms.json` on top of the config file.
//!
//! The config file stays the starting point: the effective policy lists are the config's
//! plus those watched at run time minus those unwatched at run time (likewise protected
//! rooms). Editing the config file later still works: an entry only changes what it names.
//!
//! It also keeps the room id each alias (management room, list, protected room) resolved
//! to the first time: an alias is pinned, so that moving it later does not move hush.

use std::collections::BTreeMap;
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
    /// Alias -> the room id it resolved to the first time (kept when the alias moves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: BTreeMap<String, String>,
}

/// What resolving an alias again means once pins are taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// First resolution: the alias is pinned to this room id now (to be saved).
    New(String),
    /// The alias still points to its pinned room.
    Same(String),
    /// The alias now points elsewhere: hush keeps the pinned room.
    Moved { pinned: String, now: String },
}

impl Pin {
    /// The room id hush follows.
    pub fn room_id(&self) -> &str {
        match self {
            Pin::New(id) | Pin::Same(id) => id,
            Pin::Moved { pinned, .. } => pinned,
        }
    }

    /// What to tell the moderators, if anything.
    pub fn warning(&self, alias: &str) -> Option<String> {
        match self {
            Pin::Moved { pinned, now } => Some(format!(
                "The alias {alias} now points to {now}, but hush keeps following {pinned}, the room it \
                 pointed to when hush first resolved it. To follow {now} instead, remove {alias} \
                 (`unwatch` or `rooms remove`) and add it again; for the management room, stop hush and \
                 delete the entry for {alias} under `pinned` in data_dir/rooms.json."
            )),
            _ => None,
        }
    }
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
        let names =
            [(trust.ban, "ban"), (trust.mute, "mute"), (trust.suspend, "suspend"), (trust.server_acl, "server_acl")]
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

    /// Pins `alias` to `resolved` if it is not pinned yet; otherwise keeps the pin and says
    /// whether the alias moved.
    pub fn pin(&mut self, alias: &str, resolved: &str) -> Pin {
        match self.pinned.get(alias) {
            None => {
                self.pinned.insert(alias.to_owned(), resolved.to_owned());
                Pin::New(resolved.to_owned())
            }
            Some(pinned) if pinned == resolved => Pin::Same(resolved.to_owned()),
            Some(pinned) => Pin::Moved { pinned: pinned.clone(), now: resolved.to_owned() },
        }
    }

    /// Forgets an alias's pin (it is no longer followed in any role); true if there was one.
    pub fn unpin(&mut self, alias: &str) -> bool {
        self.pinned.remove(alias).is_some()
    }

    /// The config's lists with these changes applied.
    pub fn effective_lists(&self, configured: &[String]) -> Vec<String> {
        effective(configured, &self.watched, &self.unwatched)
    }

    /// The room ids that the config's lists (with these changes applied) were pinned to:
    /// lists hush knows by id even when their alias does not resolve now.
    pub fn pinned_lists(&self, configured: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.effective_lists(configured).iter().filter_map(|l| self.pinned.get(l)) {
            add(&mut out, id);
        }
        out
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

    /// A `watch --actions` with `server_acl` keeps it across a restart (it was dropped
    /// when only ban, mute and suspend were saved).
    #[test]
    fn watched_actions_persist_every_action() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = RoomOverrides::default();
        let trust = ListTrust { ban: true, mute: false, suspend: false, server_acl: true };
        o.set_actions("#p:x", trust);
        o.save(dir.path()).unwrap();
        assert_eq!(RoomOverrides::load(dir.path()).unwrap().actions_of("#p:x"), Some(trust));
    }

    #[test]
    fn the_lists_pinned_are_those_still_followed() {
        let mut o = RoomOverrides::default();
        let configured = vec!["#a:x".to_owned(), "#b:x".to_owned(), "!c:x".to_owned(), "#gone:x".to_owned()];
        o.pin("#a:x", "!a:x");
        o.pin("#lobby:x", "!lobby:x"); // a protected room, not a list
        o.pin("#old:x", "!old:x"); // no longer configured
        o.pin("#gone:x", "!gone:x");
        o.pin("#w:x", "!w:x");
        o.unwatch("#gone:x");
        o.watch("#w:x");
        // #b:x was never resolved (no pin), !c:x is an id (always resolves).
        assert_eq!(o.pinned_lists(&configured), vec!["!a:x", "!w:x"]);
    }

    #[test]
    fn an_alias_is_pinned_at_its_first_resolution() {
        let mut o = RoomOverrides::default();
        let first = o.pin("#lobby:x", "!a:x");
        assert_eq!(first, Pin::New("!a:x".to_owned()));
        assert_eq!(first.room_id(), "!a:x");
        assert_eq!(first.warning("#lobby:x"), None);
        let again = o.pin("#lobby:x", "!a:x");
        assert_eq!(again, Pin::Same("!a:x".to_owned()));
        assert_eq!(again.warning("#lobby:x"), None);
    }

    #[test]
    fn a_moved_alias_keeps_its_pin_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = RoomOverrides::default();
        o.pin("#lobby:x", "!a:x");
        o.save(dir.path()).unwrap();
        // A later start: the alias now points elsewhere.
        let mut o = RoomOverrides::load(dir.path()).unwrap();
        let moved = o.pin("#lobby:x", "!b:x");
        assert_eq!(moved, Pin::Moved { pinned: "!a:x".to_owned(), now: "!b:x".to_owned() });
        assert_eq!(moved.room_id(), "!a:x");
        let warning = moved.warning("#lobby:x").unwrap();
        for part in ["#lobby:x", "!a:x", "!b:x"] {
            assert!(warning.contains(part), "{warning}");
        }
        // Still pinned to the first room; the new target is not recorded.
        assert_eq!(o.pinned.get("#lobby:x").map(String::as_str), Some("!a:x"));
        assert_eq!(o.pin("#lobby:x", "!b:x").room_id(), "!a:x");
    }

    #[test]
    fn an_unpinned_alias_is_resolved_anew() {
        let mut o = RoomOverrides::default();
        o.pin("#l:x", "!a:x");
        assert!(o.unpin("#l:x"));
        assert!(!o.unpin("#l:x"));
        assert_eq!(o.pin("#l:x", "!b:x"), Pin::New("!b:x".to_owned()));
    }

    #[test]
    fn a_file_from_before_pins_still_loads_and_is_written_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let old = r##"{"watched":["#c:x"],"unwatched":[],"protected":[],"unprotected":["#d:x"]}"##;
        std::fs::write(RoomOverrides::path(dir.path()), old).unwrap();
        let o = RoomOverrides::load(dir.path()).unwrap();
        assert!(o.pinned.is_empty());
        assert_eq!(o.watched, vec!["#c:x"]);
        o.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(RoomOverrides::path(dir.path())).unwrap();
        assert!(!text.contains("pinned"), "{text}");
    }

    #[test]
    fn a_broken_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(RoomOverrides::path(dir.path()), "{not json").unwrap();
        assert!(RoomOverrides::load(dir.path()).is_err());
    }
}
