//! Naive reference evaluator (every rule checked for every user): test oracle and bench baseline.

use std::cmp::Ordering;

use super::glob::{glob_match, is_glob};
use super::index::Decision;
use super::rule::{host_without_port, sha256_of, EntityKind, Recommendation, Restriction, Rule};

/// The rules in force, in a flat list. Same semantics as [`super::PolicyIndex::decide`],
/// none of its structure.
#[derive(Debug, Default, Clone)]
pub struct NaiveIndex {
    /// Effective rules (one per identity; precedence already resolved by the caller).
    pub rules: Vec<Rule>,
}

fn matches(rule: &Rule, kind: EntityKind, entity: &str) -> bool {
    if rule.id.kind != kind {
        return false;
    }
    match (&rule.entity, &rule.sha256) {
        (Some(e), _) if is_glob(e) => glob_match(e, entity),
        (Some(e), _) => e.eq_ignore_ascii_case(entity),
        (None, Some(d)) => {
            let form = if kind == EntityKind::Server { entity.to_ascii_lowercase() } else { entity.to_owned() };
            *d == sha256_of(&form)
        }
        (None, None) => false,
    }
}

/// Exact user id or hash 2, user glob 1, server rule 0.
fn specificity(rule: &Rule) -> u8 {
    match (rule.id.kind, &rule.entity) {
        (EntityKind::User, Some(e)) if is_glob(e) => 1,
        (EntityKind::User, _) => 2,
        _ => 0,
    }
}

impl NaiveIndex {
    /// The effective decision for `user_id` at `now_ms`, by scanning every rule.
    pub fn decide(&self, user_id: &str, now_ms: u64) -> Option<Decision> {
        let server = user_id.split_once(':').map(|(_, s)| s);
        let hit = |rule: &Rule| {
            matches(rule, EntityKind::User, user_id)
                || server.is_some_and(|s| {
                    matches(rule, EntityKind::Server, s)
                        || host_without_port(s).is_some_and(|h| matches(rule, EntityKind::Server, h))
                })
        };
        let allows: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.recommendation == Recommendation::Allow && r.is_active(now_ms) && hit(r))
            .collect();
        let mut best: Option<(Restriction, u64, &Rule)> = None;
        for rule in &self.rules {
            let Some(r) = rule.recommendation.restriction() else {
                continue;
            };
            if !rule.is_active(now_ms) || !hit(rule) {
                continue;
            }
            // Lifted by an allow of another list, or of its own list naming the user more
            // closely.
            if allows.iter().any(|a| a.id.room_id != rule.id.room_id || specificity(a) > specificity(rule)) {
                continue;
            }
            let exp = rule.expiry_ms.unwrap_or(u64::MAX);
            let better = match best {
                None => true,
                Some((br, be, b)) => match (r, exp).cmp(&(br, be)) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => rule.id < b.id,
                },
            };
            if better {
                best = Some((r, exp, rule));
            }
        }
        best.map(|(action, exp, rule)| Decision {
            action,
            expires_at_ms: (exp != u64::MAX).then_some(exp),
            rule: rule.id.clone(),
            reason: rule.reason.clone(),
            sender: rule.sender.clone(),
        })
    }
}
