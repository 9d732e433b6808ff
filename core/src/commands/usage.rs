//! Usage lines, help texts and the plain and HTML renderings of replies about commands.

use super::UsageError;

/// One command's help.
pub(crate) struct Spec {
    pub name: &'static str,
    /// Synopses without the prefix, one per line.
    pub usage: &'static str,
    pub summary: &'static str,
    /// Extra notes; `{p}` stands for the prefix.
    pub details: &'static str,
    /// Example lines without the prefix.
    pub examples: &'static [&'static str],
}

const TARGETS: &str = "A user is @user:server, a pill, or a glob with * and ? such as @*:spam.example. \
     A pill whose text is a different user id than the one it links to is refused.";
const EVERYONE: &str = "A glob that matches every user (@*:*, @*:*.*) is refused: the rule would \
     restrict every user of every server, and every other bot that follows the list would follow it.";
const ROOMS: &str = "A room is a room id (!…) or an alias (#name:server), or a pill.";
const DURATIONS: &str = "A duration is e.g. 30s, 20m, 2h, 7d, 1w, 1h30m, `1h 30m` or `2 hours`, at most \
     100 years; without one the rule is permanent. A word after the user starts the reason; a \
     word starting with a digit must be a duration.";

const ALLOWS: &str = "A target without @ is a server name or glob (partner.example, \
     *.partner.example). An allow in a list lifts only what that list may cause (its actions): \
     a list that may only mute lifts mutes. `allow` refuses a target that matches everyone.";

const HOLD_IDS: &str = "The id is the one hush gave when it held the rule: 1 to 32 letters, digits or -.";

