//! Tests of the ledger: the write-ahead phases, scopes, reopening, and migrating older schemas.

use super::*;
use hush_core::history::{Cause, Change, Logged, Outcome, What};

fn room() -> Scope {
    Scope::Room("!room".into())
}

fn rule(key: &str) -> RuleId {
    RuleId { room_id: "!list".into(), kind: EntityKind::User, state_key: key.into() }
}

fn entry(user: &str, previous: Option<i64>) -> Entry {
    Entry {
        scope: room(),
        user_id: user.into(),
        kind: Kind::MutePowerLevel,
        phase: Phase::Applying,
        previous_level: previous,
        applied_level: Some(-1),
        rule: rule("spam"),
        reason: "spam".into(),
        applied_at_ms: 1_700_000_000_000,
        expires_at_ms: Some(1_700_000_060_000),
        overridden: false,
        event_ids: Vec::new(),
    }
}

#[test]
fn write_ahead_then_applied_then_lifted() {
    let l = Ledger::in_memory().unwrap();
    l.begin_apply(&entry("@a:x", Some(10))).unwrap();
    assert_eq!(l.get(&room(), "@a:x", Kind::MutePowerLevel).unwrap().unwrap().phase, Phase::Applying);
    l.mark_applied(&room(), "@a:x", Kind::MutePowerLevel).unwrap();
    let e = l.get(&room(), "@a:x", Kind::MutePowerLevel).unwrap().unwrap();
    assert_eq!(e.phase, Phase::Applied);
    assert_eq!(e.previous_level, Some(10));
    l.begin_lift(&room(), "@a:x", Kind::MutePowerLevel).unwrap();
    assert_eq!(l.all().unwrap()[0].phase, Phase::Lifting);
    l.remove(&room(), "@a:x", Kind::MutePowerLevel).unwrap();
    assert!(l.all().unwrap().is_empty());
}

/// A server's deny entry is stored typed like the others (its server glob where a user id
/// goes), survives a reopen, and moves with a room upgrade, since Synapse copies the ACL.
#[test]
fn a_server_deny_entry_reads_back_and_moves_with_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let deny = Entry {
        kind: Kind::ServerDeny,
        previous_level: None,
        applied_level: None,
        rule: RuleId { room_id: "!list".into(), kind: EntityKind::Server, state_key: "evil".into() },
        ..entry("evil.example", None)
    };
    {
        let l = Ledger::open(&path).unwrap();
        l.begin_apply(&deny).unwrap();
        l.mark_applied(&room(), "evil.example", Kind::ServerDeny).unwrap();
    }
    let l = Ledger::open(&path).unwrap();
    let back = l.get(&room(), "evil.example", Kind::ServerDeny).unwrap().unwrap();
    assert_eq!(back, Entry { phase: Phase::Applied, ..deny.clone() });
    l.begin_apply(&entry("@a:x", None)).unwrap();
    assert_eq!(l.of_kind(Kind::ServerDeny).unwrap(), [Entry { phase: Phase::Applied, ..deny.clone() }]);
    assert_eq!(l.carry_over("!room", "!new").unwrap(), (2, 0));
    assert!(l.get(&Scope::Room("!new".into()), "evil.example", Kind::ServerDeny).unwrap().is_some());
}

#[test]
fn absent_previous_level_stays_absent_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        let l = Ledger::open(&path).unwrap();
        l.begin_apply(&entry("@absent:x", None)).unwrap();
        l.begin_apply(&entry("@ten:x", Some(10))).unwrap();
        l.mark_applied(&room(), "@ten:x", Kind::MutePowerLevel).unwrap();
    }
    let l = Ledger::open(&path).unwrap();
    let absent = l.get(&room(), "@absent:x", Kind::MutePowerLevel).unwrap().unwrap();
    assert_eq!(absent.previous_level, None);
    assert_eq!(absent.phase, Phase::Applying);
    let ten = l.get(&room(), "@ten:x", Kind::MutePowerLevel).unwrap().unwrap();
    assert_eq!(ten.previous_level, Some(10));
    assert_eq!(ten.expires_at_ms, Some(1_700_000_060_000));
    assert_eq!(l.for_user("@ten:x").unwrap().len(), 1);
    assert_eq!(l.for_scope(&room()).unwrap().len(), 2);
}

