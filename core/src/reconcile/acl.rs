//! One protected room's `m.room.server_acl`: the `deny` entries hush adds and removes so that the room denies the servers the policy bans, never a server that must not be denied.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Action, RoomFacts, Wanted};
use crate::power_levels;
use crate::record::{Entry, Kind, Phase};
use crate::server_acl::{entry_matches, has_deny, EVENT_TYPE};

/// Why a server must never be denied in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeverDeny {
    /// hush's own server: denying it would cut hush off the room.
    OwnServer,
    /// The server of one of the room's creators.
    RoomCreator(String),
    /// The server of one of the room's moderators (at or above the lowest of `kick`,
    /// `ban` and `redact`).
    RoomModerator(String),
    /// The server of a moderator of the management room.
    ManagementModerator(String),
}

impl std::fmt::Display for NeverDeny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeverDeny::OwnServer => write!(f, "hush's own server"),
            NeverDeny::RoomCreator(u) => write!(f, "the server of {u}, a creator of the room"),
            NeverDeny::RoomModerator(u) => write!(f, "the server of {u}, a moderator of the room"),
            NeverDeny::ManagementModerator(u) => write!(f, "the server of {u}, a moderator of the management room"),
        }
    }
}

/// Why hush will not add a `deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRefusal {
    /// The entry matches a server that must never be denied.
    Protected { server: String, why: NeverDeny },
    /// hush cannot send `m.room.server_acl` (needs `needed`, has `own`).
    CannotChangeAcl { needed: i64, own: i64 },
}

impl std::fmt::Display for ServerRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerRefusal::Protected { server, why } => write!(f, "it would deny {server}, {why}"),
            ServerRefusal::CannotChangeAcl { needed, own } => {
                write!(f, "hush needs power level {needed} to change the server ACL and has {own}")
            }
        }
    }
}

/// The servers that must never be denied in a room, each with the first reason found:
/// hush's own, the room's creators' and moderators' (from its power levels), and those of
/// the management room's moderators. Server names are kept as in the user ids (a port
/// included); [`entry_matches`] ignores it.
pub fn never_deny(room: &RoomFacts<'_>, management_moderators: &[String]) -> Vec<(String, NeverDeny)> {
    let server = |u: &str| u.split_once(':').map(|(_, s)| s.to_ascii_lowercase());
    let mut out: BTreeMap<String, NeverDeny> = BTreeMap::new();
    let mut put = |user: &str, why: NeverDeny| {
        if let Some(s) = server(user) {
            out.entry(s).or_insert(why);
        }
    };
    put(room.own_user, NeverDeny::OwnServer);
    for c in room.creators {
        put(c.as_str(), NeverDeny::RoomCreator(c.clone()));
    }
    let moderator_level = power_levels::moderator_level(room.power_levels);
    if let Some(users) = room.power_levels.get("users").and_then(Value::as_object) {
        for (u, l) in users {
            if l.as_i64().is_some_and(|l| l >= moderator_level) {
                put(u.as_str(), NeverDeny::RoomModerator(u.clone()));
            }
        }
    }
    for m in management_moderators {
        put(m.as_str(), NeverDeny::ManagementModerator(m.clone()));
    }
    out.into_iter().collect()
}

/// What hush knows of one room's server ACL.
#[derive(Debug, Clone)]
pub struct AclFacts<'a> {
    pub room: RoomFacts<'a>,
    /// The room's current `m.room.server_acl` content; `None` when it has none.
    pub current: Option<&'a Value>,
    /// Servers never denied here ([`never_deny`]).
    pub never_deny: &'a [(String, NeverDeny)],
}

/// Why hush must not add this `deny` entry to the room, if it must not: it matches a
/// server that must never be denied (checked with the same glob matcher as policy rules:
/// `*` or `*.org` can match a moderator's server).
pub fn server_refusal(facts: &AclFacts<'_>, entry: &str) -> Option<ServerRefusal> {
    facts
        .never_deny
        .iter()
        .find(|(server, _)| entry_matches(entry, server))
        .map(|(server, why)| ServerRefusal::Protected { server: server.clone(), why: why.clone() })
}

/// The level needed to send `m.room.server_acl` (from `events`, else `state_default`, 50).
fn acl_send_level(power_levels: &Value) -> i64 {
    power_levels
        .get("events")
        .and_then(|e| e.get(EVENT_TYPE))
        .and_then(Value::as_i64)
        .or_else(|| power_levels.get("state_default").and_then(Value::as_i64))
        .unwrap_or(50)
}

