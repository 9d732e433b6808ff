//! The model-based test of the engine (issue 16): random sequences of rule changes, members coming and going, hand-set levels, time, write faults and kill -9, checked against a naive model; and the minimal sequences it found, kept as tests.
//!
//! `HUSH_MODEL_CASES` sets how many sequences the normal run tries (default
//! [`CI_CASES`]); `HUSH_SOAK=<cases>` is the long run by hand, with a random seed it
//! prints (`HUSH_MODEL_SEED=<seed>` replays one). A failure is shrunk to a minimal
//! sequence, printed as the `Vec<Op>` to paste into a regression test.

mod naive;
mod world;

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use naive::{sequence, FaultKind, Op, Rec};
use world::World;

/// Sequences per normal test run.
const CI_CASES: u32 = 10_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn assert_holds(ops: &[Op]) {
    if std::env::var_os("HUSH_MODEL_TRACE").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("hush=trace").with_test_writer().try_init();
    }
    let violations = World::run(ops);
    assert!(violations.is_empty(), "{ops:?}\n{}", violations.join("\n"));
}

#[test]
fn model() {
    let soak = env_u64("HUSH_SOAK");
    let cases = soak.or(env_u64("HUSH_MODEL_CASES")).unwrap_or(u64::from(CI_CASES));
    // The normal run is the same every time; a soak draws a new seed unless told one.
    let seed = env_u64("HUSH_MODEL_SEED").unwrap_or_else(|| {
        if soak.is_some() {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        } else {
            16
        }
    });
    eprintln!("model: {cases} sequences, HUSH_MODEL_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let started = std::time::Instant::now();
    let result = runner.run(&sequence(), |ops| {
        let violations = World::run(&ops);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(violations.join("\n")))
        }
    });
    let secs = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("model: {cases} sequences in {secs:.1} s, no violation"),
        Err(_) => eprintln!("model: a violation found and shrunk in {secs:.1} s"),
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            panic!("minimal sequence ({} ops, HUSH_MODEL_SEED={seed}):\n{ops:?}\n{why}", ops.len())
        }
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The minimal sequences the model found, each a defect fixed (RELIABILITY.md).

/// @a1 is muted by membership in R2, and at once the rule becomes a one-second ban of
/// `@a*`. The ban's result came back before sync brought the echo of hush's own earlier
/// mute: that older echo was read as someone unbanning @a1, so hush gave up the ban (and
/// its ledger entry), and when the ban expired @a1 stayed banned for ever.
#[test]
fn an_older_echo_of_hush_s_own_mute_is_not_taken_for_an_unban() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
    ]);
}

/// A membership mute whose answer was lost (the server applied it) is retried, and the
/// retry is refused (`mute` to `mute`). The refusal removed hush's entry although sync had
/// shown the mute: @a2 stayed muted, untracked, after the rule expired.
#[test]
fn a_mute_applied_before_its_retry_was_refused_stays_in_the_ledger() {
    assert_holds(&[
        Op::Fault(FaultKind::LostAnswer, 2),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
    ]);
}

/// @a1 is muted by membership in R2 (a rule for ever) and banned for a second by a glob.
/// When the ban ended, the mute under it was taken for undone by someone else (its
/// membership was `ban`, then `leave`): hush marked it overridden, and @a1, joining again,
/// was not muted although the mute rule still applied.
#[test]
fn a_mute_under_an_expired_ban_holds_when_the_member_comes_back() {
    assert_holds(&[
        Op::Rule { list: 0, key: 1, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
        Op::Advance(5_000),
        Op::Join { room: 1, user: 0 },
    ]);
}

/// Two lost answers: the membership mute of @a1 is applied, its retry refused (`mute` to
/// `mute`) before sync shows the mute. hush dropped its entry, then saw the mute and did
/// not know it for its own: @a1 stayed muted, untracked, never lifted.
#[test]
fn a_mute_whose_retry_was_refused_before_sync_showed_it_is_taken_back() {
    assert_holds(&[
        Op::Fault(FaultKind::LostAnswer, 1),
        Op::Fault(FaultKind::LostAnswer, 1),
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
    ]);
}

/// Lost answers on the membership mutes of @a1 and @a2 (their retries refused), then a
/// 30 s ban: the mutes' own events, arriving after the bans' answers, rolled the view back
/// from `ban` to `mute`, the bans were taken for undone by someone else and dropped, and
/// @a1 and @a2 stayed banned, unrecorded, after the ban rule expired.
#[test]
fn bans_over_membership_mutes_with_lost_answers_are_lifted() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Advance(0),
        Op::Fault(FaultKind::LostAnswer, 3),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(30_000) },
    ]);
}

