//! hush: a Matrix moderation bot that enforces mutes, bans and expiring rules from policy lists.
//!
//! The pure core (policy model, matcher, timer wheel, command parser) lives in `hush-core`;
//! this crate is the imperative shell around it.

pub mod backoff;
pub mod bot;
pub mod config;
pub mod enforce;
pub mod engine;
pub mod escalation_memory;
pub mod following;
pub mod holds;
pub mod instance;
pub mod ledger;
pub mod local_rules;
pub mod logging;
pub mod management;
pub mod matrix;
pub mod metrics;
pub mod rate_gate;
pub mod rate_limits;
pub mod redaction;
pub mod rooms;
pub mod runtime;
pub mod suspension;