pub(crate) const SPECS: &[Spec] = &[
    Spec {
        name: "mute",
        usage: "mute <user-or-glob> [duration] [reason...]",
        summary: "Mute a user, or every user a glob matches, in the protected rooms: writes an \
                  m.mute rule to the default policy list (with an expiry if a duration is given).",
        details: EVERYONE,
        examples: &[
            "mute @spammer:example.org 2h flooding the lobby",
            "mute @troll:example.org 1h30m",
            "mute @*:spam.example",
        ],
    },
    Spec {
        name: "unmute",
        usage: "unmute <user-or-glob>",
        summary: "Remove the mute rules for a user or glob that hush can remove; hush then lifts \
                  the mute and says which rules remain.",
        details: "A protection's local mute of the user (flood protection, mention spam) is \
                  taken out too, and the reply names it.",
        examples: &["unmute @spammer:example.org"],
    },
    Spec {
        name: "ban",
        usage: "ban <user-or-glob> [duration] [reason...]",
        summary: "Ban a user, or every user a glob matches, from the protected rooms: writes an \
                  m.ban rule to the default policy list (with an expiry if a duration is given).",
        details: EVERYONE,
        examples: &["ban @spammer:example.org 7d spam links", "ban @*:evil.example"],
    },
    Spec {
        name: "unban",
        usage: "unban <user-or-glob>",
        summary: "Remove the ban rules for a user or glob that hush can remove; hush then unbans \
                  and says which rules remain.",
        details: "",
        examples: &["unban @spammer:example.org"],
    },
    Spec {
        name: "allow",
        usage: "allow <user-glob-or-server> [reason...]",
        summary: "Make an exception: writes an m.allow rule to the default policy list, which \
                  lifts the bans and mutes the other lists have for that user, glob or server \
                  (and the default list's own rules that name them less closely). The default \
                  list's own mute and ban rules for exactly that target are removed: the later \
                  decision wins.",
        details: ALLOWS,
        examples: &["allow @friend:evil.example we know them", "allow partner.example", "allow @*:partner.example"],
    },
    Spec {
        name: "unallow",
        usage: "unallow <user-glob-or-server>",
        summary: "Remove the allow rules for a user, glob or server that hush can remove: what \
                  the other lists say about them applies again.",
        details: ALLOWS,
        examples: &["unallow @friend:evil.example"],
    },
    Spec {
        name: "redact",
        usage: "redact <user> [room] [--limit N]",
        summary: "Redact the user's recent events (within the configured redaction window) in one \
                  protected room, or in all of them, at most N per room (default: the configured \
                  cap). Moderators and protected users are refused, as for a ban.",
        details: ROOMS,
        examples: &["redact @spammer:example.org", "redact @spammer:example.org #lobby:example.org --limit 50"],
    },
    Spec {
        name: "history",
        usage: "history [user-or-room] [N]",
        summary: "Show the newest N entries (default 20, at most 100) of what hush did or refused, \
                  newest first: id, time, what, target, room, cause (rule, protection, command \
                  or expiry) and outcome. With a user or room, only those about it.",
        details: "A user is one user id (not a glob) or a pill; a room is a room id (!…), an alias \
                  (#name:server) or a pill. Use the id (#42) with undo.",
        examples: &["history", "history @spammer:example.org", "history #lobby:example.org 50"],
    },
    Spec {
        name: "undo",
        usage: "undo <id>",
        summary: "Revert one action of the history: a protection's mute by removing its local \
                  rule, a rule hush wrote by removing it from the list, another list's rule by a \
                  local exception for that user (the list's rule stays, but not in your rooms). \
                  The reply says which.",
        details: "Refusals, holds, lifts, redactions and actions no longer in force are not undone; \
                  the reply says why. `unallow` removes a local exception again.",
        examples: &["undo 42", "undo #42"],
    },
    Spec {
        name: "mutes",
        usage: "mutes",
        summary: "List the active mutes: user, rooms, since, time left, rule and list (or the \
                  protection behind a local mute).",
        details: "",
        examples: &["mutes"],
    },
    Spec {
        name: "confirm",
        usage: "confirm <id>",
        summary: "Release a held rule (or batch of rules) the safety guard stopped.",
        details: HOLD_IDS,
        examples: &["confirm 3f9a"],
    },
    Spec {
        name: "reject",
        usage: "reject <id>",
        summary: "Drop a held rule (or batch of rules): hush will not enforce it.",
        details: HOLD_IDS,
        examples: &["reject 3f9a"],
    },
    Spec {
        name: "watch",
        usage: "watch <room> [--actions ban,mute,suspend,server_acl]",
        summary: "Follow a policy list (a room id or alias); survives restarts. Without \
                  --actions, the list may ban, mute and set server ACLs (never suspend).",
        details: "--actions lists what the list may make hush do: ban, mute, suspend (suspend \
                  local accounts on exact mute rules), server_acl (deny banned servers in \
                  m.room.server_acl); rules for other actions are ignored. \
                  `--actions=ban,mute` works too. A room is a room id (!…) or an alias \
                  (#name:server), or a pill.",
        examples: &[
            "watch #community-policies:example.org",
            "watch #partner-bans:example.org --actions ban",
            "watch #our-policies:example.org --actions ban,mute,suspend",
        ],
    },
    Spec {
        name: "preview",
        usage: "preview <room>",
        summary: "What a policy list would do here, without following it: rule counts, and how \
                  many members of each protected room it would mute, ban or suspend.",
        details: ROOMS,
        examples: &["preview #partner-bans:example.org"],
    },
    Spec {
        name: "unwatch",
        usage: "unwatch <room>",
        summary: "Stop following a policy list; survives restarts.",
        details: ROOMS,
        examples: &["unwatch #old-policies:example.org"],
    },
    Spec {
        name: "rooms",
        usage: "rooms\nrooms add <room>\nrooms remove <room>",
        summary: "List the protected rooms, or add or remove one; survives restarts.",
        details: ROOMS,
        examples: &["rooms", "rooms add #lobby:example.org", "rooms remove #old-lobby:example.org"],
    },
    Spec {
        name: "status",
        usage: "status",
        summary: "Show the version, policy lists and rule counts, protected rooms, pending \
                  timers, last errors and dry-run state.",
        details: "",
        examples: &["status"],
    },
    Spec {
        name: "help",
        usage: "help [command]",
        summary: "List the commands, or explain one.",
        details: "",
        examples: &["help", "help mute"],
    },
];

/// The canonical command names, in help order.
pub const COMMAND_NAMES: &[&str] = &[
    "mute", "unmute", "ban", "unban", "allow", "unallow", "redact", "history", "undo", "mutes", "confirm", "reject",
    "watch", "preview", "unwatch", "rooms", "status", "help",
];

