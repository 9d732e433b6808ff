//! Validation of the raw file into a [`Config`]: URLs, room ids, policy list entries, credentials and secrets.

use std::path::Path;

use serde_yaml_ng::Value;

use super::raw::{check_map_keys, RawConfig, POLICY_LIST_KEYS};
use super::*;

pub(super) fn validate(raw: RawConfig, base: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
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
    let protections = super::protections::validate(raw.protections, raw.default_policy_list.is_some())?;
    let metrics = super::metrics::validate(raw.metrics)?;
    let share = raw.safety.max_room_share;
    // Written so that NaN fails too.
    if !(share > 0.0 && share <= 1.0) {
        return Err(ConfigError::new(
            "safety.max_room_share",
            format!("must be a share of a room's members, more than 0 and at most 1 (0.25 is a quarter), not {share}"),
        ));
    }
    let redaction = redaction(&raw.redaction)?;
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
        redaction,
        protections,
        metrics,
    })
}

/// The most `redaction.window` may be: older events are not "recent".
const MAX_REDACTION_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

fn redaction(raw: &super::raw::RawRedaction) -> Result<RedactionConfig, ConfigError> {
    let (mut on_ban, mut on_mute) = (false, false);
    for (i, what) in raw.redact_on.iter().enumerate() {
        let flag = match what.to_ascii_lowercase().as_str() {
            "ban" => &mut on_ban,
            "mute" => &mut on_mute,
            _ => {
                return Err(ConfigError::new(
                    format!("redaction.redact_on[{i}]"),
                    format!("`{what}` is not a restriction that redacts: use ban or mute (or [] for never)"),
                ))
            }
        };
        if *flag {
            return Err(ConfigError::new(format!("redaction.redact_on[{i}]"), format!("`{what}` is listed twice")));
        }
        *flag = true;
    }
    let window = hush_core::commands::parse_duration(&raw.window)
        .ok()
        .filter(|w| *w <= MAX_REDACTION_WINDOW)
        .ok_or_else(|| {
            ConfigError::new(
                "redaction.window",
                format!("`{}` is not a duration like 24h, 30m or 7d, more than 0 and at most 30d", raw.window),
            )
        })?;
    if raw.max_per_room == 0 || raw.max_per_room > hush_core::commands::MAX_REDACT_LIMIT {
        return Err(ConfigError::new(
            "redaction.max_per_room",
            format!("must be from 1 to {}, not {}", hush_core::commands::MAX_REDACT_LIMIT, raw.max_per_room),
        ));
    }
    Ok(RedactionConfig { on_ban, on_mute, window, max_per_room: raw.max_per_room, msc4293: raw.msc4293 })
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

pub(super) fn check_room(key: &str, r: &str) -> Result<(), ConfigError> {
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
