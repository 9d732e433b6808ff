//! The `protections` section: flood protection, mention spam and escalation, off by default; its file shape, known keys and validation.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::check_map_keys;
use super::ConfigError;

pub(super) const PROTECTIONS_KEYS: &[&str] = &["flood", "mention_spam", "escalation"];
pub(super) const FLOOD_KEYS: &[&str] = &["enabled", "max_events", "per", "mute_for", "rooms", "publish"];
pub(super) const MENTION_SPAM_KEYS: &[&str] = &["enabled", "max_mentions", "mute_for", "redact", "rooms", "publish"];
pub(super) const ESCALATION_KEYS: &[&str] = &["within", "max_mute"];

/// What the protections do; every protection is off unless enabled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtectionsConfig {
    /// `None`: flood protection is off.
    pub flood: Option<FloodConfig>,
    /// `None`: the mention-spam protection is off.
    pub mention_spam: Option<MentionSpamConfig>,
    pub escalation: EscalationConfig,
}

/// Where a protection acts and where its mutes go (the keys every protection has).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    /// The protected rooms it watches (ids or aliases); `None`: all of them.
    pub rooms: Option<Vec<String>>,
    /// Its mutes are written to `default_policy_list` instead of the local list.
    pub publish: bool,
}

/// A message mentioning more than `max_mentions` distinct users, or `@room` from a member
/// below the room's `notifications.room` level, mutes its sender for `mute_for` and (with
/// `redact`) redacts the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionSpamConfig {
    pub max_mentions: u32,
    pub mute_for: Duration,
    pub redact: bool,
    pub reach: Reach,
}

/// More than `max_events` events within `per` from one user in one protected room mutes
/// them there for `mute_for` (a local rule, see the README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodConfig {
    pub max_events: u32,
    pub per: Duration,
    pub mute_for: Duration,
    pub reach: Reach,
}

/// A second trigger within `within` doubles the user's last mute, up to `max_mute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationConfig {
    pub within: Duration,
    pub max_mute: Duration,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig { within: Duration::from_secs(86_400), max_mute: Duration::from_secs(86_400) }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RawProtections {
    #[serde(default)]
    flood: RawFlood,
    #[serde(default)]
    mention_spam: RawMentionSpam,
    #[serde(default)]
    escalation: RawEscalation,
}

#[derive(Deserialize, Default)]
struct RawMentionSpam {
    #[serde(default)]
    enabled: bool,
    max_mentions: Option<u32>,
    mute_for: Option<String>,
    redact: Option<bool>,
    rooms: Option<Vec<String>>,
    #[serde(default)]
    publish: bool,
}

#[derive(Deserialize, Default)]
struct RawFlood {
    #[serde(default)]
    enabled: bool,
    max_events: Option<u32>,
    per: Option<String>,
    mute_for: Option<String>,
    rooms: Option<Vec<String>>,
    #[serde(default)]
    publish: bool,
}

#[derive(Deserialize, Default)]
struct RawEscalation {
    within: Option<String>,
    max_mute: Option<String>,
}

/// Checks the keys of `protections` and its sections.
pub(super) fn check_keys(map: &serde_yaml_ng::Mapping) -> Result<(), ConfigError> {
    let Some(p) = map.get("protections") else { return Ok(()) };
    let inner = match p {
        Value::Null => return Ok(()),
        Value::Mapping(inner) => inner,
        _ => return Err(ConfigError::new("protections", "expected a mapping of keys to values")),
    };
    check_map_keys("protections", inner, PROTECTIONS_KEYS)?;
    for (section, keys) in [("flood", FLOOD_KEYS), ("mention_spam", MENTION_SPAM_KEYS), ("escalation", ESCALATION_KEYS)]
    {
        match inner.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => check_map_keys(&format!("protections.{section}"), m, keys)?,
            Some(_) => {
                return Err(ConfigError::new(format!("protections.{section}"), "expected a mapping of keys to values"))
            }
        }
    }
    Ok(())
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else { return Ok(default) };
    let d = hush_core::commands::parse_duration(text).map_err(|e| ConfigError::new(key, e))?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(d)
}

/// `rooms` and `publish` of the protection `section`: each room a room id or alias, none
/// twice, the list not empty; `publish` only with a list to publish to.
fn reach(
    section: &str,
    rooms: Option<Vec<String>>,
    publish: bool,
    has_default_list: bool,
) -> Result<Reach, ConfigError> {
    if let Some(rooms) = &rooms {
        if rooms.is_empty() {
            return Err(ConfigError::new(
                format!("protections.{section}.rooms"),
                "is empty: leave it out to watch every protected room, or name the rooms",
            ));
        }
        for (i, r) in rooms.iter().enumerate() {
            let key = format!("protections.{section}.rooms[{i}]");
            super::validate::check_room(&key, r)?;
            if rooms[..i].contains(r) {
                return Err(ConfigError::new(key, format!("`{r}` is listed twice")));
            }
        }
    }
    if publish && !has_default_list {
        return Err(ConfigError::new(
            format!("protections.{section}.publish"),
            "needs default_policy_list: it is the list the mutes are published to",
        ));
    }
    Ok(Reach { rooms, publish })
}

pub(super) fn validate(raw: RawProtections, has_default_list: bool) -> Result<ProtectionsConfig, ConfigError> {
    let m = raw.mention_spam;
    let max_mentions = m.max_mentions.unwrap_or(10);
    if max_mentions == 0 {
        return Err(ConfigError::new("protections.mention_spam.max_mentions", "must be at least 1"));
    }
    let mention_mute = duration("protections.mention_spam.mute_for", m.mute_for.as_deref(), Duration::from_secs(600))?;
    let mention_reach = reach("mention_spam", m.rooms, m.publish, has_default_list)?;
    let mention_spam = m.enabled.then_some(MentionSpamConfig {
        max_mentions,
        mute_for: mention_mute,
        redact: m.redact.unwrap_or(true),
        reach: mention_reach,
    });
    let f = raw.flood;
    let max_events = f.max_events.unwrap_or(10);
    if max_events == 0 {
        return Err(ConfigError::new("protections.flood.max_events", "must be at least 1"));
    }
    let per = duration("protections.flood.per", f.per.as_deref(), Duration::from_secs(10))?;
    let mute_for = duration("protections.flood.mute_for", f.mute_for.as_deref(), Duration::from_secs(600))?;
    let flood_reach = reach("flood", f.rooms, f.publish, has_default_list)?;
    let defaults = EscalationConfig::default();
    let within = duration("protections.escalation.within", raw.escalation.within.as_deref(), defaults.within)?;
    let max_mute = duration("protections.escalation.max_mute", raw.escalation.max_mute.as_deref(), defaults.max_mute)?;
    Ok(ProtectionsConfig {
        flood: f.enabled.then_some(FloodConfig { max_events, per, mute_for, reach: flood_reach }),
        mention_spam,
        escalation: EscalationConfig { within, max_mute },
    })
}