/// Every synopsis, one per line, without the prefix (the usage of a missing or unknown
/// command). A test keeps it equal to the synopses of [`SPECS`].
pub(crate) const ALL_USAGE: &str = "mute <user-or-glob> [duration] [reason...]
unmute <user-or-glob>
ban <user-or-glob> [duration] [reason...]
unban <user-or-glob>
allow <user-glob-or-server> [reason...]
unallow <user-glob-or-server>
redact <user> [room] [--limit N]
history [user-or-room] [N]
undo <id>
mutes
confirm <id>
reject <id>
watch <room> [--actions ban,mute,suspend,server_acl]
preview <room>
unwatch <room>
rooms
rooms add <room>
rooms remove <room>
status
help [command]";

fn spec(command: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name.eq_ignore_ascii_case(command.trim()))
}

/// The usage of a command (case-insensitive name, `rooms add` counts as `rooms`):
/// synopses without the prefix, one per line. `None` for an unknown command.
pub fn usage(command: &str) -> Option<&'static str> {
    let name = command.split_whitespace().next()?;
    spec(name).map(|s| s.usage)
}

/// Escapes text for an HTML formatted body.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for HTML and turns balanced `backtick` spans into `<code>`.
fn code_spans_html(s: &str) -> String {
    if !s.matches('`').count().is_multiple_of(2) {
        return html_escape(s);
    }
    s.split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", html_escape(part)) } else { html_escape(part) })
        .collect()
}

fn prefixed<'u>(prefix: &str, usage: &'u str) -> impl Iterator<Item = String> + use<'u> {
    let prefix = prefix.trim().to_owned();
    usage.lines().map(move |line| format!("{prefix} {line}"))
}

