//! Pills: user and room links (matrix.to, `matrix:` URIs) in a formatted body or a body.

use super::ident::{parse_room, parse_target, show};
use super::{RoomRef, Target};

/// At most this many links of one formatted body are looked at.
const MAX_PILLS: usize = 64;

/// What a link points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// A full user id (never a glob).
    User(String),
    Room(RoomRef),
}

/// A link of the formatted body: its text as the plain body shows it, and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pill {
    pub text: String,
    pub link: Link,
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads an identifier (`@user:server`, `!room`, `#alias:server`) as a link target.
fn identifier(id: &str) -> Option<Link> {
    match id.chars().next()? {
        '@' => match parse_target(id).ok()? {
            Target::User(u) => Some(Link::User(u)),
            Target::Glob(_) | Target::Server(_) => None,
        },
        '!' | '#' => parse_room(id).ok().map(Link::Room),
        _ => None,
    }
}

/// Resolves a link to a user or room: `https://matrix.to/#/@user:server`, the same
/// percent-encoded, `matrix:u/user:server`, `matrix:r/alias:server`,
/// `matrix:roomid/id`, and Element permalinks (`https://host/#/user/@user:server`,
/// `.../#/room/#alias:server`). Links to events are not pills.
pub(crate) fn resolve_href(href: &str) -> Option<Link> {
    let href = href.trim();
    let scheme_end = href.find(':')?;
    if href[..scheme_end].eq_ignore_ascii_case("matrix") {
        let rest = &href[scheme_end + 1..];
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (kind, id) = rest.split_once('/')?;
        if id.contains('/') {
            return None; // matrix:roomid/x/e/event and the like
        }
        let sigil = match kind {
            "u" => '@',
            "r" => '#',
            "roomid" => '!',
            _ => return None,
        };
        return identifier(&format!("{sigil}{}", percent_decode(id)?));
    }
    let (before, fragment) = href.split_once('#')?;
    let fragment = fragment.strip_prefix('/')?;
    let fragment = fragment.split('?').next().unwrap_or_default();
    let lower = before.to_ascii_lowercase();
    let host = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"))?;
    let path = if host == "matrix.to" || host == "matrix.to/" {
        fragment
    } else if let Some(p) = fragment.strip_prefix("user/") {
        p
    } else {
        fragment.strip_prefix("room/")?
    };
    if path.contains('/') {
        return None; // a permalink to an event
    }
    identifier(&percent_decode(path)?)
}

/// Checks a link's visible text against its target. A display name (`Spammer`) says
/// nothing about whom the link points to, and the target is what the moderator picked. But
/// a text that is itself a user id or glob must name the link's user (compared ASCII
/// case-insensitively), and a room id or alias must name the link's room when the link is
/// a room of the same kind (an alias and a room id cannot be compared here): otherwise the
/// moderator reads one name and hush would act on another, which a crafted link pasted
/// into the management room makes easy. The error shows both.
pub(crate) fn check_link_text(text: &str, link: &Link) -> Result<(), String> {
    let text = text.trim();
    // `[`@a:b`](url)`: the text written as inline code.
    let text = text.strip_prefix('`').and_then(|t| t.strip_suffix('`')).unwrap_or(text).trim();
    let target = match link {
        Link::User(u) => u.as_str(),
        Link::Room(r) => r.as_str(),
    };
    let instead = if parse_target(text).is_ok() {
        if matches!(link, Link::User(u) if u.eq_ignore_ascii_case(text)) {
            return Ok(());
        }
        "the user id"
    } else if let Ok(room) = parse_room(text) {
        let same = match (&room, link) {
            (_, Link::User(_)) => false,
            (RoomRef::Id(a), Link::Room(RoomRef::Id(b))) | (RoomRef::Alias(a), Link::Room(RoomRef::Alias(b))) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => true,
        };
        if same {
            return Ok(());
        }
        "the room id or alias"
    } else {
        return Ok(());
    };
    Err(format!("the link's text says `{}` but it points to `{}`; type {instead} instead", show(text), show(target)))
}