#[test]
fn overridden_and_cause_updates() {
    let l = Ledger::in_memory().unwrap();
    l.begin_apply(&entry("@a:x", None)).unwrap();
    let r2 = RuleId { room_id: "!other".into(), kind: EntityKind::Server, state_key: "r2".into() };
    l.update_cause(&room(), "@a:x", Kind::MutePowerLevel, &r2, "longer", None).unwrap();
    l.mark_overridden(&room(), "@a:x", Kind::MutePowerLevel).unwrap();
    let e = l.get(&room(), "@a:x", Kind::MutePowerLevel).unwrap().unwrap();
    assert!(e.overridden);
    assert_eq!(e.phase, Phase::Applied);
    assert_eq!((&e.rule, e.reason.as_str(), e.expires_at_ms), (&r2, "longer", None));
}

#[test]
fn a_room_and_the_account_are_separate_scopes() {
    let l = Ledger::in_memory().unwrap();
    let account = Entry { scope: Scope::Account, kind: Kind::Suspension, ..entry("@a:x", None) };
    l.begin_apply(&account).unwrap();
    l.begin_apply(&entry("@a:x", None)).unwrap();
    assert_eq!(l.get(&Scope::Account, "@a:x", Kind::Suspension).unwrap(), Some(account.clone()));
    assert_eq!(l.for_scope(&Scope::Account).unwrap(), vec![account]);
    assert!(l.get(&room(), "@a:x", Kind::Suspension).unwrap().is_none());
    // A room whose id is empty is not the account (it cannot exist, but is no alias).
    assert!(l.for_scope(&Scope::Room(String::new())).unwrap().is_empty());
    l.remove(&Scope::Account, "@a:x", Kind::Suspension).unwrap();
    assert_eq!(l.for_user("@a:x").unwrap().len(), 1);
}

/// The version-0 schema, as hush wrote it before the ledger stored core's record.
const OLD_SCHEMA: &str = "
    CREATE TABLE changes (
        room_id        TEXT NOT NULL,
        user_id        TEXT NOT NULL,
        kind           TEXT NOT NULL,
        phase          TEXT NOT NULL,
        previous_level INTEGER,
        applied_level  INTEGER,
        rule           TEXT NOT NULL,
        reason         TEXT NOT NULL,
        applied_at_ms  INTEGER NOT NULL,
        expires_at_ms  INTEGER,
        overridden     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (room_id, user_id, kind)
    );
    CREATE INDEX changes_by_user ON changes (user_id);
    CREATE TABLE guarded_rules (
        list        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        state_key   TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        hold_id     TEXT NOT NULL,
        held_at_ms  INTEGER NOT NULL,
        why         TEXT NOT NULL,
        PRIMARY KEY (list, kind, state_key)
    );
    INSERT INTO changes VALUES
        ('!room', '@pl:x', 'mute-power-level', 'applied', 50, -1, '!list|user|spam', 'spam', 10, 99, 0),
        ('!room', '@m:x', 'mute-membership', 'applying', NULL, NULL, '!list|m.policy.rule.server|evil.org', '', 11, NULL, 1),
        ('!room', '@b:x', 'ban', 'lifting', NULL, NULL, '!list|room|a|b', 'raid', 12, NULL, 0),
        ('', '@s:x', 'suspension', 'applied', NULL, NULL, '!list|user|@s:x', 'spam', 13, 1000, 0),
        ('', '@odd:x', 'suspension', 'applied', NULL, NULL, 'rule-1', 'odd', 14, NULL, 0);
    INSERT INTO guarded_rules VALUES ('!list', 'user', 'all', 'fp', 'held', 'h1', 5, 'too many');
";

fn old(scope: Scope, user: &str, kind: Kind, phase: Phase, rule: RuleId) -> Entry {
    Entry {
        scope,
        user_id: user.into(),
        kind,
        phase,
        previous_level: None,
        applied_level: None,
        rule,
        reason: String::new(),
        applied_at_ms: 0,
        expires_at_ms: None,
        overridden: false,
        event_ids: Vec::new(),
    }
}