/// The plain-text command list for `help` without a topic.
pub fn help_text(prefix: &str) -> String {
    let p = prefix.trim();
    let mut out = String::from("hush commands:\n");
    for s in SPECS {
        for line in prefixed(p, s.usage) {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str(&format!("      {}\n", s.summary));
    }
    out.push_str(&format!("{TARGETS}\n{DURATIONS}\nMore: {p} help <command>"));
    out
}

/// The HTML rendering of [`help_text`], for the formatted body.
pub fn help_html(prefix: &str) -> String {
    let p = prefix.trim();
    let mut out = String::from("<p>hush commands:</p>\n<ul>\n");
    for s in SPECS {
        let lines: Vec<String> = prefixed(p, s.usage).map(|l| format!("<code>{}</code>", html_escape(&l))).collect();
        out.push_str(&format!("<li>{}: {}</li>\n", lines.join(" / "), html_escape(s.summary)));
    }
    out.push_str(&format!(
        "</ul>\n<p>{}<br>\n{}<br>\nMore: <code>{} help &lt;command&gt;</code></p>",
        code_spans_html(TARGETS),
        code_spans_html(DURATIONS),
        html_escape(p)
    ));
    out
}

fn topic_notes(s: &Spec) -> Vec<String> {
    let mut notes = Vec::new();
    if matches!(s.name, "mute" | "unmute" | "ban" | "unban" | "allow" | "unallow") {
        notes.push(TARGETS.to_owned());
    }
    if matches!(s.name, "mute" | "ban") {
        notes.push(DURATIONS.to_owned());
    }
    if !s.details.is_empty() {
        notes.push(s.details.to_owned());
    }
    notes
}

/// The plain-text help of one command (case-insensitive name), `None` if unknown.
pub fn topic_help(prefix: &str, topic: &str) -> Option<String> {
    let s = spec(topic)?;
    let p = prefix.trim();
    let mut out = String::from("Usage:\n");
    for line in prefixed(p, s.usage) {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(s.summary);
    out.push('\n');
    for note in topic_notes(s) {
        out.push_str(&note);
        out.push('\n');
    }
    out.push_str("Examples:");
    for e in s.examples {
        out.push_str(&format!("\n  {p} {e}"));
    }
    Some(out)
}

/// The HTML rendering of [`topic_help`].
pub fn topic_help_html(prefix: &str, topic: &str) -> Option<String> {
    let s = spec(topic)?;
    let p = prefix.trim();
    let usage: Vec<String> = prefixed(p, s.usage).map(|l| html_escape(&l)).collect();
    let mut out =
        format!("<p>Usage:</p>\n<pre><code>{}</code></pre>\n<p>{}</p>\n", usage.join("\n"), html_escape(s.summary));
    for note in topic_notes(s) {
        out.push_str(&format!("<p>{}</p>\n", code_spans_html(&note)));
    }
    let examples: Vec<String> = s.examples.iter().map(|e| html_escape(&format!("{p} {e}"))).collect();
    out.push_str(&format!("<p>Examples:</p>\n<pre><code>{}</code></pre>", examples.join("\n")));
    Some(out)
}

impl UsageError {
    /// The plain-text reply: the message, then the usage with the prefix.
    pub fn render(&self, prefix: &str) -> String {
        let mut out = format!("{}\nUsage:", self.message);
        for line in prefixed(prefix, self.usage) {
            out.push_str(&format!("\n  {line}"));
        }
        out
    }

    /// The HTML reply for the formatted body.
    pub fn render_html(&self, prefix: &str) -> String {
        let usage: Vec<String> = prefixed(prefix, self.usage).map(|l| html_escape(&l)).collect();
        format!(
            "<p>{}</p>\n<p>Usage:</p>\n<pre><code>{}</code></pre>",
            code_spans_html(&self.message),
            usage.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_usage_matches_specs() {
        let joined: Vec<&str> = SPECS.iter().map(|s| s.usage).collect();
        assert_eq!(ALL_USAGE, joined.join("\n"));
        let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        assert_eq!(COMMAND_NAMES, names.as_slice());
    }

    #[test]
    fn usage_lookup() {
        assert_eq!(usage("mute"), Some("mute <user-or-glob> [duration] [reason...]"));
        assert_eq!(usage("MUTE"), Some("mute <user-or-glob> [duration] [reason...]"));
        assert_eq!(usage("rooms add"), Some("rooms\nrooms add <room>\nrooms remove <room>"));
        assert_eq!(usage("nope"), None);
        assert_eq!(usage(""), None);
        for name in COMMAND_NAMES {
            assert!(usage(name).is_some(), "{name}");
            assert!(topic_help("!hush", name).is_some(), "{name}");
            assert!(topic_help_html("!hush", name).is_some(), "{name}");
        }
        assert_eq!(topic_help("!hush", "nope"), None);
        assert_eq!(topic_help_html("!hush", "nope"), None);
    }

    #[test]
    fn help_mentions_every_command_with_the_prefix() {
        let text = help_text("!mod");
        let html = help_html("!mod");
        for s in SPECS {
            for line in s.usage.lines() {
                assert!(text.contains(&format!("!mod {line}")), "{line}");
                assert!(html.contains(&html_escape(&format!("!mod {line}"))), "{line}");
            }
        }
        assert!(text.ends_with("More: !mod help <command>"));
        assert!(!html.contains("<user"));
    }

    #[test]
    fn topic_help_text() {
        let t = topic_help("!hush", "Ban").unwrap();
        assert!(t.starts_with("Usage:\n  !hush ban <user-or-glob> [duration] [reason...]\n"));
        assert!(t.contains("\n  !hush ban @spammer:example.org 7d spam links"));
        assert!(t.contains("at most 100 years"));
        let h = topic_help_html("!hush", "rooms").unwrap();
        assert!(h.contains("!hush rooms add &lt;room&gt;"));
    }

    #[test]
    fn escapes_and_renders() {
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(code_spans_html("`<b>` is bad"), "<code>&lt;b&gt;</code> is bad");
        assert_eq!(code_spans_html("odd ` tick"), "odd ` tick");
        let e =
            UsageError { command: Some("watch"), message: "`lobby` is not a room".to_owned(), usage: "watch <room>" };
        assert_eq!(e.render("!hush"), "`lobby` is not a room\nUsage:\n  !hush watch <room>");
        assert_eq!(
            e.render_html("!hush"),
            "<p><code>lobby</code> is not a room</p>\n<p>Usage:</p>\n<pre><code>!hush watch &lt;room&gt;</code></pre>"
        );
        assert_eq!(e.to_string(), "`lobby` is not a room");
    }
}