/// The actions that bring one room's `deny` list to what the policy wants.
///
/// `wanted`: the entries the policy asks to deny (lower-cased server globs), each with the
/// rule that decides it. `applied`: hush's [`Kind::ServerDeny`] entries for this room
/// (others are ignored). hush adds only entries the room does not have yet and records
/// them; it removes only the entries it recorded, so an entry a moderator wrote by hand is
/// never touched. An entry that matches a server that must never be denied is refused
/// ([`Action::RefuseServerDeny`]) and lifted if hush had added it. An entry of hush's that
/// someone else took out is theirs to decide: hush leaves it out while the rule lasts.
pub fn reconcile_server_acl(facts: &AclFacts<'_>, wanted: &BTreeMap<String, Wanted>, applied: &[Entry]) -> Vec<Action> {
    let mut out = Vec::new();
    let mut want: BTreeMap<&str, &Wanted> = BTreeMap::new();
    for (entry, w) in wanted {
        match server_refusal(facts, entry) {
            Some(refusal) => {
                out.push(Action::RefuseServerDeny { server: entry.clone(), refusal, rule: w.rule.clone() })
            }
            None => {
                want.insert(entry.as_str(), w);
            }
        }
    }
    let mine: Vec<&Entry> = applied.iter().filter(|e| e.kind == Kind::ServerDeny).collect();
    let kind = Kind::ServerDeny;
    for e in &mine {
        let server = || e.user_id.clone();
        let present = has_deny(facts.current, &e.user_id);
        match want.get(e.user_id.as_str()) {
            Some(w) => {
                if e.overridden {
                    continue;
                }
                match (e.phase, present) {
                    (Phase::Applied, true) => {
                        if e.rule != w.rule || e.expires_at_ms != w.expires_at_ms {
                            out.push(Action::UpdateCause { user_id: server(), kind, wanted: (*w).clone() });
                        }
                    }
                    (Phase::Applied, false) => out.push(Action::MarkOverridden {
                        user_id: server(),
                        kind,
                        note: format!(
                            "the server ACL entry `{}` hush added was taken out by someone else; hush leaves it so",
                            e.user_id
                        ),
                    }),
                    (_, true) => out.push(Action::MarkApplied { user_id: server(), kind }),
                    // Interrupted before the entry was written, or while lifting: deny again.
                    (_, false) => out.push(Action::DenyServer { server: server(), wanted: (*w).clone() }),
                }
            }
            None => {
                if !e.overridden && present {
                    out.push(Action::UndenyServer { server: server() });
                } else {
                    // Overridden, never written, or already gone.
                    out.push(Action::Forget { user_id: server(), kind });
                }
            }
        }
    }
    let needed = acl_send_level(facts.room.power_levels);
    for (entry, w) in want {
        if mine.iter().any(|e| e.user_id == entry) || has_deny(facts.current, entry) {
            // Recorded above, or the room denies it already (someone else's entry: not
            // hush's to take over, nor to remove later).
            continue;
        }
        if !facts.room.own_can(needed) {
            let own = facts.room.own_level.unwrap_or(i64::MAX);
            out.push(Action::RefuseServerDeny {
                server: entry.to_owned(),
                refusal: ServerRefusal::CannotChangeAcl { needed, own },
                rule: w.rule.clone(),
            });
            continue;
        }
        out.push(Action::DenyServer { server: entry.to_owned(), wanted: w.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::{EntityKind, RuleId};
    use crate::reconcile::{MuteStrategy, Restriction};
    use crate::record::Scope;

    const ROOM: &str = "!room:hush.example";
    const HUSH: &str = "@hush:hush.example";

    fn rule(key: &str) -> RuleId {
        RuleId { room_id: "!list".into(), kind: EntityKind::Server, state_key: key.into() }
    }

    fn wanted(entries: &[&str]) -> BTreeMap<String, Wanted> {
        entries
            .iter()
            .map(|e| {
                let w =
                    Wanted { restriction: Restriction::Ban, expires_at_ms: None, rule: rule(e), reason: "spam".into() };
                ((*e).to_owned(), w)
            })
            .collect()
    }

    fn entry(server: &str, phase: Phase) -> Entry {
        Entry {
            scope: Scope::Room(ROOM.into()),
            user_id: server.into(),
            kind: Kind::ServerDeny,
            phase,
            previous_level: None,
            applied_level: None,
            rule: rule(server),
            reason: "spam".into(),
            applied_at_ms: 0,
            expires_at_ms: None,
            overridden: false,
            event_ids: Vec::new(),
        }
    }

    fn room<'a>(pl: &'a Value, creators: &'a [String]) -> RoomFacts<'a> {
        RoomFacts {
            room_id: ROOM,
            strategy: MuteStrategy::PowerLevel,
            power_levels: pl,
            creators,
            creators_privileged: false,
            own_user: HUSH,
            own_level: Some(100),
        }
    }

    fn plan(current: Option<&Value>, pl: &Value, mgmt: &[String], want: &[&str], applied: &[Entry]) -> Vec<Action> {
        let creators = vec!["@founder:creator.example".to_owned()];
        let r = room(pl, &creators);
        let never = never_deny(&r, mgmt);
        let facts = AclFacts { room: r, current, never_deny: &never };
        reconcile_server_acl(&facts, &wanted(want), applied)
    }

    fn pl() -> Value {
        json!({"users": {HUSH: 100, "@mod:mods.example:8448": 50, "@member:members.example": 0}})
    }

    #[test]
    fn a_new_entry_is_denied_and_one_already_there_is_left_to_its_writer() {
        let acl = json!({"allow": ["*"], "deny": ["hand.example"]});
        let a = plan(Some(&acl), &pl(), &[], &["evil.example", "hand.example"], &[]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(matches!(&a[0], Action::DenyServer { server, .. } if server == "evil.example"));
    }

    #[test]
    fn removal_lifts_only_hush_entries_and_keeps_hand_entries() {
        let acl = json!({"allow": ["*"], "deny": ["hand.example", "evil.example"]});
        let a = plan(Some(&acl), &pl(), &[], &[], &[entry("evil.example", Phase::Applied)]);
        assert_eq!(a, vec![Action::UndenyServer { server: "evil.example".into() }]);
        // Nothing recorded for the hand entry, so nothing is done about it.
        assert!(plan(Some(&acl), &pl(), &[], &[], &[]).is_empty());
    }

    #[test]
    fn never_denies_its_own_server_nor_moderators_servers() {
        let mgmt = vec!["@boss:management.example".to_owned()];
        let a = plan(
            None,
            &pl(),
            &mgmt,
            &["hush.example", "*.example", "mods.example", "management.example", "creator.example", "members.example"],
            &[],
        );
        let refused: BTreeMap<String, String> = a
            .iter()
            .filter_map(|x| match x {
                Action::RefuseServerDeny { server, refusal, .. } => Some((server.clone(), refusal.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 5, "{a:?}");
        assert!(refused["hush.example"].contains("hush's own server"), "{refused:?}");
        assert!(refused["*.example"].contains("it would deny"), "a glob matching a protected server: {refused:?}");
        assert!(refused["mods.example"].contains("@mod:mods.example:8448, a moderator of the room"), "{refused:?}");
        assert!(refused["management.example"].contains("moderator of the management room"), "{refused:?}");
        assert!(refused["creator.example"].contains("a creator of the room"), "{refused:?}");
        // A member's server (level 0) may be denied.
        assert!(a.iter().any(|x| matches!(x, Action::DenyServer { server, .. } if server == "members.example")));
    }

    #[test]
    fn a_refused_entry_hush_added_earlier_is_lifted() {
        // The server's user became a moderator after hush denied it.
        let acl = json!({"allow": ["*"], "deny": ["mods.example"]});
        let a = plan(Some(&acl), &pl(), &[], &["mods.example"], &[entry("mods.example", Phase::Applied)]);
        assert!(a.iter().any(|x| matches!(x, Action::RefuseServerDeny { .. })), "{a:?}");
        assert!(a.contains(&Action::UndenyServer { server: "mods.example".into() }), "{a:?}");
    }

    #[test]
    fn write_ahead_phases_settle_against_the_room() {
        let with = json!({"allow": ["*"], "deny": ["evil.example"]});
        let without = json!({"allow": ["*"], "deny": []});
        let applying = entry("evil.example", Phase::Applying);
        assert_eq!(
            plan(Some(&with), &pl(), &[], &["evil.example"], std::slice::from_ref(&applying)),
            vec![Action::MarkApplied { user_id: "evil.example".into(), kind: Kind::ServerDeny }]
        );
        assert!(matches!(
            &plan(Some(&without), &pl(), &[], &["evil.example"], std::slice::from_ref(&applying))[..],
            [Action::DenyServer { .. }]
        ));
        assert_eq!(
            plan(Some(&without), &pl(), &[], &[], &[applying]),
            vec![Action::Forget { user_id: "evil.example".into(), kind: Kind::ServerDeny }]
        );
        // Someone took hush's entry out while the rule lasts: left so.
        let a = plan(Some(&without), &pl(), &[], &["evil.example"], &[entry("evil.example", Phase::Applied)]);
        assert!(matches!(&a[..], [Action::MarkOverridden { .. }]), "{a:?}");
        let overridden = Entry { overridden: true, ..entry("evil.example", Phase::Applied) };
        assert!(plan(Some(&without), &pl(), &[], &["evil.example"], std::slice::from_ref(&overridden)).is_empty());
        assert_eq!(
            plan(Some(&without), &pl(), &[], &[], &[overridden]),
            vec![Action::Forget { user_id: "evil.example".into(), kind: Kind::ServerDeny }]
        );
    }

    #[test]
    fn without_the_power_to_send_the_acl_hush_refuses() {
        let mut levels = pl();
        levels["events"] = json!({"m.room.server_acl": 150});
        let a = plan(None, &levels, &[], &["evil.example"], &[]);
        assert!(
            matches!(
                &a[..],
                [Action::RefuseServerDeny { refusal: ServerRefusal::CannotChangeAcl { needed: 150, own: 100 }, .. }]
            ),
            "{a:?}"
        );
    }
}
