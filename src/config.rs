//! The YAML configuration: parsing, validation with key-named errors, and secrets from files or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hush_core::policy::ListTrust;
use serde::Deserialize;
use serde_yaml_ng::Value;

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

/// The keys a config may have; nested maps list their own keys.
const TOP_KEYS: &[&str] = &[
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
];
const MUTE_KEYS: &[&str] = &["membership_room_versions", "batch_window_ms"];
const SUSPENSION_KEYS: &[&str] = &["enabled", "admin_access_token_file", "admin_access_token"];
const SAFETY_KEYS: &[&str] = &["max_new_restrictions", "max_room_share"];
const POLICY_LIST_KEYS: &[&str] = &["room", "actions", "write"];

/// The file as written, before validation.
#[derive(Deserialize)]
struct RawConfig {
    homeserver_url: String,
    #[serde(default)]
    allow_insecure_http: bool,
    user_id: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
    access_token: Option<String>,
    access_token_file: Option<PathBuf>,
    data_dir: PathBuf,
    management_room: String,
    #[serde(default = "default_prefix")]
    command_prefix: String,
    moderator_power_level: Option<i64>,
    /// Strings or maps: read entry by entry in `validate`, so that errors name the entry.
    #[serde(default)]
    policy_lists: Vec<Value>,
    default_policy_list: Option<String>,
    #[serde(default)]
    protected_rooms: Vec<String>,
    #[serde(default)]
    protected_users: Vec<String>,
    #[serde(default)]
    mute: RawMute,
    #[serde(default)]
    suspension: RawSuspension,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    dry_run: bool,
}

fn default_prefix() -> String {
    "!hush".to_owned()
}

#[derive(Deserialize)]
struct RawMute {
    #[serde(default)]
    membership_room_versions: Vec<String>,
    #[serde(default = "default_batch_window_ms")]
    batch_window_ms: u64,
}

impl Default for RawMute {
    fn default() -> Self {
        RawMute { membership_room_versions: Vec::new(), batch_window_ms: default_batch_window_ms() }
    }
}

fn default_batch_window_ms() -> u64 {
    250
}

#[derive(Deserialize, Default)]
struct RawSuspension {
    #[serde(default)]
    enabled: bool,
    admin_access_token_file: Option<PathBuf>,
    admin_access_token: Option<String>,
}

#[derive(Deserialize)]
struct RawSafety {
    #[serde(default = "default_max_new_restrictions")]
    max_new_restrictions: usize,
    #[serde(default = "default_max_room_share")]
    max_room_share: f64,
}

impl Default for RawSafety {
    fn default() -> Self {
        RawSafety { max_new_restrictions: default_max_new_restrictions(), max_room_share: default_max_room_share() }
    }
}

fn default_max_new_restrictions() -> usize {
    10
}

fn default_max_room_share() -> f64 {
    0.25
}

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

fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn check_keys(value: &Value) -> Result<(), ConfigError> {
    let Value::Mapping(map) = value else {
        return Err(ConfigError::new("", "expected a mapping of keys to values at the top level"));
    };
    check_map_keys("", map, TOP_KEYS)?;
    for (section, keys) in [("mute", MUTE_KEYS), ("suspension", SUSPENSION_KEYS), ("safety", SAFETY_KEYS)] {
        match map.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(inner)) => check_map_keys(section, inner, keys)?,
            Some(_) => return Err(ConfigError::new(section, "expected a mapping of keys to values")),
        }
    }
    Ok(())
}

