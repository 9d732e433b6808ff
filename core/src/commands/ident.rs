//! Validation of user ids, user globs, room ids and room aliases named in commands.

use super::{RoomRef, Target};

/// The longest user id, room id or alias the spec allows, in bytes.
const MAX_ID_BYTES: usize = 255;

/// Longest piece of user text echoed back in a message, in characters.
const SHOW_CHARS: usize = 64;

/// User text for a message: cut to [`SHOW_CHARS`] characters, control characters dropped.
pub(crate) fn show(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(SHOW_CHARS).collect();
    if s.chars().filter(|c| !c.is_control()).nth(SHOW_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Checks a server name: `host[:port]`, host a DNS name, IPv4 or `[IPv6]`, port 1-5
/// digits. A glob may also use `*` and `?` anywhere.
fn check_server(server: &str, glob: bool) -> Result<(), String> {
    if server.is_empty() {
        return Err("the server name is empty".to_owned());
    }
    if glob {
        return match server.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-:[]*?".contains(*c))) {
            Some(c) => Err(format!("the server part has `{}`", c.escape_debug())),
            None => Ok(()),
        };
    }
    let (host, port) = if let Some(v6) = server.strip_prefix('[') {
        let Some(end) = v6.find(']') else {
            return Err("the IPv6 address has no closing `]`".to_owned());
        };
        let addr = &v6[..end];
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(format!("`[{}]` is not an IPv6 address", show(addr)));
        }
        match &v6[end + 1..] {
            "" => (None, None),
            rest => match rest.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err("the server name goes on after `]`".to_owned()),
            },
        }
    } else {
        match server.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(server), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("the server name is empty".to_owned());
        }
        if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-')) {
            return Err(format!("the server name has `{}`", c.escape_debug()));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("`{}` is not a port", show(port)));
        }
    }
    Ok(())
}

