//! `allow`: writing an exception rule to `default_policy_list` and removing the list's own restrictions of the same target (owns no state).

use hush_core::commands::Target;
use hush_core::policy::{EntityKind, Recommendation, Rule};
use serde_json::json;

use super::{rule_state_key, rules_for, Context, Reply};

/// The kind of rule a target is written as: a server rule for a server, else a user rule.
pub(super) fn kind_of(target: &Target) -> EntityKind {
    match target {
        Target::Server(_) => EntityKind::Server,
        Target::User(_) | Target::Glob(_) => EntityKind::User,
    }
}

/// Writes an `m.allow` rule for `target` to `default_policy_list`. The list's own ban and
/// mute rules naming exactly this target are removed: within one list a restriction as
/// close as the allow would win, and the later decision of the community's own list is
/// the one that counts (a later `mute` or `ban` wins over this allow the same way).
pub(super) async fn allow(ctx: &Context<'_>, target: &Target, reason: Option<String>) -> Reply {
    let Some(list) = ctx.config.default_policy_list.clone() else {
        return Reply::error(
            "Cannot allow: no default_policy_list is configured, so hush has nowhere to write the rule.".to_owned(),
        );
    };
    let list_id = match crate::matrix::resolve(ctx.client, &list).await {
        Ok(id) => id,
        Err(e) => return Reply::error(format!("Cannot allow: the policy list {list} cannot be resolved: {e:#}")),
    };
    let entity = target.as_str();
    let kind = kind_of(target);
    let event_type = match kind {
        EntityKind::Server => "m.policy.rule.server",
        _ => "m.policy.rule.user",
    };
    let reason = reason.unwrap_or_default();
    let content = json!({"entity": entity, "recommendation": Recommendation::Allow.as_str(), "reason": reason});
    let state_key = rule_state_key(&Recommendation::Allow, entity);
    if let Err(e) = crate::matrix::put_state(ctx.client, &list_id, event_type, &state_key, &content).await {
        return Reply::error(format!("Cannot write the allow rule to {list}: {e:#}"));
    }
    let own: Vec<Rule> = rules_for(ctx, entity)
        .await
        .into_iter()
        .filter(|r| {
            r.id.room_id == list_id.as_str()
                && r.id.kind == kind
                && r.entity.as_deref() == Some(entity)
                && r.recommendation.restriction().is_some()
        })
        .collect();
    let mut replaced = Vec::new();
    let mut kept = Vec::new();
    for r in own {
        let at = format!("`{}`", r.id.state_key);
        match crate::matrix::put_state(ctx.client, &list_id, r.event_type(), &r.id.state_key, &json!({})).await {
            Ok(()) => replaced.push(at),
            Err(e) => kept.push(format!("{at} (hush cannot remove it: {e:#}; it still applies)")),
        }
    }
    let what = if kind == EntityKind::Server { format!("users on {entity}") } else { entity.to_owned() };
    let why = if reason.is_empty() { String::new() } else { format!(", reason: {reason}") };
    let mut text = format!(
        "allow {entity}{why}: rule `{state_key}` written to {list}; the bans and mutes other lists have for {what} no longer apply in the protected rooms."
    );
    if !replaced.is_empty() {
        text.push_str(&format!(" Removed this list's own rule(s) for {entity}: {}.", replaced.join(", ")));
    }
    if !kept.is_empty() {
        text.push_str(&format!(" Still in this list: {}.", kept.join(", ")));
    }
    Reply::ok(text)
}