#[test]
fn a_version_0_ledger_is_migrated_at_open_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    Connection::open(&path).unwrap().execute_batch(OLD_SCHEMA).unwrap();
    let id = |list: &str, kind, key: &str| RuleId { room_id: list.into(), kind, state_key: key.into() };
    let expected = vec![
        Entry {
            applied_at_ms: 14,
            reason: "odd".into(),
            // Unreadable: kept whole as the list, never lost.
            ..old(Scope::Account, "@odd:x", Kind::Suspension, Phase::Applied, id("rule-1", EntityKind::User, ""))
        },
        Entry {
            applied_at_ms: 13,
            reason: "spam".into(),
            expires_at_ms: Some(1000),
            ..old(Scope::Account, "@s:x", Kind::Suspension, Phase::Applied, id("!list", EntityKind::User, "@s:x"))
        },
        Entry {
            applied_at_ms: 12,
            reason: "raid".into(),
            ..old(room(), "@b:x", Kind::Ban, Phase::Lifting, id("!list", EntityKind::Room, "a|b"))
        },
        Entry {
            applied_at_ms: 11,
            overridden: true,
            ..old(room(), "@m:x", Kind::MuteMembership, Phase::Applying, id("!list", EntityKind::Server, "evil.org"))
        },
        Entry {
            previous_level: Some(50),
            applied_level: Some(-1),
            reason: "spam".into(),
            applied_at_ms: 10,
            expires_at_ms: Some(99),
            ..old(room(), "@pl:x", Kind::MutePowerLevel, Phase::Applied, id("!list", EntityKind::User, "spam"))
        },
    ];
    for _ in 0..2 {
        // The second open finds the current version and changes nothing.
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.all().unwrap(), expected);
        assert_eq!(l.get(&Scope::Account, "@s:x", Kind::Suspension).unwrap().as_ref(), expected.get(1));
        let guarded = l.all_guarded().unwrap();
        assert_eq!(guarded.len(), 1);
        assert_eq!((guarded[0].list.as_str(), guarded[0].hold_id.as_str()), ("!list", "h1"));
    }
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, VERSION);
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'changes%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "the old table is gone");
    // The per-user index is there for the new table.
    let index: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'changes_by_user'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(index, 1);
}

#[test]
fn a_newer_ledger_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", VERSION + 1).unwrap();
    assert!(Ledger::open(&path).is_err());
}

#[test]
fn a_version_1_ledger_gains_event_ids_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE changes (scope TEXT NOT NULL, room_id TEXT NOT NULL, user_id TEXT NOT NULL,
               kind TEXT NOT NULL, phase TEXT NOT NULL, previous_level INTEGER, applied_level INTEGER,
               rule_list TEXT NOT NULL, rule_kind TEXT NOT NULL, rule_state_key TEXT NOT NULL,
               reason TEXT NOT NULL, applied_at_ms INTEGER NOT NULL, expires_at_ms INTEGER,
               overridden INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (scope, room_id, user_id, kind));
             INSERT INTO changes VALUES ('room', '!room', '@r:x', 'redaction', 'applying', 5, 10, '!list',
               'user', 'k', 'spam', 7, NULL, 0);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let l = Ledger::open(&path).unwrap();
    let scope = Scope::Room("!room".into());
    let kept = l.get(&scope, "@r:x", Kind::Redaction).unwrap().unwrap();
    assert_eq!((kept.previous_level, kept.applied_level, kept.event_ids.len()), (Some(5), Some(10), 0));
    // A redaction of chosen events keeps them across a restart (resumed after kill -9).
    let chosen = Entry { user_id: "@m:x".into(), event_ids: vec!["$a".into(), "$b".into()], ..kept };
    l.begin_apply(&chosen).unwrap();
    drop(l);
    let again = Ledger::open(&path).unwrap();
    assert_eq!(again.get(&scope, "@m:x", Kind::Redaction).unwrap(), Some(chosen));
}

