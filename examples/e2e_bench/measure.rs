//! The timed runs: the plain client's floor and hush's rule to restriction, both watched by
//! the same poller, each remembering what the server clock needs to time it afterwards.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};

use crate::fill::{send_rule, Creds, World};
use crate::homeserver::{is_banned, is_muted, run_concurrently};
use crate::hush::Hush;
use crate::{ms, now_ms, DEADLINE};

/// Requests in flight while the floor restores its rooms (not timed).
const RESTORE_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mute,
    Ban,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mute => "mute",
            Kind::Ban => "ban",
        }
    }

    fn recommendation(self) -> &'static str {
        match self {
            Kind::Mute => "m.mute",
            Kind::Ban => "m.ban",
        }
    }
}

/// What the server clock needs to time one repetition (see server_clock.rs).
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: Kind,
    pub user: OwnedUserId,
    pub sender: OwnedUserId,
    pub rooms: Vec<OwnedRoomId>,
    /// hush: the rule's event (its `origin_server_ts` is the start).
    pub rule_event: Option<String>,
    /// The floor: wall clock just before its first request.
    pub start_wall_ms: u64,
}

/// One repetition.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Floor only: the writer's own clock (the last request returned).
    pub writer_ms: Option<f64>,
    /// The poller saw the restriction in every room.
    pub observed_ms: f64,
    /// hush only: until the moderator's rule PUT returned (part of hush's time).
    pub rule_put_ms: Option<f64>,
    /// hush only: CPU time hush used from just before the rule until 0.7 s after the poller saw it done.
    pub cpu_ms: Option<f64>,
    pub probe: Probe,
    /// Filled afterwards from the homeserver's database: start to the last event's `received_ts`.
    pub server_ms: Option<f64>,
    /// Start to the first event's `origin_server_ts`.
    pub first_ms: Option<f64>,
}

/// Whether `user` is restricted in `room` as `kind` says, and by whom.
async fn restricted(w: &World, room: &OwnedRoomId, kind: Kind, user: &OwnedUserId) -> Result<(bool, String)> {
    let ev = match kind {
        Kind::Mute => w.moderator.power_levels(room, true).await?,
        Kind::Ban => w.moderator.state(room, "m.room.member", user.as_str(), true).await?,
    };
    let yes = match kind {
        Kind::Mute => is_muted(&ev["content"], user.as_str()),
        Kind::Ban => is_banned(&ev["content"]),
    };
    Ok((yes, ev["sender"].as_str().unwrap_or_default().to_owned()))
}

/// How long hush gets to put one rule in force before the repetition counts as failed.
const RULE_DEADLINE: Duration = Duration::from_secs(120);

/// Polls (one request in flight, rooms in turn) until `user` is restricted in every room
/// by `sender`; returns the time from `t0` until the last room was seen done, or the
/// rooms still not done after `deadline`.
async fn wait_restricted(
    w: &World,
    rooms: &[OwnedRoomId],
    kind: Kind,
    user: &OwnedUserId,
    t0: Instant,
    sender: &OwnedUserId,
    deadline: Duration,
) -> Result<Result<Duration, usize>> {
    let mut remaining: Vec<&OwnedRoomId> = rooms.iter().collect();
    let mut all = Duration::ZERO;
    let end = Instant::now() + deadline;
    while !remaining.is_empty() {
        if Instant::now() > end {
            return Ok(Err(remaining.len()));
        }
        let mut still = Vec::new();
        for room in remaining {
            let (yes, by) = restricted(w, room, kind, user).await?;
            if yes {
                all = t0.elapsed();
                if by != sender.as_str() {
                    bail!("the {} of {user} in {room} was sent by {by}, not {sender}", kind.name());
                }
            } else {
                still.push(room);
            }
        }
        remaining = still;
    }
    Ok(Ok(all))
}

