//! Parser tests: every command, every error message, pills, durations, prefixes, unicode.

use std::time::Duration;

use proptest::strategy::Strategy;

use super::*;
use crate::policy::ListTrust;

const P: &str = "!hush";

fn cmd(body: &str) -> Command {
    match parse(P, body, None) {
        Parsed::Command(c) => c,
        other => panic!("{body:?}: {other:?}"),
    }
}

fn cmd_html(body: &str, html: &str) -> Command {
    match parse(P, body, Some(html)) {
        Parsed::Command(c) => c,
        other => panic!("{body:?}: {other:?}"),
    }
}

/// Asserts the error of `body` with the formatted body `html`: its command and message.
fn error_html(body: &str, html: &str, command: Option<&str>, message: &str) {
    match parse(P, body, Some(html)) {
        Parsed::Invalid(e) => {
            assert_eq!(e.command, command, "{body:?}");
            assert_eq!(e.message, message, "{body:?}");
        }
        other => panic!("{body:?}: {other:?}"),
    }
}

fn invalid(body: &str) -> UsageError {
    match parse(P, body, None) {
        Parsed::Invalid(e) => e,
        other => panic!("{body:?}: {other:?}"),
    }
}

/// Asserts the error of `body`: its command, its message and its usage.
fn error(body: &str, command: Option<&str>, message: &str) {
    let e = invalid(body);
    assert_eq!(e.command, command, "{body:?}");
    assert_eq!(e.message, message, "{body:?}");
    let expected_usage = command.and_then(usage).unwrap_or(usage::ALL_USAGE);
    assert_eq!(e.usage, expected_usage, "{body:?}");
}

fn user(s: &str) -> Target {
    Target::User(s.to_owned())
}

fn glob(s: &str) -> Target {
    Target::Glob(s.to_owned())
}

fn mins(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n * 60))
}

fn mute(target: Target, duration: Option<Duration>, reason: Option<&str>) -> Command {
    Command::Mute { target, duration, reason: reason.map(str::to_owned) }
}

fn ban(target: Target, duration: Option<Duration>, reason: Option<&str>) -> Command {
    Command::Ban { target, duration, reason: reason.map(str::to_owned) }
}

fn alias(s: &str) -> RoomRef {
    RoomRef::Alias(s.to_owned())
}

// ---- prefix ----

#[test]
fn not_commands() {
    for body in [
        "",
        "hello",
        "!hushx",
        "!hushx status",
        "!hus",
        "hush status",
        " !hush2 status",
        "> !hush status",
        "é",
        "!hus\u{e9}",
        "status !hush",
    ] {
        assert_eq!(parse(P, body, None), Parsed::NotACommand, "{body:?}");
    }
}

#[test]
fn bare_prefix_lists_the_commands() {
    for body in ["!hush", "!hush ", "  !hush\n", "!HUSH", "!hush\u{a0}"] {
        error(body, None, "`!hush` needs a command; `!hush help` explains them");
    }
    assert_eq!(invalid("!hush").usage, usage::ALL_USAGE);
}

