//! Management-room commands: what each parsed command does and the reply it gets.

use std::fmt::Write;

use hush_core::commands::{self, Command, Parsed};
use matrix_sdk::RoomState;

use crate::bot::Bot;

/// A reply: plain text, its HTML rendering, and whether the command succeeded
/// (a success is also acknowledged with a reaction).
#[derive(Debug, Clone)]
pub struct Reply {
    pub plain: String,
    pub html: String,
    pub ok: bool,
}

impl Reply {
    fn ok(plain: String, html: String) -> Self {
        Reply { plain, html, ok: true }
    }
    fn error(plain: String) -> Self {
        let html = format!("<pre>{}</pre>", escape_html(&plain));
        Reply { plain, html, ok: false }
    }
}

/// Escapes text for an HTML formatted body.
pub fn escape_html(s: &str) -> String {
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

/// Executes a parsed command from a moderator and says what happened.
pub async fn handle(bot: &Bot, parsed: Parsed) -> Reply {
    let prefix = &bot.config.command_prefix;
    match parsed {
        Parsed::NotACommand => Reply::error(String::new()),
        Parsed::Invalid(e) => {
            let lines: Vec<String> = e.usage.lines().map(|l| format!("  {prefix} {l}")).collect();
            let heading = if e.command.is_some() { "Usage:" } else { "Commands (`help <command>` for details):" };
            Reply::error(format!("{}\n{heading}\n{}", e.message, lines.join("\n")))
        }
        Parsed::Command(Command::Help { topic }) => match topic.as_deref().and_then(commands::usage) {
            Some(usage) => Reply::ok(usage.to_owned(), format!("<pre>{}</pre>", escape_html(usage))),
            None => {
                let text = commands::help_text(prefix);
                Reply::ok(text.clone(), format!("<pre>{}</pre>", escape_html(&text)))
            }
        },
        Parsed::Command(Command::Status) => status(bot),
        Parsed::Command(other) => Reply::error(format!(
            "`{}` is understood but not available in this version of hush yet.",
            command_name(&other)
        )),
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Help { .. } => "help",
        Command::Status => "status",
        Command::Mutes => "mutes",
        Command::Rooms => "rooms",
        Command::Mute { .. } => "mute",
        Command::Unmute { .. } => "unmute",
        Command::Ban { .. } => "ban",
        Command::Unban { .. } => "unban",
        Command::Watch { .. } => "watch",
        Command::Unwatch { .. } => "unwatch",
        Command::RoomsAdd { .. } => "rooms add",
        Command::RoomsRemove { .. } => "rooms remove",
    }
}

fn status(bot: &Bot) -> Reply {
    let uptime = bot.started.elapsed();
    let mut rooms: Vec<String> = bot
        .client
        .rooms()
        .into_iter()
        .filter(|r| r.state() == RoomState::Joined)
        .map(|r| match r.name() {
            Some(name) => format!("{name} ({})", r.room_id()),
            None => r.room_id().to_string(),
        })
        .collect();
    rooms.sort();
    let mut plain = String::new();
    let _ = writeln!(plain, "hush {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(plain, "homeserver: {}", bot.config.homeserver_url);
    let _ = writeln!(plain, "user: {}", bot.own_user);
    let _ = writeln!(
        plain,
        "uptime: {}",
        commands::format_duration(std::time::Duration::from_secs(uptime.as_secs().max(1)))
    );
    let _ = writeln!(plain, "dry run: {}", if bot.config.dry_run { "on (nothing is changed)" } else { "off" });
    let _ = writeln!(plain, "rooms joined ({}):", rooms.len());
    for r in &rooms {
        let _ = writeln!(plain, "  {r}");
    }
    let html = format!("<pre>{}</pre>", escape_html(plain.trim_end()));
    Reply::ok(plain.trim_end().to_owned(), html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