/// A version-1 ledger (before the action log) with an entry of each scope and a held rule.
fn version_1(path: &std::path::Path) -> Entry {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(CHANGES).unwrap();
    conn.execute_batch(GUARDED).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);
    let account = Entry { scope: Scope::Account, kind: Kind::Suspension, ..entry("@s:x", None) };
    // Written with this code's statements, which are version 1's for these tables.
    let conn = Ledger { conn: Connection::open(path).unwrap() };
    conn.begin_apply(&entry("@a:x", Some(10))).unwrap();
    conn.begin_apply(&account).unwrap();
    conn.put_guarded(&Guarded {
        list: "!list".into(),
        kind: EntityKind::User,
        state_key: "all".into(),
        fingerprint: "fp".into(),
        status: Status::Held,
        hold_id: "h1".into(),
        held_at_ms: 5,
        why: "too many".into(),
    })
    .unwrap();
    account
}

#[test]
fn a_version_1_ledger_gains_the_action_log_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let account = version_1(&path);
    for opened in 0..2 {
        // The second open finds the current version and changes nothing: the row logged stays.
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.all().unwrap(), vec![account.clone(), entry("@a:x", Some(10))]);
        assert_eq!(l.all_guarded().unwrap().len(), 1);
        assert_eq!(l.history(&About::All, 100).unwrap().len(), opened);
        if opened == 0 {
            l.log(&logged("@a:x", Change::Apply)).unwrap();
        }
    }
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, VERSION);
}

fn logged(target: &str, change: Change) -> Logged {
    Logged {
        id: 0,
        at_ms: 1_000,
        scope: Some(room()),
        target: target.into(),
        what: What::MutePowerLevel,
        change,
        rule: Some(rule("spam")),
        cause: Cause::Rule { sender: "@mod:x".into(), written_by: None },
        outcome: Outcome::Pending,
        detail: String::new(),
    }
}

#[test]
fn the_action_log_reads_back_by_target_room_and_id_newest_first() {
    let l = Ledger::in_memory().unwrap();
    let a = l.log(&logged("@a:x", Change::Apply)).unwrap();
    let cmd = Logged {
        scope: None,
        what: What::Command,
        change: Change::Command,
        cause: Cause::Command { moderator: "@mod:x".into(), command: "mute".into() },
        outcome: Outcome::Done,
        ..logged("@b:x", Change::Command)
    };
    let c = l.log(&cmd).unwrap();
    let other_room = Logged { scope: Some(Scope::Room("!other".into())), ..logged("@b:x", Change::Refused) };
    let b = l.log(&other_room).unwrap();
    assert!(a < c && c < b);
    let ids = |rows: Vec<Logged>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(l.history(&About::All, 20).unwrap()), [b, c, a]);
    assert_eq!(ids(l.history(&About::All, 2).unwrap()), [b, c]);
    assert_eq!(ids(l.history(&About::Target("@b:x".into()), 20).unwrap()), [b, c]);
    assert_eq!(ids(l.history(&About::Room("!room".into()), 20).unwrap()), [a]);
    assert_eq!(l.logged(c).unwrap(), Some(Logged { id: c, ..cmd }));
    assert_eq!(l.last_command_for(&rule("spam")).unwrap(), Some(("@mod:x".into(), "mute".into())));
    assert_eq!(l.last_command_for(&rule("other")).unwrap(), None);
    assert_eq!(l.last_logged_about(&room(), "@a:x").unwrap().map(|r| r.id), Some(a));
    // The write's answer settles the newest pending row of that action.
    // A lift's answer does not settle the mute's row, the mute's answer does.
    l.settle_logged(&room(), "@a:x", What::MutePowerLevel, Change::Lift, &Outcome::Done).unwrap();
    assert_eq!(l.logged(a).unwrap().unwrap().outcome, Outcome::Pending);
    l.settle_logged(&room(), "@a:x", What::MutePowerLevel, Change::Apply, &Outcome::Failed("403".into())).unwrap();
    assert_eq!(l.logged(a).unwrap().unwrap().outcome, Outcome::Failed("403".into()));
    l.settle_logged_id(c, &Outcome::DryRun).unwrap();
    assert_eq!(l.logged(c).unwrap().unwrap().outcome, Outcome::DryRun);
    assert_eq!(l.logged(999).unwrap(), None);
}