fn check_map_keys(prefix: &str, map: &serde_yaml_ng::Mapping, known: &[&str]) -> Result<(), ConfigError> {
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
fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
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

fn validate(raw: RawConfig, base: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
    let url = raw.homeserver_url.trim_end_matches('/');
    let https = url.strip_prefix("https://");
    let http = url.strip_prefix("http://");
    let rest = https.or(http);
    if rest.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        return Err(ConfigError::new(
            "homeserver_url",
            format!("`{}` is not an http:// or https:// URL", raw.homeserver_url),
        ));
    }
    if http.is_some_and(|rest| !is_loopback_host(url_host(rest))) && !raw.allow_insecure_http {
        return Err(ConfigError::new(
            "homeserver_url",
            "http:// sends the password and tokens in clear text to a host that is not this machine; \
             use https:// or set allow_insecure_http: true",
        ));
    }
    if !is_user_id(&raw.user_id) {
        return Err(ConfigError::new(
            "user_id",
            format!("`{}` is not a Matrix user id like @hush:example.org", raw.user_id),
        ));
    }
    let credentials = credentials(&raw, base, env)?;
    if raw.data_dir.as_os_str().is_empty() {
        return Err(ConfigError::new("data_dir", "must not be empty"));
    }
    check_room("management_room", &raw.management_room)?;
    if raw.command_prefix.trim().is_empty() || raw.command_prefix.contains(char::is_whitespace) {
        return Err(ConfigError::new("command_prefix", "must be a non-empty word without spaces, like !hush"));
    }
    let policy_lists = policy_lists(&raw.policy_lists)?;
    if let Some(r) = &raw.default_policy_list {
        check_room("default_policy_list", r)?;
    }
    for (i, r) in raw.protected_rooms.iter().enumerate() {
        check_room(&format!("protected_rooms[{i}]"), r)?;
    }
    for (i, u) in raw.protected_users.iter().enumerate() {
        if !is_user_id(u) {
            return Err(ConfigError::new(
                format!("protected_users[{i}]"),
                format!("`{u}` is not a user id or glob like @alice:example.org or @*:example.org"),
            ));
        }
    }
    if raw.mute.batch_window_ms > 60_000 {
        return Err(ConfigError::new("mute.batch_window_ms", "must be at most 60000 (one minute)"));
    }
    let share = raw.safety.max_room_share;
    // Written so that NaN fails too.
    if !(share > 0.0 && share <= 1.0) {
        return Err(ConfigError::new(
            "safety.max_room_share",
            format!("must be a share of a room's members, more than 0 and at most 1 (0.25 is a quarter), not {share}"),
        ));
    }
    let admin_access_token = secret(
        base,
        env,
        ("suspension.admin_access_token", raw.suspension.admin_access_token.as_deref()),
        ("suspension.admin_access_token_file", raw.suspension.admin_access_token_file.as_deref()),
        ENV_ADMIN_ACCESS_TOKEN,
    )?;
    if raw.suspension.enabled && admin_access_token.is_none() {
        return Err(ConfigError::new(
            "suspension.admin_access_token_file",
            format!("is required when suspension.enabled is true (or set {ENV_ADMIN_ACCESS_TOKEN})"),
        ));
    }
    Ok(Config {
        homeserver_url: url.to_owned(),
        allow_insecure_http: raw.allow_insecure_http,
        user_id: raw.user_id,
        credentials,
        data_dir: raw.data_dir,
        management_room: raw.management_room,
        command_prefix: raw.command_prefix,
        moderator_power_level: raw.moderator_power_level,
        policy_lists,
        default_policy_list: raw.default_policy_list,
        protected_rooms: raw.protected_rooms,
        protected_users: raw.protected_users,
        mute: MuteConfig {
            membership_room_versions: raw.mute.membership_room_versions,
            batch_window_ms: raw.mute.batch_window_ms,
        },
        suspension: SuspensionConfig { enabled: raw.suspension.enabled, admin_access_token },
        safety: SafetyConfig {
            max_new_restrictions: raw.safety.max_new_restrictions,
            max_room_share: raw.safety.max_room_share,
        },
        dry_run: raw.dry_run,
    })
}

/// The host of what follows `http://` or `https://`: no user info, port, path or brackets.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// `localhost`, 127.0.0.0/8 or `::1`: a host where clear text never leaves the machine.
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback(),
        Ok(std::net::IpAddr::V6(a)) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|a| a.is_loopback()),
        Err(_) => false,
    }
}

