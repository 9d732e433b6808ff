//! Rule model and parsing of one policy-list state event (stable, legacy and unstable variants).

use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value};

/// What a rule is about: the entity class encoded in the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    /// `*.rule.user`: entity is a user id (or a glob over user ids).
    User,
    /// `*.rule.room`: entity is a room id or alias. Kept and queryable, never affects users.
    Room,
    /// `*.rule.server`: entity is a server name (or glob). Also applies to the users of
    /// matching servers.
    Server,
}

impl EntityKind {
    /// All kinds, in index order.
    pub const ALL: [EntityKind; 3] = [EntityKind::User, EntityKind::Room, EntityKind::Server];

    /// `"user"`, `"room"` or `"server"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Room => "room",
            EntityKind::Server => "server",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which family of event types a rule came from. Declaration order is precedence order:
/// at the same (room, kind, state_key) a stable rule wins over `m.room.rule.*`, which wins
/// over `org.matrix.mjolnir.rule.*`. Lower-precedence rules are kept (shadowed) and come
/// back into force if the winning one is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleFamily {
    /// `m.policy.rule.{user,room,server}` (stable spec).
    Stable,
    /// `m.room.rule.{user,room,server}` (legacy).
    RoomRule,
    /// `org.matrix.mjolnir.rule.{user,room,server}` (legacy).
    Mjolnir,
}

impl RuleFamily {
    /// The exact event type of this family for `kind`.
    pub fn event_type(self, kind: EntityKind) -> &'static str {
        use EntityKind::*;
        use RuleFamily::*;
        match (self, kind) {
            (Stable, User) => "m.policy.rule.user",
            (Stable, Room) => "m.policy.rule.room",
            (Stable, Server) => "m.policy.rule.server",
            (RoomRule, User) => "m.room.rule.user",
            (RoomRule, Room) => "m.room.rule.room",
            (RoomRule, Server) => "m.room.rule.server",
            (Mjolnir, User) => "org.matrix.mjolnir.rule.user",
            (Mjolnir, Room) => "org.matrix.mjolnir.rule.room",
            (Mjolnir, Server) => "org.matrix.mjolnir.rule.server",
        }
    }

    pub(crate) fn from_index(i: u8) -> RuleFamily {
        match i {
            0 => RuleFamily::Stable,
            1 => RuleFamily::RoomRule,
            _ => RuleFamily::Mjolnir,
        }
    }
}

/// Classify a state event type: `Some((family, kind))` for every policy rule type in use,
/// `None` for anything else (room name, topic, ...).
pub fn classify_event_type(event_type: &str) -> Option<(RuleFamily, EntityKind)> {
    let (family, rest) = if let Some(rest) = event_type.strip_prefix("m.policy.rule.") {
        (RuleFamily::Stable, rest)
    } else if let Some(rest) = event_type.strip_prefix("m.room.rule.") {
        (RuleFamily::RoomRule, rest)
    } else if let Some(rest) = event_type.strip_prefix("org.matrix.mjolnir.rule.") {
        (RuleFamily::Mjolnir, rest)
    } else {
        return None;
    };
    let kind = match rest {
        "user" => EntityKind::User,
        "room" => EntityKind::Room,
        "server" => EntityKind::Server,
        _ => return None,
    };
    Some((family, kind))
}

/// Identity of a rule: (policy room, entity kind, state key). The event type family is not
/// part of it because only the highest-precedence family at one identity is in force.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId {
    /// The policy list (room id) the rule lives in.
    pub room_id: String,
    /// User, room or server rule.
    pub kind: EntityKind,
    /// The state key of the rule event.
    pub state_key: String,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} rule {:?}", self.room_id, self.kind, self.state_key)
    }
}

/// What a rule recommends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recommendation {
    /// `m.ban`, legacy `org.matrix.mjolnir.ban`.
    Ban,
    /// `m.mute`, unstable `support.feline.policy.recomendation_mute` (MSC3907).
    Mute,
    /// `m.takedown`, unstable `org.matrix.msc4204.takedown` (MSC4204); enforced as a ban.
    Takedown,
    /// An exception: `m.allow` (hush's own choice of value: the name MSC4150 proposes, not
    /// in the spec), `org.matrix.mjolnir.allow` (Mjolnir, Draupnir) and
    /// `fi.mau.meowlnir.unban` (Meowlnir). Never restricts anyone; it lifts the bans and
    /// mutes of *other* lists for whom it matches, and the less specific ones of its own
    /// list (see [`crate::policy`], "Allow rules").
    Allow,
    /// Anything else: kept (visible in status) but inert.
    Other(String),
}

