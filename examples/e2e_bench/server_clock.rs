//! The homeserver's own clock: times each repetition from Synapse's database (opened
//! read-only once the measurements are done), from the rule's `origin_server_ts` (the
//! floor: its first request) to the `received_ts` of the last restricting event.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::homeserver::{is_banned, is_muted};
use crate::measure::{Kind, Sample};

struct Row {
    ty: String,
    sender: String,
    origin_ts: u64,
    received_ts: u64,
    state_key: String,
    content: Value,
}

/// Sets `server_ms` and `first_ms` of every sample whose events are all in the database.
pub fn time_samples(db: &Path, since_ms: u64, samples: &mut [&mut Sample]) -> Result<()> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("open {} read-only", db.display()))?;
    let mut stmt = conn.prepare(
        "SELECT e.event_id, e.room_id, e.type, e.sender, e.origin_server_ts, e.received_ts, j.json
         FROM events e JOIN event_json j ON j.event_id = e.event_id
         WHERE e.origin_server_ts >= ?1 AND (e.type IN ('m.room.power_levels', 'm.room.member')
            OR e.type LIKE 'm.policy.rule.%')",
    )?;
    let mut by_room: HashMap<String, Vec<Row>> = HashMap::new();
    let mut rule_ts: HashMap<String, u64> = HashMap::new();
    let rows = stmt.query_map([since_ms as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    for row in rows {
        let (event_id, room_id, ty, sender, ots, rts, json) = row?;
        if ty.starts_with("m.policy.rule.") {
            rule_ts.insert(event_id, ots as u64);
            continue;
        }
        let ev: Value = serde_json::from_str(&json).unwrap_or_default();
        let row = Row {
            ty,
            sender,
            origin_ts: ots as u64,
            received_ts: rts.unwrap_or(ots) as u64,
            state_key: ev["state_key"].as_str().unwrap_or_default().to_owned(),
            content: ev["content"].clone(),
        };
        by_room.entry(room_id).or_default().push(row);
    }
    for rows in by_room.values_mut() {
        rows.sort_by_key(|r| r.origin_ts);
    }
    for s in samples.iter_mut() {
        let p = &s.probe;
        let start = match &p.rule_event {
            Some(id) => match rule_ts.get(id) {
                Some(ts) => *ts,
                None => continue,
            },
            None => p.start_wall_ms,
        };
        let mut first = u64::MAX;
        let mut last = 0u64;
        let mut complete = true;
        for room in &p.rooms {
            let hit = by_room.get(room.as_str()).and_then(|rows| {
                rows.iter().find(|r| {
                    r.origin_ts >= start
                        && r.sender == p.sender.as_str()
                        && match p.kind {
                            Kind::Mute => r.ty == "m.room.power_levels" && is_muted(&r.content, p.user.as_str()),
                            Kind::Ban => {
                                r.ty == "m.room.member" && r.state_key == p.user.as_str() && is_banned(&r.content)
                            }
                        }
                })
            });
            match hit {
                Some(r) => {
                    first = first.min(r.origin_ts);
                    last = last.max(r.received_ts);
                }
                None => complete = false,
            }
        }
        if complete && !p.rooms.is_empty() {
            s.server_ms = Some(last.saturating_sub(start) as f64);
            s.first_ms = Some(first.saturating_sub(start) as f64);
        }
    }
    Ok(())
}