/// The entries of `policy_lists`: each a room id or alias, or a map with `room` and
/// optionally `actions` and `write`. A list given twice is an error: which entry's
/// `actions` and `write` apply would be a guess.
fn policy_lists(entries: &[Value]) -> Result<Vec<PolicyListConfig>, ConfigError> {
    let mut out: Vec<PolicyListConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("policy_lists[{i}]");
        let list = match entry {
            Value::String(room) => PolicyListConfig { room: room.clone(), actions: None, write: false },
            Value::Mapping(map) => {
                check_map_keys(&key, map, POLICY_LIST_KEYS)?;
                let room = match map.get("room") {
                    None | Some(Value::Null) => {
                        return Err(ConfigError::new(format!("{key}.room"), "is required but missing"));
                    }
                    Some(Value::String(r)) => r.clone(),
                    Some(_) => {
                        return Err(ConfigError::new(
                            format!("{key}.room"),
                            "expected a room id (!...) or alias (#name:server) as a string",
                        ));
                    }
                };
                let actions = match map.get("actions") {
                    None | Some(Value::Null) => None,
                    Some(Value::Sequence(names)) => {
                        let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
                        let names = names.ok_or_else(|| {
                            ConfigError::new(
                                format!("{key}.actions"),
                                format!("expected a list of action names ({})", ListTrust::NAMES.join(", ")),
                            )
                        })?;
                        Some(ListTrust::parse(names).map_err(|e| ConfigError::new(format!("{key}.actions"), e))?)
                    }
                    Some(_) => {
                        return Err(ConfigError::new(
                            format!("{key}.actions"),
                            format!("expected a list of action names, like [{}]", ListTrust::NAMES.join(", ")),
                        ));
                    }
                };
                let write = match map.get("write") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(ConfigError::new(format!("{key}.write"), "expected true or false")),
                };
                PolicyListConfig { room, actions, write }
            }
            _ => {
                return Err(ConfigError::new(
                    key,
                    "expected a room id or alias, or a mapping with `room` (and optionally `actions`, `write`)",
                ));
            }
        };
        let room_key = if matches!(entry, Value::Mapping(_)) { format!("{key}.room") } else { key.clone() };
        check_room(&room_key, &list.room)?;
        if let Some(j) = out.iter().position(|l| l.room == list.room) {
            return Err(ConfigError::new(
                room_key,
                format!("`{}` is already listed as policy_lists[{j}]; give each list once", list.room),
            ));
        }
        out.push(list);
    }
    Ok(out)
}

fn credentials(raw: &RawConfig, base: &Path, env: &dyn Environment) -> Result<Credentials, ConfigError> {
    let password = secret(
        base,
        env,
        ("password", raw.password.as_deref()),
        ("password_file", raw.password_file.as_deref()),
        ENV_PASSWORD,
    )?;
    let token = secret(
        base,
        env,
        ("access_token", raw.access_token.as_deref()),
        ("access_token_file", raw.access_token_file.as_deref()),
        ENV_ACCESS_TOKEN,
    )?;
    match (password, token) {
        (Some(_), Some(_)) => {
            Err(ConfigError::new("access_token", "give either a password or an access token, not both"))
        }
        (Some(p), None) => Ok(Credentials::Password(p)),
        (None, Some(t)) => Ok(Credentials::AccessToken(t)),
        (None, None) => Err(ConfigError::new(
            "password",
            format!(
                "no credentials: set password, password_file, access_token or access_token_file \
                 (or the environment variable {ENV_PASSWORD} or {ENV_ACCESS_TOKEN})"
            ),
        )),
    }
}