/// Parses a user id (`@alice:example.org`) or user glob (`@*:spam.example`, `@bot??:*`).
/// The localpart is lenient (any non-empty text without `:`, whitespace or control
/// characters, as historical ids allow); the server name is checked. The id is returned
/// unchanged. A glob that matches every user (`@*:*`) is accepted here, so that `unban`
/// can remove such a rule; `mute` and `ban` refuse it (see `matches_everyone`).
pub fn parse_target(tok: &str) -> Result<Target, String> {
    let glob = is_glob(tok);
    let Some(rest) = tok.strip_prefix('@') else {
        return Err(match tok.chars().next() {
            Some('#' | '!') => {
                format!("`{}` is a room: give a user (@user:server) or a glob (@*:example.org)", show(tok))
            }
            _ if !tok.starts_with('@') && parse_target(&format!("@{tok}")).is_ok() => {
                let what = if glob { "user glob" } else { "user id" };
                format!("`{}` is not a {what}: user ids and globs start with @, e.g. @{}", show(tok), show(tok))
            }
            _ => format!(
                "`{}` is not a user id: write @user:server, a glob such as @*:example.org, \
                 or mention the user (a pill)",
                show(tok)
            ),
        });
    };
    let what = if glob { "user glob" } else { "user id" };
    if tok.len() > MAX_ID_BYTES {
        return Err(format!("`{}` is longer than {MAX_ID_BYTES} bytes, the limit for user ids", show(tok)));
    }
    let Some((local, server)) = rest.split_once(':') else {
        return Err(if glob {
            format!("`{}` has no server part: write e.g. {}:*", show(tok), show(tok))
        } else {
            format!("`{}` has no server: write the full user id, e.g. {}:example.org", show(tok), show(tok))
        });
    };
    if local.is_empty() {
        return Err(format!("`{}` is not a {what}: the part before `:` is empty", show(tok)));
    }
    if let Some(c) = local.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{}` is not a {what}: the localpart has `{}`", show(tok), c.escape_debug()));
    }
    check_server(server, glob).map_err(|why| format!("`{}` is not a {what}: {why}", show(tok)))?;
    if glob {
        Ok(Target::Glob(tok.to_owned()))
    } else {
        Ok(Target::User(tok.to_owned()))
    }
}

/// Parses a server name or server glob for a server rule (`example.org`,
/// `example.org:8448`, `[::1]`, `*.example.org`), returned unchanged. A user id written
/// without its `@` is named as such.
pub fn parse_server(tok: &str) -> Result<Target, String> {
    if tok.starts_with(['#', '!']) {
        return Err(format!("`{}` is a room: give a user (@user:server), a glob or a server name", show(tok)));
    }
    if tok.starts_with('@') {
        return Err(format!("`{}` is a user, not a server name", show(tok)));
    }
    if tok.len() > MAX_ID_BYTES {
        return Err(format!("`{}` is longer than {MAX_ID_BYTES} bytes, the limit for server names", show(tok)));
    }
    match check_server(tok, is_glob(tok)) {
        Ok(()) => Ok(Target::Server(tok.to_owned())),
        Err(_) if tok.contains(':') && parse_target(&format!("@{tok}")).is_ok() => Err(format!(
            "`{}` is not a server name; if it is a user, user ids start with @, e.g. @{}",
            show(tok),
            show(tok)
        )),
        Err(why) => Err(format!("`{}` is not a server name: {why}", show(tok))),
    }
}

/// The longest id of a held rule, in characters.
const MAX_HOLD_ID_CHARS: usize = 32;

/// Whether `s` can be the id of a held rule (or batch of rules), as `confirm` and `reject`
/// take it: 1 to 32 ASCII letters, digits or `-`. Ids hush gives out must pass this.
pub fn is_hold_id(s: &str) -> bool {
    (1..=MAX_HOLD_ID_CHARS).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Parses a room id (`!opaque`, with or without `:server`: room version 12 ids have none)
/// or alias (`#local:server`). Ids are opaque: only their characters are checked.
pub fn parse_room(tok: &str) -> Result<RoomRef, String> {
    let (kind, rest) = match tok.chars().next() {
        Some('!') => ("room id", &tok[1..]),
        Some('#') => ("room alias", &tok[1..]),
        Some('@') => return Err(format!("`{}` is a user: give a room id (!…) or alias (#name:server)", show(tok))),
        _ => return Err(format!("`{}` is not a room: give a room id (!…) or alias (#name:server)", show(tok))),
    };
    if tok.len() > MAX_ID_BYTES {
        return Err(format!("`{}` is longer than {MAX_ID_BYTES} bytes, the limit for a {kind}", show(tok)));
    }
    if rest.is_empty() {
        return Err(format!("`{}` is not a {kind}: it is empty after `{}`", show(tok), &tok[..1]));
    }
    if let Some(c) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{}` is not a {kind}: it has `{}`", show(tok), c.escape_debug()));
    }
    if tok.starts_with('!') {
        return Ok(RoomRef::Id(tok.to_owned()));
    }
    let Some((local, server)) = rest.split_once(':') else {
        return Err(format!("`{}` has no server: write the full alias, e.g. {}:example.org", show(tok), show(tok)));
    };
    if local.is_empty() {
        return Err(format!("`{}` is not a room alias: the part before `:` is empty", show(tok)));
    }
    check_server(server, false).map_err(|why| format!("`{}` is not a room alias: {why}", show(tok)))?;
    Ok(RoomRef::Alias(tok.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Target {
        Target::User(s.to_owned())
    }

    #[test]
    fn user_ids() {
        for id in [
            "@alice:example.org",
            "@a:b",
            "@Alice.Smith=2_/x:example.org",
            "@ålice:example.org",
            "@bob:example.org:8448",
            "@bob:127.0.0.1",
            "@bob:[::1]",
            "@bob:[2001:db8::1]:8448",
            "@user:localhost",
        ] {
            assert_eq!(parse_target(id), Ok(user(id)), "{id}");
        }
    }

    #[test]
    fn globs() {
        for g in [
            "@*:spam.example",
            "@bot??:*",
            "@*:*.evil.com",
            "@*spam*:example.org",
            "@a:ex?mple.org",
            // Globs that match everyone are ids too; `mute` and `ban` refuse them.
            "@*:*",
            "@?*:**",
            "@*:*.*",
        ] {
            assert_eq!(parse_target(g), Ok(Target::Glob(g.to_owned())), "{g}");
        }
    }

    #[test]
    fn user_errors() {
        let cases = [
            ("alice", "`alice` is not a user id: write @user:server, a glob such as @*:example.org, or mention the user (a pill)"),
            ("alice:example.org", "`alice:example.org` is not a user id: user ids and globs start with @, e.g. @alice:example.org"),
            ("*:evil.com", "`*:evil.com` is not a user glob: user ids and globs start with @, e.g. @*:evil.com"),
            ("a:b:c:d", "`a:b:c:d` is not a user id: write @user:server, a glob such as @*:example.org, or mention the user (a pill)"),
            ("#room:example.org", "`#room:example.org` is a room: give a user (@user:server) or a glob (@*:example.org)"),
            ("!abc", "`!abc` is a room: give a user (@user:server) or a glob (@*:example.org)"),
            ("@alice", "`@alice` has no server: write the full user id, e.g. @alice:example.org"),
            ("@spam*", "`@spam*` has no server part: write e.g. @spam*:*"),
            ("@:example.org", "`@:example.org` is not a user id: the part before `:` is empty"),
            ("@a\u{7}b:example.org", "`@ab:example.org` is not a user id: the localpart has `\\u{7}`"),
            ("@alice:", "`@alice:` is not a user id: the server name is empty"),
            ("@alice:example.org,", "`@alice:example.org,` is not a user id: the server name has `,`"),
            ("@alice:ex_ample.org", "`@alice:ex_ample.org` is not a user id: the server name has `_`"),
            ("@alice::8448", "`@alice::8448` is not a user id: the server name is empty"),
            ("@alice:example.org:", "`@alice:example.org:` is not a user id: `` is not a port"),
            ("@alice:example.org:84a", "`@alice:example.org:84a` is not a user id: `84a` is not a port"),
            ("@alice:example.org:123456", "`@alice:example.org:123456` is not a user id: `123456` is not a port"),
            ("@alice:[::1", "`@alice:[::1` is not a user id: the IPv6 address has no closing `]`"),
            ("@alice:[]", "`@alice:[]` is not a user id: `[]` is not an IPv6 address"),
            ("@alice:[zz]", "`@alice:[zz]` is not a user id: `[zz]` is not an IPv6 address"),
            ("@alice:[::1]x", "`@alice:[::1]x` is not a user id: the server name goes on after `]`"),
            ("@*:evil/", "`@*:evil/` is not a user glob: the server part has `/`"),
            ("", "`` is not a user id: write @user:server, a glob such as @*:example.org, or mention the user (a pill)"),
        ];
        for (input, message) in cases {
            assert_eq!(parse_target(input), Err(message.to_owned()), "{input}");
        }
        let long = format!("@{}:example.org", "a".repeat(250));
        assert!(parse_target(&long).unwrap_err().ends_with("is longer than 255 bytes, the limit for user ids"));
    }

    #[test]
    fn hold_ids() {
        for id in ["a", "3f9a", "AB-12-cd", &"x".repeat(32)] {
            assert!(is_hold_id(id), "{id}");
        }
        for id in ["", "a b", "a_b", "é", "3f9a.", &"x".repeat(33), "`a`", "a\u{0}"] {
            assert!(!is_hold_id(id), "{id:?}");
        }
    }

    #[test]
    fn rooms() {
        let v12 = "!hZ8vz5bYd8JmVZGsnXqOM5Pq7oDvW0-1Ht6cZ6uUd8c";
        assert_eq!(parse_room(v12), Ok(RoomRef::Id(v12.to_owned())));
        assert_eq!(parse_room("!abc:example.org"), Ok(RoomRef::Id("!abc:example.org".to_owned())));
        assert_eq!(parse_room("#lobby:example.org:8448"), Ok(RoomRef::Alias("#lobby:example.org:8448".to_owned())));
    }

    #[test]
    fn room_errors() {
        let cases = [
            ("@alice:example.org", "`@alice:example.org` is a user: give a room id (!…) or alias (#name:server)"),
            ("lobby", "`lobby` is not a room: give a room id (!…) or alias (#name:server)"),
            ("", "`` is not a room: give a room id (!…) or alias (#name:server)"),
            ("!", "`!` is not a room id: it is empty after `!`"),
            ("#", "`#` is not a room alias: it is empty after `#`"),
            ("#lobby", "`#lobby` has no server: write the full alias, e.g. #lobby:example.org"),
            ("#:example.org", "`#:example.org` is not a room alias: the part before `:` is empty"),
            ("#lobby:exa mple", "`#lobby:exa mple` is not a room alias: it has ` `"),
            ("!ab\u{0}c", "`!abc` is not a room id: it has `\\0`"),
            ("#lobby:ex!ample", "`#lobby:ex!ample` is not a room alias: the server name has `!`"),
        ];
        for (input, message) in cases {
            assert_eq!(parse_room(input), Err(message.to_owned()), "{input}");
        }
        let long = format!("!{}", "a".repeat(255));
        assert!(parse_room(&long).unwrap_err().ends_with("is longer than 255 bytes, the limit for a room id"));
    }

    #[test]
    fn show_cuts_and_cleans() {
        assert_eq!(show("a\nb"), "ab");
        assert_eq!(show(&"é".repeat(100)), format!("{}…", "é".repeat(64)));
        assert_eq!(show(&"x".repeat(64)), "x".repeat(64));
    }
}
