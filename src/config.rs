//! The YAML configuration: parsing, validation with key-named errors, and secrets from files or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hush_core::policy::ListTrust;
use serde_yaml_ng::Value;

mod metrics;
mod protections;
mod raw;
mod validate;

pub use metrics::MetricsConfig;
pub use protections::{EscalationConfig, FloodConfig, MentionSpamConfig, ProtectionsConfig, Reach};

use raw::{check_keys, default_max_new_restrictions, default_max_room_share, missing_field, RawConfig};
use validate::validate;

/// Environment variables that may carry secrets instead of the config file.
pub const ENV_PASSWORD: &str = "HUSH_PASSWORD";
pub const ENV_ACCESS_TOKEN: &str = "HUSH_ACCESS_TOKEN";
pub const ENV_ADMIN_ACCESS_TOKEN: &str = "HUSH_ADMIN_ACCESS_TOKEN";

/// A secret string: its `Debug` never shows the value, and it has no `Display`,
/// so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it to the homeserver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How hush logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Password(Secret),
    AccessToken(Secret),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub homeserver_url: String,
    /// Whether `homeserver_url` may be `http://` to a host that is not this machine.
    pub allow_insecure_http: bool,
    pub user_id: String,
    pub credentials: Credentials,
    pub data_dir: PathBuf,
    pub management_room: String,
    pub command_prefix: String,
    pub moderator_power_level: Option<i64>,
    pub policy_lists: Vec<PolicyListConfig>,
    pub default_policy_list: Option<String>,
    pub protected_rooms: Vec<String>,
    pub protected_users: Vec<String>,
    pub mute: MuteConfig,
    pub suspension: SuspensionConfig,
    pub safety: SafetyConfig,
    pub dry_run: bool,
    pub redaction: RedactionConfig,
    /// Flood protection and escalation (off by default).
    pub protections: ProtectionsConfig,
    /// The metrics and health listener (off by default).
    pub metrics: MetricsConfig,
}

/// One entry of `policy_lists`: a room id or alias, or a map with `room`, `actions`, `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyListConfig {
    /// The list's room id or alias, as written in the config.
    pub room: String,
    /// What the list may make hush do, when configured; `None` means the default
    /// (see [`Config::list_trust`]).
    pub actions: Option<ListTrust>,
    /// Whether hush's `unmute`/`unban` may remove rules from this list (the
    /// `default_policy_list` always may).
    pub write: bool,
}

/// The guard against a rule or a batch of list changes that would restrict too many
/// members at once: such a change is held until a moderator confirms it.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyConfig {
    /// Hold a change that would newly restrict more than this many members.
    pub max_new_restrictions: usize,
    /// Hold a change that would newly restrict more than this share (0 < share <= 1) of
    /// any protected room's members (and at least 3 of them).
    pub max_room_share: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig { max_new_restrictions: default_max_new_restrictions(), max_room_share: default_max_room_share() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuteConfig {
    pub membership_room_versions: Vec<String>,
    pub batch_window_ms: u64,
}

/// Redacting a restricted member's recent events (`redaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionConfig {
    /// A new ban redacts (`redact_on: [ban]`, the default).
    pub on_ban: bool,
    /// A new mute redacts (`mute` in `redact_on`).
    pub on_mute: bool,
    /// How far back: the events sent within this time before the restriction.
    pub window: std::time::Duration,
    /// The most events redacted per room, for one restriction or command.
    pub max_per_room: u32,
    /// Bans that redact carry MSC4293's `redact_events` flag, so a homeserver implementing
    /// it redacts them itself (hush then finds them redacted and sends nothing more).
    pub msc4293: bool,
}

impl RedactionConfig {
    /// The engine's view of it (core's policy).
    pub fn policy(&self) -> hush_core::reconcile::RedactPolicy {
        hush_core::reconcile::RedactPolicy {
            on_ban: self.on_ban,
            on_mute: self.on_mute,
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            max_per_room: self.max_per_room,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionConfig {
    pub enabled: bool,
    pub admin_access_token: Option<Secret>,
}

/// A configuration error: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key (`mute.batch_window_ms`), or empty for the whole file.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { key: key.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.reason)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where secrets come from besides the file: the process environment in production,
/// a map in tests.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Config {
    /// Reads and validates a config file; relative `*_file` paths are relative to the file's folder.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, base, env)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, base: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let value: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::new("", format!("not valid YAML: {e}")))?;
        check_keys(&value)?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            match missing_field(&inner) {
                Some(field) => {
                    let key = if key == "." { field.to_owned() } else { format!("{key}.{field}") };
                    ConfigError::new(key, "is required but missing")
                }
                None => ConfigError::new(if key == "." { String::new() } else { key }, inner),
            }
        })?;
        validate(raw, base, env)
    }

    /// Every room the bot should be in, in the order: management room, policy lists, protected rooms.
    pub fn configured_rooms(&self) -> Vec<String> {
        let mut rooms = vec![self.management_room.clone()];
        let lists = self.policy_lists.iter().map(|l| &l.room);
        for r in lists.chain(self.default_policy_list.iter()).chain(&self.protected_rooms) {
            if !rooms.contains(r) {
                rooms.push(r.clone());
            }
        }
        rooms
    }

    /// The rooms of `policy_lists`, in order.
    pub fn policy_list_rooms(&self) -> Vec<String> {
        self.policy_lists.iter().map(|l| l.room.clone()).collect()
    }

    /// What the list `room` (as written in the config) may make hush do: its configured
    /// `actions`, else every action for `default_policy_list`, else bans and mutes.
    pub fn list_trust(&self, room: &str) -> ListTrust {
        match self.policy_lists.iter().find(|l| l.room == room).and_then(|l| l.actions) {
            Some(t) => t,
            None if self.default_policy_list.as_deref() == Some(room) => ListTrust::DEFAULT_LIST,
            None => ListTrust::OTHER_LIST,
        }
    }

    /// The lists hush may remove rules from (`unmute`, `unban`): `default_policy_list`,
    /// then every list with `write: true`.
    pub fn writable_lists(&self) -> Vec<String> {
        let mut out: Vec<String> = self.default_policy_list.iter().cloned().collect();
        for l in self.policy_lists.iter().filter(|l| l.write) {
            if !out.contains(&l.room) {
                out.push(l.room.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