/// A power-level mute of `@a*` waits behind a rate limit while the rule becomes a
/// one-second ban. The ban's answer ended the "write in flight" of the members although
/// the power-level write was still under way: when the ban expired hush forgot the mute
/// not yet written, and the write then landed: @a1 and @a2 muted with no record, for ever.
#[test]
fn a_mute_still_in_flight_when_its_rule_ends_is_lifted_once_written() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Fault(FaultKind::RateLimited(5000), 1),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
    ]);
}

/// `@a*` is allowed by one list until a second from now, and another list mutes `@a*`.
/// The mute changed no decision (the allow hid it), so no one's timer was armed at the
/// allow's expiry: when the allow ended, @a1 and @a2 were never muted.
#[test]
fn a_mute_under_an_expiring_allow_applies_when_the_allow_ends() {
    assert_holds(&[
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Allow, expiry: Some(1000) },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: None },
    ]);
}

/// After a restart the rule behind @a1's ban is gone and the list with the other rule
/// banning `@a*` has not loaded yet: hush unbans @a1, and that answer is lost (the retry is
/// refused: @a1 is no longer banned). The unban's own event was then taken for someone
/// else's unban, and the ban the other list still wants was given up for good.
#[test]
fn an_unban_whose_answer_was_lost_is_not_taken_for_someone_else_s() {
    assert_holds(&[
        Op::Rule { list: 0, key: 2, entity: 0, rec: Rec::Ban, expiry: None },
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(3_600_000) },
        Op::Quiesce,
        Op::Kill,
        Op::Remove { list: 0, key: 2 },
        Op::Start { rooms_first: true },
        Op::Fault(FaultKind::LostAnswer, 1),
    ]);
}

/// @a1 is muted until 1 s; at that very instant (before the timer's lift) the rule is sent
/// again, already expired. It changed no decision, so no one was reconciled, and re-arming
/// @a1's timer found no expiry ahead and cancelled it: the mute was never lifted.
#[test]
fn a_rule_resent_already_expired_at_its_expiry_still_lifts() {
    assert_holds(&[
        Op::Rule { list: 2, key: 0, entity: 0, rec: Rec::Mute, expiry: Some(1000) },
        Op::Advance(1000),
        Op::Rule { list: 2, key: 0, entity: 0, rec: Rec::Mute, expiry: Some(0) },
    ]);
}

/// Seed 8: @a* muted for 30 s; the mutes' answers are lost, their retries refused, and
/// a second attempt refused too. Each refusal awaited an echo of its own, but a repeated
/// membership is one event at most: the one echo was taken for a stale one and the mutes
/// stayed, unrecorded, after the rule expired.
#[test]
fn lost_answers_on_membership_mutes_still_lift_them() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(30_000) },
        Op::Fault(FaultKind::LostAnswer, 3),
        Op::SetLevel { room: 1, user: 0, level: 0 },
        Op::Start { rooms_first: false },
    ]);
}

/// Seeds 4 and 8, after the fix above: @a* muted for 1 s; at the instant it expires, before
/// the timer fires, a moderator sets @a1's level in R1. Reconciling @a1 and @a2 in R1 found
/// no expiry ahead and cancelled their timer, so their membership mutes in R2 were never
/// lifted.
#[test]
fn a_level_change_at_the_instant_of_expiry_does_not_cancel_the_lift_elsewhere() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Advance(1000),
        Op::SetLevel { room: 0, user: 0, level: 0 },
    ]);
}

/// Seed 16 (a test-harness fix): a settle that ended at the very instant a rule expired
/// judged the mute hush had not lifted yet, though it had a tick left to do it.
#[test]
fn a_settle_at_the_instant_of_an_expiry_leaves_hush_its_tick() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(300_000) },
        Op::Advance(1000),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(3_600_000) },
        Op::Quiesce,
        Op::Quiesce,
        Op::Quiesce,
    ]);
}

/// Seed 8 (a model correction): hush killed before its power-level mute of @b1 was written;
/// a moderator set @b1's level meanwhile. At its start hush writes the pending mute over that
/// level, which it restores when the mute ends: the moderator had not changed a mute.
#[test]
fn a_level_set_while_hush_is_down_before_its_mute_was_written_is_restored_later() {
    assert_holds(&[
        Op::Rule { list: 1, key: 0, entity: 2, rec: Rec::Ban, expiry: Some(1000) },
        Op::Rule { list: 1, key: 0, entity: 6, rec: Rec::Mute, expiry: Some(3_600_000) },
        Op::Kill,
        Op::SetLevel { room: 0, user: 2, level: 0 },
    ]);
}