#[test]
fn prefix_is_configurable_and_case_insensitive() {
    assert_eq!(parse("!mod", "!MOD status", None), Parsed::Command(Command::Status));
    assert_eq!(parse("!mod", "!hush status", None), Parsed::NotACommand);
    assert_eq!(parse(" !mod ", "!mod status", None), Parsed::Command(Command::Status));
    assert_eq!(parse("hush:", "hush: status", None), Parsed::Command(Command::Status));
    assert_eq!(parse("ñ", "Ñ status", None), Parsed::NotACommand);
    assert_eq!(parse("ñ", "ñ status", None), Parsed::Command(Command::Status));
    match parse("!mod", "!mod", None) {
        Parsed::Invalid(e) => assert_eq!(e.message, "`!mod` needs a command; `!mod help` explains them"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_prefix_matches_nothing() {
    assert_eq!(parse("", "status", None), Parsed::NotACommand);
    assert_eq!(parse("  ", " status", None), Parsed::NotACommand);
}

#[test]
fn whitespace_and_unicode() {
    assert_eq!(cmd("\t !hush\n\nstatus \n"), Command::Status);
    assert_eq!(cmd("!hush\u{3000}status"), Command::Status);
    assert_eq!(cmd("!hush\u{a0}mutes\u{2003}"), Command::Mutes);
    assert_eq!(
        cmd("!hush mute @ünïcødé:example.org 1h café — «spam» 🙃"),
        mute(user("@ünïcødé:example.org"), mins(60), Some("café — «spam» 🙃"))
    );
    error("!hush stätus", None, "unknown command `stätus`; did you mean `status`?");
    error("!hush 🙃", None, "unknown command `🙃`");
}

// ---- command words ----

#[test]
fn simple_commands() {
    assert_eq!(cmd("!hush status"), Command::Status);
    assert_eq!(cmd("!hush mutes"), Command::Mutes);
    assert_eq!(cmd("!hush rooms"), Command::Rooms);
    assert_eq!(cmd("!hush help"), Command::Help { topic: None });
    assert_eq!(cmd("!hush STATUS"), Command::Status);
    assert_eq!(cmd("!Hush Mutes"), Command::Mutes);
}

#[test]
fn unknown_commands() {
    error("!hush foo", None, "unknown command `foo`");
    error("!hush mtue @a:b", None, "unknown command `mtue`; did you mean `mute`?");
    error("!hush Stauts", None, "unknown command `Stauts`; did you mean `status`?");
    error("!hush status.", None, "unknown command `status.`; did you mean `status`?");
    let long = "x".repeat(100);
    error(&format!("!hush {long}"), None, &format!("unknown command `{}…`", "x".repeat(64)));
}

#[test]
fn extra_arguments() {
    error("!hush status now", Some("status"), "`status` takes no arguments; unexpected `now`");
    error("!hush mutes all of them", Some("mutes"), "`mutes` takes no arguments; unexpected `all of them`");
    error("!hush unmute @a:example.org 1h", Some("unmute"), "`unmute` takes only a user or glob; unexpected `1h`");
    error(
        "!hush unban @a:example.org because",
        Some("unban"),
        "`unban` takes only a user or glob; unexpected `because`",
    );
    error(
        "!hush watch #a:example.org #b:example.org",
        Some("watch"),
        "`watch` takes only one room and `--actions`; unexpected `#b:example.org`",
    );
    error("!hush unwatch !abc x", Some("unwatch"), "`unwatch` takes only one room; unexpected `x`");
    error("!hush preview !abc x", Some("preview"), "`preview` takes only one room; unexpected `x`");
    error("!hush confirm ab12 now", Some("confirm"), "`confirm` takes only one id; unexpected `now`");
    error("!hush reject ab12 cd34", Some("reject"), "`reject` takes only one id; unexpected `cd34`");
    error("!hush rooms add #a:example.org x", Some("rooms"), "`rooms add` takes only one room; unexpected `x`");
    error("!hush rooms remove #a:example.org x", Some("rooms"), "`rooms remove` takes only one room; unexpected `x`");
    error("!hush help mute ban", Some("help"), "`help` takes at most one command name; unexpected `ban`");
}

// ---- help ----

#[test]
fn help_topics() {
    for name in COMMAND_NAMES {
        assert_eq!(cmd(&format!("!hush help {name}")), Command::Help { topic: Some((*name).to_owned()) });
    }
    assert_eq!(cmd("!hush HELP Mute"), Command::Help { topic: Some("mute".to_owned()) });
    assert_eq!(cmd("!hush help rooms add"), Command::Help { topic: Some("rooms".to_owned()) });
    assert_eq!(cmd("!hush help rooms REMOVE"), Command::Help { topic: Some("rooms".to_owned()) });
}

#[test]
fn help_unknown_topic() {
    error(
        "!hush help mtue",
        Some("help"),
        "`mtue` is not a command; did you mean `mute`?; the commands are mute, unmute, ban, \
         unban, allow, unallow, redact, history, undo, mutes, confirm, reject, watch, preview, unwatch, rooms, \
         status, help",
    );
    error(
        "!hush help xyzzy",
        Some("help"),
        "`xyzzy` is not a command; the commands are mute, unmute, ban, unban, allow, unallow, \
         redact, history, undo, mutes, confirm, reject, watch, preview, unwatch, rooms, status, help",
    );
    error("!hush help rooms list", Some("help"), "`help` takes at most one command name; unexpected `list`");
}

// ---- mute / ban ----

#[test]
fn mute_forms() {
    assert_eq!(cmd("!hush mute @a:example.org"), mute(user("@a:example.org"), None, None));
    assert_eq!(cmd("!hush mute @a:example.org spam"), mute(user("@a:example.org"), None, Some("spam")));
    assert_eq!(cmd("!hush mute @a:example.org 20m"), mute(user("@a:example.org"), mins(20), None));
    assert_eq!(
        cmd("!hush mute @user:localhost 20s reason"),
        mute(user("@user:localhost"), Some(Duration::from_secs(20)), Some("reason"))
    );
    assert_eq!(
        cmd("!hush mute @a:example.org 2h flooding   the\n lobby  "),
        mute(user("@a:example.org"), mins(120), Some("flooding   the\n lobby"))
    );
    assert_eq!(cmd("!hush MUTE @A:Example.ORG 7D Spam"), mute(user("@A:Example.ORG"), mins(7 * 24 * 60), Some("Spam")));
    assert_eq!(cmd("!hush mute @*:spam.example bots"), mute(glob("@*:spam.example"), None, Some("bots")));
}

#[test]
fn ban_forms() {
    assert_eq!(cmd("!hush ban @a:example.org"), ban(user("@a:example.org"), None, None));
    assert_eq!(
        cmd("!hush ban @a:example.org 1w spam links"),
        ban(user("@a:example.org"), mins(7 * 24 * 60), Some("spam links"))
    );
    assert_eq!(cmd("!hush ban @bot??:*.evil.example"), ban(glob("@bot??:*.evil.example"), None, None));
    assert_eq!(cmd("!hush unban @a:example.org"), Command::Unban { target: user("@a:example.org") });
    assert_eq!(cmd("!hush unmute @*:evil.example"), Command::Unmute { target: glob("@*:evil.example") });
}

#[test]
fn composite_and_spaced_durations() {
    let t = user("@a:example.org");
    assert_eq!(cmd("!hush mute @a:example.org 1h30m x"), mute(t.clone(), mins(90), Some("x")));
    assert_eq!(cmd("!hush mute @a:example.org 1h 30m x"), mute(t.clone(), mins(90), Some("x")));
    assert_eq!(cmd("!hush mute @a:example.org 2 hours x"), mute(t.clone(), mins(120), Some("x")));
    assert_eq!(cmd("!hush mute @a:example.org 2 Hours 30 min"), mute(t.clone(), mins(150), None));
    assert_eq!(cmd("!hush mute @a:example.org 10mins spam"), mute(t.clone(), mins(10), Some("spam")));
    assert_eq!(cmd("!hush mute @a:example.org 1h, spam"), mute(t.clone(), mins(60), Some("spam")));
    assert_eq!(cmd("!hush mute @a:example.org 1h: 30m"), mute(t.clone(), mins(60), Some("30m")));
    assert_eq!(cmd("!hush mute @a:example.org 2nd warning"), mute(t.clone(), None, Some("2nd warning")));
    assert_eq!(cmd("!hush mute @a:example.org 1d 3rd time"), mute(t.clone(), mins(1440), Some("3rd time")));
    assert_eq!(cmd("!hush mute @a:example.org 24/7 spam"), mute(t.clone(), None, Some("24/7 spam")));
    assert_eq!(cmd("!hush mute @a:example.org 36525d"), mute(t.clone(), Some(MAX_DURATION), None));
    assert_eq!(cmd("!hush mute @a:example.org 1h 0m"), mute(t, mins(60), None));
}

#[test]
fn duration_errors() {
    let m = Some("mute");
    error("!hush mute @a:example.org 2x spam", m, "`2x` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
    error(
        "!hush mute @a:example.org 30 spam",
        m,
        "`30` has no unit: write 30s, 30m, 30h or 30d (a reason cannot start with a number)",
    );
    error(
        "!hush mute @a:example.org 30, spam",
        m,
        "`30` has no unit: write 30s, 30m, 30h or 30d (a reason cannot start with a number)",
    );
    error("!hush mute @a:example.org 1h30", m, "`1h30` ends without a unit: use e.g. 30s, 20m, 2h, 7d, 1h30m");
    error(
        "!hush ban @a:example.org 1.5h",
        Some("ban"),
        "`1.5h` is not a duration: use whole numbers, e.g. 1h30m for an hour and a half",
    );
    error(
        "!hush ban @a:example.org 1y",
        Some("ban"),
        "`1y` is not a duration: months and years are not units, use days or weeks (e.g. 30d, 52w)",
    );
    error("!hush mute @a:example.org 0s", m, "`0s` is zero: give a positive duration, or none for a permanent mute");
    error(
        "!hush ban @a:example.org 0 hours spam",
        Some("ban"),
        "`0 hours` is zero: give a positive duration, or none for a permanent ban",
    );
    error(
        "!hush mute @a:example.org 36526d",
        m,
        "`36526d` is longer than 100 years: leave the duration out for a permanent mute",
    );
    error(
        "!hush mute @a:example.org 36525d 1s",
        m,
        "`36525d 1s` is longer than 100 years: leave the duration out for a permanent mute",
    );
    error(
        "!hush mute @a:example.org 99999999999999999999999999w",
        m,
        "`99999999999999999999999999w` is longer than 100 years: leave the duration out for a permanent mute",
    );
    error(
        "!hush mute @a:example.org 99999999999999999999999 days",
        m,
        "`99999999999999999999999 days` is longer than 100 years: leave the duration out for a permanent mute",
    );
    error("!hush mute @a:example.org 1h 2x", m, "`2x` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
}

#[test]
fn target_errors() {
    let m = Some("mute");
    error("!hush mute", m, "`mute` needs a user or glob, e.g. @spammer:example.org");
    error("!hush ban   ", Some("ban"), "`ban` needs a user or glob, e.g. @spammer:example.org");
    error("!hush unmute", Some("unmute"), "`unmute` needs a user or glob, e.g. @spammer:example.org");
    error("!hush unban", Some("unban"), "`unban` needs a user or glob, e.g. @spammer:example.org");
    error("!hush mute 1h @a:example.org", m, "`1h` is not a user: the user or glob comes first");
    error(
        "!hush mute alice 1h",
        m,
        "`alice` is not a user id: write @user:server, a glob such as @*:example.org, or mention the user (a pill)",
    );
    error("!hush mute @alice 1h", m, "`@alice` has no server: write the full user id, e.g. @alice:example.org");
    error(
        "!hush mute *:evil.com",
        m,
        "`*:evil.com` is not a user glob: user ids and globs start with @, e.g. @*:evil.com",
    );
    error(
        "!hush mute #room:example.org",
        m,
        "`#room:example.org` is a room: give a user (@user:server) or a glob (@*:example.org)",
    );
    error("!hush mute @alice:example.org, spam", m, "`@alice:example.org,` is not a user id: the server name has `,`");
    error("!hush mute https://example.com/x", m, "`https://example.com/x` is not a link to a user");
    error(
        "!hush mute https://matrix.to/#/#lobby:example.org",
        m,
        "`https://matrix.to/#/#lobby:example.org` is not a link to a user",
    );
}

#[test]
fn globs_that_match_everyone() {
    for (command, glob) in [
        ("mute", "@*:*"),
        ("ban", "@*:*"),
        ("ban", "@*:*.*"),
        ("mute", "@?*:**"),
        ("ban", "*"),
        ("mute", "*:*"),
        ("ban", "@*"),
        ("mute", "`@*:*.*`"),
    ] {
        let shown = glob.trim_matches('`');
        error(
            &format!("!hush {command} {glob} 1h spam"),
            Some(command),
            &format!(
                "`{shown}` matches every user: such a {command} rule would restrict every user of every \
                 server, and would be followed by every other bot that follows the list; name a server \
                 or part of a name, e.g. @*:spam.example"
            ),
        );
    }
    // Narrower globs are fine.
    assert_eq!(cmd("!hush ban @*:*.evil.example"), ban(glob("@*:*.evil.example"), None, None));
    assert_eq!(cmd("!hush mute @a*:*"), mute(glob("@a*:*"), None, None));
    // Such a rule, once written (by another tool, or before this guard), can be removed.
    assert_eq!(cmd("!hush unban @*:*.*"), Command::Unban { target: glob("@*:*.*") });
    assert_eq!(cmd("!hush unmute @*:*"), Command::Unmute { target: glob("@*:*") });
}

#[test]
fn ids_are_not_altered() {
    assert_eq!(
        cmd("!hush unmute @MiXeD.Case_=/x:Example.ORG:8448"),
        Command::Unmute { target: user("@MiXeD.Case_=/x:Example.ORG:8448") }
    );
    assert_eq!(cmd("!hush ban `@_evil_*:example.org` spam"), ban(glob("@_evil_*:example.org"), None, Some("spam")));
}

// ---- pills ----

const ALICE_PILL: &str = "<a href=\"https://matrix.to/#/@alice:example.org\">Alice Smith</a>";

#[test]
fn user_pill_with_display_name() {
    assert_eq!(
        cmd_html("!hush mute Alice Smith 1h spam", &format!("!hush mute {ALICE_PILL} 1h spam")),
        mute(user("@alice:example.org"), mins(60), Some("spam"))
    );
    assert_eq!(
        cmd_html("!hush unmute Alice Smith", &format!("<p>!hush unmute {ALICE_PILL}</p>")),
        Command::Unmute { target: user("@alice:example.org") }
    );
    assert_eq!(
        cmd_html("!hush ban Alice Smith spam", &format!("!hush ban {ALICE_PILL} spam")),
        ban(user("@alice:example.org"), None, Some("spam"))
    );
}

#[test]
fn pill_forms() {
    let cases = [
        ("<a href=\"https://matrix.to/#/%40bob%3Aexample.org\">Bob</a>", "@bob:example.org"),
        ("<a href='matrix:u/bob:example.org?action=chat'>Bob</a>", "@bob:example.org"),
        ("<A HREF=\"https://matrix.to/#/@bob:example.org?via=x\" data-x>B&amp;b</A>", "@bob:example.org"),
    ];
    for (html, id) in cases {
        let text = if html.contains("B&amp;b") { "B&b" } else { "Bob" };
        assert_eq!(
            cmd_html(&format!("!hush unban {text}"), &format!("!hush unban {html}")),
            Command::Unban { target: user(id) },
            "{html}"
        );
    }
}

#[test]
fn pill_text_is_the_id() {
    let html = "!hush mute <a href=\"https://matrix.to/#/@bob:example.org\">@bob:example.org</a> 5m";
    assert_eq!(cmd_html("!hush mute @bob:example.org 5m", html), mute(user("@bob:example.org"), mins(5), None));
}

#[test]
fn longest_pill_wins_and_reason_keeps_display_names() {
    let html = "!hush mute <a href=\"https://matrix.to/#/@al:example.org\">Al</a> \
                <a href=\"https://matrix.to/#/@alice:example.org\">Al Ice</a> 1h see Al";
    assert_eq!(
        cmd_html("!hush mute Al Ice 1h see Al", html),
        mute(user("@alice:example.org"), mins(60), Some("see Al"))
    );
    assert_eq!(
        cmd_html("!hush mute Al 1h see Al Ice", html),
        mute(user("@al:example.org"), mins(60), Some("see Al Ice"))
    );
}

#[test]
fn pill_not_at_the_target_is_ignored() {
    let html = format!("!hush mute @bob:example.org spam like {ALICE_PILL}");
    assert_eq!(
        cmd_html("!hush mute @bob:example.org spam like Alice Smith", &html),
        mute(user("@bob:example.org"), None, Some("spam like Alice Smith"))
    );
    // A display name without its pill is not a user.
    error(
        "!hush mute Alice Smith",
        Some("mute"),
        "`Alice` is not a user id: write @user:server, a glob such as @*:example.org, or mention the user (a pill)",
    );
}

#[test]
fn pill_text_naming_another_user_is_refused() {
    let html = "!hush ban <a href=\"https://matrix.to/#/@headmod:example.org\">@spammer:evil.example</a> spam";
    error_html(
        "!hush ban @spammer:evil.example spam",
        html,
        Some("ban"),
        "the link's text says `@spammer:evil.example` but it points to `@headmod:example.org`; \
         type the user id instead",
    );
    // A glob as the text, a matrix: link, and another command.
    let html = "!hush unmute <a href='matrix:u/headmod:example.org'>@*:evil.example</a>";
    error_html(
        "!hush unmute @*:evil.example",
        html,
        Some("unmute"),
        "the link's text says `@*:evil.example` but it points to `@headmod:example.org`; \
         type the user id instead",
    );
    // The same id in another case is the same user: the link's target is used.
    let html = "!hush mute <a href=\"https://matrix.to/#/@bob:example.org\">@Bob:Example.org</a>";
    assert_eq!(cmd_html("!hush mute @Bob:Example.org", html), mute(user("@bob:example.org"), None, None));
    // A display name says nothing about the target: the link's target is used.
    let html = "!hush ban <a href=\"https://matrix.to/#/@headmod:example.org\">Spammer</a>";
    assert_eq!(cmd_html("!hush ban Spammer", html), ban(user("@headmod:example.org"), None, None));
}

#[test]
fn markdown_link_text_naming_another_user_is_refused() {
    error(
        "!hush ban [@a:example.org](https://matrix.to/#/@b:example.org) spam",
        Some("ban"),
        "the link's text says `@a:example.org` but it points to `@b:example.org`; type the user id instead",
    );
    error(
        "!hush mute [`@a:example.org`](matrix:u/b:example.org)",
        Some("mute"),
        "the link's text says `@a:example.org` but it points to `@b:example.org`; type the user id instead",
    );
    // Element keeps the Markdown in the body and puts the link in the formatted body.
    error_html(
        "!hush ban [@a:example.org](https://matrix.to/#/@b:example.org)",
        "!hush ban <a href=\"https://matrix.to/#/@b:example.org\">@a:example.org</a>",
        Some("ban"),
        "the link's text says `@a:example.org` but it points to `@b:example.org`; type the user id instead",
    );
    assert_eq!(
        cmd("!hush ban [@B:example.org](https://matrix.to/#/@b:example.org)"),
        ban(user("@b:example.org"), None, None)
    );
    assert_eq!(cmd("!hush ban [Bee](https://matrix.to/#/@b:example.org)"), ban(user("@b:example.org"), None, None));
}

#[test]
fn room_link_text_naming_another_room_is_refused() {
    error(
        "!hush watch [#ours:example.org](https://matrix.to/#/#theirs:example.org)",
        Some("watch"),
        "the link's text says `#ours:example.org` but it points to `#theirs:example.org`; \
         type the room id or alias instead",
    );
    // An alias and a room id cannot be compared: the link's target is used.
    assert_eq!(
        cmd("!hush preview [#ours:example.org](https://matrix.to/#/!abc:example.org)"),
        Command::Preview { room: RoomRef::Id("!abc:example.org".to_owned()) }
    );
}

#[test]
fn room_pill_where_a_user_is_needed() {
    let html = "!hush mute <a href=\"https://matrix.to/#/#lobby:example.org\">Lobby</a>";
    match parse(P, "!hush mute Lobby", Some(html)) {
        Parsed::Invalid(e) => assert_eq!(e.message, "`#lobby:example.org` is a room: `mute` needs a user or glob"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn markdown_links_and_bare_urls() {
    assert_eq!(
        cmd("!hush mute [Alice Smith](https://matrix.to/#/@alice:example.org) 1h spam"),
        mute(user("@alice:example.org"), mins(60), Some("spam"))
    );
    assert_eq!(
        cmd("!hush unmute https://matrix.to/#/%40alice%3Aexample.org"),
        Command::Unmute { target: user("@alice:example.org") }
    );
    assert_eq!(cmd("!hush unmute matrix:u/alice:example.org"), Command::Unmute { target: user("@alice:example.org") });
    assert_eq!(
        cmd("!hush watch [policies](https://matrix.to/#/#policies:example.org)"),
        Command::Watch { room: alias("#policies:example.org"), actions: None }
    );
    // Not a link to a user: the `[` word is read as a token.
    error(
        "!hush mute [x](https://example.com) 1h",
        Some("mute"),
        "`[x](https://example.com)` is not a user id: write @user:server, a glob such as \
         @*:example.org, or mention the user (a pill)",
    );
}

// ---- rooms ----

#[test]
fn room_commands() {
    let v12 = "!hZ8vz5bYd8JmVZGsnXqOM5Pq7oDvW0-1Ht6cZ6uUd8c";
    assert_eq!(cmd(&format!("!hush watch {v12}")), Command::Watch { room: RoomRef::Id(v12.to_owned()), actions: None });
    assert_eq!(cmd("!hush preview #partner:example.org"), Command::Preview { room: alias("#partner:example.org") });
    assert_eq!(cmd("!hush unwatch #policies:example.org"), Command::Unwatch { room: alias("#policies:example.org") });
    assert_eq!(cmd("!hush rooms add #lobby:example.org"), Command::RoomsAdd { room: alias("#lobby:example.org") });
    assert_eq!(
        cmd("!hush Rooms REMOVE !old:example.org"),
        Command::RoomsRemove { room: RoomRef::Id("!old:example.org".to_owned()) }
    );
    assert_eq!(
        cmd("!hush rooms add matrix:roomid/abc?via=example.org"),
        Command::RoomsAdd { room: RoomRef::Id("!abc".to_owned()) }
    );
    assert_eq!(
        cmd_html(
            "!hush rooms add Lobby",
            "!hush rooms add <a href=\"https://matrix.to/#/%23lobby%3Aexample.org\">Lobby</a>"
        ),
        Command::RoomsAdd { room: alias("#lobby:example.org") }
    );
}

#[test]
fn room_errors() {
    error("!hush watch", Some("watch"), "`watch` needs a room: an id (!…) or alias (#name:server)");
    error("!hush unwatch", Some("unwatch"), "`unwatch` needs a room: an id (!…) or alias (#name:server)");
    error("!hush preview", Some("preview"), "`preview` needs a room: an id (!…) or alias (#name:server)");
    error("!hush preview lobby", Some("preview"), "`lobby` is not a room: give a room id (!…) or alias (#name:server)");
    error("!hush rooms add", Some("rooms"), "`rooms add` needs a room: an id (!…) or alias (#name:server)");
    error("!hush rooms remove", Some("rooms"), "`rooms remove` needs a room: an id (!…) or alias (#name:server)");
    error(
        "!hush rooms list",
        Some("rooms"),
        "unknown `rooms` subcommand `list`: use `rooms`, `rooms add <room>` or `rooms remove <room>`",
    );
    error("!hush watch lobby", Some("watch"), "`lobby` is not a room: give a room id (!…) or alias (#name:server)");
    error("!hush watch #lobby", Some("watch"), "`#lobby` has no server: write the full alias, e.g. #lobby:example.org");
    error(
        "!hush watch @a:example.org",
        Some("watch"),
        "`@a:example.org` is a user: give a room id (!…) or alias (#name:server)",
    );
    error(
        "!hush watch https://matrix.to/#/@a:example.org",
        Some("watch"),
        "`https://matrix.to/#/@a:example.org` is not a link to a room",
    );
    error(
        "!hush rooms add Alice Smith",
        Some("rooms"),
        "`Alice` is not a room: give a room id (!…) or alias (#name:server)",
    );
    match parse(P, "!hush rooms add Alice Smith", Some(&format!("!hush rooms add {ALICE_PILL}"))) {
        Parsed::Invalid(e) => assert_eq!(
            e.message,
            "`@alice:example.org` is a user: `rooms add` needs a room id (!…) or alias (#name:server)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn watch_actions() {
    let partner = || alias("#partner:example.org");
    let watch = |ban, mute, suspend| Command::Watch {
        room: partner(),
        actions: Some(ListTrust { ban, mute, suspend, server_acl: false }),
    };
    assert_eq!(cmd("!hush watch #partner:example.org --actions ban"), watch(true, false, false));
    assert_eq!(cmd("!hush watch #partner:example.org --actions=ban,mute"), watch(true, true, false));
    assert_eq!(cmd("!hush watch #partner:example.org --ACTIONS Mute,BAN,suspend"), watch(true, true, true));
    assert_eq!(cmd("!hush watch --actions ban #partner:example.org"), watch(true, false, false));
    assert_eq!(
        cmd("!hush watch #partner:example.org --actions ban,server_acl"),
        Command::Watch {
            room: partner(),
            actions: Some(ListTrust { ban: true, mute: false, suspend: false, server_acl: true })
        }
    );
    assert_eq!(cmd("!hush watch #partner:example.org --actions ban, mute"), watch(true, true, false));
    assert_eq!(cmd("!hush watch #partner:example.org --actions ban,mute,"), watch(true, true, false));
    assert_eq!(
        cmd_html(
            "!hush watch Partner list --actions mute",
            "!hush watch <a href=\"https://matrix.to/#/#partner:example.org\">Partner list</a> --actions mute"
        ),
        watch(false, true, false)
    );
}

#[test]
fn watch_action_errors() {
    let w = Some("watch");
    error(
        "!hush watch #p:example.org --actions ban,kick",
        w,
        "in `--actions`: unknown action `kick` (the actions are: ban, mute, suspend, server_acl)",
    );
    error(
        "!hush watch #p:example.org --actions=kick",
        w,
        "in `--actions`: unknown action `kick` (the actions are: ban, mute, suspend, server_acl)",
    );
    error("!hush watch #p:example.org --actions ban,ban", w, "in `--actions`: action `ban` is given twice");
    for body in [
        "!hush watch #p:example.org --actions",
        "!hush watch #p:example.org --actions=",
        "!hush watch #p:example.org --actions ,",
    ] {
        error(
            body,
            w,
            "`--actions` needs a list of actions, e.g. --actions ban,mute (the actions are: ban, mute, suspend, server_acl)",
        );
    }
    error(
        "!hush watch #p:example.org --actions --actions ban",
        w,
        "`--actions` needs a list of actions, e.g. --actions ban,mute (the actions are: ban, mute, suspend, server_acl)",
    );
    error("!hush watch #p:example.org --actions ban --actions mute", w, "`--actions` is given twice");
    error(
        "!hush watch #p:example.org --trust ban",
        w,
        "unknown option `--trust`: `watch` takes only `--actions`, e.g. --actions ban,mute",
    );
    error(
        "!hush watch #p:example.org --actions=ban --force",
        w,
        "unknown option `--force`: `watch` takes only `--actions`, e.g. --actions ban,mute",
    );
    error("!hush watch --actions ban", w, "`watch` needs a room: an id (!…) or alias (#name:server)");
    error(
        "!hush watch #p:example.org --actions ban mute",
        w,
        "`watch` takes only one room and `--actions`; unexpected `mute`",
    );
    error(
        "!hush watch #p:example.org --actions ban\u{7}",
        w,
        "in `--actions`: unknown action `ban` (the actions are: ban, mute, suspend, server_acl)",
    );
    // `--actions` is `watch`'s alone.
    error(
        "!hush unwatch #p:example.org --actions ban",
        Some("unwatch"),
        "`unwatch` takes only one room; unexpected `--actions ban`",
    );
}

#[test]
fn confirm_and_reject() {
    assert_eq!(cmd("!hush confirm 3f9a"), Command::Confirm { id: "3f9a".to_owned() });
    assert_eq!(cmd("!hush CONFIRM Ab-12"), Command::Confirm { id: "Ab-12".to_owned() });
    assert_eq!(cmd("!hush reject `3f9a`"), Command::Reject { id: "3f9a".to_owned() });
    let long = "x".repeat(32);
    assert_eq!(cmd(&format!("!hush reject {long}")), Command::Reject { id: long });
    error(
        "!hush confirm",
        Some("confirm"),
        "`confirm` needs the id of a held rule, as hush gave it when it held the rule",
    );
    error(
        "!hush reject",
        Some("reject"),
        "`reject` needs the id of a held rule, as hush gave it when it held the rule",
    );
    for (bad, shown) in [
        ("3f9a.", "3f9a."),
        ("ab_c", "ab_c"),
        ("é1", "é1"),
        ("@a:b", "@a:b"),
        (&*"x".repeat(33), &*"x".repeat(33)),
        ("a\u{7}", "a"),
    ] {
        error(
            &format!("!hush confirm {bad}"),
            Some("confirm"),
            &format!("`{shown}` is not the id of a held rule: ids are 1 to 32 letters, digits or `-`"),
        );
    }
}

// ---- renderings ----

#[test]
fn usage_error_renders_with_the_prefix() {
    let e = invalid("!hush mute @a:example.org 2x");
    assert_eq!(
        e.render("!hush"),
        "`2x` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m\nUsage:\n  \
         !hush mute <user-or-glob> [duration] [reason...]"
    );
    assert!(e.render_html("!hush").starts_with("<p><code>2x</code> is not a duration"));
    let e = invalid("!hush");
    assert_eq!(e.render("!hush").lines().count(), 2 + usage::ALL_USAGE.lines().count());
}

#[test]
fn command_names() {
    assert_eq!(cmd("!hush rooms add #a:b.c").name(), "rooms");
    assert_eq!(cmd("!hush mute @a:b").name(), "mute");
    assert_eq!(cmd("!hush confirm a1").name(), "confirm");
    assert_eq!(cmd("!hush reject a1").name(), "reject");
    assert_eq!(cmd("!hush preview !a").name(), "preview");
    assert_eq!(cmd("!hush watch !a --actions ban").name(), "watch");
    assert_eq!(user("@a:b").to_string(), "@a:b");
    assert_eq!(alias("#a:b").to_string(), "#a:b");
}

// ---- never panics ----

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(body in "\\PC*", html in proptest::option::of("\\PC*")) {
        let _ = parse(P, &body, html.as_deref());
        let _ = parse(&body, &body, html.as_deref());
    }

    #[test]
    fn commands_never_panic(
        words in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "mute", "ban", "unmute", "unban", "help", "rooms", "add", "remove", "watch",
                    "status", "1h", "30", "minutes", "0s", "2x", "1.5h", "@a:b", "@*:*", "#r:s",
                    "!r", "[A](https://matrix.to/#/@a:b)", "Alice", "`@a:b`", "matrix:u/a:b", ",",
                    "confirm", "reject", "preview", "--actions", "--actions=ban,mute", "ban,", "suspend",
                    "@*:*.*", "*", "[@c:d](https://matrix.to/#/@a:b)", "a1-b2",
                    "allow", "unallow", "evil.org", "*.org", "a:b",
                ]).prop_map(str::to_owned),
                "\\PC{0,12}",
            ],
            0..8,
        ),
        seps in proptest::collection::vec(proptest::sample::select(vec![" ", "  ", "\n", "\u{a0}", "\t"]), 8),
        html in proptest::option::of("(<a href=\"(https://matrix.to/#/|matrix:u/)[@%a-z0-9:.]{0,12}\">[A-Za-z ]{0,8}</a>|\\PC{0,6}){0,4}"),
    ) {
        let mut body = String::from("!hush");
        for (w, s) in words.iter().zip(seps.iter()) {
            body.push_str(s);
            body.push_str(w);
        }
        if let Parsed::Command(c) = parse(P, &body, html.as_deref()) {
            match c {
                Command::Mute { target, duration, .. } | Command::Ban { target, duration, .. } => {
                    proptest::prop_assert!(parse_target(target.as_str()).is_ok());
                    proptest::prop_assert!(!crate::policy::glob::matches_everyone(target.as_str()));
                    if let Some(d) = duration {
                        proptest::prop_assert!(d > Duration::ZERO && d <= MAX_DURATION);
                        proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
                    }
                }
                Command::Unmute { target } | Command::Unban { target } => {
                    proptest::prop_assert!(parse_target(target.as_str()).is_ok());
                }
                Command::Allow { target, .. } | Command::Unallow { target } => {
                    let ok = match &target {
                        Target::Server(s) => parse_server(s).is_ok(),
                        t => parse_target(t.as_str()).is_ok(),
                    };
                    proptest::prop_assert!(ok);
                }
                Command::Watch { room, .. } | Command::Preview { room } | Command::Unwatch { room }
                | Command::RoomsAdd { room } | Command::RoomsRemove { room } => {
                    proptest::prop_assert!(parse_room(room.as_str()).is_ok());
                }
                Command::Confirm { id } | Command::Reject { id } => {
                    proptest::prop_assert!(is_hold_id(&id));
                }
                _ => {}
            }
        }
    }
}

// ---- allow ----

fn server(s: &str) -> Target {
    Target::Server(s.to_owned())
}

#[test]
fn allow_and_unallow_take_a_user_a_glob_or_a_server() {
    let allow = |target, reason: Option<&str>| Command::Allow { target, reason: reason.map(str::to_owned) };
    assert_eq!(cmd("!hush allow @friend:evil.example"), allow(user("@friend:evil.example"), None));
    assert_eq!(
        cmd("!hush ALLOW @friend:evil.example known to us, 2 years"),
        allow(user("@friend:evil.example"), Some("known to us, 2 years"))
    );
    // No duration: a word starting with a digit is part of the reason.
    assert_eq!(cmd("!hush allow @a:b.example 2h"), allow(user("@a:b.example"), Some("2h")));
    assert_eq!(cmd("!hush allow @*:partner.example"), allow(glob("@*:partner.example"), None));
    assert_eq!(cmd("!hush allow partner.example ours"), allow(server("partner.example"), Some("ours")));
    assert_eq!(cmd("!hush allow *.partner.example"), allow(server("*.partner.example"), None));
    assert_eq!(cmd("!hush allow `hs.example:8448`"), allow(server("hs.example:8448"), None));
    assert_eq!(
        cmd_html("!hush allow Alice Smith", &format!("!hush allow {ALICE_PILL}")),
        allow(user("@alice:example.org"), None)
    );
    assert_eq!(cmd("!hush unallow @friend:evil.example"), Command::Unallow { target: user("@friend:evil.example") });
    assert_eq!(cmd("!hush unallow partner.example"), Command::Unallow { target: server("partner.example") });
    // Such a rule, once written elsewhere, can be removed.
    assert_eq!(cmd("!hush unallow *"), Command::Unallow { target: server("*") });
    assert_eq!(cmd("!hush unallow @*:*"), Command::Unallow { target: glob("@*:*") });
    assert_eq!(cmd("!hush allow a.example").name(), "allow");
    assert_eq!(cmd("!hush unallow a.example").name(), "unallow");
    assert_eq!(server("a.example").to_string(), "a.example");
}

#[test]
fn allow_errors() {
    let a = Some("allow");
    error("!hush allow", a, "`allow` needs a user, glob or server, e.g. @friend:example.org or partner.example");
    error(
        "!hush unallow",
        Some("unallow"),
        "`unallow` needs a user, glob or server, e.g. @friend:example.org or partner.example",
    );
    for everyone in ["*", "@*:*", "*.*", "@*:*.*"] {
        error(
            &format!("!hush allow {everyone} sure"),
            a,
            &format!(
                "`{everyone}` matches everyone: such an allow rule would lift every ban and mute of every \
                 other list; to stop following a list, `unwatch` it"
            ),
        );
    }
    error(
        "!hush allow friend:evil.example",
        a,
        "`friend:evil.example` is not a server name; if it is a user, user ids start with @, e.g. @friend:evil.example",
    );
    error("!hush allow evil_example", a, "`evil_example` is not a server name: the server name has `_`");
    error(
        "!hush allow #lobby:example.org",
        a,
        "`#lobby:example.org` is a room: give a user (@user:server), a glob or a server name",
    );
    error("!hush allow @friend", a, "`@friend` has no server: write the full user id, e.g. @friend:example.org");
    error(
        "!hush unallow partner.example now",
        Some("unallow"),
        "`unallow` takes only a user, glob or server; unexpected `now`",
    );
    error("!hush allow https://example.com/x", a, "`https://example.com/x` is not a link to a user");
}

#[test]
fn redact_user_room_and_limit_in_any_order() {
    let lobby = || Some(alias("#lobby:example.org"));
    let redact = |room: Option<RoomRef>, limit: Option<u32>| Command::Redact {
        user: "@spammer:example.org".into(),
        room,
        limit,
    };
    assert_eq!(cmd("!hush redact @spammer:example.org"), redact(None, None));
    assert_eq!(cmd("!hush REDACT @spammer:example.org #lobby:example.org"), redact(lobby(), None));
    assert_eq!(cmd("!hush redact @spammer:example.org #lobby:example.org --limit 50"), redact(lobby(), Some(50)));
    assert_eq!(cmd("!hush redact @spammer:example.org --limit=50 #lobby:example.org"), redact(lobby(), Some(50)));
    assert_eq!(cmd("!hush redact @spammer:example.org --LIMIT 10000"), redact(None, Some(10_000)));
    assert_eq!(
        cmd("!hush redact https://matrix.to/#/@spammer:example.org !r:example.org"),
        redact(Some(RoomRef::Id("!r:example.org".into())), None)
    );
}

#[test]
fn redact_errors_name_what_is_wrong() {
    error("!hush redact", Some("redact"), "`redact` needs a user or glob, e.g. @spammer:example.org");
    error("!hush redact @*:spam.example", Some("redact"), "`@*:spam.example` is a glob: `redact` needs one user id");
    for bad in ["0", "10001", "-1", "ten", ""] {
        let body = format!("!hush redact @s:example.org --limit {bad}");
        error(&body, Some("redact"), &format!("`--limit` needs a number of events from 1 to 10000, not `{bad}`"));
    }
    error("!hush redact @s:example.org --limit 5 --limit 6", Some("redact"), "`--limit` is given twice");
    error(
        "!hush redact @s:example.org --since 2h",
        Some("redact"),
        "unknown option `--since`: `redact` takes only `--limit`, e.g. --limit 50",
    );
    error(
        "!hush redact @s:example.org #a:example.org #b:example.org",
        Some("redact"),
        "`redact` takes one user, an optional room and `--limit`; unexpected `#b:example.org`",
    );
    error(
        "!hush redact @s:example.org @t:example.org",
        Some("redact"),
        "`@t:example.org` is a user: give a room id (!…) or alias (#name:server)",
    );
}

// ---- history / undo ----

#[test]
fn history_takes_an_optional_user_or_room_then_a_count() {
    let history = |about: Option<HistoryAbout>, limit: Option<u32>| Command::History { about, limit };
    let u = || Some(HistoryAbout::User("@spammer:example.org".into()));
    assert_eq!(cmd("!hush history"), history(None, None));
    assert_eq!(cmd("!hush HISTORY 50"), history(None, Some(50)));
    assert_eq!(cmd("!hush history @spammer:example.org"), history(u(), None));
    assert_eq!(cmd("!hush history @spammer:example.org 100"), history(u(), Some(100)));
    assert_eq!(
        cmd("!hush history #lobby:example.org 5"),
        history(Some(HistoryAbout::Room(alias("#lobby:example.org"))), Some(5))
    );
    assert_eq!(
        cmd("!hush history !r:example.org"),
        history(Some(HistoryAbout::Room(RoomRef::Id("!r:example.org".into()))), None)
    );
    assert_eq!(cmd("!hush history https://matrix.to/#/@spammer:example.org"), history(u(), None));
    assert_eq!(
        cmd_html(
            "!hush history Spammer 3",
            r#"!hush history <a href="https://matrix.to/#/@spammer:example.org">Spammer</a> 3"#
        ),
        history(u(), Some(3))
    );
}

#[test]
fn history_errors_get_the_usage_back() {
    for bad in ["0", "101", "x1", "-3"] {
        let body = format!("!hush history @s:example.org {bad}");
        error(&body, Some("history"), &format!("the count must be a number from 1 to 100, not `{bad}`"));
    }
    error("!hush history 500", Some("history"), "the count must be a number from 1 to 100, not `500`");
    error("!hush history @*:spam.example", Some("history"), "`@*:spam.example` is a glob: `history` needs one user id");
    error(
        "!hush history spammer",
        Some("history"),
        "`spammer` is neither a user, a room nor a count: e.g. `history @spammer:example.org 50`",
    );
    error(
        "!hush history @s:example.org 5 6",
        Some("history"),
        "`history` takes an optional user or room, then an optional count; unexpected `6`",
    );
    assert_eq!(invalid("!hush history 0").usage, "history [user-or-room] [N]");
}

#[test]
fn undo_takes_one_history_id() {
    assert_eq!(cmd("!hush undo 42"), Command::Undo { id: 42 });
    assert_eq!(cmd("!hush UNDO #42"), Command::Undo { id: 42 });
    assert_eq!(cmd("!hush undo `#7`"), Command::Undo { id: 7 });
    error("!hush undo", Some("undo"), "`undo` needs the number of a history entry, e.g. `undo 42`");
    for bad in ["0", "#", "x", "h1", "-1", "#-2"] {
        error(
            &format!("!hush undo {bad}"),
            Some("undo"),
            &format!("`{bad}` is not the number of a history entry: e.g. `undo 42` or `undo #42`"),
        );
    }
    error("!hush undo 4 5", Some("undo"), "`undo` takes only one id; unexpected `5`");
    assert_eq!(invalid("!hush undo").usage, "undo <id>");
}