#[test]
fn the_action_log_keeps_the_newest_rows_only() {
    let l = Ledger::in_memory().unwrap();
    l.begin_batch().unwrap();
    let mut last = 0;
    for _ in 0..HISTORY_KEEP + 5 {
        last = l.log(&logged("@a:x", Change::Apply)).unwrap();
    }
    l.commit_batch().unwrap();
    assert_eq!(last, HISTORY_KEEP + 5);
    assert_eq!(l.logged(5).unwrap(), None, "the oldest are pruned");
    assert!(l.logged(6).unwrap().is_some());
    let n: i64 = l.conn.query_row("SELECT count(*) FROM history", [], |r| r.get(0)).unwrap();
    assert_eq!(n as u64, HISTORY_KEEP);
    // Ids are never reused after pruning: `#id` keeps naming one action.
    assert_eq!(l.log(&logged("@a:x", Change::Apply)).unwrap(), HISTORY_KEEP + 6);
}

/// What the action log costs (a figure for BENCHMARKS.md, not an assertion): 10,000 rows
/// logged in one engine batch on a file ledger (each with the prune and a cause look-up),
/// then the newest 100 about one user. `cargo nextest run -p hush -E
/// 'test(action_log_cost)' --run-ignored only --no-capture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn action_log_cost() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    for round in 0..2 {
        let start = std::time::Instant::now();
        l.begin_batch().unwrap();
        for i in 0..HISTORY_KEEP {
            l.last_command_for(&rule("spam")).unwrap();
            l.log(&logged(&format!("@u{}:x", i % 500), Change::Apply)).unwrap();
        }
        l.commit_batch().unwrap();
        let logged_in = start.elapsed();
        let start = std::time::Instant::now();
        let rows = l.history(&About::Target("@u7:x".into()), 100).unwrap();
        println!(
            "round {round}: {HISTORY_KEEP} rows logged in {logged_in:?} ({:?} each); history of one user ({} rows) in {:?}",
            logged_in / HISTORY_KEEP as u32,
            rows.len(),
            start.elapsed()
        );
    }
}

#[test]
fn next_expiry_and_names_user_agree_with_reading_the_entries() {
    let l = Ledger::in_memory().unwrap();
    assert!(!l.names_user("@a:x").unwrap());
    assert_eq!(l.next_expiry_for_user("@a:x", 0).unwrap(), None);
    l.begin_apply(&Entry { expires_at_ms: Some(5_000), ..entry("@a:x", None) }).unwrap();
    let other = Entry { scope: Scope::Room("!other".into()), expires_at_ms: Some(3_000), ..entry("@a:x", None) };
    l.begin_apply(&other).unwrap();
    let account = Entry { scope: Scope::Account, kind: Kind::Suspension, expires_at_ms: None, ..entry("@a:x", None) };
    l.begin_apply(&account).unwrap();
    l.begin_apply(&Entry { expires_at_ms: Some(1_000), ..entry("@b:x", None) }).unwrap();
    assert!(l.names_user("@a:x").unwrap());
    assert!(!l.names_user("@c:x").unwrap());
    // The earliest after `now` among the user's own entries, a permanent one aside.
    assert_eq!(l.next_expiry_for_user("@a:x", 0).unwrap(), Some(3_000));
    assert_eq!(l.next_expiry_for_user("@a:x", 3_000).unwrap(), Some(5_000));
    assert_eq!(l.next_expiry_for_user("@a:x", 5_000).unwrap(), None);
    let by_entries =
        |now: u64| l.for_user("@a:x").unwrap().iter().filter_map(|e| e.expires_at_ms).filter(|&at| at > now).min();
    for now in [0, 2_999, 3_000, 4_999, 5_000] {
        assert_eq!(l.next_expiry_for_user("@a:x", now).unwrap(), by_entries(now));
    }
}