/// Seed 4 (a model correction): the lift of @a*'s mute (an allow) was in flight when the
/// allow went; the mute wanted again waits for that write, and a ban came first. No mute is
/// added under a ban, and when the ban ends @a1 has left: hush mutes them if they come back.
#[test]
fn a_mute_waiting_behind_a_lift_is_not_added_under_a_ban_that_comes_first() {
    assert_holds(&[
        Op::Rule { list: 2, key: 0, entity: 5, rec: Rec::Mute, expiry: None },
        Op::Advance(1000),
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Allow, expiry: None },
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::Advance(0),
        Op::Remove { list: 1, key: 0 },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
        Op::Start { rooms_first: false },
    ]);
}

/// Seed 8, 11 operations (the same model correction as above, after a restart).
#[test]
fn a_mute_waiting_behind_a_rate_limited_write_is_not_added_under_a_ban() {
    assert_holds(&[
        Op::Rule { list: 0, key: 1, entity: 5, rec: Rec::Mute, expiry: None },
        Op::Advance(100),
        Op::Fault(FaultKind::RateLimited(60_000), 1),
        Op::Kill,
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Start { rooms_first: false },
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Allow, expiry: Some(1000) },
        Op::Advance(60_000),
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
        Op::Rule { list: 0, key: 2, entity: 0, rec: Rec::Mute, expiry: None },
    ]);
}

/// Soak seed 1796063770656786516, 5 operations: membership mutes whose answers were lost,
/// their retries refused (the member was muted already), and hush killed before sync
/// brought the mutes back. hush had taken their entries out of the ledger until the events
/// came, so after the restart the members stayed muted with nothing recorded: never
/// lifted.
#[test]
fn a_kill_after_lost_answers_on_membership_mutes_keeps_them_recorded() {
    assert_holds(&[
        Op::Fault(FaultKind::LostAnswer, 3),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: None },
        Op::Advance(1000),
        Op::Advance(100),
        Op::Kill,
    ]);
}

/// Soak seed 1796063770656786516 after the fix above, 8 operations: a membership mute's
/// lift lost its answer and its retry was refused, so its entry stayed `lifting`; the lift
/// was in force, and the entry must go.
#[test]
fn a_lift_whose_answer_was_lost_leaves_no_entry_once_the_room_shows_it() {
    assert_holds(&[
        Op::Rule { list: 2, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Allow, expiry: Some(1000) },
        Op::Advance(100),
        Op::Rule { list: 1, key: 0, entity: 0, rec: Rec::Mute, expiry: Some(0) },
        Op::Advance(100),
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Fault(FaultKind::LostAnswer, 2),
        Op::Start { rooms_first: false },
    ]);
}

/// Soak seed 1796063770656786516 after fix 13, 5 operations (a model correction): a
/// moderator set @b1's level to 0 and back to 30 while hush's mute waited behind a 429.
/// hush's write found the level it had read (30) and muted; the model took the moderator's
/// changes for an override. Both are the moderator's level coming back at the end.
#[test]
fn a_level_set_and_set_back_while_a_mute_waits_lets_the_mute_through() {
    assert_holds(&[
        Op::SetLevel { room: 0, user: 2, level: 30 },
        Op::Rule { list: 0, key: 0, entity: 6, rec: Rec::Mute, expiry: None },
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::SetLevel { room: 0, user: 2, level: 0 },
        Op::SetLevel { room: 0, user: 2, level: 30 },
    ]);
}

/// Soak seed 1796063770656786516 after the correction above, 7 operations (a model
/// correction): @a* muted for 1 s, @a1 leaves R1 before the mute's batch is written, and
/// the rule becomes a ban. hush does not write the waiting mute under a ban, nor ban a
/// member who is gone; the model kept @a1 muted in R1.
#[test]
fn a_mute_waiting_in_its_batch_is_not_written_for_a_member_gone_before_a_ban() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Leave { room: 0, user: 0 },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Ban, expiry: Some(3_600_000) },
        Op::Kill,
        Op::Start { rooms_first: false },
        Op::Quiesce,
        Op::Advance(0),
    ]);
}

