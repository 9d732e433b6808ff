//! What a followed policy list may make hush do: per-list trust.

use std::fmt;

use super::rule::Restriction;

/// The actions one policy list may cause. A rule whose action its list may not cause is
/// ignored for that action (and reported once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListTrust {
    pub ban: bool,
    pub mute: bool,
    /// Suspend local accounts on exact mute rules (MSC3823).
    pub suspend: bool,
    /// Turn server rules with a ban or takedown recommendation into `deny` entries of
    /// `m.room.server_acl` in the protected rooms.
    pub server_acl: bool,
}

impl ListTrust {
    /// The community's own list (`default_policy_list`): every action.
    pub const DEFAULT_LIST: ListTrust = ListTrust { ban: true, mute: true, suspend: true, server_acl: true };
    /// Any other list, unless configured otherwise: bans and mutes in rooms, and server
    /// ACLs (it may ban), never accounts.
    pub const OTHER_LIST: ListTrust = ListTrust { ban: true, mute: true, suspend: false, server_acl: true };
    /// The action names a configuration or a command may use.
    pub const NAMES: [&'static str; 4] = ["ban", "mute", "suspend", "server_acl"];

    /// Parses a list of action names (`ban`, `mute`, `suspend`, `server_acl`); an unknown
    /// or repeated name is an error that says which and what is allowed. The list is
    /// exact: an action it does not name is off.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ListTrust, String> {
        let mut t = ListTrust { ban: false, mute: false, suspend: false, server_acl: false };
        for name in names {
            let slot = match name.trim() {
                "ban" => &mut t.ban,
                "mute" => &mut t.mute,
                "suspend" => &mut t.suspend,
                "server_acl" => &mut t.server_acl,
                other => return Err(format!("unknown action `{other}` (the actions are: {})", Self::NAMES.join(", "))),
            };
            if *slot {
                return Err(format!("action `{}` is given twice", name.trim()));
            }
            *slot = true;
        }
        Ok(t)
    }

    /// Whether the list may cause this restriction in rooms.
    pub fn allows(self, r: Restriction) -> bool {
        match r {
            Restriction::Ban => self.ban,
            Restriction::Mute => self.mute,
        }
    }
}

impl fmt::Display for ListTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            [(self.ban, "ban"), (self.mute, "mute"), (self.suspend, "suspend"), (self.server_acl, "server_acl")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
        if names.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_actions() {
        let t = ListTrust::parse(["ban", " mute"]).unwrap();
        assert_eq!(t, ListTrust { ban: true, mute: true, suspend: false, server_acl: false });
        assert_eq!(t.to_string(), "ban, mute");
        let acl = ListTrust::parse(["ban", "server_acl"]).unwrap();
        assert!(acl.server_acl && acl.ban && !acl.mute);
        assert_eq!(acl.to_string(), "ban, server_acl");
        for default in [ListTrust::DEFAULT_LIST, ListTrust::OTHER_LIST] {
            assert_eq!(default.server_acl, default.ban, "on where ban is on: {default}");
        }
        assert!(t.allows(Restriction::Ban) && !ListTrust::parse(["ban"]).unwrap().allows(Restriction::Mute));
        assert_eq!(ListTrust::parse([]).unwrap().to_string(), "nothing");
        assert!(ListTrust::parse(["kick"]).unwrap_err().contains("unknown action `kick`"));
        assert!(ListTrust::parse(["ban", "ban"]).unwrap_err().contains("twice"));
    }
}