impl Recommendation {
    /// Map a recommendation string to the model.
    pub fn parse(s: &str) -> Recommendation {
        match s {
            "m.ban" | "org.matrix.mjolnir.ban" => Recommendation::Ban,
            "m.mute" | "support.feline.policy.recomendation_mute" => Recommendation::Mute,
            "m.takedown" | "org.matrix.msc4204.takedown" => Recommendation::Takedown,
            "m.allow" | "org.matrix.mjolnir.allow" | "fi.mau.meowlnir.unban" => Recommendation::Allow,
            other => Recommendation::Other(other.to_owned()),
        }
    }

    /// The stable identifier (or the unknown string as received).
    pub fn as_str(&self) -> &str {
        match self {
            Recommendation::Ban => "m.ban",
            Recommendation::Mute => "m.mute",
            Recommendation::Takedown => "m.takedown",
            Recommendation::Allow => "m.allow",
            Recommendation::Other(s) => s,
        }
    }

    /// What enforcing this recommendation means for a user; `None` = inert.
    pub fn restriction(&self) -> Option<Restriction> {
        match self {
            Recommendation::Ban | Recommendation::Takedown => Some(Restriction::Ban),
            Recommendation::Mute => Some(Restriction::Mute),
            Recommendation::Allow | Recommendation::Other(_) => None,
        }
    }
}

/// The enforceable outcome for a user. Ordered: `Ban > Mute` (ban beats mute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Restriction {
    /// Stop the user sending; they keep reading.
    Mute,
    /// Remove and ban the user.
    Ban,
}

/// One parsed policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// (room, kind, state_key).
    pub id: RuleId,
    /// Event type family; `family.event_type(id.kind)` is the exact event type.
    pub family: RuleFamily,
    /// The `entity` (exact or glob). `None` only for hashed rules.
    pub entity: Option<String>,
    /// MSC4205 `org.matrix.msc4205.hashes.sha256`, decoded.
    pub sha256: Option<[u8; 32]>,
    /// The recommendation.
    pub recommendation: Recommendation,
    /// Free-text reason (empty when missing or not a string: it never changes enforcement).
    pub reason: String,
    /// Sender of the rule event (provenance).
    pub sender: String,
    /// Absolute expiry in ms since the epoch; `None` = permanent. A negative `expiry` in the
    /// event is kept as `Some(0)`: already expired.
    pub expiry_ms: Option<u64>,
}

impl Rule {
    /// The exact event type this rule was read from.
    pub fn event_type(&self) -> &'static str {
        self.family.event_type(self.id.kind)
    }

    /// Whether the rule is in force at `now_ms` (expiry is exclusive: `expiry <= now` is expired).
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.expiry_ms.is_none_or(|e| now_ms < e)
    }

    /// Whether the entity is a glob (`*` or `?`).
    pub fn is_glob(&self) -> bool {
        self.entity.as_deref().is_some_and(super::glob::is_glob)
    }
}

