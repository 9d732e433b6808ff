//! The `protections` section: flood protection and escalation, off by default; its file shape, known keys and validation.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::check_map_keys;
use super::ConfigError;

pub(super) const PROTECTIONS_KEYS: &[&str] = &["flood", "escalation"];
pub(super) const FLOOD_KEYS: &[&str] = &["enabled", "max_events", "per", "mute_for"];
pub(super) const ESCALATION_KEYS: &[&str] = &["within", "max_mute"];

/// What the protections do; every protection is off unless enabled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtectionsConfig {
    /// `None`: flood protection is off.
    pub flood: Option<FloodConfig>,
    pub escalation: EscalationConfig,
}

/// More than `max_events` events within `per` from one user in one protected room mutes
/// them there for `mute_for` (a local rule, see the README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodConfig {
    pub max_events: u32,
    pub per: Duration,
    pub mute_for: Duration,
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
    escalation: RawEscalation,
}

#[derive(Deserialize, Default)]
struct RawFlood {
    #[serde(default)]
    enabled: bool,
    max_events: Option<u32>,
    per: Option<String>,
    mute_for: Option<String>,
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
    for (section, keys) in [("flood", FLOOD_KEYS), ("escalation", ESCALATION_KEYS)] {
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

pub(super) fn validate(raw: RawProtections) -> Result<ProtectionsConfig, ConfigError> {
    let f = raw.flood;
    let max_events = f.max_events.unwrap_or(10);
    if max_events == 0 {
        return Err(ConfigError::new("protections.flood.max_events", "must be at least 1"));
    }
    let per = duration("protections.flood.per", f.per.as_deref(), Duration::from_secs(10))?;
    let mute_for = duration("protections.flood.mute_for", f.mute_for.as_deref(), Duration::from_secs(600))?;
    let defaults = EscalationConfig::default();
    let within = duration("protections.escalation.within", raw.escalation.within.as_deref(), defaults.within)?;
    let max_mute = duration("protections.escalation.max_mute", raw.escalation.max_mute.as_deref(), defaults.max_mute)?;
    Ok(ProtectionsConfig {
        flood: f.enabled.then_some(FloodConfig { max_events, per, mute_for }),
        escalation: EscalationConfig { within, max_mute },
    })
}
