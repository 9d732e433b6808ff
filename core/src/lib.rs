//! hush-core: the functional core of hush (policy model, matcher, timer wheel, record of what hush did and its action log, reconciler, server ACL content, command parser); no network.

pub mod commands;
pub mod guard;
pub mod history;
pub mod mentions;
pub mod policy;
pub mod power_levels;
pub mod protections;
pub mod reconcile;
pub mod record;
pub mod schedule;
pub mod server_acl;