/// Why a rule event was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// `content` is not a JSON object.
    ContentNotObject,
    /// `entity` present but not a string.
    EntityNotString,
    /// `entity` is the empty string.
    EntityEmpty,
    /// `entity` is longer than any Matrix id can be ([`MAX_ENTITY_LEN`] bytes): no user,
    /// room or server could match it, and a bounded entity keeps glob matching linear.
    EntityTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// No `recommendation`.
    RecommendationMissing,
    /// `recommendation` is not a string.
    RecommendationNotString,
    /// `org.matrix.msc4205.hashes` is not an object.
    HashesNotObject,
    /// `hashes.sha256` is not a string.
    Sha256NotString,
    /// `hashes.sha256` is not base64 (standard alphabet, padded or not).
    Sha256NotBase64,
    /// `hashes.sha256` decodes to this many bytes instead of 32.
    Sha256WrongLength(usize),
    /// Neither an `entity` nor a `sha256` hash: nothing to match.
    NoEntity,
    /// State key, entity, recommendation and reason together are longer than a Matrix
    /// event can be ([`MAX_RULE_TEXT`]).
    TooLong,
    /// An allow rule whose entity matches everyone (`*`, `@*:*`...): it would lift every
    /// other list's bans and mutes at once, and lifting is never held by the safety guard,
    /// so such a rule is not followed.
    AllowForEveryone,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::ContentNotObject => f.write_str("content is not an object"),
            RuleError::EntityNotString => f.write_str("`entity` is not a string"),
            RuleError::EntityEmpty => f.write_str("`entity` is empty"),
            RuleError::AllowForEveryone => f.write_str(
                "an allow rule matching everyone would lift every other list's bans and mutes; hush does not follow it",
            ),
            RuleError::EntityTooLong { len } => {
                write!(f, "`entity` is {len} bytes long; a Matrix id is at most {MAX_ENTITY_LEN}")
            }
            RuleError::RecommendationMissing => f.write_str("`recommendation` is missing"),
            RuleError::RecommendationNotString => f.write_str("`recommendation` is not a string"),
            RuleError::HashesNotObject => f.write_str("`org.matrix.msc4205.hashes` is not an object"),
            RuleError::Sha256NotString => f.write_str("`hashes.sha256` is not a string"),
            RuleError::Sha256NotBase64 => f.write_str("`hashes.sha256` is not valid base64"),
            RuleError::Sha256WrongLength(n) => {
                write!(f, "`hashes.sha256` decodes to {n} bytes, not 32")
            }
            RuleError::NoEntity => f.write_str("neither `entity` nor a sha256 hash"),
            RuleError::TooLong => f.write_str("the rule is longer than a Matrix event can be"),
        }
    }
}

/// A malformed rule event: where it was and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// Policy room.
    pub room_id: String,
    /// Event type as received.
    pub event_type: String,
    /// State key as received.
    pub state_key: String,
    /// The problem.
    pub error: RuleError,
}

impl fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignoring malformed policy rule in {} ({} {:?}): {}",
            self.room_id, self.event_type, self.state_key, self.error
        )
    }
}

/// Result of parsing one state event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleParse {
    /// A valid rule.
    Rule(Rule),
    /// Empty content (`{}`, also what a redaction leaves): the rule at this type and state
    /// key no longer exists.
    Removed,
    /// Malformed: treated as if the rule did not exist (so it also removes a previous rule
    /// at the same type and state key). A `tracing::warn!` has been emitted.
    Ignored(ParseWarning),
    /// Not a policy rule event type at all; nothing to do.
    NotPolicy,
}

/// Longest accepted state key + entity + recommendation + reason (and sender), in bytes.
/// A whole Matrix event is at most 65,536 bytes, so no real rule comes near it; the index
/// relies on it to store offsets in 16 bits.
pub const MAX_RULE_TEXT: usize = 65_535;

/// Longest accepted `entity`, in bytes: the Matrix limit for a user id, which room ids,
/// room aliases and server names share. A longer entity names nothing that can exist (a
/// glob that long can always be written shorter), so the rule is skipped as malformed.
/// Glob matching costs O(entity length x id length): this bound keeps it linear in the id.
pub const MAX_ENTITY_LEN: usize = 255;

const HASHES_KEY: &str = "org.matrix.msc4205.hashes";
const EXPIRY_KEYS: [&str; 2] = ["expiry", "support.feline.policy.expiry.rev.2"];

