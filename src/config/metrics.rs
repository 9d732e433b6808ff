//! The `metrics` section: where the opt-in metrics and health listener listens (off when absent); its file shape, known keys and validation.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::check_map_keys;
use super::ConfigError;

pub(super) const METRICS_KEYS: &[&str] = &["listen"];

/// The metrics and health listener (`/metrics`, `/health`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// The address to listen on; `None`: no listener. A non-loopback address exposes the
    /// endpoints to whoever can reach it: the operator's choice.
    pub listen: Option<SocketAddr>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawMetrics {
    listen: Option<String>,
}

/// Checks the keys of `metrics`.
pub(super) fn check_keys(map: &serde_yaml_ng::Mapping) -> Result<(), ConfigError> {
    match map.get("metrics") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Mapping(inner)) => check_map_keys("metrics", inner, METRICS_KEYS),
        Some(_) => Err(ConfigError::new("metrics", "expected a mapping of keys to values")),
    }
}

pub(super) fn validate(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let Some(text) = raw.listen else { return Ok(MetricsConfig::default()) };
    let listen = text.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            "metrics.listen",
            format!("`{text}` is not an IP address and port like 127.0.0.1:9100 or [::1]:9100"),
        )
    })?;
    Ok(MetricsConfig { listen: Some(listen) })
}
