//! Measurement (ignored by default, no assertions on time): how long hush takes to mute 50 users in one room and in 20 rooms against the local Synapse, next to the floor, a plain client sending the same power-level events, in the same run.
//!
//! Run: `HUSH_TEST_HS_DIR=/tmp/hs1 cargo nextest run -p hush -E 'binary(enforcement_timing)' --run-ignored only --no-capture`
//! (`HUSH_TIMING_WINDOW_MS` sets hush's `mute.batch_window_ms`, default 250; `HUSH_TIMING_ROUNDS`, default 3.)
#![recursion_limit = "256"]

mod common;

use std::time::{Duration, Instant};

use common::*;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

fn with_levels(pl: &Value, users: &[OwnedUserId], level: Option<i64>) -> Value {
    let mut pl = pl.clone();
    for u in users {
        match level {
            Some(l) => pl["users"][u.as_str()] = l.into(),
            None => {
                pl["users"].as_object_mut().map(|m| m.remove(u.as_str()));
            }
        }
    }
    pl
}

/// A plain client's read-modify-write of each room's power levels, one room after another.
async fn floor_sequential(c: &Community, rooms: &[OwnedRoomId], users: &[OwnedUserId], level: Option<i64>) -> Duration {
    let start = Instant::now();
    for r in rooms {
        let pl = c.moderator.power_levels(r).await.unwrap();
        c.moderator.put_state(r, "m.room.power_levels", "", with_levels(&pl, users, level)).await.unwrap();
    }
    start.elapsed()
}

