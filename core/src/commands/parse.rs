//! The parser proper: prefix, command word, targets, durations, reasons, extra arguments.

use std::time::Duration;

use super::duration::{check_total, is_number, looks_like_duration, number, token_secs, unit_secs};
use super::ident::{is_hold_id, parse_room, parse_server, parse_target, show};
use super::pill::{check_link_text, extract, resolve_href, Link, Pill};
use super::usage::{usage as usage_of, ALL_USAGE, COMMAND_NAMES};
use super::{Command, HistoryAbout, Parsed, RoomRef, Target, UsageError};
use crate::policy::glob::matches_everyone;
use crate::policy::ListTrust;

/// The largest `--limit` of `redact`: events redacted per room.
pub const MAX_REDACT_LIMIT: u32 = 10_000;

/// How many entries `history` shows without a count, and at most.
pub const HISTORY_DEFAULT: u32 = 20;
pub const HISTORY_MAX: u32 = 100;

/// Punctuation a moderator may put right after a duration (`1h, spam`).
const TRAILING: [char; 3] = [',', ';', ':'];

/// Parses one management-room message.
///
/// `body` is the plain body, `formatted_body` the HTML one if any: its user and room
/// links (pills) stand for the ids where the plain body shows their text, usually a
/// display name. The prefix is matched ASCII case-insensitively after leading whitespace
/// and must be followed by whitespace or the end; an empty prefix matches nothing.
/// Never panics.
pub fn parse(prefix: &str, body: &str, formatted_body: Option<&str>) -> Parsed {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return Parsed::NotACommand;
    }
    let text = body.trim_start();
    let Some(head) = text.get(..prefix.len()) else {
        return Parsed::NotACommand;
    };
    if !head.eq_ignore_ascii_case(prefix) {
        return Parsed::NotACommand;
    }
    let rest = &text[prefix.len()..];
    if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
        return Parsed::NotACommand;
    }
    let mut args = Args { s: rest, pos: 0, pills: formatted_body.map(extract).unwrap_or_default() };
    match command(prefix, &mut args) {
        Ok(c) => Parsed::Command(c),
        Err(e) => Parsed::Invalid(e),
    }
}

fn err(command: &'static str, message: String) -> UsageError {
    UsageError { command: Some(command), message, usage: usage_of(command).unwrap_or(ALL_USAGE) }
}