/// Parse one state event of a policy room. Never panics.
pub fn parse_rule(room_id: &str, event_type: &str, state_key: &str, sender: &str, content: &Value) -> RuleParse {
    let Some((family, kind)) = classify_event_type(event_type) else {
        return RuleParse::NotPolicy;
    };
    match parse_content(content) {
        Ok(None) => RuleParse::Removed,
        Ok(Some(body)) => {
            let rec_len = match &body.recommendation {
                Recommendation::Other(s) => s.len(),
                _ => 0,
            };
            let text = state_key.len() + body.entity.as_ref().map_or(0, String::len) + rec_len + body.reason.len();
            if text > MAX_RULE_TEXT || sender.len() > MAX_RULE_TEXT {
                return ignored(room_id, event_type, state_key, RuleError::TooLong);
            }
            let for_everyone = body.entity.as_deref().is_some_and(super::glob::matches_everyone);
            if body.recommendation == Recommendation::Allow && kind != EntityKind::Room && for_everyone {
                return ignored(room_id, event_type, state_key, RuleError::AllowForEveryone);
            }
            RuleParse::Rule(Rule {
                id: RuleId { room_id: room_id.to_owned(), kind, state_key: state_key.to_owned() },
                family,
                entity: body.entity,
                sha256: body.sha256,
                recommendation: body.recommendation,
                reason: body.reason,
                sender: sender.to_owned(),
                expiry_ms: body.expiry_ms,
            })
        }
        Err(error) => ignored(room_id, event_type, state_key, error),
    }
}

fn ignored(room_id: &str, event_type: &str, state_key: &str, error: RuleError) -> RuleParse {
    tracing::warn!(
        room_id,
        event_type,
        state_key,
        error = %error,
        "ignoring malformed policy rule"
    );
    RuleParse::Ignored(ParseWarning {
        room_id: room_id.to_owned(),
        event_type: event_type.to_owned(),
        state_key: state_key.to_owned(),
        error,
    })
}

struct Body {
    entity: Option<String>,
    sha256: Option<[u8; 32]>,
    recommendation: Recommendation,
    reason: String,
    expiry_ms: Option<u64>,
}

/// `Ok(None)` = empty content (removal).
fn parse_content(content: &Value) -> Result<Option<Body>, RuleError> {
    let obj = match content {
        Value::Object(o) => o,
        // A redacted event whose content serialised as null is a removal too.
        Value::Null => return Ok(None),
        _ => return Err(RuleError::ContentNotObject),
    };
    if obj.is_empty() {
        return Ok(None);
    }
    let entity = match obj.get("entity") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err(RuleError::EntityEmpty),
        Some(Value::String(s)) if s.len() > MAX_ENTITY_LEN => return Err(RuleError::EntityTooLong { len: s.len() }),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(RuleError::EntityNotString),
    };
    let sha256 = parse_hashes(obj)?;
    if entity.is_none() && sha256.is_none() {
        return Err(RuleError::NoEntity);
    }
    let recommendation = match obj.get("recommendation") {
        None | Some(Value::Null) => return Err(RuleError::RecommendationMissing),
        Some(Value::String(s)) => Recommendation::parse(s),
        Some(_) => return Err(RuleError::RecommendationNotString),
    };
    let reason = match obj.get("reason") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(Some(Body { entity, sha256, recommendation, reason, expiry_ms: parse_expiry(obj) }))
}

fn parse_hashes(obj: &Map<String, Value>) -> Result<Option<[u8; 32]>, RuleError> {
    let hashes = match obj.get(HASHES_KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(h)) => h,
        Some(_) => return Err(RuleError::HashesNotObject),
    };
    match hashes.get("sha256") {
        // Only other algorithms: nothing we can use, but not malformed either.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => decode_sha256(s).map(Some),
        Some(_) => Err(RuleError::Sha256NotString),
    }
}

/// Decode base64 (standard alphabet, padded or unpadded) into a SHA-256 digest.
pub fn decode_sha256(s: &str) -> Result<[u8; 32], RuleError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    if s.len() > 64 {
        return Err(RuleError::Sha256WrongLength(s.len() * 3 / 4));
    }
    let bytes = if s.ends_with('=') { STANDARD.decode(s) } else { STANDARD_NO_PAD.decode(s) }
        .map_err(|_| RuleError::Sha256NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| RuleError::Sha256WrongLength(bytes.len()))
}

/// Encode a digest the way MSC4205 publishes it (standard alphabet, unpadded).
pub fn encode_sha256(digest: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
}

