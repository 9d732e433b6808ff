//! Durations in commands (`30s`, `20m`, `2h`, `7d`, `1w`, `1h30m`) and their reply form.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const MAX_SECS: u64 = 36_525 * DAY;

/// The longest duration a command accepts: 100 years (36525 days).
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_SECS);

/// The examples every duration error ends with.
pub(crate) const EXAMPLES: &str = "use e.g. 30s, 20m, 2h, 7d, 1h30m";

/// Seconds in one unit word (`s`, `min`, `hours`, `w`...), ASCII case-insensitive.
pub(crate) fn unit_secs(word: &str) -> Option<u64> {
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "wk" | "wks" | "week" | "weeks" => WEEK,
        _ => return None,
    })
}

fn is_month_or_year(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "y" | "yr" | "yrs" | "year" | "years" | "mo" | "mon" | "month" | "months"
    )
}

/// Whether a token is meant as a duration: it starts with an ASCII digit and has only
/// ASCII letters, digits and dots, and is not an ordinal such as `2nd`. Such a token
/// after the target is parsed as a duration and is an error if it is not one.
pub(crate) fn looks_like_duration(tok: &str) -> bool {
    let b = tok.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_digit) || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.') {
        return false;
    }
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = tok[digits..].to_ascii_lowercase();
    !matches!(rest.as_str(), "st" | "nd" | "rd" | "th")
}

/// Whether a token is a bare number (that a following unit word may complete).
pub(crate) fn is_number(tok: &str) -> bool {
    !tok.is_empty() && tok.bytes().all(|c| c.is_ascii_digit())
}

/// Parses a number of at most 20 digits, saturating above [`MAX_SECS`].
pub(crate) fn number(digits: &str) -> u64 {
    let mut n: u64 = 0;
    for c in digits.bytes() {
        n = n.saturating_mul(10).saturating_add(u64::from(c - b'0'));
    }
    n
}

