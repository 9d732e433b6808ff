//! Policy rules: parsing every rule variant, expiry, and the matching index.
//!
//! Pure code, no network. [`parse_rule`] turns one state event of a policy room into a
//! [`Rule`]; [`PolicyIndex`] holds the rules of every watched list and answers "is this
//! user restricted, how, until when, and because of which rule" ([`PolicyIndex::decide`]),
//! and, when a rule changes, "which known users' answer changed" ([`PolicyIndex::apply`]).
//!
//! # Rules
//! - Event types: stable `m.policy.rule.{user,room,server}` and the legacy
//!   `m.room.rule.*` and `org.matrix.mjolnir.rule.*`. A rule's identity is
//!   (room, kind, state key) ([`RuleId`]); several types at one identity are all stored,
//!   and the one in force is the stable one, else `m.room.rule.*`, else
//!   `org.matrix.mjolnir.rule.*` ([`RuleFamily`]). Removing the winner brings the next
//!   one back. A stable rule with an unknown (inert) recommendation still hides a legacy
//!   ban at the same identity: it replaced it.
//! - Recommendations: `m.ban`/`org.matrix.mjolnir.ban` ban; `m.mute`/
//!   `support.feline.policy.recomendation_mute` mute; `m.takedown`/
//!   `org.matrix.msc4204.takedown` are enforced as a ban; `m.allow` (hush's own choice: the
//!   value MSC4150 proposes, not in the spec), `org.matrix.mjolnir.allow` and
//!   `fi.mau.meowlnir.unban` are allow rules (below); anything else is kept (status,
//!   [`PolicyIndex::rules_matching`]) but never restricts anyone.
//! - Removal: empty content (`{}`, which is what a redaction leaves; `null` too).
//! - Malformed content (not an object, `entity` not a non-empty string or longer than
//!   [`MAX_ENTITY_LEN`] (255) bytes, the Matrix limit for an id, no usable
//!   `recommendation`, bad MSC4205 hash, neither entity nor hash) is treated as if the rule
//!   did not exist, so it also removes an earlier valid rule at the same type and state
//!   key; a `tracing::warn!` names room, type and state key, and the [`ParseWarning`] is
//!   returned. A missing or non-string `reason` is read as empty: it never changes
//!   enforcement, so it is no reason to drop a ban.
//! - Expiry (MSC3908): `expiry`, else `support.feline.policy.expiry.rev.2`, absolute ms.
//!   Missing, `0` or non-numeric: permanent. A rule is active at `t` iff `t < expiry`
//!   (`expiry <= now` is expired). A negative expiry means "expired since 1970".
//! - Hashed entities (MSC4205): `org.matrix.msc4205.hashes.sha256`, base64 (padded or not)
//!   of the SHA-256 of the full user id, matched against SHA-256 of the user id exactly as
//!   given (hashes cannot be case-folded). Server rules hash the lower-cased server name.
//!   When a rule has both an `entity` and a hash, the entity is what is matched.
//!
//! # Matching and case
//! Globs: `*` is any run of characters, `?` exactly one character (a Unicode scalar).
//! All matching, exact and glob, is ASCII-case-insensitive over the whole id
//! (`@Spam:Evil.ORG` matches `@spam:evil.org`); non-ASCII letters are compared as they
//! are. Why: server names are case-insensitive by spec; localparts are lower-case by the
//! current grammar, so folding changes nothing for new ids; historical ids may carry
//! capitals, but Synapse refuses to register an id that differs from an existing one only
//! in case, so folding cannot hit a different account while it does stop a rule typed in
//! the wrong case from silently missing its target. For a moderation tool the fail-safe
//! direction is to match.
//!
//! # Decisions
//! [`PolicyIndex::decide`] combines the active user rules matching the user id and the
//! active **server rules matching the user's server part** (everything after the first
//! `:`, tried with and without an explicit `:port`): a user on a banned server is banned,
//! on a muted server muted. Room rules are
//! stored and queryable ([`PolicyIndex::rules_matching`]) but never affect users. Ban beats
//! mute; among rules of the winning restriction the latest expiry wins and a permanent
//! rule beats any expiry; remaining ties go to the smallest (room, kind, state key), so the
//! provenance is deterministic.
//!
//! # Allow rules
//! An active allow rule matching the user (a user rule, a user glob, a hash, or a server
//! rule for the user's server) lifts the bans and mutes matching them **of every other
//! list**, and those of **its own list that name the user less closely**: an exact user
//! id or hash is closer than a user glob, which is closer than a server rule. Within one
//! list, a restriction as close as the allow stays: the list contradicts itself, and hush
//! keeps the restriction (fail safe). An allow never restricts anyone. Through
//! [`PolicyIndex::decide_where`] an allow is asked about once per restriction it could
//! lift, as a [`Candidate`] with that restriction: the caller's trust ("may this list
//! ban?") then also says whether the list may lift bans. When the allow expires or goes,
//! what it lifted applies again ([`PolicyIndex::allow_expiry_for`] tells a user's timer
//! when).
//!
//! # Change detection
//! Tracked users ([`PolicyIndex::track_user`]) are the members of protected rooms.
//! [`PolicyIndex::apply`] takes `now_ms` and reports the tracked users whose
//! `decide(user, now_ms)` differs before and after the event (restriction, expiry or
//! provenance). Only users matched by the rule in force before or after at that identity
//! are decided, once, before the change; afterwards only those whose decision came from the
//! rule that left are decided again, the others just test the rule that entered. They are
//! found as follows: an exact rule finds its user with one ordered-set lookup, a glob with a
//! range of the tracked set sorted by id (literal prefix) or by reversed id (literal
//! suffix), and a glob with neither by a SIMD substring search (`memchr::memmem`) for its
//! longest literal over one buffer holding every tracked id lower-cased; only a glob
//! whose literals are single characters ends up verifying every tracked id. A server rule
//! is tested against the distinct servers of tracked users, then their users are taken
//! from the reversed-id range.
//! Expiry is not an event: the timer path asks [`PolicyIndex::next_expiry_after`] when to
//! wake and [`PolicyIndex::changes_between`] whose decision changed meanwhile. To load a
//! large list cheaply at start-up, apply its state before tracking users.
//!
//! # Index structure
//! Rules live in a slab of 64-byte slots with one string allocation each. Exact entities
//! sit in a hash map keyed by a keyed SipHash of the lower-cased entity, hashes in a map
//! keyed by the digest, globs in a [`glob`] set with prefix/suffix/3-gram anchors. Only the
//! rule in force at each identity is in the matching structures.

pub mod glob;
mod index;
#[cfg(test)]
mod index_tests;
#[doc(hidden)]
pub mod naive;
mod rule;
mod trust;

pub use index::{Applied, Candidate, Decision, ListCounts, Outcome, PolicyIndex};
pub use rule::{
    classify_event_type, decode_sha256, encode_sha256, host_without_port, parse_rule, sha256_of, EntityKind,
    ParseWarning, Recommendation, Restriction, Rule, RuleError, RuleFamily, RuleId, RuleParse, MAX_ENTITY_LEN,
    MAX_RULE_TEXT,
};
pub use trust::ListTrust;