/// Soak seed 1796063770656786516 after the correction above, 8 operations (a model
/// correction): a mute wanted again after its expiry waited behind 429s, and @a1 left R1
/// before it was written. hush does not write a mute for a member who is gone (they are
/// muted when they come back); the model kept @a1 muted in R1.
#[test]
fn a_mute_waiting_behind_a_429_is_not_written_for_a_member_who_left() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(1000) },
        Op::Advance(100),
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::Advance(1000),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: None },
        Op::Leave { room: 0, user: 0 },
        Op::Join { room: 0, user: 1 },
    ]);
}

/// Soak seed 1796067211163831375, 12 operations: a membership mute's lift lost its answer
/// (its retry refused), and the mute was wanted again before sync showed the lift. The view
/// still showed the mute, so its entry was marked applied again; after a kill, the room
/// showed `join` and hush took its own lift for a moderator's unmute, leaving the member
/// unmuted while the rule wanted the mute.
#[test]
fn a_lift_whose_answer_was_lost_is_not_taken_for_someone_else_s_unmute_after_a_kill() {
    assert_holds(&[
        Op::Rule { list: 0, key: 2, entity: 5, rec: Rec::Mute, expiry: Some(3_600_000) },
        Op::Advance(100),
        Op::Fault(FaultKind::RateLimited(60_000), 1),
        Op::Rule { list: 1, key: 0, entity: 0, rec: Rec::Mute, expiry: Some(0) },
        Op::Quiesce,
        Op::Remove { list: 0, key: 2 },
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::Fault(FaultKind::LostAnswer, 1),
        Op::Advance(60_000),
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Mute, expiry: Some(3_600_000) },
        Op::Advance(100),
        Op::Kill,
    ]);
}

/// Soak seed 1796067211163831375 after fix 14, 4 operations: a membership mute lost its
/// answer (its retry refused), then an allow rule ended it before sync showed the mute.
/// hush forgot the entry from the room's older view; the mute landed with nothing recorded
/// until its event came (a kill then would have left it for ever).
#[test]
fn a_mute_whose_answer_was_lost_is_not_forgotten_before_the_room_shows_it() {
    assert_holds(&[
        Op::Fault(FaultKind::LostAnswer, 1),
        Op::Rule { list: 1, key: 0, entity: 0, rec: Rec::Mute, expiry: Some(1000) },
        Op::Rule { list: 0, key: 0, entity: 5, rec: Rec::Allow, expiry: None },
        Op::Join { room: 0, user: 0 },
    ]);
}

/// Soak seed 1796067211163831375 after fix 15, 9 operations: a membership mute met a 5xx and
/// then a refusal (the member had left), so it was uncertain; the member's leave, which did
/// not show the mute, left it so, and its entry was never forgotten.
#[test]
fn a_member_event_after_an_uncertain_write_that_does_not_show_it_settles_it() {
    assert_holds(&[
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Ban, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 2, rec: Rec::Ban, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 1, rec: Rec::Mute, expiry: Some(1000) },
        Op::Rule { list: 1, key: 1, entity: 5, rec: Rec::Ban, expiry: Some(1000) },
        Op::Fault(FaultKind::RateLimited(100), 2),
        Op::Fault(FaultKind::ServerError, 1),
        Op::Leave { room: 1, user: 1 },
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Start { rooms_first: false },
    ]);
}

/// Soak seed 1796067211163831375 after fix 16, 11 operations: a moderator set a muted
/// member's level to exactly the level hush's lift, waiting behind a 60 s rate limit, was
/// about to restore, and the rule then wanted the mute again. hush's write took the level
/// for its own lift done (an entry "already what hush asks" passed as a lost write of its
/// own) and muted again over the moderator's decision.
#[test]
fn a_level_a_moderator_sets_to_what_a_waiting_lift_restores_is_their_decision() {
    assert_holds(&[
        Op::SetLevel { room: 0, user: 0, level: 20 },
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Allow, expiry: None },
        Op::Rule { list: 1, key: 0, entity: 5, rec: Rec::Mute, expiry: None },
        Op::Rule { list: 0, key: 0, entity: 0, rec: Rec::Mute, expiry: None },
        Op::Quiesce,
        Op::Fault(FaultKind::RateLimited(100), 1),
        Op::Rule { list: 1, key: 0, entity: 0, rec: Rec::Allow, expiry: Some(1000) },
        Op::Advance(100),
        Op::Fault(FaultKind::RateLimited(60_000), 1),
        Op::Advance(1000),
        Op::SetLevel { room: 0, user: 0, level: 20 },
    ]);
}