/// Edit distance, for "did you mean"; only called on short words.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean `mute`?)` for a near miss, else nothing.
fn suggestion(word: &str) -> String {
    if word.chars().count() > 20 {
        return String::new();
    }
    COMMAND_NAMES
        .iter()
        .map(|n| (distance(word, n), *n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min()
        .map_or_else(String::new, |(_, n)| format!("; did you mean `{n}`?"))
}

fn command_name(word: &str) -> Option<&'static str> {
    let lower = word.to_lowercase();
    COMMAND_NAMES.iter().copied().find(|n| *n == lower)
}

fn command(prefix: &str, args: &mut Args<'_>) -> Result<Command, UsageError> {
    let Some(word) = args.next() else {
        return Err(UsageError {
            command: None,
            message: format!("`{prefix}` needs a command; `{prefix} help` explains them"),
            usage: ALL_USAGE,
        });
    };
    let Some(name) = command_name(word) else {
        let lower = word.to_lowercase();
        return Err(UsageError {
            command: None,
            message: format!("unknown command `{}`{}", show(word), suggestion(&lower)),
            usage: ALL_USAGE,
        });
    };
    let mut shown = name;
    let (cmd, takes) = match name {
        "help" => {
            let topic = match args.next() {
                None => None,
                Some(t) => match command_name(t) {
                    Some(topic) => {
                        if topic == "rooms"
                            && args
                                .peek()
                                .is_some_and(|s| s.eq_ignore_ascii_case("add") || s.eq_ignore_ascii_case("remove"))
                        {
                            args.next();
                        }
                        Some(topic.to_owned())
                    }
                    None => {
                        return Err(err(
                            "help",
                            format!(
                                "`{}` is not a command{}; the commands are {}",
                                show(t),
                                suggestion(&t.to_lowercase()),
                                COMMAND_NAMES.join(", ")
                            ),
                        ))
                    }
                },
            };
            (Command::Help { topic }, "at most one command name")
        }
        "status" => (Command::Status, "no arguments"),
        "mutes" => (Command::Mutes, "no arguments"),
        "mute" | "ban" => {
            let target = args.target(name)?;
            let duration = args.duration(name)?;
            let reason = args.remainder().map(str::to_owned);
            let cmd = if name == "mute" {
                Command::Mute { target, duration, reason }
            } else {
                Command::Ban { target, duration, reason }
            };
            (cmd, "")
        }
        "unmute" => (Command::Unmute { target: args.target(name)? }, "only a user or glob"),
        "unban" => (Command::Unban { target: args.target(name)? }, "only a user or glob"),
        "allow" => {
            let target = args.allow_target(name)?;
            let reason = args.remainder().map(str::to_owned);
            (Command::Allow { target, reason }, "")
        }
        "unallow" => (Command::Unallow { target: args.allow_target(name)? }, "only a user, glob or server"),
        "confirm" => (Command::Confirm { id: args.hold_id(name)? }, "only one id"),
        "reject" => (Command::Reject { id: args.hold_id(name)? }, "only one id"),
        "watch" => {
            let (room, actions) = args.watch(name)?;
            (Command::Watch { room, actions }, "only one room and `--actions`")
        }
        "preview" => (Command::Preview { room: args.room(name, name)? }, "only one room"),
        "redact" => {
            let (user, room, limit) = args.redact(name)?;
            (Command::Redact { user, room, limit }, "one user, an optional room and `--limit`")
        }
        "unwatch" => (Command::Unwatch { room: args.room(name, name)? }, "only one room"),
        "history" => {
            let (about, limit) = args.history(name)?;
            (Command::History { about, limit }, "an optional user or room, then an optional count")
        }
        "undo" => (Command::Undo { id: args.log_id(name)? }, "only one id"),
        _ => match args.next() {
            None => (Command::Rooms, "no arguments"),
            Some(sub) if sub.eq_ignore_ascii_case("add") => {
                shown = "rooms add";
                (Command::RoomsAdd { room: args.room(name, shown)? }, "only one room")
            }
            Some(sub) if sub.eq_ignore_ascii_case("remove") => {
                shown = "rooms remove";
                (Command::RoomsRemove { room: args.room(name, shown)? }, "only one room")
            }
            Some(sub) => {
                return Err(err(
                    name,
                    format!(
                        "unknown `rooms` subcommand `{}`: use `rooms`, `rooms add <room>` or \
                         `rooms remove <room>`",
                        show(sub)
                    ),
                ))
            }
        },
    };
    if let Some(extra) = args.remainder() {
        return Err(err(name, format!("`{shown}` takes {takes}; unexpected `{}`", show(extra))));
    }
    Ok(cmd)
}

/// The value of `--actions`: comma-separated action names, case-insensitive.
fn parse_actions(value: &str) -> Result<ListTrust, String> {
    let names: Vec<String> =
        value.split(',').map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()).collect();
    let known = ListTrust::NAMES.join(", ");
    if names.is_empty() {
        return Err(format!("`--actions` needs a list of actions, e.g. --actions ban,mute (the actions are: {known})"));
    }
    // Named here rather than by `ListTrust::parse`, to echo the user's text cut and clean.
    if let Some(bad) = names.iter().find(|n| !ListTrust::NAMES.contains(&n.as_str())) {
        return Err(format!("in `--actions`: unknown action `{}` (the actions are: {known})", show(bad)));
    }
    ListTrust::parse(names.iter().map(String::as_str)).map_err(|e| format!("in `--actions`: {e}"))
}

/// A user or room as found in the arguments: a resolved link or a plain token.
enum Found<'a> {
    Link(Link),
    Token(&'a str),
}

/// `` `@a:b` `` written as inline code in Markdown is `@a:b`.
fn strip_ticks(tok: &str) -> &str {
    tok.strip_prefix('`').and_then(|t| t.strip_suffix('`')).filter(|t| !t.is_empty()).unwrap_or(tok)
}

fn is_url(tok: &str) -> bool {
    let lower = tok.get(..8).unwrap_or(tok).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("matrix:")
}

