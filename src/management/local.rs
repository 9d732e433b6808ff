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

/// Takes a protection's local rule out (and with it the mute it caused): `Ok(true)` when
/// it was there.
pub(super) async fn remove(ctx: &Context<'_>, rule: &Rule) -> Result<bool, String> {
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