/// The moderator's plain client restricts a member in every room of `rooms` (one room
/// after the other or all at once; a mute is a read-modify-write of the power levels),
/// with the poller running alongside; then puts the rooms back (not timed).
pub async fn floor(w: &World, rooms: &[OwnedRoomId], kind: Kind, concurrent: bool, reps: usize) -> Result<Vec<Sample>> {
    let (mute_user, ban_user) = w.floor_users();
    let victim: Creds = if kind == Kind::Mute { mute_user.clone() } else { ban_user.clone() };
    let user = victim.user_id.clone();
    let mut out = Vec::new();
    for _ in 0..reps {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let start_wall_ms = now_ms();
        let t0 = Instant::now();
        let (m, list, u) = (w.moderator.clone(), rooms.to_vec(), user.clone());
        let writer = tokio::spawn(async move {
            let restrict = |room: OwnedRoomId| {
                let (m, u) = (m.clone(), u.clone());
                async move {
                    match kind {
                        Kind::Mute => m.set_level(&room, u.as_str(), Some(-1)).await,
                        Kind::Ban => m.ban(&room, &u).await,
                    }
                }
            };
            if concurrent {
                let mut set = tokio::task::JoinSet::new();
                for room in list {
                    set.spawn(restrict(room));
                }
                while let Some(r) = set.join_next().await {
                    r??;
                }
            } else {
                for room in list {
                    restrict(room).await?;
                }
            }
            anyhow::Ok(t0.elapsed())
        });
        let seen = match wait_restricted(w, rooms, kind, &user, t0, &w.moderator.user_id, DEADLINE).await? {
            Ok(d) => d,
            Err(n) => bail!("the floor's {} of {user} not in force in {n} rooms after {DEADLINE:?}", kind.name()),
        };
        let writer_ms = ms(writer.await??);
        let probe = Probe {
            kind,
            user: user.clone(),
            sender: w.moderator.user_id.clone(),
            rooms: rooms.to_vec(),
            rule_event: None,
            start_wall_ms,
        };
        out.push(Sample {
            writer_ms: Some(writer_ms),
            observed_ms: ms(seen),
            rule_put_ms: None,
            cpu_ms: None,
            probe,
            server_ms: None,
            first_ms: None,
        });
        restore(w, rooms, kind, &victim).await?;
    }
    Ok(out)
}

/// Lifts the floor's restriction of `victim` in `rooms` (the member joins again after a ban).
async fn restore(w: &World, rooms: &[OwnedRoomId], kind: Kind, victim: &Creds) -> Result<()> {
    let m = w.moderator.clone();
    let member = w.member(victim).await?;
    let user = victim.user_id.clone();
    run_concurrently(RESTORE_CONCURRENCY, rooms.to_vec(), move |room| {
        let (m, member, user) = (m.clone(), member.clone(), user.clone());
        async move {
            match kind {
                Kind::Mute => m.set_level(&room, user.as_str(), None).await,
                Kind::Ban => {
                    m.unban(&room, &user).await?;
                    member.join(&room).await
                }
            }
        }
    })
    .await
}

/// For each of `users`: the moderator sends a `kind` rule to the list, the poller waits
/// until hush has it in force in every room of `rooms`.
pub async fn rule_to_restriction(
    w: &World,
    hush: &Hush,
    rooms: &[OwnedRoomId],
    kind: Kind,
    users: &[Creds],
    failures: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for u in users {
        // Let the previous batch and its echoes settle.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let cpu0 = hush.cpu_ms();
        let t0 = Instant::now();
        let rule_event = send_rule(w, &u.user_id, kind.recommendation()).await?;
        let rule_put_ms = Some(ms(t0.elapsed()));
        let seen = match wait_restricted(w, rooms, kind, &u.user_id, t0, &w.bot().user_id, RULE_DEADLINE).await? {
            Ok(d) => d,
            Err(n) => {
                eprintln!(
                    "  FAILED: {} of {} not in force in {n} rooms after {RULE_DEADLINE:?}",
                    kind.name(),
                    u.user_id
                );
                failures.push(format!(
                    "{} of {}: not in force in {n} of {} rooms after {RULE_DEADLINE:?}",
                    kind.name(),
                    u.user_id,
                    rooms.len()
                ));
                continue;
            }
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        let cpu_ms = match (cpu0, hush.cpu_ms()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let probe = Probe {
            kind,
            user: u.user_id.clone(),
            sender: w.bot().user_id.clone(),
            rooms: rooms.to_vec(),
            rule_event: Some(rule_event),
            start_wall_ms: 0,
        };
        let s = Sample {
            writer_ms: None,
            observed_ms: ms(seen),
            rule_put_ms,
            cpu_ms,
            probe,
            server_ms: None,
            first_ms: None,
        };
        eprintln!("  {} {}: {:.0} ms, cpu {:?} ms", kind.name(), u.user_id, s.observed_ms, s.cpu_ms);
        out.push(s);
    }
    Ok(out)
}