/// The same, all rooms at once.
async fn floor_concurrent(c: &Community, rooms: &[OwnedRoomId], users: &[OwnedUserId], level: Option<i64>) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in rooms {
        let m = c.moderator.clone();
        let r = r.clone();
        let users = users.to_vec();
        tasks.spawn(async move {
            let pl = m.power_levels(&r).await.unwrap();
            m.put_state(&r, "m.room.power_levels", "", with_levels(&pl, &users, level)).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    start.elapsed()
}

/// Polls every 10 ms until every room shows every user at `level`.
async fn wait_all(c: &Community, rooms: &[OwnedRoomId], users: &[OwnedUserId], level: Option<i64>) {
    let end = Instant::now() + DEADLINE;
    let mut pending: Vec<OwnedRoomId> = rooms.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for r in pending {
            let pl = c.moderator.power_levels(&r).await.unwrap();
            if !users.iter().all(|u| level_of(&pl, u) == level) {
                still.push(r);
            }
        }
        pending = still;
        assert!(Instant::now() < end, "hush did not finish within {DEADLINE:?}");
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn summary(name: &str, d: &[Duration]) {
    let mut ms: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let all: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
    println!("{name:<46} median {:>6.0} ms   min {:>6.0} ms   (runs: {})", ms[ms.len() / 2], ms[0], all.join(", "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand (see BENCHMARKS.md)"]
async fn time_to_mute_50_users_in_1_and_in_20_rooms() {
    let window: u64 = std::env::var("HUSH_TIMING_WINDOW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    let rounds: usize = std::env::var("HUSH_TIMING_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let c = Community::new().await.unwrap();
    let one = vec![c.protected.room_id().to_owned()];
    let mut twenty = Vec::new();
    for i in 0..20 {
        let r = c.moderator.create_room(&format!("timing{i}"), &[&c.bot.user_id], false).await.unwrap();
        let mut pl = c.moderator.power_levels(r.room_id()).await.unwrap();
        pl["users"][c.bot.user_id.as_str()] = 100.into();
        c.moderator.put_state(r.room_id(), "m.room.power_levels", "", pl).await.unwrap();
        twenty.push(r.room_id().to_owned());
    }
    for r in one.iter().chain(&twenty) {
        c.moderator.put_state(r, "m.room.join_rules", "", serde_json::json!({"join_rule": "public"})).await.unwrap();
    }
    let (pa, pb) = (unique("ta"), unique("tb"));
    let set_a = joined_accounts(&c.hs, &pa, 50, &one).await.unwrap();
    let set_b = joined_accounts(&c.hs, &pb, 50, &twenty).await.unwrap();

    // The floor: the moderator's plain client sends the same events (read, modify, write).
    let (mut f1, mut f20s, mut f20c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        f1.push(floor_sequential(&c, &one, &set_a, Some(-1)).await);
        floor_sequential(&c, &one, &set_a, None).await;
        f20s.push(floor_sequential(&c, &twenty, &set_b, Some(-1)).await);
        floor_sequential(&c, &twenty, &set_b, None).await;
        f20c.push(floor_concurrent(&c, &twenty, &set_b, Some(-1)).await);
        floor_concurrent(&c, &twenty, &set_b, None).await;
    }

    let rooms: Vec<String> = one.iter().chain(&twenty).map(|r| format!("\"{r}\"")).collect();
    let lines = format!(
        "policy_lists: [\"{}\"]\nprotected_rooms: [{}]\nmute:\n  batch_window_ms: {window}\n\
         safety:\n  max_new_restrictions: 100000\n  max_room_share: 1.0\n",
        c.list.room_id(),
        rooms.join(", ")
    );
    let config = c.bot.write_config(&c.hs, c.management.room_id(), &lines);
    let _hush = c.start(&config, 1).await;

    let (mut h1, mut h20) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        c.rule(&format!("a{round}"), &format!("@{pa}*:localhost"), "m.mute", None).await.unwrap();
        wait_all(&c, &one, &set_a, Some(-1)).await;
        h1.push(start.elapsed());
        c.remove_rule(&format!("a{round}")).await.unwrap();
        wait_all(&c, &one, &set_a, None).await;

        let start = Instant::now();
        c.rule(&format!("b{round}"), &format!("@{pb}*:localhost"), "m.mute", None).await.unwrap();
        wait_all(&c, &twenty, &set_b, Some(-1)).await;
        h20.push(start.elapsed());
        c.remove_rule(&format!("b{round}")).await.unwrap();
        wait_all(&c, &twenty, &set_b, None).await;
    }
    println!("\nbatch_window_ms = {window}, rounds = {rounds}");
    summary("floor: 1 room, 50 users (GET + PUT)", &f1);
    summary("floor: 20 rooms x 50 users, sequential", &f20s);
    summary("floor: 20 rooms x 50 users, concurrent", &f20c);
    summary("hush: 1 room, 50 users (rule sent -> seen)", &h1);
    summary("hush: 20 rooms x 50 users (rule sent -> seen)", &h20);
}

/// What a ledger entry costs: one durable write before a change and one after.
#[test]
#[ignore = "a measurement, run by hand (see BENCHMARKS.md)"]
fn ledger_write_cost() {
    use hush::ledger::Ledger;
    use hush_core::policy::{EntityKind, RuleId};
    use hush_core::record::{Entry, Kind, Phase, Scope};
    let room = Scope::Room("!room:localhost".into());
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        let e = Entry {
            scope: room.clone(),
            user_id: format!("@u{i}:localhost"),
            kind: Kind::MutePowerLevel,
            phase: Phase::Applying,
            previous_level: None,
            applied_level: Some(-1),
            rule: RuleId { room_id: "!list".into(), kind: EntityKind::User, state_key: "k".into() },
            reason: "spam".into(),
            applied_at_ms: 0,
            expires_at_ms: None,
            overridden: false,
            event_ids: Vec::new(),
        };
        ledger.begin_apply(&e).unwrap();
    }
    let apply = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        ledger.mark_applied(&room, &format!("@u{i}:localhost"), Kind::MutePowerLevel).unwrap();
    }
    let mark = start.elapsed();
    println!(
        "\nledger ({}): begin_apply {:.2} ms each, mark_applied {:.2} ms each",
        dir.path().display(),
        apply.as_secs_f64() * 1000.0 / n as f64,
        mark.as_secs_f64() * 1000.0 / n as f64
    );
}