/// The host of a server name that carries an explicit port (`example.org:8448` ->
/// `example.org`, `[::1]:8448` -> `[::1]`); `None` without a port. Server rules match a
/// user's server name with and without its port, like server ACLs ignore the port.
pub fn host_without_port(server: &str) -> Option<&str> {
    let (host, port) = server.rsplit_once(':')?;
    (!host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(host)
}

/// SHA-256 of a string (e.g. a full user id), as MSC4205 hashes entities.
pub fn sha256_of(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// MSC3908 expiry: the first of `expiry`, `support.feline.policy.expiry.rev.2` that is a
/// number decides. Missing, `0` or non-numeric: permanent (`None`). Negative: `Some(0)`
/// (expired since the epoch). Fractions are truncated; values beyond `u64` are permanent.
/// The historic key `support.feline.policy.expiry` has no defined unit and is ignored.
fn parse_expiry(obj: &Map<String, Value>) -> Option<u64> {
    for key in EXPIRY_KEYS {
        if let Some(Value::Number(n)) = obj.get(key) {
            return if let Some(u) = n.as_u64() {
                (u != 0 && u != u64::MAX).then_some(u)
            } else if n.as_i64().is_some() {
                Some(0)
            } else {
                match n.as_f64() {
                    Some(f) if f < 0.0 => Some(0),
                    // Zero (also -0.0) is permanent; `as` truncates; u64::MAX and beyond
                    // are permanent too.
                    Some(f) if f > 0.0 && f.is_finite() && f < u64::MAX as f64 => Some(f as u64),
                    _ => None,
                }
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOM: &str = "!list:example.org";
    const MOD: &str = "@mod:example.org";

    fn parse(event_type: &str, key: &str, content: Value) -> RuleParse {
        parse_rule(ROOM, event_type, key, MOD, &content)
    }

    fn rule(event_type: &str, content: Value) -> Rule {
        match parse(event_type, "k", content) {
            RuleParse::Rule(r) => r,
            other => panic!("expected a rule, got {other:?}"),
        }
    }

    fn error(content: Value) -> RuleError {
        match parse("m.policy.rule.user", "k", content) {
            RuleParse::Ignored(w) => {
                assert_eq!(w.room_id, ROOM);
                assert_eq!(w.event_type, "m.policy.rule.user");
                assert_eq!(w.state_key, "k");
                w.error
            }
            other => panic!("expected a warning, got {other:?}"),
        }
    }

    #[test]
    fn an_allow_for_everyone_is_ignored_but_a_narrow_one_and_a_wide_ban_are_kept() {
        for entity in ["*", "@*:*", "@*:*.*"] {
            let content = json!({"entity": entity, "recommendation": "org.matrix.mjolnir.allow"});
            match parse("m.policy.rule.user", "k", content) {
                RuleParse::Ignored(w) => assert_eq!(w.error, RuleError::AllowForEveryone, "{entity}"),
                other => panic!("{entity}: {other:?}"),
            }
        }
        let server_wide = json!({"entity": "*", "recommendation": "m.allow"});
        assert!(matches!(parse("m.policy.rule.server", "k", server_wide), RuleParse::Ignored(_)));
        let narrow = json!({"entity": "@*:friends.example", "recommendation": "m.allow"});
        assert!(matches!(parse("m.policy.rule.user", "k", narrow), RuleParse::Rule(_)));
        // A wide ban is parsed: the safety guard holds it until a moderator decides.
        let wide_ban = json!({"entity": "@*:*", "recommendation": "m.ban"});
        assert!(matches!(parse("m.policy.rule.user", "k", wide_ban), RuleParse::Rule(_)));
    }

    #[test]
    fn every_event_type_is_classified() {
        for family in [RuleFamily::Stable, RuleFamily::RoomRule, RuleFamily::Mjolnir] {
            for kind in EntityKind::ALL {
                let t = family.event_type(kind);
                assert_eq!(classify_event_type(t), Some((family, kind)), "{t}");
                let r = rule(t, json!({"entity": "@a:b", "recommendation": "m.ban", "reason": "r"}));
                assert_eq!(r.family, family);
                assert_eq!(r.id.kind, kind);
                assert_eq!(r.event_type(), t);
            }
        }
        for t in [
            "m.room.name",
            "m.policy.rule",
            "m.policy.rule.users",
            "m.policy.rule.",
            "org.matrix.mjolnir.shortcode",
            "",
        ] {
            assert_eq!(classify_event_type(t), None, "{t}");
            assert_eq!(parse(t, "", json!({"entity": "x"})), RuleParse::NotPolicy);
        }
    }

    #[test]
    fn stable_rule_fields() {
        let r = rule(
            "m.policy.rule.user",
            json!({"entity": "@spam:evil.org", "recommendation": "m.ban", "reason": "spam"}),
        );
        assert_eq!(
            r,
            Rule {
                id: RuleId { room_id: ROOM.into(), kind: EntityKind::User, state_key: "k".into() },
                family: RuleFamily::Stable,
                entity: Some("@spam:evil.org".into()),
                sha256: None,
                recommendation: Recommendation::Ban,
                reason: "spam".into(),
                sender: MOD.into(),
                expiry_ms: None,
            }
        );
        assert!(!r.is_glob());
        assert!(r.is_active(u64::MAX));
    }

    #[test]
    fn recommendations() {
        let cases = [
            ("m.ban", Recommendation::Ban, Some(Restriction::Ban)),
            ("org.matrix.mjolnir.ban", Recommendation::Ban, Some(Restriction::Ban)),
            ("m.mute", Recommendation::Mute, Some(Restriction::Mute)),
            ("support.feline.policy.recomendation_mute", Recommendation::Mute, Some(Restriction::Mute)),
            ("m.takedown", Recommendation::Takedown, Some(Restriction::Ban)),
            ("org.matrix.msc4204.takedown", Recommendation::Takedown, Some(Restriction::Ban)),
            ("m.allow", Recommendation::Allow, None),
            ("org.matrix.mjolnir.allow", Recommendation::Allow, None),
            ("fi.mau.meowlnir.unban", Recommendation::Allow, None),
            ("m.unban", Recommendation::Other("m.unban".into()), None),
            ("m.ban ", Recommendation::Other("m.ban ".into()), None),
            ("M.BAN", Recommendation::Other("M.BAN".into()), None),
            ("", Recommendation::Other(String::new()), None),
            (
                "support.feline.policy.recommendation_mute",
                Recommendation::Other("support.feline.policy.recommendation_mute".into()),
                None,
            ),
        ];
        for (s, rec, restriction) in cases {
            let r = rule("m.policy.rule.user", json!({"entity": "@a:b", "recommendation": s}));
            assert_eq!(r.recommendation, rec, "{s}");
            assert_eq!(r.recommendation.restriction(), restriction, "{s}");
        }
        assert_eq!(Restriction::Ban.max(Restriction::Mute), Restriction::Ban);
    }

    #[test]
    fn removal_by_empty_content_and_redaction() {
        assert_eq!(parse("m.policy.rule.user", "k", json!({})), RuleParse::Removed);
        assert_eq!(parse("m.room.rule.server", "k", json!({})), RuleParse::Removed);
        assert_eq!(parse("m.policy.rule.user", "k", Value::Null), RuleParse::Removed);
    }

    #[test]
    fn malformed_content_of_every_kind() {
        let cases = [
            (json!([]), RuleError::ContentNotObject),
            (json!("x"), RuleError::ContentNotObject),
            (json!(1), RuleError::ContentNotObject),
            (json!(true), RuleError::ContentNotObject),
            (json!({"entity": 5, "recommendation": "m.ban"}), RuleError::EntityNotString),
            (json!({"entity": ["@a:b"], "recommendation": "m.ban"}), RuleError::EntityNotString),
            (json!({"entity": {}, "recommendation": "m.ban"}), RuleError::EntityNotString),
            (json!({"entity": "", "recommendation": "m.ban"}), RuleError::EntityEmpty),
            (json!({"entity": "@a:b"}), RuleError::RecommendationMissing),
            (json!({"entity": "@a:b", "recommendation": null}), RuleError::RecommendationMissing),
            (json!({"entity": "@a:b", "recommendation": 1}), RuleError::RecommendationNotString),
            (json!({"entity": "@a:b", "recommendation": ["m.ban"]}), RuleError::RecommendationNotString),
            (json!({"recommendation": "m.ban"}), RuleError::NoEntity),
            (json!({"reason": "only a reason"}), RuleError::NoEntity),
            (json!({"entity": null, "recommendation": "m.ban"}), RuleError::NoEntity),
            (json!({"recommendation": "m.ban", HASHES_KEY: {"sha512": "abc"}}), RuleError::NoEntity),
            (json!({"recommendation": "m.ban", HASHES_KEY: "abc"}), RuleError::HashesNotObject),
            (json!({"recommendation": "m.ban", HASHES_KEY: {"sha256": 7}}), RuleError::Sha256NotString),
            (json!({"recommendation": "m.ban", HASHES_KEY: {"sha256": "not base64!"}}), RuleError::Sha256NotBase64),
            (json!({"recommendation": "m.ban", HASHES_KEY: {"sha256": "YWJj"}}), RuleError::Sha256WrongLength(3)),
            (
                json!({"entity": "@a:b", "recommendation": "m.ban", HASHES_KEY: {"sha256": ""}}),
                RuleError::Sha256WrongLength(0),
            ),
            (
                json!({"entity": "x".repeat(MAX_RULE_TEXT), "recommendation": "m.ban"}),
                RuleError::EntityTooLong { len: MAX_RULE_TEXT },
            ),
            (json!({"entity": "x", "recommendation": "r".repeat(MAX_RULE_TEXT)}), RuleError::TooLong),
            (
                json!({"entity": "x", "recommendation": "m.ban", "reason": "r".repeat(MAX_RULE_TEXT)}),
                RuleError::TooLong,
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(error(content.clone()), expected, "{content}");
        }
    }

    /// An entity of exactly `len` bytes: a user id or a server name.
    fn entity_of_len(kind: EntityKind, len: usize) -> String {
        let e = match kind {
            EntityKind::User => format!("@{}:example.org", "a".repeat(len - 13)),
            _ => format!("{}.example.org", "a".repeat(len - 12)),
        };
        assert_eq!(e.len(), len);
        e
    }

    #[test]
    fn entity_is_at_most_255_bytes() {
        for (t, kind) in [("m.policy.rule.user", EntityKind::User), ("m.policy.rule.server", EntityKind::Server)] {
            let ok = entity_of_len(kind, MAX_ENTITY_LEN);
            let r = rule(t, json!({"entity": ok, "recommendation": "m.ban"}));
            assert_eq!(r.entity.as_deref(), Some(ok.as_str()));
            let long = entity_of_len(kind, MAX_ENTITY_LEN + 1);
            match parse(t, "k", json!({"entity": long, "recommendation": "m.ban"})) {
                RuleParse::Ignored(w) => {
                    assert_eq!((w.room_id.as_str(), w.event_type.as_str(), w.state_key.as_str()), (ROOM, t, "k"));
                    assert_eq!(w.error, RuleError::EntityTooLong { len: 256 });
                    assert_eq!(w.error.to_string(), "`entity` is 256 bytes long; a Matrix id is at most 255");
                }
                other => panic!("{t}: expected a warning, got {other:?}"),
            }
        }
        // Globs and room rules too; a hash beside a too-long entity does not save it.
        let glob = format!("@*{}*:*", "a*".repeat(126));
        assert_eq!(glob.len(), 257);
        assert_eq!(error(json!({"entity": glob, "recommendation": "m.ban"})), RuleError::EntityTooLong { len: 257 });
        let digest = encode_sha256(&sha256_of("@a:b"));
        let long = entity_of_len(EntityKind::User, 300);
        assert_eq!(
            error(json!({"entity": long, "recommendation": "m.ban", HASHES_KEY: {"sha256": digest}})),
            RuleError::EntityTooLong { len: 300 }
        );
        let room = format!("#{}:example.org", "r".repeat(300));
        assert!(matches!(
            parse("m.policy.rule.room", "k", json!({"entity": room, "recommendation": "m.ban"})),
            RuleParse::Ignored(ParseWarning { error: RuleError::EntityTooLong { len: 313 }, .. })
        ));
    }

    #[test]
    fn reason_is_lenient() {
        for reason in [json!(null), json!(3), json!({"a": 1})] {
            let r = rule("m.policy.rule.user", json!({"entity": "@a:b", "recommendation": "m.ban", "reason": reason}));
            assert_eq!(r.reason, "");
        }
        let r = rule("m.policy.rule.user", json!({"entity": "@a:b", "recommendation": "m.ban"}));
        assert_eq!(r.reason, "");
    }

    #[test]
    fn expiry_variants() {
        let exp = |extra: Value| {
            let mut c = json!({"entity": "@a:b", "recommendation": "m.mute"});
            if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
                c.extend(e);
            }
            rule("m.policy.rule.user", c).expiry_ms
        };
        assert_eq!(exp(json!({})), None);
        assert_eq!(exp(json!({"expiry": 0})), None);
        assert_eq!(exp(json!({"expiry": "1700000000000"})), None);
        assert_eq!(exp(json!({"expiry": null})), None);
        assert_eq!(exp(json!({"expiry": true})), None);
        assert_eq!(exp(json!({"expiry": 1_700_000_000_000u64})), Some(1_700_000_000_000));
        assert_eq!(exp(json!({"support.feline.policy.expiry.rev.2": 1_700_000_000_001u64})), Some(1_700_000_000_001));
        // Stable key wins when both are numbers.
        assert_eq!(exp(json!({"expiry": 5, "support.feline.policy.expiry.rev.2": 6})), Some(5));
        // A non-numeric stable key falls through to the unstable one.
        assert_eq!(exp(json!({"expiry": "soon", "support.feline.policy.expiry.rev.2": 6})), Some(6));
        // The historic key has no unit: ignored.
        assert_eq!(exp(json!({"support.feline.policy.expiry": 1234})), None);
        assert_eq!(exp(json!({"expiry": -5})), Some(0));
        assert_eq!(exp(json!({"expiry": -0.5})), Some(0));
        assert_eq!(exp(json!({"expiry": 0.0})), None);
        assert_eq!(exp(json!({"expiry": 1.5e12})), Some(1_500_000_000_000));
        assert_eq!(exp(json!({"expiry": 1e30})), None);
        assert_eq!(exp(json!({"expiry": u64::MAX})), None);
    }

    #[test]
    fn expiry_boundary_is_exclusive() {
        let r = rule("m.policy.rule.user", json!({"entity": "@a:b", "recommendation": "m.mute", "expiry": 1000}));
        assert!(r.is_active(0));
        assert!(r.is_active(999));
        assert!(!r.is_active(1000));
        assert!(!r.is_active(1001));
    }

    #[test]
    fn hashed_entity_padded_and_unpadded() {
        let digest = sha256_of("@spam:evil.org");
        let unpadded = encode_sha256(&digest);
        assert!(!unpadded.ends_with('='));
        let padded = format!("{unpadded}=");
        for encoded in [unpadded, padded] {
            let r = rule("m.policy.rule.user", json!({"recommendation": "m.ban", HASHES_KEY: {"sha256": encoded}}));
            assert_eq!(r.entity, None);
            assert_eq!(r.sha256, Some(digest));
        }
        // Entity and hash together: both kept.
        let r = rule(
            "m.policy.rule.user",
            json!({"entity": "@x:y", "recommendation": "m.ban",
                   HASHES_KEY: {"sha256": encode_sha256(&digest), "sha512": 1}}),
        );
        assert_eq!(r.entity.as_deref(), Some("@x:y"));
        assert_eq!(r.sha256, Some(digest));
    }

    #[test]
    fn ports() {
        assert_eq!(host_without_port("example.org:8448"), Some("example.org"));
        assert_eq!(host_without_port("[::1]:8448"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]"), None);
        assert_eq!(host_without_port("example.org"), None);
        assert_eq!(host_without_port("example.org:"), None);
        assert_eq!(host_without_port(":80"), None);
    }

    #[test]
    fn globs_detected() {
        let r = rule("m.policy.rule.user", json!({"entity": "@*:evil.org", "recommendation": "m.ban"}));
        assert!(r.is_glob());
        let r = rule("m.policy.rule.server", json!({"entity": "evil?.org", "recommendation": "m.ban"}));
        assert!(r.is_glob());
    }
}
