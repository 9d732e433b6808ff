//! Fuzzes the management-room command parser with arbitrary plain and formatted bodies:
//! it must never panic, and what it accepts must be valid ids and durations in range, and
//! never a mute or ban of every user.
#![no_main]

use hush_core::commands::{
    format_duration, is_hold_id, parse, parse_duration, parse_room, parse_target, Command, Parsed, MAX_DURATION,
};
use hush_core::policy::glob::matches_everyone;
use libfuzzer_sys::fuzz_target;

/// Checks what a parse returned: ids are valid, durations in range, errors render.
fn check(parsed: Parsed) {
    match parsed {
        Parsed::NotACommand => {}
        Parsed::Invalid(e) => {
            assert!(!e.message.is_empty());
            assert!(!e.usage.is_empty());
            let _ = e.render("!hush");
            let _ = e.render_html("!hush");
        }
        Parsed::Command(c) => match c {
            Command::Mute { target, duration, reason } | Command::Ban { target, duration, reason } => {
                assert!(parse_target(target.as_str()).is_ok(), "{target:?}");
                assert!(!matches_everyone(target.as_str()), "{target:?}");
                if let Some(d) = duration {
                    assert!(!d.is_zero() && d <= MAX_DURATION, "{d:?}");
                    assert_eq!(parse_duration(&format_duration(d)), Ok(d));
                }
                if let Some(r) = reason {
                    assert!(!r.is_empty() && r.trim() == r, "{r:?}");
                }
            }
            Command::Unmute { target } | Command::Unban { target } => {
                assert!(parse_target(target.as_str()).is_ok(), "{target:?}");
            }
            Command::Confirm { id } | Command::Reject { id } => {
                assert!(is_hold_id(&id), "{id:?}");
            }
            Command::Watch { room, .. }
            | Command::Preview { room }
            | Command::Unwatch { room }
            | Command::RoomsAdd { room }
            | Command::RoomsRemove { room } => {
                assert!(parse_room(room.as_str()).is_ok(), "{room:?}");
            }
            Command::Help { topic } => {
                if let Some(t) = topic {
                    assert!(hush_core::commands::usage(&t).is_some(), "{t:?}");
                }
            }
            Command::Status | Command::Mutes | Command::Rooms => {}
        },
    }
}

fuzz_target!(|input: (u8, &str, &str, &str, &str)| {
    let (mode, body, html, href, text) = input;
    // Steer part of the inputs past the prefix and into pills, which random bytes rarely reach.
    let body = match mode & 3 {
        0 => body.to_owned(),
        1 => format!("!hush {body}"),
        2 => format!("!hush mute {text} {body}"),
        _ if mode & 0x40 != 0 => format!("!hush watch {text} --actions {body}"),
        _ => format!("!hush rooms add {text} {body}"),
    };
    let formatted = match (mode >> 2) % 4 {
        0 => None,
        1 => Some(html.to_owned()),
        2 => Some(format!("{html}<a href=\"https://matrix.to/#/{href}\">{text}</a>")),
        _ => Some(format!("{html}<a href='matrix:{href}'>{text}</a>")),
    };
    check(parse("!hush", &body, formatted.as_deref()));
    if mode & 0x80 != 0 {
        check(parse(href, &body, formatted.as_deref()));
    }
});
