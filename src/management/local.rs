//! Protections' local mutes in commands: `unmute` takes one out (through the engine, which lifts it), `mutes` names the protection behind one (owns no state).

use hush_core::policy::Rule;
use tokio::sync::oneshot;

use super::Context;
use crate::engine::Input;
use crate::local_rules::LOCAL_LIST;

/// The protection behind a rule of the local list, by its state key (`hush.flood:@u`).
pub(super) fn protection_of(list: &str, state_key: &str) -> Option<&'static str> {
    if list != LOCAL_LIST {
        return None;
    }
    match state_key.split_once(':')?.0 {
        "hush.flood" => Some("flood protection"),
        "hush.mention" => Some("mention spam"),
        _ => Some("a protection"),
    }
}

/// A rule in words for `mutes`: the protection for a local rule, else its key and list.
pub(super) fn describe(list: &str, state_key: &str) -> String {
    match protection_of(list, state_key) {
        Some(p) => format!("{p} (local rule, not published)"),
        None => format!("rule `{state_key}` in {list}"),
    }
}

/// For `unmute`: a protection's local mute, kept by hush alone, is taken out of data_dir
/// and the index (which lifts it). `None`: not a local rule. `Ok(Some(what))`: removed;
/// `Ok(None)`: gone already; `Err(what)`: still there, and why.
pub(super) async fn lift(ctx: &Context<'_>, rule: &Rule) -> Option<Result<Option<String>, String>> {
    let protection = protection_of(&rule.id.room_id, &rule.id.state_key)?;
    let what = format!("the {protection} mute (`{}`, local)", rule.id.state_key);
    Some(match remove(ctx, rule).await {
        Ok(true) => Ok(Some(what)),
        Ok(false) => Ok(None),
        Err(e) => Err(format!("{what} (hush cannot remove it: {e})")),
    })
}

/// Takes a protection's local rule out (and with it the mute it caused): `Ok(true)` when
/// it was there.
async fn remove(ctx: &Context<'_>, rule: &Rule) -> Result<bool, String> {
    let (reply, answer) = oneshot::channel();
    let input =
        Input::RemoveLocalRule { kind: rule.event_type().to_owned(), state_key: rule.id.state_key.clone(), reply };
    ctx.engine.send(input).map_err(|_| "the engine is not running".to_owned())?;
    answer.await.map_err(|_| "the engine is not running".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_mutes_are_named_by_their_protection() {
        assert_eq!(describe(LOCAL_LIST, "hush.flood:@a:x"), "flood protection (local rule, not published)");
        assert_eq!(describe(LOCAL_LIST, "hush.mention:@a:x"), "mention spam (local rule, not published)");
        assert_eq!(describe("!list:x", "hush.mention:@a:x"), "rule `hush.mention:@a:x` in !list:x");
    }
}