/// One secret from, in order: the inline key, the `_file` key, the environment variable.
/// Giving both the inline key and the file is an error: which one wins would be a guess.
fn secret(
    base: &Path,
    env: &dyn Environment,
    inline: (&str, Option<&str>),
    file: (&str, Option<&Path>),
    env_name: &str,
) -> Result<Option<Secret>, ConfigError> {
    match (inline.1, file.1) {
        (Some(_), Some(_)) => {
            Err(ConfigError::new(file.0, format!("give either `{}` or `{}`, not both", inline.0, file.0)))
        }
        (Some(v), None) => {
            if v.is_empty() {
                Err(ConfigError::new(inline.0, "must not be empty"))
            } else {
                Ok(Some(Secret::new(v)))
            }
        }
        (None, Some(p)) => {
            let path = base.join(p);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(file.0, format!("cannot read {}: {e}", path.display())))?;
            let v = text.trim_end_matches(['\n', '\r']);
            if v.is_empty() {
                Err(ConfigError::new(file.0, format!("{} is empty", path.display())))
            } else {
                Ok(Some(Secret::new(v)))
            }
        }
        (None, None) => Ok(env.var(env_name).map(Secret::new)),
    }
}

/// `@localpart:server` (the localpart may hold glob characters for protected users).
pub fn is_user_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('@') else { return false };
    match rest.split_once(':') {
        Some((local, server)) => !local.is_empty() && !server.is_empty() && !s.contains(char::is_whitespace),
        None => false,
    }
}

