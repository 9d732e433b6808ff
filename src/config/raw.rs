//! The file as written: the known keys (with a "did you mean" for unknown ones) and the serde shapes before validation.

use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::ConfigError;

/// The keys a config may have; nested maps list their own keys.
pub(super) const TOP_KEYS: &[&str] = &[
    "homeserver_url",
    "allow_insecure_http",
    "user_id",
    "password",
    "password_file",
    "access_token",
    "access_token_file",
    "data_dir",
    "management_room",
    "command_prefix",
    "moderator_power_level",
    "policy_lists",
    "default_policy_list",
    "protected_rooms",
    "protected_users",
    "mute",
    "suspension",
    "safety",
    "dry_run",
    "redaction",
    "protections",
    "metrics",
];
pub(super) const MUTE_KEYS: &[&str] = &["membership_room_versions", "batch_window_ms"];
pub(super) const SUSPENSION_KEYS: &[&str] = &["enabled", "admin_access_token_file", "admin_access_token"];
pub(super) const SAFETY_KEYS: &[&str] = &["max_new_restrictions", "max_room_share"];
pub(super) const REDACTION_KEYS: &[&str] = &["redact_on", "window", "max_per_room", "msc4293"];
pub(super) const POLICY_LIST_KEYS: &[&str] = &["room", "actions", "write"];

/// The file as written, before validation.
#[derive(Deserialize)]
pub(super) struct RawConfig {
    pub(super) homeserver_url: String,
    #[serde(default)]
    pub(super) allow_insecure_http: bool,
    pub(super) user_id: String,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) access_token: Option<String>,
    pub(super) access_token_file: Option<PathBuf>,
    pub(super) data_dir: PathBuf,
    pub(super) management_room: String,
    #[serde(default = "default_prefix")]
    pub(super) command_prefix: String,
    pub(super) moderator_power_level: Option<i64>,
    /// Strings or maps: read entry by entry in `validate`, so that errors name the entry.
    #[serde(default)]
    pub(super) policy_lists: Vec<Value>,
    pub(super) default_policy_list: Option<String>,
    #[serde(default)]
    pub(super) protected_rooms: Vec<String>,
    #[serde(default)]
    pub(super) protected_users: Vec<String>,
    #[serde(default)]
    pub(super) mute: RawMute,
    #[serde(default)]
    pub(super) suspension: RawSuspension,
    #[serde(default)]
    pub(super) safety: RawSafety,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default)]
    pub(super) redaction: RawRedaction,
    #[serde(default)]
    pub(super) protections: super::protections::RawProtections,
    #[serde(default)]
    pub(super) metrics: super::metrics::RawMetrics,
}

pub(super) fn default_prefix() -> String {
    "!hush".to_owned()
}

#[derive(Deserialize)]
pub(super) struct RawMute {
    #[serde(default)]
    pub(super) membership_room_versions: Vec<String>,
    #[serde(default = "default_batch_window_ms")]
    pub(super) batch_window_ms: u64,
}

impl Default for RawMute {
    fn default() -> Self {
        RawMute { membership_room_versions: Vec::new(), batch_window_ms: default_batch_window_ms() }
    }
}

pub(super) fn default_batch_window_ms() -> u64 {
    250
}

#[derive(Deserialize, Default)]
pub(super) struct RawSuspension {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) admin_access_token_file: Option<PathBuf>,
    pub(super) admin_access_token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawSafety {
    #[serde(default = "default_max_new_restrictions")]
    pub(super) max_new_restrictions: usize,
    #[serde(default = "default_max_room_share")]
    pub(super) max_room_share: f64,
}

impl Default for RawSafety {
    fn default() -> Self {
        RawSafety { max_new_restrictions: default_max_new_restrictions(), max_room_share: default_max_room_share() }
    }
}

pub(super) fn default_max_new_restrictions() -> usize {
    10
}

pub(super) fn default_max_room_share() -> f64 {
    0.25
}

#[derive(Deserialize)]
pub(super) struct RawRedaction {
    #[serde(default = "default_redact_on")]
    pub(super) redact_on: Vec<String>,
    #[serde(default = "default_redaction_window")]
    pub(super) window: String,
    #[serde(default = "default_max_per_room")]
    pub(super) max_per_room: u32,
    #[serde(default = "default_msc4293")]
    pub(super) msc4293: bool,
}

impl Default for RawRedaction {
    fn default() -> Self {
        RawRedaction {
            redact_on: default_redact_on(),
            window: default_redaction_window(),
            max_per_room: default_max_per_room(),
            msc4293: default_msc4293(),
        }
    }
}

pub(super) fn default_redact_on() -> Vec<String> {
    vec!["ban".to_owned()]
}

pub(super) fn default_redaction_window() -> String {
    "24h".to_owned()
}

pub(super) fn default_max_per_room() -> u32 {
    100
}

pub(super) fn default_msc4293() -> bool {
    true
}

pub(super) fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

pub(super) fn check_keys(value: &Value) -> Result<(), ConfigError> {
    let Value::Mapping(map) = value else {
        return Err(ConfigError::new("", "expected a mapping of keys to values at the top level"));
    };
    check_map_keys("", map, TOP_KEYS)?;
    for (section, keys) in
        [("mute", MUTE_KEYS), ("suspension", SUSPENSION_KEYS), ("safety", SAFETY_KEYS), ("redaction", REDACTION_KEYS)]
    {
        match map.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(inner)) => check_map_keys(section, inner, keys)?,
            Some(_) => return Err(ConfigError::new(section, "expected a mapping of keys to values")),
        }
    }
    super::metrics::check_keys(map)?;
    super::protections::check_keys(map)
}

pub(super) fn check_map_keys(prefix: &str, map: &serde_yaml_ng::Mapping, known: &[&str]) -> Result<(), ConfigError> {
    for key in map.keys() {
        let Some(name) = key.as_str() else {
            return Err(ConfigError::new(prefix, format!("keys must be strings, found {key:?}")));
        };
        if !known.contains(&name) {
            let path = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
            let reason = match did_you_mean(name, known) {
                Some(s) => format!("unknown key (did you mean `{s}`?)"),
                None => format!("unknown key; known keys here: {}", known.join(", ")),
            };
            return Err(ConfigError::new(path, reason));
        }
    }
    Ok(())
}

/// The closest known key within an edit distance of a third of its length (at least 2).
pub(super) fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