/// Seconds in one composite token (`1h30m`), without the zero and 100-year checks,
/// saturating at `u64::MAX`. The error is the message for the moderator.
pub(crate) fn token_secs(tok: &str) -> Result<u64, String> {
    let b = tok.as_bytes();
    if b.is_empty() {
        return Err("an empty duration: ".to_owned() + EXAMPLES);
    }
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{tok}` is not a duration: {EXAMPLES}"));
        }
        let n = number(&tok[start..i]);
        if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
            return Err(format!("`{tok}` is not a duration: use whole numbers, e.g. 1h30m for an hour and a half"));
        }
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &tok[ustart..i];
        if unit.is_empty() {
            if i == b.len() {
                return Err(if start == 0 {
                    format!(
                        "`{tok}` has no unit: write {tok}s, {tok}m, {tok}h or {tok}d \
                         (a reason cannot start with a number)"
                    )
                } else {
                    format!("`{tok}` ends without a unit: {EXAMPLES}")
                });
            }
            return Err(format!("`{tok}` is not a duration: {EXAMPLES}"));
        }
        let Some(per) = unit_secs(unit) else {
            if is_month_or_year(unit) {
                return Err(format!(
                    "`{tok}` is not a duration: months and years are not units, use days \
                     or weeks (e.g. 30d, 52w)"
                ));
            }
            return Err(format!("`{tok}` is not a duration: {EXAMPLES}"));
        };
        total = total.saturating_add(n.saturating_mul(per));
    }
    Ok(total)
}

/// Checks a total: not zero, at most 100 years. `text` is what the moderator wrote and
/// `what` the command (`mute`), for the message.
pub(crate) fn check_total(secs: u64, text: &str, what: &str) -> Result<Duration, String> {
    if secs == 0 {
        return Err(format!("`{text}` is zero: give a positive duration, or none for a permanent {what}"));
    }
    if secs > MAX_SECS {
        return Err(format!("`{text}` is longer than 100 years: leave the duration out for a permanent {what}"));
    }
    Ok(Duration::from_secs(secs))
}

/// Parses one duration token such as `30s`, `20m`, `2h`, `7d`, `1w` or `1h30m` (units
/// are case-insensitive and may be written out: `2hours`, `10min`). Zero and more than
/// 100 years are errors. The error is a message for the moderator.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = token_secs(s)?;
    check_total(secs, s, "rule")
}

/// Formats a duration for replies: `1d2h30m`, `45s`, `0s`; sub-second parts are dropped.
/// For whole seconds up to [`MAX_DURATION`], `parse_duration` gives it back.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let parts = [(secs / DAY, 'd'), (secs % DAY / HOUR, 'h'), (secs % HOUR / MINUTE, 'm'), (secs % MINUTE, 's')];
    for (n, unit) in parts {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn simple_units() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("20m"), 1200);
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("7d"), 7 * DAY);
        assert_eq!(secs("1w"), WEEK);
    }

    #[test]
    fn composite_and_long_units() {
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1w2d3h4m5s"), WEEK + 2 * DAY + 3 * HOUR + 4 * MINUTE + 5);
        assert_eq!(secs("2Hours"), 7200);
        assert_eq!(secs("10MIN"), 600);
        assert_eq!(secs("1day12hrs"), DAY + 12 * HOUR);
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("007s"), 7);
    }

    #[test]
    fn errors() {
        assert_eq!(parse_duration("2x").unwrap_err(), "`2x` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
        assert_eq!(
            parse_duration("30").unwrap_err(),
            "`30` has no unit: write 30s, 30m, 30h or 30d (a reason cannot start with a number)"
        );
        assert_eq!(parse_duration("1h30").unwrap_err(), "`1h30` ends without a unit: use e.g. 30s, 20m, 2h, 7d, 1h30m");
        assert_eq!(
            parse_duration("1.5h").unwrap_err(),
            "`1.5h` is not a duration: use whole numbers, e.g. 1h30m for an hour and a half"
        );
        assert_eq!(
            parse_duration("1y").unwrap_err(),
            "`1y` is not a duration: months and years are not units, use days or weeks \
             (e.g. 30d, 52w)"
        );
        assert_eq!(parse_duration("h").unwrap_err(), "`h` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
        assert_eq!(parse_duration("").unwrap_err(), "an empty duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
        assert_eq!(parse_duration("1h-2m").unwrap_err(), "`1h-2m` is not a duration: use e.g. 30s, 20m, 2h, 7d, 1h30m");
        assert_eq!(
            parse_duration("0s").unwrap_err(),
            "`0s` is zero: give a positive duration, or none for a permanent rule"
        );
        assert_eq!(
            parse_duration("0h0m").unwrap_err(),
            "`0h0m` is zero: give a positive duration, or none for a permanent rule"
        );
    }

    #[test]
    fn hundred_years_is_the_limit() {
        assert_eq!(parse_duration("36525d").unwrap(), MAX_DURATION);
        assert_eq!(
            parse_duration("36526d").unwrap_err(),
            "`36526d` is longer than 100 years: leave the duration out for a permanent rule"
        );
        let huge = "99999999999999999999999999999999w";
        assert!(parse_duration(huge).unwrap_err().contains("longer than 100 years"));
        assert!(parse_duration("18446744073709551615s1s").unwrap_err().contains("longer than 100 years"));
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(999)), "0s");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(WEEK)), "7d");
        assert_eq!(format_duration(Duration::from_secs(DAY + 1)), "1d1s");
        assert_eq!(format_duration(Duration::from_secs(90061)), "1d1h1m1s");
        assert_eq!(format_duration(Duration::MAX), format!("{}d7h15s", u64::MAX / DAY));
    }

    #[test]
    fn duration_words() {
        assert!(looks_like_duration("2x"));
        assert!(looks_like_duration("1.5h"));
        assert!(looks_like_duration("30"));
        assert!(!looks_like_duration("2nd"));
        assert!(!looks_like_duration("3RD"));
        assert!(!looks_like_duration("spam"));
        assert!(!looks_like_duration("24/7"));
        assert!(!looks_like_duration(""));
    }

    proptest::proptest! {
        #[test]
        fn round_trip_whole_seconds(s in 1..=MAX_SECS) {
            let d = Duration::from_secs(s);
            let text = format_duration(d);
            proptest::prop_assert_eq!(parse_duration(&text), Ok(d));
        }

        #[test]
        fn parse_then_format_is_canonical(parts in proptest::collection::vec((0u64..1000, 0usize..5), 1..5)) {
            let units = ["s", "m", "h", "d", "w"];
            let text: String = parts.iter().map(|(n, u)| format!("{n}{}", units[*u])).collect();
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
            let _ = looks_like_duration(&s);
        }
    }
}