fn check_room(key: &str, r: &str) -> Result<(), ConfigError> {
    // Room ids of version 12 are `!` + a hash with no server part: never require one.
    let ok = match r.chars().next() {
        Some('!') => r.len() > 1 && !r.contains(char::is_whitespace),
        Some('#') => {
            r.split_once(':').is_some_and(|(l, s)| l.len() > 1 && !s.is_empty()) && !r.contains(char::is_whitespace)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("`{r}` is not a room id (!...) or alias (#name:server)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
homeserver_url: "http://127.0.0.1:8008"
user_id: "@hush:localhost"
password: "pw"
data_dir: "./data"
management_room: "!abc"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/nonexistent"), &BTreeMap::new())
    }

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse(text, Path::new("/nonexistent"), &env)
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.command_prefix, "!hush");
        assert_eq!(c.mute.batch_window_ms, 250);
        assert!(c.mute.membership_room_versions.is_empty());
        assert!(!c.dry_run);
        assert!(!c.suspension.enabled);
        assert_eq!(c.credentials, Credentials::Password(Secret::new("pw")));
    }

    #[test]
    fn example_config_passes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml.example");
        let env: BTreeMap<String, String> = BTreeMap::new();
        let c = Config::load(&path, &env).unwrap();
        assert_eq!(c.user_id, "@hush:localhost");
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let e = parse(&format!("{MINIMAL}protected_room: []\n")).unwrap_err();
        assert_eq!(e.key, "protected_room");
        assert!(e.reason.contains("did you mean `protected_rooms`"), "{e}");
        let e = parse(&format!("{MINIMAL}mute:\n  membership_room_version: []\n")).unwrap_err();
        assert_eq!(e.key, "mute.membership_room_version");
        assert!(e.reason.contains("did you mean `membership_room_versions`"), "{e}");
    }

    #[test]
    fn unknown_key_far_from_everything_lists_known_keys() {
        let e = parse(&format!("{MINIMAL}zzzzzzzzzz: 1\n")).unwrap_err();
        assert!(e.reason.contains("known keys here"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse(&format!("{MINIMAL}dry_run: maybe\n")).unwrap_err();
        assert_eq!(e.key, "dry_run");
        let e = parse(&format!("{MINIMAL}mute:\n  batch_window_ms: soon\n")).unwrap_err();
        assert_eq!(e.key, "mute.batch_window_ms");
        let e = parse(&format!("{MINIMAL}policy_lists: \"#one:localhost\"\n")).unwrap_err();
        assert_eq!(e.key, "policy_lists");
    }

    #[test]
    fn missing_required_key_is_named() {
        let text = MINIMAL.replace("user_id: \"@hush:localhost\"\n", "");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "user_id");
        assert!(e.reason.contains("required"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&MINIMAL.replace("@hush:localhost", "hush")).unwrap_err();
        assert_eq!(e.key, "user_id");
        let e = parse(&MINIMAL.replace("http://127.0.0.1:8008", "127.0.0.1:8008")).unwrap_err();
        assert_eq!(e.key, "homeserver_url");
        let e = parse(&format!("{MINIMAL}protected_rooms: [\"lobby\"]\n")).unwrap_err();
        assert_eq!(e.key, "protected_rooms[0]");
        let e = parse(&format!("{MINIMAL}protected_users: [\"alice\"]\n")).unwrap_err();
        assert_eq!(e.key, "protected_users[0]");
        let e = parse(&format!("{MINIMAL}command_prefix: \"\"\n")).unwrap_err();
        assert_eq!(e.key, "command_prefix");
    }

    #[test]
    fn v12_room_ids_without_server_are_accepted() {
        let c = parse(&format!(
            "{MINIMAL}protected_rooms: [\"!3iYp7tDmoFGHFoRLoUhlGsRJ2l9NDbzWqTUvwbNcm94\", \"#lobby:localhost\"]\n"
        ))
        .unwrap();
        assert_eq!(c.protected_rooms.len(), 2);
    }

    #[test]
    fn secrets_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let text = MINIMAL.replace("password: \"pw\"", "password_file: \"pw\"");
        let c = Config::parse(&text, dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(c.credentials, Credentials::Password(Secret::new("from-file")));

        let text = MINIMAL.replace("password: \"pw\"\n", "");
        let c = parse_env(&text, &[(ENV_ACCESS_TOKEN, "tok")]).unwrap();
        assert_eq!(c.credentials, Credentials::AccessToken(Secret::new("tok")));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "password");

        let e = Config::parse(
            &MINIMAL.replace("password: \"pw\"", "password_file: \"missing\""),
            dir.path(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.key, "password_file");
        let e = parse(&format!("{MINIMAL}password_file: \"x\"\n")).unwrap_err();
        assert_eq!(e.key, "password_file");
        let e = parse(&format!("{MINIMAL}access_token: \"t\"\n")).unwrap_err();
        assert_eq!(e.key, "access_token");
    }

    #[test]
    fn suspension_needs_an_admin_token() {
        let e = parse(&format!("{MINIMAL}suspension:\n  enabled: true\n")).unwrap_err();
        assert_eq!(e.key, "suspension.admin_access_token_file");
        let c =
            parse_env(&format!("{MINIMAL}suspension:\n  enabled: true\n"), &[(ENV_ADMIN_ACCESS_TOKEN, "adm")]).unwrap();
        assert!(c.suspension.enabled);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = parse(&MINIMAL.replace("\"pw\"", "\"hunter2-very-secret\"")).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn policy_lists_take_both_shapes() {
        let c = parse(&format!(
            "{MINIMAL}policy_lists:\n  - \"#own:localhost\"\n  - room: \"#cme:example.org\"\n    actions: [ban, mute]\n    write: true\n  - room: \"!plain\"\ndefault_policy_list: \"#own:localhost\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.policy_lists,
            vec![
                PolicyListConfig { room: "#own:localhost".into(), actions: None, write: false },
                PolicyListConfig {
                    room: "#cme:example.org".into(),
                    actions: Some(ListTrust { ban: true, mute: true, suspend: false }),
                    write: true,
                },
                PolicyListConfig { room: "!plain".into(), actions: None, write: false },
            ]
        );
        assert_eq!(c.policy_list_rooms(), vec!["#own:localhost", "#cme:example.org", "!plain"]);
        assert_eq!(c.list_trust("#own:localhost"), ListTrust::DEFAULT_LIST);
        assert_eq!(c.list_trust("#cme:example.org"), ListTrust { ban: true, mute: true, suspend: false });
        assert_eq!(c.list_trust("!plain"), ListTrust::OTHER_LIST);
        assert_eq!(c.list_trust("#not-configured:x"), ListTrust::OTHER_LIST);
        assert_eq!(c.writable_lists(), vec!["#own:localhost", "#cme:example.org"]);
        assert_eq!(c.configured_rooms(), vec!["!abc", "#own:localhost", "#cme:example.org", "!plain"]);
    }

    #[test]
    fn configured_actions_win_over_the_default_list_trust() {
        let c = parse(&format!(
            "{MINIMAL}policy_lists:\n  - room: \"#own:localhost\"\n    actions: [mute]\ndefault_policy_list: \"#own:localhost\"\n"
        ))
        .unwrap();
        assert_eq!(c.list_trust("#own:localhost"), ListTrust { ban: false, mute: true, suspend: false });
        assert_eq!(c.writable_lists(), vec!["#own:localhost"]);
        let c = parse(&format!("{MINIMAL}policy_lists:\n  - room: \"#x:y\"\n    actions: []\n")).unwrap();
        assert_eq!(c.list_trust("#x:y").to_string(), "nothing");
        assert!(c.writable_lists().is_empty());
    }

    #[test]
    fn policy_list_errors_name_the_entry() {
        let list = |entry: &str| parse(&format!("{MINIMAL}policy_lists:\n  - \"#a:x\"\n  - {entry}\n")).unwrap_err();
        let e = list("{room: \"#b:x\", actions: [ban, kick]}");
        assert_eq!(e.key, "policy_lists[1].actions");
        assert_eq!(
            e.to_string(),
            "config key `policy_lists[1].actions`: unknown action `kick` (the actions are: ban, mute, suspend)"
        );
        let e = list("{room: \"#b:x\", actions: [ban, ban]}");
        assert_eq!(e.key, "policy_lists[1].actions");
        assert!(e.reason.contains("twice"), "{e}");
        let e = list("{room: \"#b:x\", actions: ban}");
        assert_eq!(e.key, "policy_lists[1].actions");
        assert!(e.reason.contains("list of action names"), "{e}");
        let e = list("{room: \"#b:x\", actions: [1]}");
        assert_eq!(e.key, "policy_lists[1].actions");
        let e = list("{room: \"#b:x\", action: [ban]}");
        assert_eq!(e.key, "policy_lists[1].action");
        assert!(e.reason.contains("did you mean `actions`"), "{e}");
        let e = list("{rooom: \"#b:x\"}");
        assert_eq!(e.key, "policy_lists[1].rooom");
        assert!(e.reason.contains("did you mean `room`"), "{e}");
        let e = list("{actions: [ban]}");
        assert_eq!(e.key, "policy_lists[1].room");
        assert!(e.reason.contains("required but missing"), "{e}");
        let e = list("{room: [\"#b:x\"]}");
        assert_eq!(e.key, "policy_lists[1].room");
        let e = list("{room: \"lobby\"}");
        assert_eq!(e.key, "policy_lists[1].room");
        assert!(e.reason.contains("is not a room id"), "{e}");
        let e = list("{room: \"#b:x\", write: yes please}");
        assert_eq!(e.key, "policy_lists[1].write");
        let e = list("\"lobby\"");
        assert_eq!(e.key, "policy_lists[1]");
        let e = list("42");
        assert_eq!(e.key, "policy_lists[1]");
        assert!(e.reason.contains("mapping with `room`"), "{e}");
        let e = list("{room: \"#a:x\", write: true}");
        assert_eq!(e.key, "policy_lists[1].room");
        assert!(e.reason.contains("already listed as policy_lists[0]"), "{e}");
    }

    #[test]
    fn safety_has_defaults_and_limits() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 10, max_room_share: 0.25 });
        let c = parse(&format!("{MINIMAL}safety:\n  max_new_restrictions: 50\n  max_room_share: 1\n")).unwrap();
        assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 50, max_room_share: 1.0 });
        let c = parse(&format!("{MINIMAL}safety:\n  max_room_share: 0.1\n")).unwrap();
        assert_eq!(c.safety, SafetyConfig { max_new_restrictions: 10, max_room_share: 0.1 });
        for bad in ["0", "1.5", "-0.2", ".nan"] {
            let e = parse(&format!("{MINIMAL}safety:\n  max_room_share: {bad}\n")).unwrap_err();
            assert_eq!(e.key, "safety.max_room_share", "{bad}");
            assert!(e.reason.contains("more than 0 and at most 1"), "{e}");
        }
        let e = parse(&format!("{MINIMAL}safety:\n  max_new_restriction: 5\n")).unwrap_err();
        assert_eq!(e.key, "safety.max_new_restriction");
        assert!(e.reason.contains("did you mean `max_new_restrictions`"), "{e}");
        let e = parse(&format!("{MINIMAL}safety:\n  max_new_restrictions: -1\n")).unwrap_err();
        assert_eq!(e.key, "safety.max_new_restrictions");
        let e = parse(&format!("{MINIMAL}safety: 3\n")).unwrap_err();
        assert_eq!(e.key, "safety");
    }

    #[test]
    fn clear_text_http_only_to_this_machine() {
        for ok in [
            "http://127.0.0.1:8008",
            "http://127.8.9.10",
            "http://localhost:8008/",
            "http://LOCALHOST",
            "http://[::1]:8008",
            "http://user@127.0.0.1:8008/path",
            "https://matrix.example.org",
            "https://203.0.113.7:8448",
        ] {
            let c = parse(&MINIMAL.replace("http://127.0.0.1:8008", ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!c.allow_insecure_http);
        }
        for bad in [
            "http://matrix.example.org",
            "http://192.168.1.2:8008",
            "http://[2001:db8::1]:8008",
            "http://localhost.example.org",
            "http://127.0.0.1.example.org",
            "http://127.0.0.1@evil.example.org",
        ] {
            let e = parse(&MINIMAL.replace("http://127.0.0.1:8008", bad)).unwrap_err();
            assert_eq!(e.key, "homeserver_url", "{bad}");
            assert_eq!(
                e.to_string(),
                "config key `homeserver_url`: http:// sends the password and tokens in clear text to a host \
                 that is not this machine; use https:// or set allow_insecure_http: true"
            );
            let c = parse(&format!("{}allow_insecure_http: true\n", MINIMAL.replace("http://127.0.0.1:8008", bad)))
                .unwrap();
            assert!(c.allow_insecure_http);
        }
    }

    #[test]
    fn secret_files_sit_next_to_the_config_as_under_systemd_credentials() {
        // systemd's LoadCredential= puts config.yaml, password and admin-token side by side
        // in $CREDENTIALS_DIRECTORY; hush is started with --config there.
        let creds = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace("password: \"pw\"", "password_file: password")
            + "suspension:\n  enabled: true\n  admin_access_token_file: admin-token\n";
        std::fs::write(creds.path().join("config.yaml"), text).unwrap();
        std::fs::write(creds.path().join("password"), "secret-pw\n").unwrap();
        std::fs::write(creds.path().join("admin-token"), "adm-tok").unwrap();
        let c = Config::load(&creds.path().join("config.yaml"), &BTreeMap::new()).unwrap();
        assert_eq!(c.credentials, Credentials::Password(Secret::new("secret-pw")));
        assert_eq!(c.suspension.admin_access_token, Some(Secret::new("adm-tok")));
    }

    #[test]
    fn not_yaml_or_not_a_mapping() {
        assert!(parse("a: [").unwrap_err().reason.contains("not valid YAML"));
        assert!(parse("- 1\n- 2\n").unwrap_err().reason.contains("mapping"));
    }
}