fn ends_word(s: &str) -> bool {
    s.chars().next().is_none_or(char::is_whitespace)
}

/// How many bytes of `rest` the pill text `text` covers, if `rest` starts with it as a
/// whole word. Any run of whitespace matches any other (`&nbsp;` against a space).
fn pill_len(rest: &str, text: &str) -> Option<usize> {
    let mut r = rest.char_indices().peekable();
    let mut t = text.chars().peekable();
    while let Some(tc) = t.next() {
        let (_, rc) = r.next()?;
        if tc.is_whitespace() {
            if !rc.is_whitespace() {
                return None;
            }
            while t.next_if(|c| c.is_whitespace()).is_some() {}
            while r.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        } else if tc != rc {
            return None;
        }
    }
    let end = r.peek().map_or(rest.len(), |(i, _)| *i);
    ends_word(&rest[end..]).then_some(end)
}

/// A cursor over the arguments (the text after the prefix).
struct Args<'a> {
    s: &'a str,
    pos: usize,
    pills: Vec<Pill>,
}

impl<'a> Args<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<&'a str> {
        let r = self.rest().trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        (end > 0).then(|| &r[..end])
    }

    fn next(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let r = self.rest();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        self.pos += end;
        Some(&r[..end])
    }

    /// The rest of the arguments, trimmed; internal whitespace is kept.
    fn remainder(&mut self) -> Option<&'a str> {
        let r = self.rest().trim();
        self.pos = self.s.len();
        (!r.is_empty()).then_some(r)
    }

    /// The next user or room: a pill whose text is here (the longest, then the first), a
    /// Markdown link `[text](url)`, or a token. A link whose text names someone or
    /// something else than its target is an error ([`check_link_text`]).
    fn entity(&mut self, cmd: &'static str) -> Result<Option<Found<'a>>, UsageError> {
        self.skip_ws();
        let rest = self.rest();
        if rest.is_empty() {
            return Ok(None);
        }
        let pill =
            self.pills.iter().rev().filter_map(|p| pill_len(rest, &p.text).map(|n| (n, p))).max_by_key(|(n, _)| *n);
        if let Some((n, p)) = pill {
            check_link_text(&p.text, &p.link).map_err(|m| err(cmd, m))?;
            self.pos += n;
            return Ok(Some(Found::Link(p.link.clone())));
        }
        if rest.starts_with('[') {
            let link = rest.find("](").and_then(|mid| {
                let url_start = mid + 2;
                let close = rest[url_start..].find(')')?;
                let end = url_start + close + 1;
                if !ends_word(&rest[end..]) {
                    return None;
                }
                Some((&rest[1..mid], resolve_href(&rest[url_start..end - 1])?, end))
            });
            if let Some((text, link, end)) = link {
                check_link_text(text, &link).map_err(|m| err(cmd, m))?;
                self.pos += end;
                return Ok(Some(Found::Link(link)));
            }
        }
        Ok(self.next().map(Found::Token))
    }

    /// The user or glob of a command. `mute` and `ban` refuse a glob that matches every
    /// user: `unmute` and `unban` accept it, so that such a rule can be removed.
    fn target(&mut self, cmd: &'static str) -> Result<Target, UsageError> {
        let tok = match self.entity(cmd)? {
            None => return Err(err(cmd, format!("`{cmd}` needs a user or glob, e.g. @spammer:example.org"))),
            Some(Found::Link(Link::User(u))) => return Ok(Target::User(u)),
            Some(Found::Link(Link::Room(r))) => {
                return Err(err(cmd, format!("`{}` is a room: `{cmd}` needs a user or glob", show(r.as_str()))))
            }
            Some(Found::Token(tok)) => strip_ticks(tok),
        };
        if is_url(tok) {
            return match resolve_href(tok) {
                Some(Link::User(u)) => Ok(Target::User(u)),
                _ => Err(err(cmd, format!("`{}` is not a link to a user", show(tok)))),
            };
        }
        if looks_like_duration(tok) {
            return Err(err(cmd, format!("`{}` is not a user: the user or glob comes first", show(tok))));
        }
        if matches!(cmd, "mute" | "ban") && matches_everyone(tok) {
            return Err(err(
                cmd,
                format!(
                    "`{}` matches every user: such a {cmd} rule would restrict every user of every \
                     server, and would be followed by every other bot that follows the list; name a \
                     server or part of a name, e.g. @*:spam.example",
                    show(tok)
                ),
            ));
        }
        parse_target(tok).map_err(|m| err(cmd, m))
    }

    /// The user, glob or server of `allow`/`unallow`: a token without `@` is a server name
    /// or glob ([`parse_server`]). `allow` refuses one that matches everyone.
    fn allow_target(&mut self, cmd: &'static str) -> Result<Target, UsageError> {
        let tok = match self.entity(cmd)? {
            None => {
                return Err(err(
                    cmd,
                    format!("`{cmd}` needs a user, glob or server, e.g. @friend:example.org or partner.example"),
                ))
            }
            Some(Found::Link(Link::User(u))) => return Ok(Target::User(u)),
            Some(Found::Link(Link::Room(r))) => {
                return Err(err(cmd, format!("`{}` is a room: `{cmd}` needs a user, glob or server", show(r.as_str()))))
            }
            Some(Found::Token(tok)) => strip_ticks(tok),
        };
        if is_url(tok) {
            return match resolve_href(tok) {
                Some(Link::User(u)) => Ok(Target::User(u)),
                _ => Err(err(cmd, format!("`{}` is not a link to a user", show(tok)))),
            };
        }
        if cmd == "allow" && matches_everyone(tok) {
            return Err(err(
                cmd,
                format!(
                    "`{}` matches everyone: such an allow rule would lift every ban and mute of every \
                     other list; to stop following a list, `unwatch` it",
                    show(tok)
                ),
            ));
        }
        if tok.starts_with('@') {
            return parse_target(tok).map_err(|m| err(cmd, m));
        }
        parse_server(tok).map_err(|m| err(cmd, m))
    }

    /// The id of a held rule, for `confirm` and `reject` ([`is_hold_id`]).
    fn hold_id(&mut self, cmd: &'static str) -> Result<String, UsageError> {
        let Some(tok) = self.next() else {
            return Err(err(
                cmd,
                format!("`{cmd}` needs the id of a held rule, as hush gave it when it held the rule"),
            ));
        };
        let id = strip_ticks(tok);
        if !is_hold_id(id) {
            return Err(err(
                cmd,
                format!("`{}` is not the id of a held rule: ids are 1 to 32 letters, digits or `-`", show(id)),
            ));
        }
        Ok(id.to_owned())
    }

    /// The option at `tok` (just peeked): taken, checked to be `name` (the only option
    /// `cmd` takes; `example` shows it) and not given before; returns the value written
    /// after `=`, if any.
    fn option(
        &mut self,
        cmd: &'static str,
        tok: &'a str,
        name: &str,
        example: &str,
        given: bool,
    ) -> Result<Option<&'a str>, UsageError> {
        self.next();
        let (flag, inline) = match tok.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (tok, None),
        };
        if !flag.eq_ignore_ascii_case(name) {
            return Err(err(
                cmd,
                format!("unknown option `{}`: `{cmd}` takes only `{name}`, e.g. {example}", show(flag)),
            ));
        }
        if given {
            return Err(err(cmd, format!("`{name}` is given twice")));
        }
        Ok(inline)
    }

    /// `watch`'s room and optional `--actions ban,mute,suspend` (also `--actions=...`),
    /// in either order. The action list may be written with spaces after its commas.
    fn watch(&mut self, cmd: &'static str) -> Result<(RoomRef, Option<ListTrust>), UsageError> {
        let mut room = None;
        let mut actions = None;
        loop {
            match self.peek() {
                Some(tok) if tok.starts_with("--") => {
                    let inline = self.option(cmd, tok, "--actions", "--actions ban,mute", actions.is_some())?;
                    let mut value = match inline {
                        Some(v) => v.to_owned(),
                        None => self.next().filter(|v| !v.starts_with("--")).unwrap_or_default().to_owned(),
                    };
                    // `--actions ban, mute`
                    while value.ends_with(',') {
                        match self.peek() {
                            Some(more) if more.chars().all(|c| c.is_alphabetic() || c == ',') => {
                                value.push_str(more);
                                self.next();
                            }
                            _ => break,
                        }
                    }
                    actions = Some(parse_actions(&value).map_err(|m| err(cmd, m))?);
                }
                Some(_) if room.is_none() => room = Some(self.room(cmd, cmd)?),
                _ => break,
            }
        }
        match room {
            Some(room) => Ok((room, actions)),
            None => Err(err(cmd, format!("`{cmd}` needs a room: an id (!…) or alias (#name:server)"))),
        }
    }

    /// `redact`'s user (one user id, not a glob), then an optional room and `--limit N`
    /// (also `--limit=N`) in either order.
    fn redact(&mut self, cmd: &'static str) -> Result<(String, Option<RoomRef>, Option<u32>), UsageError> {
        let user = match self.target(cmd)? {
            Target::User(u) => u,
            Target::Glob(g) => {
                return Err(err(cmd, format!("`{}` is a glob: `{cmd}` needs one user id", show(&g))));
            }
            Target::Server(s) => {
                return Err(err(cmd, format!("`{}` is a server: `{cmd}` needs one user id", show(&s))));
            }
        };
        let mut room = None;
        let mut limit = None;
        loop {
            match self.peek() {
                Some(tok) if tok.starts_with("--") => {
                    let inline = self.option(cmd, tok, "--limit", "--limit 50", limit.is_some())?;
                    let value = match inline {
                        Some(v) => v,
                        None => self.next().unwrap_or_default(),
                    };
                    let n =
                        value.parse::<u32>().ok().filter(|n| (1..=MAX_REDACT_LIMIT).contains(n)).ok_or_else(|| {
                            err(
                                cmd,
                                format!(
                                    "`--limit` needs a number of events from 1 to {MAX_REDACT_LIMIT}, not `{}`",
                                    show(value)
                                ),
                            )
                        })?;
                    limit = Some(n);
                }
                Some(_) if room.is_none() => room = Some(self.room(cmd, cmd)?),
                _ => break,
            }
        }
        Ok((user, room, limit))
    }

    /// `history`'s optional user or room, then its optional count (1 to [`HISTORY_MAX`]).
    fn history(&mut self, cmd: &'static str) -> Result<(Option<HistoryAbout>, Option<u32>), UsageError> {
        let count = |tok: &str| -> Result<u32, UsageError> {
            tok.parse::<u32>().ok().filter(|n| (1..=HISTORY_MAX).contains(n)).ok_or_else(|| {
                err(cmd, format!("the count must be a number from 1 to {HISTORY_MAX}, not `{}`", show(tok)))
            })
        };
        let about = match self.peek() {
            None => return Ok((None, None)),
            Some(tok) if tok.starts_with(|c: char| c.is_ascii_digit()) => None,
            Some(tok) if tok.starts_with('@') => match self.target(cmd)? {
                Target::User(u) => Some(HistoryAbout::User(u)),
                other => {
                    return Err(err(cmd, format!("`{}` is a glob: `{cmd}` needs one user id", show(other.as_str()))))
                }
            },
            Some(_) => match self.entity(cmd)? {
                Some(Found::Link(Link::User(u))) => Some(HistoryAbout::User(u)),
                Some(Found::Link(Link::Room(r))) => Some(HistoryAbout::Room(r)),
                Some(Found::Token(tok)) => {
                    let tok = strip_ticks(tok);
                    match resolve_href(tok).filter(|_| is_url(tok)) {
                        Some(Link::User(u)) => Some(HistoryAbout::User(u)),
                        Some(Link::Room(r)) => Some(HistoryAbout::Room(r)),
                        None => Some(HistoryAbout::Room(parse_room(tok).map_err(|_| {
                            err(
                                cmd,
                                format!(
                                    "`{}` is neither a user, a room nor a count: e.g. `{cmd} @spammer:example.org 50`",
                                    show(tok)
                                ),
                            )
                        })?)),
                    }
                }
                None => None,
            },
        };
        let limit = match self.next() {
            None => None,
            Some(tok) => Some(count(tok)?),
        };
        Ok((about, limit))
    }

    /// The id of a history entry, for `undo`: `42` or `#42`.
    fn log_id(&mut self, cmd: &'static str) -> Result<u64, UsageError> {
        let Some(tok) = self.next() else {
            return Err(err(cmd, format!("`{cmd}` needs the number of a history entry, e.g. `{cmd} 42`")));
        };
        let id = strip_ticks(tok);
        id.strip_prefix('#').unwrap_or(id).parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            err(cmd, format!("`{}` is not the number of a history entry: e.g. `{cmd} 42` or `{cmd} #42`", show(id)))
        })
    }

    fn room(&mut self, cmd: &'static str, shown: &str) -> Result<RoomRef, UsageError> {
        let tok = match self.entity(cmd)? {
            None => return Err(err(cmd, format!("`{shown}` needs a room: an id (!…) or alias (#name:server)"))),
            Some(Found::Link(Link::Room(r))) => return Ok(r),
            Some(Found::Link(Link::User(u))) => {
                return Err(err(
                    cmd,
                    format!("`{}` is a user: `{shown}` needs a room id (!…) or alias (#name:server)", show(&u)),
                ))
            }
            Some(Found::Token(tok)) => strip_ticks(tok),
        };
        if is_url(tok) {
            return match resolve_href(tok) {
                Some(Link::Room(r)) => Ok(r),
                _ => Err(err(cmd, format!("`{}` is not a link to a room", show(tok)))),
            };
        }
        parse_room(tok).map_err(|m| err(cmd, m))
    }

    /// The optional duration after the target: consecutive duration tokens (`1h30m`,
    /// `1h 30m`, `2 hours`) are added up. A token meant as a duration
    /// ([`looks_like_duration`]) that is not one is an error; any other word ends the
    /// duration and starts the reason.
    fn duration(&mut self, cmd: &'static str) -> Result<Option<Duration>, UsageError> {
        self.skip_ws();
        let start = self.pos;
        let mut end = start;
        let mut total: Option<u64> = None;
        while let Some(raw) = self.peek() {
            let tok = raw.trim_end_matches(TRAILING);
            let secs = if is_number(tok) && raw == tok {
                // `2 hours`: a number, then a unit word.
                let save = self.pos;
                self.next();
                match self.peek().and_then(|u| unit_secs(u.trim_end_matches(TRAILING))) {
                    Some(per) => {
                        self.next();
                        number(tok).saturating_mul(per)
                    }
                    None => {
                        self.pos = save;
                        token_secs(tok).map_err(|m| err(cmd, m))?
                    }
                }
            } else if looks_like_duration(tok) {
                self.next();
                token_secs(tok).map_err(|m| err(cmd, m))?
            } else {
                break;
            };
            total = Some(total.unwrap_or(0).saturating_add(secs));
            end = self.pos;
            if raw.ends_with(TRAILING) {
                break; // `1h, spam`: the punctuation ends the duration
            }
        }
        let Some(secs) = total else {
            return Ok(None);
        };
        let text = self.s[start..end].trim_end_matches(TRAILING);
        check_total(secs, &show(text), cmd).map(Some).map_err(|m| err(cmd, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pill_text_matching() {
        assert_eq!(pill_len("Alice Smith 1h", "Alice Smith"), Some(11));
        assert_eq!(pill_len("Alice\u{a0}\u{a0}Smith", "Alice Smith"), Some(14));
        assert_eq!(pill_len("Alice  Smith x", "Alice\u{a0}Smith"), Some(12));
        assert_eq!(pill_len("Alice", "Alice"), Some(5));
        assert_eq!(pill_len("Alicex", "Alice"), None);
        assert_eq!(pill_len("Alic", "Alice"), None);
        assert_eq!(pill_len("AliceSmith", "Alice Smith"), None);
        assert_eq!(pill_len("é ", "é"), Some(2));
        assert_eq!(pill_len("x", ""), None);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("mute", "mute"), 0);
        assert_eq!(distance("mtue", "mute"), 2);
        assert_eq!(distance("mutes", "mute"), 1);
        assert_eq!(distance("", "ban"), 3);
        assert_eq!(suggestion("mtue"), "; did you mean `mute`?");
        assert_eq!(suggestion("xyzzy"), "");
        assert_eq!(suggestion(&"a".repeat(21)), "");
    }
}