/// Decodes the HTML character references a formatted body may use.
pub(crate) fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Look for `;` only nearby, so that many `&` cannot make this quadratic.
        let decoded = rest.bytes().take(12).position(|c| c == b';').and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "nbsp" => '\u{a0}',
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes tags (`<...>`) from a fragment of HTML.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        match rest[lt..].find('>') {
            Some(gt) => rest = &rest[lt + gt + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The index of the `>` ending a tag whose attributes start at `from`, outside quotes.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut quote = None;
    for (i, c) in b.iter().enumerate().skip(from) {
        match (quote, *c) {
            (None, b'"' | b'\'') => quote = Some(*c),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of the `href` attribute in the attribute text of a tag.
fn href_attr(attrs: &str) -> Option<&str> {
    let b = attrs.as_bytes();
    let mut i = 0;
    let delim = |c: u8| c.is_ascii_whitespace() || c == b'=' || c == b'>' || c == b'/';
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !delim(b[i]) {
            i += 1;
        }
        let name = &attrs[start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let vstart = i + 1;
                    let len = b[vstart..].iter().position(|c| *c == q)?;
                    i = vstart + len + 1;
                    &attrs[vstart..vstart + len]
                }
                _ => {
                    let vstart = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    &attrs[vstart..i]
                }
            };
            if name.eq_ignore_ascii_case("href") {
                return Some(value);
            }
        } else if name.is_empty() {
            // A stray `=` or `>`: step over the one ASCII byte.
            i += 1;
        }
    }
    None
}

/// The user and room links of a formatted body (`<a href="...">text</a>`), in order.
/// Links whose target is not a valid user id, room id or alias are skipped.
pub(crate) fn extract(html: &str) -> Vec<Pill> {
    let lower = html.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut pills = Vec::new();
    let mut i = 0;
    while pills.len() < MAX_PILLS {
        let Some(off) = lower[i..].find("<a") else { break };
        let attrs_start = i + off + 2;
        i = attrs_start;
        if !b.get(attrs_start).is_some_and(u8::is_ascii_whitespace) {
            continue;
        }
        let Some(gt) = tag_end(b, attrs_start) else { break };
        let href = href_attr(&html[attrs_start..gt]);
        let text_start = gt + 1;
        let text_end = lower[text_start..].find("</a").map_or(html.len(), |n| text_start + n);
        i = text_end;
        let Some(link) = href.and_then(|h| resolve_href(&decode_entities(h))) else {
            continue;
        };
        let text = decode_entities(&strip_tags(&html[text_start..text_end]));
        let text = text.trim();
        if !text.is_empty() {
            pills.push(Pill { text: text.to_owned(), link });
        }
    }
    pills
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Option<Link> {
        Some(Link::User(s.to_owned()))
    }

    #[test]
    fn hrefs() {
        assert_eq!(resolve_href("https://matrix.to/#/@alice:example.org"), user("@alice:example.org"));
        assert_eq!(resolve_href(" HTTPS://Matrix.To/#/@alice:example.org "), user("@alice:example.org"));
        assert_eq!(resolve_href("https://matrix.to/#/%40alice%3Aexample.org"), user("@alice:example.org"));
        assert_eq!(resolve_href("https://matrix.to/#/@alice:example.org?via=x"), user("@alice:example.org"));
        assert_eq!(resolve_href("matrix:u/alice:example.org"), user("@alice:example.org"));
        assert_eq!(resolve_href("matrix:u/alice%3Aexample.org?action=chat"), user("@alice:example.org"));
        assert_eq!(resolve_href("https://app.element.io/#/user/@alice:example.org"), user("@alice:example.org"));
        assert_eq!(
            resolve_href("https://matrix.to/#/%23lobby%3Aexample.org?via=example.org"),
            Some(Link::Room(RoomRef::Alias("#lobby:example.org".to_owned())))
        );
        assert_eq!(
            resolve_href("https://matrix.to/#/#lobby:example.org"),
            Some(Link::Room(RoomRef::Alias("#lobby:example.org".to_owned())))
        );
        assert_eq!(
            resolve_href("matrix:roomid/abc123?via=example.org"),
            Some(Link::Room(RoomRef::Id("!abc123".to_owned())))
        );
        assert_eq!(
            resolve_href("matrix:r/lobby:example.org"),
            Some(Link::Room(RoomRef::Alias("#lobby:example.org".to_owned())))
        );
        assert_eq!(resolve_href("https://example.com/#/room/!abc"), Some(Link::Room(RoomRef::Id("!abc".to_owned()))));
        for not in [
            "https://matrix.to/#/!abc/$event",
            "matrix:roomid/abc/e/event",
            "https://example.com/#/@alice:example.org",
            "https://matrix.to/#/@*:example.org",
            "https://matrix.to/#/@alice",
            "https://matrix.to/#/%zz",
            "https://matrix.to/#/%+1",
            "https://matrix.to/#/%ff",
            "matrix:x/alice:example.org",
            "matrix:u",
            "mailto:alice@example.org",
            "ftp://matrix.to/#/@alice:example.org",
            "",
            "%",
        ] {
            assert_eq!(resolve_href(not), None, "{not}");
        }
    }

    #[test]
    fn link_text_must_not_name_someone_else() {
        let bob = Link::User("@bob:example.org".to_owned());
        let lobby = Link::Room(RoomRef::Alias("#lobby:example.org".to_owned()));
        let lobby_id = Link::Room(RoomRef::Id("!abc:example.org".to_owned()));
        for (text, link) in [
            ("Bob", &bob),
            ("@Bob", &bob),
            ("@bob:example.org", &bob),
            (" @BOB:Example.ORG ", &bob),
            ("`@bob:example.org`", &bob),
            ("Lobby", &lobby),
            ("#Lobby:example.org", &lobby),
            ("#lobby:example.org", &lobby_id),
            ("!xyz:example.org", &lobby),
        ] {
            assert_eq!(check_link_text(text, link), Ok(()), "{text}");
        }
        let cases = [
            (
                "@spammer:evil.example",
                &bob,
                "the link's text says `@spammer:evil.example` but it points to `@bob:example.org`; \
                 type the user id instead",
            ),
            (
                "@*:example.org",
                &bob,
                "the link's text says `@*:example.org` but it points to `@bob:example.org`; type the user id instead",
            ),
            (
                "@bob:example.org",
                &lobby,
                "the link's text says `@bob:example.org` but it points to `#lobby:example.org`; \
                 type the user id instead",
            ),
            (
                "#other:example.org",
                &lobby,
                "the link's text says `#other:example.org` but it points to `#lobby:example.org`; \
                 type the room id or alias instead",
            ),
            (
                "!xyz:example.org",
                &lobby_id,
                "the link's text says `!xyz:example.org` but it points to `!abc:example.org`; \
                 type the room id or alias instead",
            ),
            (
                "#lobby:example.org",
                &bob,
                "the link's text says `#lobby:example.org` but it points to `@bob:example.org`; \
                 type the room id or alias instead",
            ),
        ];
        for (text, link, message) in cases {
            assert_eq!(check_link_text(text, link), Err(message.to_owned()), "{text}");
        }
    }

    #[test]
    fn entities() {
        assert_eq!(decode_entities("a &amp; b &lt;&gt;&quot;&apos;&#39;&#x41;&#66;&nbsp;"), "a & b <>\"''AB\u{a0}");
        assert_eq!(decode_entities("&bogus; & &#xZZ; &#1114112; &"), "&bogus; & &#xZZ; &#1114112; &");
        assert_eq!(decode_entities("&verylongentityname;"), "&verylongentityname;");
        assert_eq!(decode_entities("&#x1F643;&#128578;"), "🙃🙂");
        assert_eq!(decode_entities("é&é;&#xé;"), "é&é;&#xé;");
    }

    #[test]
    fn extracts_pills() {
        let html = "<p>!hush mute <a href=\"https://matrix.to/#/@alice:example.org\">Alice &amp; Co</a> \
                    1h <A HREF='https://matrix.to/#/%40bob%3Aexample.org' class=x>B<b>o</b>b</A> \
                    <a href=matrix:u/carol:example.org>Carol</a> <a name=x>no</a> \
                    <a href=\"https://example.com\">web</a> <abbr>x</abbr> \
                    <a title='a > b' href=\"https://matrix.to/#/#lobby:example.org\">Lobby</a>";
        let pills = extract(html);
        let got: Vec<(&str, &Link)> = pills.iter().map(|p| (p.text.as_str(), &p.link)).collect();
        assert_eq!(
            got,
            vec![
                ("Alice & Co", &Link::User("@alice:example.org".to_owned())),
                ("Bob", &Link::User("@bob:example.org".to_owned())),
                ("Carol", &Link::User("@carol:example.org".to_owned())),
                ("Lobby", &Link::Room(RoomRef::Alias("#lobby:example.org".to_owned()))),
            ]
        );
    }

    #[test]
    fn broken_html() {
        for html in [
            "<a",
            "<a ",
            "<a href",
            "<a href=",
            "<a href=\"https://matrix.to/#/@a:b",
            "<a href=\"https://matrix.to/#/@a:b\">",
            "<a href=\"https://matrix.to/#/@a:b\"></a>",
            "<a = / href=\"x\">é</a>",
            "<a\u{e9}>",
            "<a é=é href=é>é",
        ] {
            let _ = extract(html);
        }
        assert_eq!(
            extract("<a href=\"https://matrix.to/#/@a:b\">Al<i>i</i>ce"),
            vec![Pill { text: "Alice".to_owned(), link: Link::User("@a:b".to_owned()) }]
        );
        let many = "<a href=\"matrix:u/a:b\">x</a>".repeat(100);
        assert_eq!(extract(&many).len(), MAX_PILLS);
    }
}
